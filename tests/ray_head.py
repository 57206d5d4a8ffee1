"""A real Ray head for tests: `ray start --head --block` with its own ports and temp dir, stopped by PID.

``start_ray_head(env)`` runs the head with exactly ``env`` (so a test chooses what the cluster's processes
see, credentials included); ``submit(head, env, ...)`` runs `ray job submit` from another environment.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def have_ray_cli() -> bool:
    return (BIN / "ray").exists()


@contextmanager
def start_ray_head(env: dict[str, str]) -> Iterator[dict]:
    """Yield {'address', 'env', 'temp'} of a head started with ``env``; torn down by our PIDs only."""
    from pipeline_fixtures import free_port

    temp = tempfile.mkdtemp(prefix="rjh", dir="/tmp")  # short: Ray's socket paths have a length limit
    ports = {name: free_port() for name in (
        "port", "dashboard-port", "node-manager-port", "object-manager-port",
        "metrics-export-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port")}
    low = free_port()
    env = dict(env, PATH=f"{BIN}:{env.get('PATH', '')}", PYTHONPATH=str(ROOT))
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=2", f"--temp-dir={temp}",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1", "--disable-usage-stats",
           "--object-store-memory=300000000", f"--min-worker-port={low}", f"--max-worker-port={low + 200}",
           *(f"--{k}={v}" for k, v in ports.items())]
    log = open(Path(temp) / "head.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        deadline = time.monotonic() + 180
        while True:
            r = subprocess.run([str(BIN / "ray"), "job", "list", "--address", address], env=env,
                               capture_output=True, text=True)
            if r.returncode == 0:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray head did not come up: {Path(temp, 'head.log').read_text()[-2000:]}")
            time.sleep(2)
        yield {"address": address, "env": env, "temp": temp}
    finally:
        proc.send_signal(signal.SIGTERM)  # --block makes `ray start` stop the processes it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of that session only (its pgid is our child's pid)
        except ProcessLookupError:
            pass
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def submit(head: dict, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`ray job submit --working-dir <repo> -- python ARGS` from ``env`` (default: the head's)."""
    env = head["env"] if env is None else dict(env, PATH=f"{BIN}:{env.get('PATH', '')}")
    cmd = [str(BIN / "ray"), "job", "submit", "--address", head["address"], "--working-dir", str(ROOT), "--",
           "python", *args]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=400)

"""A real Ray head for tests: `ray start --head --block` with its own ports and temp dir, stopped by PID.

``start_ray_head(env)`` runs the head with exactly ``env`` (so a test chooses what the cluster's processes
see, credentials included); ``submit(head, env, ...)`` runs `ray job submit` from another environment.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import socket
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


WORKER_PORTS = 201  # Ray's worker port range for the head (min..max inclusive)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_plan(rng: random.Random) -> tuple[dict[str, int], int]:
    """Distinct ports for the head's components, plus the first of WORKER_PORTS contiguous worker ports.

    The worker block lies below the kernel's ephemeral range, so neither our named ports (picked by the
    kernel, hence ephemeral) nor any other process's outgoing connections can land inside it; a port-0
    pick alone once put the dashboard agent inside the worker range and `ray start` refused.
    """
    from pipeline_fixtures import free_port

    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    for _ in range(50):
        low = rng.randrange(20000, max(20001, ephemeral_low - WORKER_PORTS))
        if all(_bindable(p) for p in range(low, low + WORKER_PORTS)):
            break
    else:
        raise RuntimeError("no free block of worker ports below the ephemeral range")
    names = ("port", "dashboard-port", "node-manager-port", "object-manager-port", "metrics-export-port",
             "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port")
    ports: dict[str, int] = {}
    while len(ports) < len(names):
        p = free_port()
        if p not in ports.values() and not low <= p < low + WORKER_PORTS:
            ports[names[len(ports)]] = p
    return ports, low


@contextmanager
def start_ray_head(env: dict[str, str], attempts: int = 3) -> Iterator[dict]:
    """Yield {'address', 'env', 'temp'} of a head started with ``env``; torn down by our PIDs only.

    A head that exits while starting (another process took one of its ports in between) is retried
    with fresh ports, up to ``attempts`` times; the error carries the last head log.
    """
    rng = random.Random()
    env = dict(env, PATH=f"{BIN}:{env.get('PATH', '')}", PYTHONPATH=str(ROOT))
    for attempt in range(1, attempts + 1):
        head = _launch(env, *_port_plan(rng))
        try:
            _wait_up(head)
        except _HeadExited as exc:
            _stop(head)
            if attempt == attempts:
                raise RuntimeError(f"ray head did not come up after {attempts} attempts: {exc}") from None
            continue
        except BaseException:
            _stop(head)
            raise
        break
    try:
        yield {"address": head["address"], "env": env, "temp": head["temp"]}
    finally:
        _stop(head)


class _HeadExited(Exception):
    pass


def _launch(env: dict[str, str], ports: dict[str, int], low: int) -> dict:
    temp = tempfile.mkdtemp(prefix="rjh", dir="/tmp")  # short: Ray's socket paths have a length limit
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=2", f"--temp-dir={temp}",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1", "--disable-usage-stats",
           "--object-store-memory=300000000", f"--min-worker-port={low}",
           f"--max-worker-port={low + WORKER_PORTS - 1}", *(f"--{k}={v}" for k, v in ports.items())]
    log = open(Path(temp) / "head.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return {"proc": proc, "log": log, "temp": temp, "env": env,
            "address": f"http://127.0.0.1:{ports['dashboard-port']}"}


def _wait_up(head: dict, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        r = subprocess.run([str(BIN / "ray"), "job", "list", "--address", head["address"]], env=head["env"],
                           capture_output=True, text=True)
        if r.returncode == 0:
            return
        tail = lambda: Path(head["temp"], "head.log").read_text()[-2000:]  # noqa: E731
        if head["proc"].poll() is not None:
            raise _HeadExited(tail())
        if time.monotonic() > deadline:
            raise RuntimeError(f"ray head did not come up in {timeout:.0f} s: {tail()}")
        time.sleep(2)


def _stop(head: dict) -> None:
    proc = head["proc"]
    proc.send_signal(signal.SIGTERM)  # --block makes `ray start` stop the processes it started
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of that session only (its pgid is our child's pid)
    except ProcessLookupError:
        pass
    head["log"].close()
    shutil.rmtree(head["temp"], ignore_errors=True)


def submit(head: dict, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`ray job submit --working-dir <repo> -- python ARGS` from ``env`` (default: the head's)."""
    env = head["env"] if env is None else dict(env, PATH=f"{BIN}:{env.get('PATH', '')}")
    cmd = [str(BIN / "ray"), "job", "submit", "--address", head["address"], "--working-dir", str(ROOT), "--",
           "python", *args]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=400)

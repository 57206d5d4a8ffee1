"""A real Ray head (own ports and temp dir, stopped by PID) running ingest and restore via `ray job submit`."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from irn_batch.manifest import read_manifest

pytest_plugins = ["pipeline_fixtures"]
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def ray_head(test_env):
    """`ray start --head --block` in its own session, every port chosen here; torn down by our PIDs only."""
    from pipeline_fixtures import free_port

    if not (BIN / "ray").exists():
        pytest.skip("the ray CLI is not installed next to this Python")
    temp = tempfile.mkdtemp(prefix="rjh", dir="/tmp")  # short: Ray's socket paths have a length limit
    ports = {name: free_port() for name in (
        "port", "dashboard-port", "node-manager-port", "object-manager-port",
        "metrics-export-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port")}
    low = free_port()
    env = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '')}", PYTHONPATH=str(ROOT))
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
                pytest.fail(f"ray head did not come up: {Path(temp, 'head.log').read_text()[-2000:]}")
            time.sleep(2)
        yield {"address": address, "env": env}
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


def _submit(head, *args: str) -> str:
    cmd = [str(BIN / "ray"), "job", "submit", "--address", head["address"], "--working-dir", str(ROOT), "--",
           "python", *args]
    r = subprocess.run(cmd, env=head["env"], cwd=ROOT, capture_output=True, text=True, timeout=400)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "succeeded" in out, out[-4000:]
    return out


def test_ingest_and_restore_through_ray_job_submit(ray_head, s3_endpoint, tiny_ckpt_path):
    from pipeline_fixtures import make_bucket, write_images

    fs = make_bucket(s3_endpoint, "jobs-bucket")
    sizes = write_images("jobs-bucket/raw", fs=fs, n=3)
    common = [f"model={tiny_ckpt_path}", f"storage.endpoint_url={s3_endpoint}", "actors.pool_size=1"]
    out = _submit(ray_head, "jobs/ingest.py", "input=s3://jobs-bucket/raw", "output=s3://jobs-bucket/lr", *common)
    assert "== ingest summary ==" in out and "mp_per_s" in out
    out = _submit(ray_head, "jobs/restore.py", "input=s3://jobs-bucket/lr", "output=s3://jobs-bucket/hr",
                  "format=png", *common)
    assert "== restore summary ==" in out
    fs.invalidate_cache()
    ingest_rows = read_manifest(fs, "jobs-bucket/lr/_manifest").to_pylist()
    restore_rows = read_manifest(fs, "jobs-bucket/hr/_manifest").to_pylist()
    assert sorted(r["key"] for r in ingest_rows if r["status"] == "ok") == sorted(sizes)
    assert sorted(r["key"] for r in restore_rows if r["status"] == "ok") == sorted(sizes)
    for key in sizes:
        assert fs.exists(f"jobs-bucket/hr/{key}")

"""Storage-fault figures: what a short outage costs a job, and how long a permanent one takes to end it.

An S3 ingest (`python jobs/ingest.py`, embedded Ray, default x2 weights, small images) reads and writes
through a loopback TCP proxy in front of a moto S3 server. Runs: no outage (baseline); the proxy stopped for
``--outage`` seconds once the first LR object exists, then started again; the proxy stopped for good at
that point, with the shipped ``storage.*`` defaults. Reports the job's own wall time (its summary's
``wall_s``, Ray start-up excluded), the delay against the baseline (on a loaded machine this is noise-bound),
how soon after the endpoint came back the first retried request reached it, the time from the permanent
stop to the job's exit, and the exit codes. Writes docs/results/bench_faults.json.

    .venv/bin/python benchmarks/bench_faults.py --images 48 --outage 5
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from pipeline_fixtures import free_port, png_bytes, smooth_image  # noqa: E402
from tcp_proxy import LoopbackProxy  # noqa: E402

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
       "RAY_AUTH_MODE": "disabled"}


def run_job(fs, proxy: LoopbackProxy, bucket: str, n: int, size: int, outage: float | None, extra: list[str],
            spill: str) -> dict:
    """One ingest of n images; outage None: no fault, 0: the proxy stops for good, >0: for that long."""
    fs.mkdir(bucket)
    for i in range(n):
        fs.pipe_file(f"{bucket}/raw/img{i:03d}.png", png_bytes(smooth_image(size, size, seed=i)))
    args = [sys.executable, str(ROOT / "jobs" / "ingest.py"), f"input=s3://{bucket}/raw", f"output=s3://{bucket}/lr",
            f"storage.endpoint_url={proxy.url}", "actors.pool_size=1", "actors.batch_size=1", "progress_s=1",
            "rows_per_part=8", f"storage.spill_dir={spill}", *extra]
    env = dict(os.environ, **ENV)
    t0 = time.monotonic()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stopped = restarted = None
    if outage is not None:
        while proc.poll() is None:
            fs.invalidate_cache()
            if fs.exists(f"{bucket}/lr") and any(p.endswith(".png") for p in fs.find(f"{bucket}/lr")):
                break
            time.sleep(0.05)
        proxy.stop()
        stopped = time.monotonic()
        if outage > 0:
            time.sleep(outage)
            proxy.start()
            restarted = time.monotonic()
    out, err = proc.communicate(timeout=1800)
    end = time.monotonic()
    if outage == 0:
        proxy.start()
    wall = re.search(r"wall_s\s+([0-9.]+)", out)
    ok = re.search(r"\n\s+ok\s+(\d+)", out)
    return {"rc": proc.returncode, "job_wall_s": float(wall.group(1)) if wall else None,
            "ok": int(ok.group(1)) if ok else None, "process_s": round(end - t0, 1),
            "stop_to_exit_s": round(end - stopped, 1) if stopped is not None and outage == 0 else None,
            # how long after the endpoint came back the first retried request reached it
            "restart_to_first_request_s": round(min(t for t in proxy.accepted if t >= restarted) - restarted, 2)
            if restarted is not None and any(t >= restarted for t in proxy.accepted) else None,
            "last_stderr_line": (err.strip().splitlines() or [""])[-1][:600]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--outage", type=float, default=5.0)
    p.add_argument("--runs", default="baseline,short_outage,permanent_outage", help="which runs, comma-separated")
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "bench_faults.json"))
    a = p.parse_args()
    os.environ.update(ENV)
    import s3fs
    from moto.server import ThreadedMotoServer

    from irn_batch.storage import StorageConfig

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    proxy = LoopbackProxy(port).start()
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": f"http://127.0.0.1:{port}"}, skip_instance_cache=True)
    spill = tempfile.mkdtemp(prefix="bench_faults_spill")
    res = {"images": a.images, "size": a.size, "outage_s": a.outage, "cpus": os.cpu_count(),
           "machine": platform.machine(), "defaults": {k: getattr(StorageConfig(), k) for k in (
               "retry_mode", "max_attempts", "connect_timeout_s", "read_timeout_s", "outage_s")}}
    try:
        for name, bucket, outage in (("baseline", "bench-base", None), ("short_outage", "bench-short", a.outage),
                                     ("permanent_outage", "bench-perm", 0)):
            if name in a.runs.split(","):
                res[name] = run_job(fs, proxy, bucket, a.images, a.size, outage, [], spill)
    finally:
        proxy.stop()
        server.stop()
    if res.get("baseline", {}).get("job_wall_s") and res.get("short_outage", {}).get("job_wall_s"):
        res["short_outage_delay_s"] = round(res["short_outage"]["job_wall_s"] - res["baseline"]["job_wall_s"], 1)
    print(json.dumps(res, indent=2))
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()

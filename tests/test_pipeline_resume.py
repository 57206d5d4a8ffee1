"""A job killed mid-way and rerun ends with exactly one ok LR per valid input and nothing half-written."""
from __future__ import annotations

import collections
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from irn_batch.storage.manifest import read_manifest
from irn_batch.pipeline.config import IngestConfig
from irn_batch.settings import load_config
from irn_batch.pipeline.ingest import run_ingest
from irn_batch.pipeline.verify import verify
from irn_batch.storage import StorageConfig

pytest_plugins = ["pipeline_fixtures"]
ROOT = Path(__file__).resolve().parents[1]


def test_killed_job_rerun_ends_with_one_ok_lr_per_valid_input(ray_session, s3_endpoint, tiny_ckpt_path):
    from pipeline_fixtures import make_bucket, write_images

    fs = make_bucket(s3_endpoint, "resume")
    sizes = write_images("resume/in", fs=fs, n=16, sizes=((64, 96), (96, 64), (80, 80)))
    fs.pipe_file("resume/in/broken.png", b"\x89PNG\r\n\x1a\n broken")
    args = ["input=s3://resume/in", "output=s3://resume/out", f"model={tiny_ckpt_path}",
            f"storage.endpoint_url={s3_endpoint}", "actors.pool_size=1", "actors.batch_size=1", "rows_per_part=2"]
    # The killed run is a separate driver process on the session's cluster, as `ray job submit` would run it.
    gcs = ray_session.get_runtime_context().gcs_address
    proc = subprocess.Popen([sys.executable, str(ROOT / "jobs" / "ingest.py"), *args, f"ray.address={gcs}"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # kill as soon as the first LR object exists (its manifest row may or may not be written yet)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            fs.invalidate_cache()
            if any(k.endswith(".png") for k in fs.find("resume/out")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the job finished (or failed) before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    fs.invalidate_cache()
    n_first = read_manifest(fs, "resume/out/_manifest").num_rows
    assert n_first < len(sizes) + 1, "the kill should land mid-way"

    summary = run_ingest(load_config(IngestConfig, None, args))
    assert summary["skipped"] >= n_first - 1 and summary["ok"] >= 1
    fs.invalidate_cache()
    rows = read_manifest(fs, "resume/out/_manifest").to_pylist()
    ok = collections.Counter(r["key"] for r in rows if r["status"] == "ok")
    assert ok == collections.Counter(dict.fromkeys(sizes, 1)), "exactly one ok row per valid input"
    assert [r["key"] for r in rows if r["status"] == "error"] == ["broken.png"]
    # the rerun's own rows account for every input, the ones it did not redo included
    rerun = sorted(r["key"] for r in rows if r["job_id"] == summary["job_id"])
    assert rerun == sorted([*sizes, "broken.png"])
    lrs = sorted(k.removeprefix("resume/out/") for k in fs.find("resume/out") if "/_manifest/" not in k)
    assert lrs == sorted(sizes)
    assert verify("s3://resume/out", StorageConfig(endpoint_url=s3_endpoint), out=io.StringIO())["problems"] == 0

"""A real Ray head (own ports and temp dir, stopped by PID) running ingest and restore via `ray job submit`."""
from __future__ import annotations

import os

import pytest

from irn_batch.storage.manifest import read_manifest

pytest_plugins = ["pipeline_fixtures"]


@pytest.fixture(scope="module")
def ray_head(test_env):
    """A head started with this process's environment (ray_head.start_ray_head)."""
    from ray_head import have_ray_cli, start_ray_head

    if not have_ray_cli():
        pytest.skip("the ray CLI is not installed next to this Python")
    with start_ray_head(dict(os.environ)) as head:
        yield head


def _submit(head, *args: str) -> str:
    from ray_head import submit

    r = submit(head, *args)
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

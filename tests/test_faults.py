"""Storage faults: a missing output bucket, an endpoint down from the start, a short and a permanent outage.

Outages are made with a loopback TCP proxy in front of the moto S3 server (tests/tcp_proxy.py): stopping it
refuses new connections and cuts open ones, as when an endpoint goes away. Every wait is a hang guard.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
from fsspec.implementations.local import LocalFileSystem

from irn_batch.storage.manifest import read_manifest
from irn_batch.pipeline.entry import job_main
from irn_batch.storage import StorageConfig, StorageUnavailable, atomic_write, open_fs

pytest_plugins = ["pipeline_fixtures"]
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
HANG_GUARD_S = 600


@pytest.fixture
def proxy(s3_endpoint):
    from tcp_proxy import LoopbackProxy

    p = LoopbackProxy(int(s3_endpoint.rsplit(":", 1)[1])).start()
    yield p
    p.stop()


def _images(fs, prefix: str, n: int) -> list[str]:
    from pipeline_fixtures import png_bytes, smooth_image

    keys = [f"img{i:02d}.png" for i in range(n)]
    for i, k in enumerate(keys):
        fs.pipe_file(f"{prefix}/{k}", png_bytes(smooth_image(16, 16, seed=i)))
    return keys


def _run(args: list[str]) -> tuple[threading.Thread, dict]:
    """job_main('ingest', args) in a thread; the dict gets its exit code."""
    box: dict = {}
    t = threading.Thread(target=lambda: box.update(rc=job_main("ingest", CONFIGS / "ingest.yaml", args)), daemon=True)
    t.start()
    return t, box


def _wait_for_lr(fs, prefix: str, job: threading.Thread) -> None:
    """Until the job has written its first LR object (then it is mid-job: most images are still to do)."""
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline and job.is_alive():
        fs.invalidate_cache()
        if fs.exists(prefix) and any(p.endswith(".png") for p in fs.find(prefix)):
            return
        time.sleep(0.05)
    pytest.fail("the job wrote no LR object (or ended before writing one)")


def _rows(fs, manifest: str, spill: Path | None = None) -> list[dict]:
    fs.invalidate_cache()
    tables = [read_manifest(fs, manifest)]
    if spill is not None and spill.exists():
        tables.append(read_manifest(LocalFileSystem(), str(spill)))
    return pa.concat_tables(tables, promote_options="default").to_pylist()


def test_with_retry_gives_up_after_the_outage_budget_then_fails_fast(proxy):
    proxy.stop()  # nothing listens on its port now
    cfg = StorageConfig(endpoint_url=proxy.url, outage_s=1.0, max_attempts=1, connect_timeout_s=1.0)
    fs, path = open_fs("s3://nowhere/x", cfg)
    with pytest.raises(StorageUnavailable, match="storage unreachable .*outage_s=1"):
        atomic_write(fs, f"{path}/a", b"1")
    with pytest.raises(StorageUnavailable, match="not tried"):  # given up on: no second wait
        atomic_write(fs, f"{path}/b", b"1")


def test_missing_output_bucket_fails_before_any_work(s3_endpoint, tiny_ckpt_path, capsys):
    from pipeline_fixtures import make_bucket

    fs = make_bucket(s3_endpoint, "faults-in")
    _images(fs, "faults-in/raw", 2)
    rc = job_main("ingest", CONFIGS / "ingest.yaml", [
        "input=s3://faults-in/raw", "output=s3://no-such-bucket-faults/lr", f"model={tiny_ckpt_path}",
        f"storage.endpoint_url={s3_endpoint}"])
    out, err = capsys.readouterr()
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "no-such-bucket-faults" in err and "Traceback" not in err
    assert "== ingest summary ==" not in out  # no image was processed
    fs.invalidate_cache()
    assert not fs.exists("no-such-bucket-faults")


def test_endpoint_down_from_the_start_is_one_line_exit_2(proxy, tiny_ckpt_path, capsys):
    proxy.stop()
    rc = job_main("ingest", CONFIGS / "ingest.yaml", [
        "input=s3://faults-in/raw", "output=s3://faults-out/lr", f"model={tiny_ckpt_path}",
        f"storage.endpoint_url={proxy.url}", "storage.outage_s=2"])
    out, err = capsys.readouterr()
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "storage unreachable" in err and "Traceback" not in err


def test_short_outage_mid_job_is_retried_and_nothing_is_lost(ray_session, s3_endpoint, proxy, tiny_ckpt_path,
                                                              capsys):
    from pipeline_fixtures import make_bucket

    fs = make_bucket(s3_endpoint, "faults-short")
    keys = _images(fs, "faults-short/raw", 48)
    job, box = _run(["input=s3://faults-short/raw", "output=s3://faults-short/lr", f"model={tiny_ckpt_path}",
                     f"storage.endpoint_url={proxy.url}", "actors.pool_size=1", "actors.batch_size=1",
                     "progress_s=1", "rows_per_part=8"])  # the default storage.outage_s (60 s)
    _wait_for_lr(fs, "faults-short/lr", job)
    assert job.is_alive()  # the outage below happens mid-job
    proxy.stop()
    time.sleep(5)  # the outage: reads, LR writes and manifest writes all meet refused connections
    proxy.start()
    job.join(HANG_GUARD_S)
    assert not job.is_alive() and box["rc"] == 0, capsys.readouterr().err[-2000:]
    rows = _rows(fs, "faults-short/lr/_manifest")
    assert sorted(r["key"] for r in rows) == keys and all(r["status"] == "ok" for r in rows)
    for k in keys:
        assert fs.exists(f"faults-short/lr/{k}")


def test_permanent_outage_ends_the_job_with_exit_2_and_spills_what_was_done(ray_session, s3_endpoint, proxy,
                                                                          tiny_ckpt_path, tmp_path, capsys):
    from pipeline_fixtures import make_bucket

    fs = make_bucket(s3_endpoint, "faults-perm")
    keys = _images(fs, "faults-perm/raw", 48)
    spill = tmp_path / "spill"
    job, box = _run(["input=s3://faults-perm/raw", "output=s3://faults-perm/lr", f"model={tiny_ckpt_path}",
                     f"storage.endpoint_url={proxy.url}", "actors.pool_size=1", "actors.batch_size=1",
                     "progress_s=1", "rows_per_part=4", "storage.outage_s=3", f"storage.spill_dir={spill}"])
    _wait_for_lr(fs, "faults-perm/lr", job)
    assert job.is_alive()
    proxy.stop()  # for good
    job.join(HANG_GUARD_S)
    out, err = capsys.readouterr()
    assert not job.is_alive() and box.get("rc") == 2, err[-2000:]
    line = err.strip().splitlines()[-1]
    assert "storage unreachable" in line and str(spill) in line and "Traceback" not in err
    assert "== ingest summary ==" in out
    assert sorted(spill.glob("*.parquet"))  # named in the line by folder and job id
    rows = _rows(fs, "faults-perm/lr/_manifest", spill)
    # every input has a row, and every LR object in the store has an ok row
    assert sorted(r["key"] for r in rows) == keys
    ok = {r["key"] for r in rows if r["status"] == "ok"}
    fs.invalidate_cache()
    written = {p.rsplit("/", 1)[-1] for p in fs.find("faults-perm/lr") if p.endswith(".png")}
    assert written
    for r in rows:  # an LR whose PUT landed but whose answer was cut by the outage is an error row of its write
        assert r["key"] not in written or r["status"] == "ok" or r["error"].startswith("write:")
    assert all("storage unreachable" in r["error"] for r in rows if r["status"] != "ok")

"""Ingest through Ray of inputs that were lost or misread before (issue 10, failures 1, 2, 3, 7, 10):
camera-style upper-case suffixes, AVIF, names with '::', '#', '?', '%', spaces and both Unicode forms,
S3 keys with '//', a changed source, a transient write error that a plain rerun repairs."""
from __future__ import annotations

import io
import shutil

from PIL import Image, features

from irn_batch.storage.manifest import read_manifest
from irn_batch.pipeline.config import IngestConfig
from irn_batch.settings import load_config
from irn_batch.pipeline.ingest import run_ingest
from irn_batch.pipeline.verify import verify
from irn_batch.storage import StorageConfig, open_fs

pytest_plugins = ["pipeline_fixtures"]


def _encoded(seed: int, fmt: str, h: int = 16, w: int = 16) -> bytes:
    from pipeline_fixtures import smooth_image

    buf = io.BytesIO()
    Image.fromarray(smooth_image(h, w, seed)).save(buf, format=fmt)
    return buf.getvalue()


def _latest(fs, m, job_id):
    return {r["key"]: r for r in read_manifest(fs, m).to_pylist() if r["job_id"] == job_id}


def test_every_local_input_is_ingested_as_listed_and_a_rerun_finishes_the_job(ray_session, tmp_path, tiny_ckpt_path):
    files = {"IMG_0001.JPG": _encoded(1, "JPEG"), "lower.jpg": _encoded(2, "JPEG"), "plain.png": _encoded(3, "PNG"),
             "colon::double.png": _encoded(4, "PNG"), "sp ace#?%.png": _encoded(5, "PNG"),
             "cafe\u0301.png": _encoded(6, "PNG"), "caf\u00e9.png": _encoded(7, "PNG"),
             "corrupt.png": b"\x89PNG\r\n\x1a\n not really", "blocked.png": _encoded(8, "PNG"),
             "notes.txt": b"not an image"}
    if features.check("avif"):
        files["pic.avif"] = _encoded(9, "AVIF")
    for name, data in files.items():
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / name).write_bytes(data)
    # a folder where blocked.png's LR goes: its write fails (a storage error, not the input's fault)
    (tmp_path / "lr" / "blocked.png").mkdir(parents=True)
    (tmp_path / "lr" / "blocked.png" / "x").write_bytes(b"x")
    cfg = load_config(IngestConfig, None, [f"input={tmp_path / 'in'}", f"output={tmp_path / 'lr'}",
                                           f"model={tiny_ckpt_path}", "actors.pool_size=1", "actors.batch_size=4"])
    first = run_ingest(cfg)
    images = len(files) - 1
    good = images - 3  # the NFC twin of cafe, corrupt.png, blocked.png
    assert (first["total"], first["ok"], first["error"], first["left_out"]) == (images, good, 3, 1)
    assert first["no_output"] == 3
    fs, m = open_fs(str(tmp_path / "lr" / "_manifest"))
    rows = _latest(fs, m, first["job_id"])
    assert set(rows) == set(files) - {"notes.txt"}
    assert rows["colon::double.png"]["status"] == "ok" and rows["IMG_0001.JPG"]["status"] == "ok"
    assert rows["cafe\u0301.png"]["status"] == "ok" and "already used by input" in rows["caf\u00e9.png"]["error"]
    assert {k: rows[k]["error_kind"] for k in ("caf\u00e9.png", "corrupt.png", "blocked.png")} == {
        "caf\u00e9.png": "input", "corrupt.png": "input", "blocked.png": "transient"}
    for key, lr in (("colon::double.png", "colon:_:double.png"), ("IMG_0001.JPG", "IMG_0001.png"),
                    ("sp ace#?%.png", "sp ace#?%.png"), ("cafe\u0301.png", "caf\u00e9.png")):
        assert rows[key]["lr_uri"] == f"{tmp_path}/lr/{lr}"
        assert Image.open(tmp_path / "lr" / lr).size == (8, 8)
    if "pic.avif" in files:
        assert rows["pic.avif"]["status"] == "ok" and (tmp_path / "lr" / "pic.png").is_file()

    # the source changes and the storage problem goes away: a plain rerun redoes both, keeps the rest
    (tmp_path / "in" / "plain.png").write_bytes(_encoded(10, "PNG", h=12, w=20))
    shutil.rmtree(tmp_path / "lr" / "blocked.png")
    second = run_ingest(cfg)
    assert (second["ok"], second["error"], second["skipped"], second["no_output"]) == (2, 1, images - 3, 2)
    rows2 = _latest(fs, m, second["job_id"])
    plain = rows2["plain.png"]
    assert plain["status"] == "ok" and (plain["width"], plain["height"]) == (20, 12)
    assert Image.open(tmp_path / "lr" / "plain.png").size == (10, 6)
    assert rows2["blocked.png"]["status"] == "ok" and rows2["corrupt.png"]["status"] == "skipped"
    history = [r for r in read_manifest(fs, m).to_pylist() if r["key"] == "plain.png" and r["status"] == "ok"]
    assert len(history) == 2 and history[0]["source_sha256"] != history[1]["source_sha256"]
    res = verify(str(tmp_path / "lr"), StorageConfig(), out=io.StringIO())
    assert (res["checked"], res["problems"], res["error_rows"]) == (images - 2, 0, 2)

    # one file as the input: its key is its file name
    single = load_config(IngestConfig, None, [f"input={tmp_path / 'in' / 'IMG_0001.JPG'}",
                                              f"output={tmp_path / 'one'}", f"model={tiny_ckpt_path}",
                                              "actors.pool_size=1"])
    out = run_ingest(single)
    assert (out["total"], out["ok"]) == (1, 1) and (tmp_path / "one" / "IMG_0001.png").is_file()


def test_s3_keys_with_empty_segments_and_colons_are_ingested(ray_session, s3_endpoint, tiny_ckpt_path):
    from pipeline_fixtures import make_bucket

    fs = make_bucket(s3_endpoint, "keys-in")
    names = ["a.png", "double//slash.png", "colon::double.png"]
    for i, name in enumerate(names):
        fs.pipe_file(f"keys-in/raw/{name}", _encoded(i, "PNG"))
    storage = [f"storage.endpoint_url={s3_endpoint}"]
    cfg = load_config(IngestConfig, None, ["input=s3://keys-in/raw", "output=s3://keys-in/lr", *storage,
                                           f"model={tiny_ckpt_path}", "actors.pool_size=1", "actors.batch_size=4"])
    summary = run_ingest(cfg)
    assert (summary["total"], summary["ok"], summary["error"]) == (3, 3, 0)
    fs.invalidate_cache()
    rows = {r["key"]: r for r in read_manifest(fs, "keys-in/lr/_manifest").to_pylist()}
    assert rows["double//slash.png"]["source_uri"] == "s3://keys-in/raw/double//slash.png"
    assert rows["double//slash.png"]["lr_uri"] == "s3://keys-in/lr/double/slash.png"
    assert all(r["source_version"] for r in rows.values())  # the ETag
    assert sorted(fs.find("keys-in/lr", withdirs=False)) == sorted(
        ["keys-in/lr/a.png", "keys-in/lr/double/slash.png", "keys-in/lr/colon:_:double.png",
         *[p for p in fs.find("keys-in/lr/_manifest")]])
    assert verify("s3://keys-in/lr", StorageConfig(endpoint_url=s3_endpoint), out=io.StringIO())["problems"] == 0


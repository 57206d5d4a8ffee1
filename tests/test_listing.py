"""Listing and planning an ingest (no Ray): every object accounted for, keys read as listed, reruns that
notice changed sources and retry transient errors (issue 10, failures 1, 2, 3, 7, 10)."""
from __future__ import annotations

import io
import json
import os

import pytest
from PIL import Image

from irn_batch.storage.manifest import INGEST_SCHEMA, empty_row, to_table, write_part
from irn_batch.pipeline.config import IngestConfig
from irn_batch.settings import load_config
from irn_batch.pipeline.entry import job_main
from irn_batch.pipeline.ingest import run_ingest
from irn_batch.pipeline.ingest_plan import plan
from irn_batch.pipeline.read import read_stage
from irn_batch.storage import (IMAGE_SUFFIXES, StorageConfig, StorageError, list_objects, open_fs, output_key,
                               stat_object)

pytest_plugins = ["pipeline_fixtures"]

MODEL = "irn-x2-0000000000000000"


def _files(root, names, data=b"x"):
    for name in names:
        p = os.path.join(str(root), name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data if isinstance(data, bytes) else data(name))


def _cfg(tmp_path, *extra, inp=None):
    return load_config(IngestConfig, None, [f"input={inp or tmp_path / 'in'}", f"output={tmp_path / 'lr'}", *extra])


def _items(p):
    return {r["key"]: r for r in p.items.to_pylist()}


def test_image_suffixes_cover_every_format_the_decoder_reads():
    from irn_batch.io.decode import _FORMATS

    formats = set(_FORMATS) | ({"MPO"} if "JPEG" in _FORMATS else set())  # Pillow's JPEG opener returns MPOs
    registered = Image.registered_extensions()
    wanted = {ext for ext, fmt in registered.items() if fmt in formats}
    assert wanted <= set(IMAGE_SUFFIXES), f"not listed by default: {sorted(wanted - set(IMAGE_SUFFIXES))}"
    assert {registered.get(s) for s in IMAGE_SUFFIXES} <= formats, "a default suffix the decoder refuses"
    assert ".avif" in IMAGE_SUFFIXES and ".jfif" in IMAGE_SUFFIXES


def test_patterns_ignore_case_and_left_out_objects_are_counted(tmp_path):
    _files(tmp_path / "in", ["IMG_0001.JPG", "lower.jpg", "pic.AVIF", "sub/scan.Tiff", "notes.txt", "raw.CR2",
                             "_manifest/x.parquet", "sub/_manifest/y.png",
                             ".a.png.0123456789abcdef0123456789abcdef.tmp"])
    fs, root = open_fs(str(tmp_path / "in"))
    listing = list_objects(fs, root)
    assert listing.keys == ["IMG_0001.JPG", "lower.jpg", "pic.AVIF", "sub/_manifest/y.png", "sub/scan.Tiff"]
    assert listing.left_out == ["notes.txt", "raw.CR2"] and listing.internal == 2
    assert len(listing.sizes) == len(listing.versions) == 5 and listing.sizes[0] == 1
    assert list_objects(fs, root, ["*.jpg"], match_case=True).keys == ["lower.jpg"]
    assert list_objects(fs, root, ["*.jpg"], ["IMG_*"]).keys == ["lower.jpg"]
    # a folder of camera files alone is a job, not "0 inputs"
    _files(tmp_path / "cam", ["IMG_0001.JPG", "IMG_0002.JPG"])
    p = plan(_cfg(tmp_path, inp=tmp_path / "cam"), MODEL)
    assert sorted(_items(p)) == ["IMG_0001.JPG", "IMG_0002.JPG"]
    assert _items(p)["IMG_0001.JPG"]["lr_uri"] == f"{tmp_path}/lr/IMG_0001"


def test_inputs_that_yield_no_work_are_one_line_errors_with_exit_2(tmp_path, tiny_ckpt_path, capsys):
    _files(tmp_path / "in", ["notes.txt", "a.raw", "b.raw"])
    os.makedirs(tmp_path / "empty")
    with pytest.raises(StorageError, match=r"takes none of its 3 objects \(2 \.raw, 1 \.txt\); dry_run=true"):
        plan(_cfg(tmp_path), MODEL)
    with pytest.raises(StorageError, match="the input is one object and include="):
        plan(_cfg(tmp_path, inp=tmp_path / "in" / "notes.txt"), MODEL)
    with pytest.raises(StorageError, match="holds no objects"):
        plan(_cfg(tmp_path, inp=tmp_path / "empty"), MODEL)
    argv = [f"input={tmp_path / 'in'}", f"output={tmp_path / 'lr'}", f"model={tiny_ckpt_path}", "fail_on_error=true"]
    assert job_main("ingest", tmp_path / "none.yaml", argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "takes none of its 3 objects" in err
    assert not (tmp_path / "lr").exists()


def test_a_single_file_input_is_one_input_named_by_its_file_name(tmp_path):
    _files(tmp_path / "in", ["deep/IMG_0001.JPG", "deep/other.png"])
    p = plan(_cfg(tmp_path, inp=tmp_path / "in" / "deep" / "IMG_0001.JPG"), MODEL)
    assert p.listing.single and list(_items(p)) == ["IMG_0001.JPG"]
    item = _items(p)["IMG_0001.JPG"]
    assert item["source_uri"] == f"{tmp_path}/in/deep/IMG_0001.JPG" and item["lr_uri"] == f"{tmp_path}/lr/IMG_0001"


def test_dry_run_prints_the_plan_and_does_no_work(tmp_path, tiny_ckpt_path):
    _files(tmp_path / "in", ["a.png", "B.JPG", "notes.txt", "sub/readme.md"])
    lines = []
    out = run_ingest(_cfg(tmp_path, "dry_run=true", f"model={tiny_ckpt_path}"), log=lines.append)
    assert (out["total"], out["ingest"], out["left_out"], out["error"]) == (2, 2, 2, 0)
    text = "\n".join(lines)
    assert "left out notes.txt" in " ".join(text.split()) and "sub/readme.md" in text
    assert "2 objects left out by include/exclude (1 .txt, 1 .md)" in text
    assert f"a.png  ->  {tmp_path}/lr/a" in text and f"B.JPG  ->  {tmp_path}/lr/B" in text
    assert not (tmp_path / "lr").exists()


ODD = ["colon::double.png", "hash#1.png", "q?.png", "pct%41.png", "sp ace.png", "back\\slash.png",
       "caf\u00e9.png", "cafe\u0301.png", "a:b.png", "C:.png", "ctl\u202e.png", "sub/..png"]


def test_odd_local_names_are_read_byte_for_byte_and_only_lr_keys_are_made_safe(tmp_path):
    _files(tmp_path / "in", ODD, data=lambda name: name.encode("utf-8"))
    p = plan(_cfg(tmp_path), MODEL)
    items = _items(p)
    assert sorted(items) == sorted(ODD)
    # NFD sorts first and keeps the LR name; the NFC twin gets an error row naming the clash
    assert items["cafe\u0301.png"]["lr_uri"] == f"{tmp_path}/lr/caf\u00e9"
    assert "already used by input 'cafe\u0301.png'" in items["caf\u00e9.png"]["pre_error"]
    assert items["colon::double.png"]["lr_uri"] == f"{tmp_path}/lr/colon:_:double"
    assert items["back\\slash.png"]["lr_uri"] == f"{tmp_path}/lr/back/slash"
    assert items["ctl\u202e.png"]["lr_uri"] == f"{tmp_path}/lr/ctl_"
    assert items["C:.png"]["lr_uri"] == f"{tmp_path}/lr/C_"  # the stem is made safe too
    read = read_stage(p.items, StorageConfig(), 1 << 20, "source_uri").to_pylist()
    for r in read:
        if r["key"] == "caf\u00e9.png":
            continue
        assert r["pre_error"] is None and r["data"] == r["key"].encode("utf-8"), r["key"]
        assert r["lr_uri"].startswith(f"{tmp_path}/lr/")


def test_s3_listing_returns_keys_a_folder_walk_loses(s3_endpoint):
    from pipeline_fixtures import make_bucket

    fs = make_bucket(s3_endpoint, "listing")
    names = ["a.png", "double//slash.png", "/lead.png", "colon::double.png", "x#?%.png", "cafe\u0301.png",
             "caf\u00e9.png", "notes.txt", "dir/"]
    for k in names:
        fs.pipe_file(f"listing/raw/{k}", k.encode() if k != "dir/" else b"")
    storage = StorageConfig(endpoint_url=s3_endpoint)
    cfg = load_config(IngestConfig, None, ["input=s3://listing/raw", "output=s3://listing/lr",
                                           f"storage.endpoint_url={s3_endpoint}"])
    p = plan(cfg, MODEL)
    items = _items(p)
    assert sorted(items) == sorted(n for n in names if n.endswith(".png"))
    assert p.listing.left_out == ["notes.txt"] and p.listing.internal == 1  # the folder marker
    assert items["double//slash.png"]["source_uri"] == "s3://listing/raw/double//slash.png"
    assert items["double//slash.png"]["lr_uri"] == "s3://listing/lr/double/slash"
    assert items["/lead.png"]["lr_uri"] == "s3://listing/lr/lead"
    assert all(r["source_version"] for r in items.values())  # the ETag
    read = read_stage(p.items, storage, 1 << 20, "source_uri").to_pylist()
    got = {r["key"]: r["data"] for r in read if r["pre_error"] is None}
    assert got == {k: k.encode() for k in items if k != "caf\u00e9.png"}


def _previous(tmp_path, rows):
    fs, m = open_fs(str(tmp_path / "lr" / "_manifest"))
    write_part(fs, m, "ingest-old", 0, to_table([empty_row(INGEST_SCHEMA, job_id="ingest-old", **r) for r in rows],
                                                INGEST_SCHEMA))


def test_rerun_redoes_changed_sources_and_transient_errors(tmp_path):
    names = ["same.png", "new_bytes.png", "touched.png", "decode.png", "fixed.png", "write.png", "old_read.png",
             "old_worker.png", "old_decode.png"]
    _files(tmp_path / "in", names, data=b"12345")
    fs, root = open_fs(str(tmp_path / "in"))
    src, lr = f"{tmp_path}/in", f"{tmp_path}/lr"
    version = {n: stat_object(fs, f"{root}/{n}")[1] for n in names}

    def ok(name, **kw):
        return dict(key=name, source_uri=f"{src}/{name}", lr_uri=f"{lr}/{name}", lr_sha256="s", model_id=MODEL,
                    status="ok", source_bytes=5, source_version=version[name], finished_at=1.0, **kw)

    def err(name, msg, kind=None, **kw):
        return dict(key=name, source_uri=f"{src}/{name}", status="error", error=msg, error_kind=kind,
                    source_version=version[name], finished_at=1.0, **kw)

    rows = [ok("same.png"), ok("new_bytes.png"), ok("touched.png"), err("decode.png", "decode: corrupt", "input"),
            err("fixed.png", "decode: corrupt", "input"),
            err("write.png", "write: EndpointConnectionError", "transient"),
            # rows of manifests written before error_kind existed
            err("old_read.png", "read: ReadTimeoutError"), err("old_worker.png", "worker: the process died"),
            err("old_decode.png", "decode: corrupt")]
    _previous(tmp_path, rows)
    _files(tmp_path / "in", ["new_bytes.png"], data=b"123456")  # another size
    os.utime(tmp_path / "in" / "touched.png", ns=(1, 1))  # same size, another mtime
    _files(tmp_path / "in", ["fixed.png"], data=b"54321")  # the user replaced the broken file
    os.utime(tmp_path / "in" / "fixed.png", ns=(2, 2))
    p = plan(_cfg(tmp_path), MODEL)
    items, left = _items(p), {r["key"]: r for r in p.left.to_pylist()}
    assert sorted(left) == ["decode.png", "old_decode.png"] and left["old_decode.png"]["prev_kind"] == "input"
    assert {k: r["check_sha"] for k, r in items.items()} == {
        "same.png": "s", "new_bytes.png": None, "touched.png": None, "fixed.png": None, "write.png": None,
        "old_read.png": None, "old_worker.png": None}
    assert items["touched.png"]["source_version"] == "mtime_ns:1"
    p = plan(_cfg(tmp_path, "retry_errors=true"), MODEL)
    assert p.left.num_rows == 0 and p.items.num_rows == len(names)


def test_old_ok_rows_without_a_version_are_compared_by_size(tmp_path):
    _files(tmp_path / "in", ["a.png", "b.png"], data=b"12345")
    _previous(tmp_path, [dict(key=k, source_uri=f"{tmp_path}/in/{k}", lr_uri=f"{tmp_path}/lr/{k}", lr_sha256="s",
                              model_id=MODEL, status="ok", source_bytes=n, finished_at=1.0)
                         for k, n in (("a.png", 5), ("b.png", 4))])
    items = _items(plan(_cfg(tmp_path), MODEL))
    assert (items["a.png"]["check_sha"], items["b.png"]["check_sha"]) == ("s", None)


def test_explicit_keys_are_read_as_given_and_checked_for_changes(tmp_path):
    _files(tmp_path / "in", ["a//b.png"], data=b"ab")
    keys = ["a//b.png", "missing.png", "../up.png"]
    p = plan(_cfg(tmp_path, f"keys={json.dumps(keys)}"), MODEL)
    items = _items(p)
    assert items["a//b.png"]["lr_uri"] == f"{tmp_path}/lr/a/b" and items["a//b.png"]["source_version"]
    assert items["missing.png"]["source_version"] is None and items["../up.png"]["pre_error"].startswith("key: ")
    read = {r["key"]: r for r in read_stage(p.items, StorageConfig(), 100, "source_uri").to_pylist()}
    assert read["a//b.png"]["data"] == b"ab"
    assert (read["missing.png"]["pre_error"], read["missing.png"]["error_kind"]) == ("read: object not found",
                                                                                    "transient")
    assert read["../up.png"]["data"] is None and read["../up.png"]["error_kind"] == "input"


def test_output_keys_never_leave_their_prefix():
    assert output_key("a//b.png") == "a/b.png" and output_key("/x/./y.png") == "x/y.png"
    assert output_key("x::/etc/passwd") == "x:_:/etc/passwd"  # fsspec would read '::' as URL chaining
    for bad in ("..", "a/../b.png", "a/\u2025/b.png", "a/\uff0e\uff0e/b", "//", "./."):
        with pytest.raises(StorageError):
            output_key(bad)


def test_verify_counts_only_the_latest_attempt_per_input(tmp_path):
    from irn_batch.pipeline.verify import verify
    from irn_batch.storage import atomic_write, sha256_hex

    fs, root = open_fs(str(tmp_path / "lr"))
    atomic_write(fs, f"{root}/a.png", b"a")
    rows = [dict(key="a.png", source_uri="in/a.png", status="error", error="write: x", finished_at=1.0),
            dict(key="a.png", source_uri="in/a.png", status="ok", lr_uri=f"{root}/a.png", lr_bytes=1,
                 lr_sha256=sha256_hex(b"a"), finished_at=2.0),
            dict(key="b.png", source_uri="in/b.png", status="ok", lr_uri=f"{root}/b.png", lr_bytes=1,
                 lr_sha256="0", finished_at=1.0),
            dict(key="b.png", source_uri="in/b.png", status="error", error="decode: x", finished_at=2.0)]
    _previous(tmp_path, rows)
    res = verify(root, StorageConfig(), out=io.StringIO())
    # a.png: the fixed error is history; b.png: its latest attempt failed, its older LR is not checked
    assert (res["checked"], res["problems"], res["error_rows"]) == (1, 0, 1)


def test_summary_reports_left_out_and_inputs_without_output():
    from irn_batch.pipeline.job import Summary

    s = Summary("ingest", total=3, left_out=2)
    s.add({"status": "error", "source_uri": "a", "error": "x"}, None, None)
    s.no_output = 1
    out = io.StringIO()
    s.finish()
    s.print(out)
    assert "left_out       2" in out.getvalue() and "no_output      1" in out.getvalue()

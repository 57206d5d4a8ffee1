"""Ingest planning (no Ray): naming, clashing LR keys, and what a rerun checks, redoes or leaves alone."""
from __future__ import annotations

import json

from irn_batch.manifest import INGEST_SCHEMA, empty_row, to_table, write_part
from irn_batch.pipeline.config import IngestConfig, load_config
from irn_batch.pipeline.ingest import plan
from irn_batch.storage import open_fs

MODEL = "irn-x2-0000000000000000"


def _plan(tmp_path, keys, previous=(), *extra):
    fs, m = open_fs(str(tmp_path / "lr" / "_manifest"))
    if previous:
        write_part(fs, m, "ingest-old", 0, to_table([empty_row(INGEST_SCHEMA, job_id="ingest-old", **p)
                                                     for p in previous], INGEST_SCHEMA))
    cfg = load_config(IngestConfig, None, [f"input={tmp_path / 'in'}", f"output={tmp_path / 'lr'}",
                                           f"keys={json.dumps(keys)}", *extra])
    items, left, _, _ = plan(cfg, MODEL)
    return {r["key"]: r for r in items.to_pylist()}, {r["key"]: r for r in left.to_pylist()}


def test_keys_are_named_and_clashes_go_to_the_first_input(tmp_path):
    items, left = _plan(tmp_path, ["a.png", "sub/b.jpg", "a.jpg", "../up.png"])
    assert list(items) == ["a.png", "sub/b.jpg", "a.jpg", "../up.png"] and not left
    assert items["sub/b.jpg"]["lr_uri"] == f"{tmp_path}/lr/sub/b.png"
    assert items["sub/b.jpg"]["source_uri"] == f"{tmp_path}/in/sub/b.jpg" and items["a.png"]["pre_error"] is None
    assert "already used by input 'a.png'" in items["a.jpg"]["pre_error"] and items["a.jpg"]["lr_uri"] is None
    assert items["../up.png"]["pre_error"].startswith("key: ") and items["../up.png"]["lr_uri"] is None


def test_rerun_checks_intact_ok_rows_and_leaves_old_errors(tmp_path):
    lr = f"{tmp_path}/lr"
    src = f"{tmp_path}/in"
    previous = [
        dict(key="ok.png", source_uri=f"{src}/ok.png", lr_uri=f"{lr}/ok.png", lr_sha256="s1", model_id=MODEL,
             status="ok", finished_at=1.0),
        # a later receipt must not hide the ok row
        dict(key="ok.png", source_uri=f"{src}/ok.png", status="skipped", finished_at=5.0),
        dict(key="other.png", source_uri=f"{src}/other.png", lr_uri=f"{lr}/other.png", lr_sha256="s2",
             model_id="irn-x2-ffffffffffffffff", status="ok", finished_at=1.0),
        dict(key="bad.png", source_uri=f"{src}/bad.png", status="error", error="decode: corrupt", finished_at=1.0),
        # an error followed by a success: the success counts
        dict(key="fixed.png", source_uri=f"{src}/fixed.png", status="error", error="x", finished_at=1.0),
        dict(key="fixed.png", source_uri=f"{src}/fixed.png", lr_uri=f"{lr}/fixed.png", lr_sha256="s3",
             model_id=MODEL, status="ok", finished_at=2.0),
    ]
    keys = ["ok.png", "other.png", "bad.png", "fixed.png", "new.png"]
    items, left = _plan(tmp_path, keys, previous)
    assert sorted(items) == ["fixed.png", "new.png", "ok.png", "other.png"]
    assert (items["ok.png"]["check_uri"], items["ok.png"]["check_sha"]) == (f"{lr}/ok.png", "s1")
    assert items["fixed.png"]["check_sha"] == "s3"
    assert items["other.png"]["check_sha"] is None and items["new.png"]["check_sha"] is None  # model changed
    assert list(left) == ["bad.png"] and left["bad.png"]["prev_error"] == "decode: corrupt"
    items, left = _plan(tmp_path, keys, (), "retry_errors=true")
    assert "bad.png" in items and items["bad.png"]["check_sha"] is None and not left

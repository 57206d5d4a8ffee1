"""Job planning (no Ray): ingest naming, clashing keys and what a rerun checks, redoes or leaves alone;
restore selection from a manifest or an LR prefix."""
from __future__ import annotations

import json

import pytest

from irn_batch.storage.manifest import INGEST_SCHEMA, RESTORE_SCHEMA, empty_row, to_table, write_part
from irn_batch.pipeline.config import IngestConfig, RestoreConfig
from irn_batch.settings import load_config
from irn_batch.pipeline.ingest_plan import plan
from irn_batch.pipeline.restore import RestoreError, output_settings
from irn_batch.pipeline.restore import plan as restore_plan
from irn_batch.storage import StorageError, open_fs

MODEL = "irn-x2-0000000000000000"


def _plan(tmp_path, keys, previous=(), *extra):
    fs, m = open_fs(str(tmp_path / "lr" / "_manifest"))
    if previous:
        write_part(fs, m, "ingest-old", 0, to_table([empty_row(INGEST_SCHEMA, job_id="ingest-old", **p)
                                                     for p in previous], INGEST_SCHEMA))
    cfg = load_config(IngestConfig, None, [f"input={tmp_path / 'in'}", f"output={tmp_path / 'lr'}",
                                           f"keys={json.dumps(keys)}", *extra])
    p = plan(cfg, MODEL)
    items, left = p.items, p.left
    return {r["key"]: r for r in items.to_pylist()}, {r["key"]: r for r in left.to_pylist()}


def test_keys_are_named_and_a_clash_keeps_the_second_inputs_suffix(tmp_path):
    items, left = _plan(tmp_path, ["a.png", "sub/b.jpg", "a.jpg", "../up.png"])
    assert list(items) == ["a.png", "sub/b.jpg", "a.jpg", "../up.png"] and not left
    assert items["sub/b.jpg"]["lr_uri"] == f"{tmp_path}/lr/sub/b"  # the LR stem: the actor adds the suffix
    assert items["sub/b.jpg"]["source_uri"] == f"{tmp_path}/in/sub/b.jpg" and items["a.png"]["pre_error"] is None
    # a.jpg beside a.png (issue 13): the first keeps the stem, the second keeps its suffix in its own
    assert items["a.png"]["lr_uri"] == f"{tmp_path}/lr/a"
    assert items["a.jpg"]["pre_error"] is None and items["a.jpg"]["lr_uri"] == f"{tmp_path}/lr/a.jpg"
    assert items["../up.png"]["pre_error"].startswith("key: ") and items["../up.png"]["lr_uri"] is None


def test_a_missing_input_prefix_is_an_error_not_an_empty_job(tmp_path):
    cfg = load_config(IngestConfig, None, [f"input={tmp_path / 'nope'}", f"output={tmp_path / 'lr'}"])
    with pytest.raises(StorageError, match="nope: cannot list the input prefix"):
        plan(cfg, MODEL)


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


def _restore_plan(tmp_path, *extra, model=MODEL):
    cfg = load_config(RestoreConfig, None, [f"input={tmp_path / 'lr'}", f"output={tmp_path / 'hr'}", *extra])
    items, _ = restore_plan(cfg, model, output_settings(cfg, 0.0))
    return {r["key"]: r for r in items.to_pylist()}


def test_restore_takes_the_latest_ok_row_per_input_and_filters(tmp_path):
    lr, src = f"{tmp_path}/lr", f"{tmp_path}/in"

    def ok(key, t, seed=1):
        return dict(key=key, source_uri=f"{src}/{key}", lr_uri=f"{lr}/{key}", lr_sha256=f"sha-{key}-{t}",
                    model_id=MODEL, z_seed=seed, width=10, height=8, status="ok", finished_at=t)

    fs, m = open_fs(f"{lr}/_manifest")
    rows = [ok("b.png", 1.0), ok("b.png", 3.0, seed=7), ok("a.png", 1.0), ok("sub/c.png", 1.0),
            dict(key="sub/d.png", source_uri=f"{src}/sub/d.png", status="error", error="x", finished_at=1.0),
            dict(key="a.png", source_uri=f"{src}/a.png", status="skipped", finished_at=9.0)]
    write_part(fs, m, "ingest-old", 0, to_table([empty_row(INGEST_SCHEMA, job_id="j", **r) for r in rows],
                                                INGEST_SCHEMA))
    items = _restore_plan(tmp_path)
    assert list(items) == ["a.png", "b.png", "sub/c.png"]  # sorted; the error row is not restorable
    assert (items["b.png"]["lr_sha256"], items["b.png"]["z_seed"]) == ("sha-b.png-3.0", 7)  # latest attempt
    assert items["a.png"]["out_uri"] == f"{tmp_path}/hr/a.png" and items["a.png"]["pre_error"] is None
    assert list(_restore_plan(tmp_path, "glob=sub/*")) == ["sub/c.png"]
    assert list(_restore_plan(tmp_path, 'keys=["b.png","zz.png"]')) == ["b.png"]
    assert list(_restore_plan(tmp_path, "limit=2")) == ["a.png", "b.png"]
    assert _restore_plan(tmp_path, "format=webp")["sub/c.png"]["out_uri"] == f"{tmp_path}/hr/sub/c.webp"
    with pytest.raises(RestoreError, match="made by irn-x2-0000000000000000 but the loaded model is other"):
        _restore_plan(tmp_path, model="other")


def test_restore_from_a_bare_lr_prefix_then_clashing_output_keys(tmp_path):
    (tmp_path / "lr" / "s").mkdir(parents=True)
    for name in ("a.png", "a.jpg.png", "s/b.png", "notes.txt"):
        (tmp_path / "lr" / name).write_bytes(b"x")
    items = _restore_plan(tmp_path, "format=jpeg")
    assert list(items) == ["a.jpg.png", "a.png", "s/b.png"]  # PNGs only, no manifest: nothing recorded
    assert items["s/b.png"]["lr_uri"] == f"{tmp_path}/lr/s/b.png" and items["s/b.png"]["lr_sha256"] is None
    assert items["a.png"]["out_uri"] == f"{tmp_path}/hr/a.jpg"
    assert items["a.jpg.png"]["out_uri"] == f"{tmp_path}/hr/a.jpg.jpg"
    # inputs a.jpg and a.png both restore to a.png with format=png: a.png, whose key it is, keeps it, and
    # a.jpg keeps its suffix (issue 13); with format=source (the default) each keeps its own key
    fs, m = open_fs(f"{tmp_path}/lr/_manifest")
    rows = [empty_row(INGEST_SCHEMA, job_id="j", key=k, source_uri=f"in/{k}", lr_uri=f"{tmp_path}/lr/{k}.png",
                      model_id=MODEL, status="ok", finished_at=1.0) for k in ("a.png", "a.jpg")]
    write_part(fs, m, "ingest-old", 0, to_table(rows, INGEST_SCHEMA))
    items = _restore_plan(tmp_path, "format=png")
    assert items["a.png"]["out_uri"] == f"{tmp_path}/hr/a.png" and items["a.png"]["pre_error"] is None
    assert items["a.jpg"]["out_uri"] == f"{tmp_path}/hr/a.jpg.png" and items["a.jpg"]["pre_error"] is None
    items = _restore_plan(tmp_path)
    assert (items["a.png"]["out_uri"], items["a.png"]["out_container"]) == (f"{tmp_path}/hr/a.png", "png")
    assert (items["a.jpg"]["out_uri"], items["a.jpg"]["out_container"]) == (f"{tmp_path}/hr/a.jpg", "jpeg")


def test_restore_rerun_checks_earlier_restores_with_the_same_lr_model_and_settings(tmp_path):
    lr, hr = f"{tmp_path}/lr", f"{tmp_path}/hr"
    keys = ["same.png", "lr_changed.png", "other_model.png", "failed.png", "never.png", "q.png"]
    fs, m = open_fs(f"{lr}/_manifest")
    write_part(fs, m, "ingest-old", 0, to_table([
        empty_row(INGEST_SCHEMA, job_id="j", key=k, source_uri=f"in/{k}", lr_uri=f"{lr}/{k}", lr_sha256=f"lr-{k}",
                  model_id=MODEL, status="ok", finished_at=1.0) for k in keys], INGEST_SCHEMA))
    cfg = load_config(RestoreConfig, None, [f"input={lr}", f"output={hr}", "format=png"])
    png = output_settings(cfg, 0.0)
    assert png == "format=png temperature=0 precision=fp32 tile=512"
    # the default (issue 13) is each original's own container
    assert output_settings(load_config(RestoreConfig, None, [f"input={lr}", f"output={hr}"]), 0.0) == \
        "format=source temperature=0 precision=fp32 tile=512"

    def done(key, **kw):
        row = dict(job_id="r", key=key, out_uri=f"{hr}/{key}", out_sha256=f"out-{key}", lr_sha256=f"lr-{key}",
                   model_id=MODEL, settings=png, status="ok", finished_at=2.0)
        return empty_row(RESTORE_SCHEMA, **{**row, **kw})

    fs, m = open_fs(f"{hr}/_manifest")
    write_part(fs, m, "restore-old", 0, to_table([
        done("same.png"), done("lr_changed.png", lr_sha256="lr-before"), done("other_model.png", model_id="x"),
        done("failed.png"), done("failed.png", status="error", out_uri=None, out_sha256=None, finished_at=3.0),
        done("q.png", settings=png.replace("png", "webp quality=95"))], RESTORE_SCHEMA))
    items = _restore_plan(tmp_path, "format=png")
    assert {k: (r["check_uri"], r["check_sha"]) for k, r in items.items() if r["check_sha"]} == {
        "same.png": (f"{hr}/same.png", "out-same.png")}
    assert not any(r["check_sha"] for r in _restore_plan(tmp_path, "format=png", "redo=true").values())
    # another format, quality or temperature makes other bytes: nothing is skipped
    assert not any(r["check_sha"] for r in _restore_plan(tmp_path, "format=png", "temperature=1").values())
    assert not any(r["check_sha"] for r in _restore_plan(tmp_path).values())  # format=source
    assert output_settings(load_config(RestoreConfig, None, ["input=a", "output=b", "format=jpg", "quality=80"]), 1.0) \
        == "format=jpeg quality=80 subsampling=4:2:0 temperature=1 precision=fp32 tile=512"
    with pytest.raises(RestoreError, match="unknown container 'gif'"):
        output_settings(load_config(RestoreConfig, None, ["input=a", "output=b", "format=gif"]), 1.0)

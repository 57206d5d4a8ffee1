"""verify on a local output prefix (no Ray): size and sha256 per ok row, batches, leftover temp objects."""
from __future__ import annotations

import io
import os
import time

import pytest

from irn_batch.storage.manifest import INGEST_SCHEMA, empty_row, to_table, write_part
from irn_batch.pipeline import verify as verify_mod
from irn_batch.storage import StorageConfig, atomic_write, leftover_temps, open_fs, sha256_hex


def _output(tmp_path, n=5):
    fs, root = open_fs(str(tmp_path / "out"))
    rows = []
    for i in range(n):
        data = bytes([i]) * (10 + i)
        atomic_write(fs, f"{root}/d/{i}.png", data)
        rows.append(empty_row(INGEST_SCHEMA, job_id="j", key=f"d/{i}.png", source_uri=f"in/{i}", status="ok",
                              lr_uri=f"{root}/d/{i}.png", lr_bytes=len(data), lr_sha256=sha256_hex(data),
                              finished_at=1.0))
    rows.append(empty_row(INGEST_SCHEMA, job_id="j", key="bad", source_uri="in/bad", status="error", error="x"))
    write_part(fs, f"{root}/_manifest", "j", 0, to_table(rows, INGEST_SCHEMA))
    return fs, root


def test_verify_checks_every_ok_row_across_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(verify_mod, "BATCH_ROWS", 2)
    fs, root = _output(tmp_path)
    out = io.StringIO()
    res = verify_mod.verify(root, StorageConfig(), out=out)
    assert (res["checked"], res["problems"], res["error_rows"], res["temp_objects"]) == (5, 0, 1, 0)
    os.remove(f"{root}/d/1.png")
    (tmp_path / "out" / "d" / "3.png").write_bytes(b"\x07" * 13)  # same size, other bytes
    (tmp_path / "out" / "d" / "4.png").write_bytes(b"short")
    res = verify_mod.verify(root, StorageConfig(), out=io.StringIO(), quiet=True)
    assert sorted(res["problem_list"]) == [(f"{root}/d/1.png", "missing"),
                                           (f"{root}/d/3.png", "sha256 differs from the recorded one"),
                                           (f"{root}/d/4.png", "size 5 != recorded 14")]
    assert verify_mod.main([root, "--quiet"]) == 1
    assert verify_mod.main([str(tmp_path / "nothing")]) == 2


def test_leftover_temp_objects_are_reported_and_removed_when_old(tmp_path, capsys):
    fs, root = _output(tmp_path, n=2)
    old = tmp_path / "out" / "d" / f".0.png.{'a' * 32}.tmp"  # what a writer killed mid-write leaves
    new = tmp_path / "out" / f".x.png.{'b' * 32}.tmp"
    mine = tmp_path / "out" / "notes.tmp"  # not one of ours
    for p in (old, new, mine):
        p.write_bytes(b"partial")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert leftover_temps(fs, root, older_than_s=0) == sorted([str(old), str(new)])
    assert leftover_temps(fs, root, older_than_s=3600) == [str(old)]
    assert verify_mod.main([root, "--quiet"]) == 0  # leftovers lose no data: reported, not a failure
    assert "1 temp objects older than 3600 s" in capsys.readouterr().out and old.exists()
    assert verify_mod.main([root, "--quiet", "--remove-temp"]) == 0
    assert not old.exists() and new.exists() and mine.exists()


@pytest.mark.parametrize("name", ["a.png", ".a.png.123.tmp", f"a.png.{'c' * 31}.tmp"])
def test_ordinary_names_are_not_temp_objects(tmp_path, name):
    (tmp_path / name).write_bytes(b"x")
    assert leftover_temps(open_fs(str(tmp_path))[0], str(tmp_path)) == []


def test_each_object_is_checked_against_its_latest_ok_row_and_all_checks_superseded_ones(tmp_path):
    """Two jobs wrote one object (the later replaced it): the later row must match; --all checks both."""
    fs, root = open_fs(str(tmp_path / "out"))
    atomic_write(fs, f"{root}/a.png", b"second")
    rows = [empty_row(INGEST_SCHEMA, job_id=j, key="a.png", source_uri=f"in{j}/a.png", status="ok",
                      lr_uri=f"{root}/a.png", lr_bytes=len(d), lr_sha256=sha256_hex(d), finished_at=t)
            for j, d, t in (("1", b"first", 1.0), ("2", b"second", 2.0))]
    write_part(fs, f"{root}/_manifest", "j", 0, to_table(rows, INGEST_SCHEMA))
    res = verify_mod.verify(root, StorageConfig(), out=io.StringIO())
    assert (res["checked"], res["problems"], res["superseded"]) == (1, 0, 1)
    res = verify_mod.verify(root, StorageConfig(), out=io.StringIO(), all_rows=True)
    assert (res["checked"], res["problems"]) == (2, 1)
    assert verify_mod.main([root, "--quiet", "--all"]) == 1 and verify_mod.main([root, "--quiet"]) == 0
    # the latest row's object changed: reported, whatever row came before
    atomic_write(fs, f"{root}/a.png", b"third!")
    assert verify_mod.verify(root, StorageConfig(), out=io.StringIO())["problem_list"] == [
        (f"{root}/a.png", "sha256 differs from the recorded one")]


def test_a_moved_output_is_checked_where_it_is_and_keys_never_leave_it(tmp_path):
    fs, root = _output(tmp_path, n=2)  # rows with absolute lr_uri only (as older versions wrote them)
    os.rename(root, tmp_path / "moved")
    out = io.StringIO()
    res = verify_mod.verify(str(tmp_path / "moved"), StorageConfig(), out=out)
    assert (res["checked"], res["problems"]) == (2, 0) and str(tmp_path / "moved" / "d" / "1.png") in out.getvalue()
    moved = str(tmp_path / "moved")
    rows = [empty_row(INGEST_SCHEMA, job_id="k", key="x.png", source_uri="in/x", status="ok", lr_uri=f"{moved}/x.png",
                      lr_key="../../escape.png", lr_bytes=1, lr_sha256="0", finished_at=3.0)]
    write_part(fs, f"{moved}/_manifest", "k", 0, to_table(rows, INGEST_SCHEMA))
    res = verify_mod.verify(moved, StorageConfig(), out=io.StringIO())
    (uri, problem), = res["problem_list"]
    assert uri == f"{moved}/x.png" and problem.startswith("key: recorded location '../../escape.png'") and "'..'" in problem

"""manifest: parts per job, read back as one dataset, latest attempt per input."""
from __future__ import annotations

import pyarrow.dataset as pads
import pytest

from irn_batch.storage.manifest import (INGEST_SCHEMA, ManifestWriter, empty_row, latest_table, new_job_id, read_manifest,
                                to_table, write_part)
from irn_batch.storage import open_fs


def latest_rows(table):
    return {r["source_uri"]: r for r in latest_table(table).to_pylist()}


def test_parts_of_two_jobs_read_as_one_dataset(tmp_path):
    fs, root = open_fs(str(tmp_path / "m"))
    a, b = new_job_id("ingest"), new_job_id("ingest")
    assert a != b
    rows_a = [empty_row(INGEST_SCHEMA, job_id=a, source_uri=f"s{i}", status="error", error="x", finished_at=1.0)
              for i in range(3)]
    rows_b = [empty_row(INGEST_SCHEMA, job_id=b, source_uri="s1", status="ok", lr_sha256="h", finished_at=2.0)]
    write_part(fs, root, a, 0, to_table(rows_a, INGEST_SCHEMA))
    write_part(fs, root, b, 0, to_table(rows_b, INGEST_SCHEMA))
    table = read_manifest(fs, root)
    assert table.num_rows == 4 and table.schema.equals(INGEST_SCHEMA)
    # pyarrow reads the same folder as one dataset too
    assert pads.dataset(str(tmp_path / "m"), format="parquet").count_rows() == 4
    latest = latest_rows(table)
    assert latest["s1"]["status"] == "ok" and latest["s0"]["status"] == "error" and len(latest) == 3
    # a later "skipped" receipt does not hide the ok row it vouches for
    c = new_job_id("ingest")
    write_part(fs, root, c, 0, to_table([empty_row(INGEST_SCHEMA, job_id=c, source_uri="s1", status="skipped",
                                                   lr_sha256="h", finished_at=3.0)], INGEST_SCHEMA))
    latest = latest_rows(read_manifest(fs, root))
    assert latest["s1"]["status"] == "ok" and latest["s1"]["job_id"] == b


def test_writer_flushes_by_row_count_and_unknown_columns_fail(tmp_path):
    fs, root = open_fs(str(tmp_path))
    w = ManifestWriter(fs, root, "job-1", INGEST_SCHEMA, rows_per_part=2, seconds=1e9)
    w.add([empty_row(INGEST_SCHEMA, source_uri=str(i), status="ok") for i in range(5)])
    assert len(w.parts) == 1  # one flush per add call once the buffer is over the limit
    w.add([empty_row(INGEST_SCHEMA, source_uri="x", status="ok")])
    w.flush()
    assert read_manifest(fs, root).num_rows == 6
    assert all(p.endswith(".parquet") for p in w.parts)
    with pytest.raises(KeyError):
        empty_row(INGEST_SCHEMA, not_a_column=1)


def test_empty_manifest_reads_as_empty_table(tmp_path):
    fs, root = open_fs(str(tmp_path / "none"))
    assert read_manifest(fs, root).num_rows == 0


def test_parts_written_before_a_column_existed_read_it_as_nulls(tmp_path):
    from irn_batch.storage.manifest import RESTORE_SCHEMA

    fs, root = open_fs(str(tmp_path))
    old_schema = RESTORE_SCHEMA.remove(RESTORE_SCHEMA.get_field_index("settings"))
    write_part(fs, root, "restore-1", 0, to_table([{"key": "a", "status": "ok"}], old_schema))
    write_part(fs, root, "restore-2", 0, to_table([{"key": "b", "status": "ok", "settings": "format=png"}],
                                                    RESTORE_SCHEMA))
    table = read_manifest(fs, root, RESTORE_SCHEMA, columns=["key", "settings"])
    assert table.to_pylist() == [{"key": "a", "settings": None}, {"key": "b", "settings": "format=png"}]
    assert read_manifest(fs, root).column("settings").to_pylist() == [None, "format=png"]

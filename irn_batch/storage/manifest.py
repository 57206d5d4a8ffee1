"""Parquet manifests: one row per input and attempt, written in parts per job, read as one dataset.

Layout: ``<dir>/<job_id>-part-<n>.parquet``. Job ids are unique (UTC time + random), so two jobs never
write the same part, and each part is written atomically, so a killed job leaves only whole parts.
``status`` is ``ok``, ``error`` or, in an ingest rerun, ``skipped``: the input's earlier ``ok`` LR was found
intact and not redone, so every input of every job has a row in that job's parts.
"""
from __future__ import annotations

import datetime as _dt
import io
import os
import time
import uuid
from typing import Any, Iterable

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from irn_batch.storage.fs import atomic_write

_TIMINGS = [("read_s", pa.float64()), ("decode_s", pa.float64()), ("model_s", pa.float64()),
            ("write_s", pa.float64()), ("total_s", pa.float64())]

INGEST_SCHEMA = pa.schema(
    [
        ("job_id", pa.string()),
        ("key", pa.string()),
        ("source_uri", pa.string()),
        ("source_bytes", pa.int64()),
        ("source_sha256", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("mode", pa.string()),
        ("lr_uri", pa.string()),
        ("lr_bytes", pa.int64()),
        ("lr_sha256", pa.string()),
        ("scale", pa.int64()),
        ("model_id", pa.string()),
        ("z_seed", pa.int64()),
        ("status", pa.string()),
        ("error", pa.string()),
        *_TIMINGS,
        ("finished_at", pa.float64()),
        ("colour", pa.string()),  # what decoding did to the colours (io.decode.DecodedImage.colour)
        # "input" (the file itself: undecodable, too large, a bad key; redone with retry_errors=true) or
        # "transient" (storage, a lost worker: redone by a plain rerun); null in parts of older versions
        ("error_kind", pa.string()),
        # what identified the source's version when it was listed (S3: ETag; local: mtime_ns:<ns>)
        ("source_version", pa.string()),
        # how the LR is stored (issue 8): container ("original" = the source bytes kept), quality and
        # subsampling; the restore's Y-PSNR (dB) measured by the quality floor (inf for the source kept);
        # the ingest settings that shaped the stored bytes (a rerun with others redoes the image)
        ("lr_container", pa.string()),
        ("lr_quality", pa.int64()),
        ("lr_subsampling", pa.string()),
        ("restore_psnr", pa.float64()),
        ("fell_back", pa.bool_()),
        ("lr_settings", pa.string()),
        ("floor_restores", pa.int64()),
        # what the source was (issue 13; irn_batch.io.source_format): bits per sample as decoded, a gray
        # source, the fraction of pixels clipped converting a wide-gamut profile to sRGB (null: none
        # converted), the original's container, a JPEG's estimated quality (and, last, its subsampling),
        # whether it was lossless,
        # whether a lossless original is stored as a lossy LR, and the further pictures of the file (MPO,
        # HEIF, TIFF thumbnails) that were not kept
        ("bit_depth", pa.int64()),
        ("grey", pa.bool_()),
        ("gamut_clipped", pa.float64()),
        ("source_container", pa.string()),
        ("source_quality", pa.int64()),
        ("source_lossless", pa.bool_()),
        ("lossy_from_lossless", pa.bool_()),
        ("extra_frames", pa.int64()),
        ("source_subsampling", pa.string()),  # a colour JPEG original's chroma subsampling
        # the LR's key relative to the ingest output (issue 13): a copied or moved output is read where it
        # is (irn_batch.pipeline.locate); null in parts of older versions
        ("lr_key", pa.string()),
        # photo metadata (issue 13): sha256 of the LR's decoded pixels (lr_file.pixels_sha256), so a
        # metadata-only edit of the LR can be told from a pixel edit; the kinds carried (in the LR or its
        # sidecar) and the kinds the source had that are not carried (the metadata setting, a converted
        # ICC profile, an unreadable packet), comma-separated; the sidecar holding the kinds the LR
        # container cannot hold, and its sha256
        ("lr_pixels_sha256", pa.string()),
        ("metadata_kept", pa.string()),
        ("metadata_dropped", pa.string()),
        ("metadata_uri", pa.string()),
        ("metadata_sha256", pa.string()),
    ]
)

RESTORE_SCHEMA = pa.schema(
    [
        ("job_id", pa.string()),
        ("key", pa.string()),
        ("lr_uri", pa.string()),
        ("lr_bytes", pa.int64()),
        ("lr_sha256", pa.string()),
        ("out_uri", pa.string()),
        ("out_bytes", pa.int64()),
        ("out_sha256", pa.string()),
        ("format", pa.string()),
        ("settings", pa.string()),  # everything besides model and LR that shapes the output bytes
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("model_id", pa.string()),
        ("z_seed", pa.int64()),
        ("status", pa.string()),
        ("error", pa.string()),
        *_TIMINGS,
        ("finished_at", pa.float64()),
        # issue 13: the original's size in bytes (from the ingest manifest), the restore's bits per sample,
        # whether a source deeper than 8 bits came back at 8, whether a lossless original came back as an
        # approximation (every IRN restore is one; a source kept by ingest is not), and the ICC profile
        # the restore carries ("sRGB" where the original's profile was converted to sRGB at ingest)
        ("source_bytes", pa.int64()),
        ("out_bit_depth", pa.int64()),
        ("depth_reduced", pa.bool_()),
        ("lossy_from_lossless", pa.bool_()),
        ("out_icc", pa.string()),
        ("out_key", pa.string()),  # out_uri's key relative to the restore output (issue 13); null before
        # a restore that went ahead despite something (the LR's metadata edited since ingest, say)
        ("warning", pa.string()),
        # photo metadata kinds written into the output, and those its container cannot hold (comma-separated)
        ("metadata_kept", pa.string()),
        ("metadata_dropped", pa.string()),
    ]
)

MANIFEST_DIR = "_manifest"


def new_job_id(kind: str) -> str:
    """A unique, sortable job id such as 'ingest-20261125T021500Z-1a2b3c4d'."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{kind}-{now}-{uuid.uuid4().hex[:8]}"


def empty_row(schema: pa.Schema, **values: Any) -> dict[str, Any]:
    """A row with every column of ``schema`` (None where not given); unknown names are an error."""
    unknown = set(values) - set(schema.names)
    if unknown:
        raise KeyError(f"not manifest columns: {sorted(unknown)}")
    row = dict.fromkeys(schema.names)
    row.update(values)
    return row


def to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist([{n: r.get(n) for n in schema.names} for r in rows], schema=schema)


def write_part(fs: fsspec.AbstractFileSystem, manifest_dir: str, job_id: str, part: int, table: pa.Table) -> str:
    """Atomically write one part; returns its path."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    path = f"{manifest_dir.rstrip('/')}/{job_id}-part-{part:05d}.parquet"
    atomic_write(fs, path, buf.getvalue())
    return path


def part_paths(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    """The Parquet parts behind a manifest path: a single file, or every part in a directory."""
    if fs.isfile(path):
        return [path]
    if not fs.isdir(path):
        return []
    return sorted(
        p for p in fs.find(path.rstrip("/"), withdirs=False)
        if p.endswith(".parquet") and not p.rsplit("/", 1)[-1].startswith(".")
    )


def read_manifest(fs: fsspec.AbstractFileSystem, path: str, schema: pa.Schema | None = None,
                  columns: list[str] | None = None) -> pa.Table:
    """All parts as one table (empty with ``schema`` when there are none); ``columns`` reads only those.

    A part written before a column existed reads that column as nulls, so manifests stay readable as the
    schema grows.
    """
    known = {f.name: f.type for s in (schema, RESTORE_SCHEMA, INGEST_SCHEMA) if s is not None for f in s}
    tables = []
    for p in part_paths(fs, path):
        with fs.open(p, "rb") as f:
            part = pq.ParquetFile(f)
            names = part.schema_arrow.names
            table = part.read(columns=None if columns is None else [c for c in columns if c in names])
        for c in columns or []:
            if c not in names:
                table = table.append_column(pa.field(c, known.get(c, pa.string())),
                                            pa.nulls(table.num_rows, known.get(c, pa.string())))
        tables.append(table.select(columns) if columns else table)
    if not tables:
        empty = (schema or INGEST_SCHEMA).empty_table()
        return empty.select(columns) if columns else empty
    return pa.concat_tables(tables, promote_options="default")


def latest_table(table: pa.Table, key: str = "source_uri") -> pa.Table:
    """The most recent attempt per ``key`` value (by ``finished_at``), computed in Arrow (no per-row objects).

    ``skipped`` rows are receipts (a later job found the earlier ``ok`` LR intact), not attempts: they never
    replace the row they point at.
    """
    if "status" in table.column_names:
        table = table.filter(pc.fill_null(pc.not_equal(table["status"], "skipped"), True))
    when = pc.fill_null(table["finished_at"], 0.0)
    # rows in time order (ties: file order), then the last position per key
    idx = pa.table({"k": table[key], "i": pa.array(np.arange(table.num_rows, dtype=np.int64)), "t": when})
    idx = idx.sort_by([("t", "ascending"), ("i", "ascending")])
    idx = idx.append_column("pos", pa.array(np.arange(idx.num_rows, dtype=np.int64)))
    last = idx.group_by("k", use_threads=False).aggregate([("pos", "max")])["pos_max"]
    return table.take(idx["i"].take(last))


DEFAULT_SPILL_DIR = "~/.cache/irn_batch/spill"


class ManifestWriter:
    """Buffers rows and writes a part every ``rows_per_part`` rows or ``seconds`` seconds.

    When a part cannot be written to the manifest folder (the store is unreachable for ``storage.outage_s``
    or refuses the write), that part and every later one of this job go to ``spill_dir`` on the local disk
    instead, under the same names (``parts`` / ``spilled`` list them), and ``fault`` says why: copying the
    spilled parts into the manifest folder later completes the manifest.
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, manifest_dir: str, job_id: str, schema: pa.Schema,
                 rows_per_part: int = 1000, seconds: float = 30.0, spill_dir: str | None = None):
        self.fs, self.dir, self.job_id, self.schema = fs, manifest_dir, job_id, schema
        self.rows_per_part, self.seconds = rows_per_part, seconds
        self.spill_dir = os.path.abspath(os.path.expanduser(spill_dir or DEFAULT_SPILL_DIR))
        self.buffer: list[dict[str, Any]] = []
        self.parts: list[str] = []
        self.spilled: list[str] = []
        self.fault: str | None = None
        self.last_flush = time.monotonic()

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        self.buffer.extend(rows)
        if len(self.buffer) >= self.rows_per_part or time.monotonic() - self.last_flush > self.seconds:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            table = to_table(self.buffer, self.schema)
            n = len(self.parts) + len(self.spilled)
            if self.fault is None:
                try:
                    self.parts.append(write_part(self.fs, self.dir, self.job_id, n, table))
                except Exception as e:  # unreachable (after the outage budget), missing bucket, denied, ...
                    msg = " ".join(str(e).split())[:300]
                    self.fault = f"manifest part could not be written ({type(e).__name__}: {msg})"
            if self.fault is not None:
                self.spilled.append(write_part(LocalFileSystem(), self.spill_dir, self.job_id, n, table))
            self.buffer = []
        self.last_flush = time.monotonic()

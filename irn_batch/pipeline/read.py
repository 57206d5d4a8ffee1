"""The read stage of the pipeline stream: each record's bytes (or its read error), one record at a time.

Kept free of torch so the Ray workers that run it start in a fraction of a second.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from irn_batch.errors import one_line
from irn_batch.storage import StorageConfig, StorageError, open_uri, read_limited, sha256_hex

# Our own errors already word their messages for a user; a library's exception gets its type name in front.
OWN_ERRORS = ("ImageError", "StorageError", "StorageUnavailable", "CheckpointError", "RescaleError")

# columns the stage adds (pre_error is replaced: a read error joins any planning error)
READ_COLUMNS = [("data", pa.large_binary()), ("read_s", pa.float64()), ("pre_error", pa.string()),
                ("skip", pa.bool_()), ("error_kind", pa.string())]

# what an error belongs to: the input itself (redone only on request) or the storage/workers (redone by a rerun)
INPUT, TRANSIENT = "input", "transient"


# object stores answer one GET in tens of milliseconds: a block's reads overlap on this many threads
READ_THREADS = 8


def read_stage(batch: pa.Table, storage: StorageConfig, max_bytes: int, uri_col: str) -> pa.Table:
    """Add each record's bytes (or a read error) to the stream; records are read independently.

    A record with ``check_sha`` set is first compared against the object at ``check_uri``: when that
    object exists with that checksum the record is marked ``skip`` and its source is not read.
    """
    rows = batch.to_pylist()
    if len(rows) > 1:
        with ThreadPoolExecutor(min(READ_THREADS, len(rows))) as pool:
            results = list(pool.map(lambda r: read_record(r, storage, max_bytes, uri_col), rows))
    else:
        results = [read_record(r, storage, max_bytes, uri_col) for r in rows]
    out = batch.drop_columns([c for c in ("pre_error", "error_kind") if c in batch.column_names])
    for i, (name, typ) in enumerate(READ_COLUMNS):
        out = out.append_column(pa.field(name, typ), pa.array([res[i] for res in results], type=typ))
    return out


def read_record(r: dict, storage: StorageConfig, max_bytes: int, uri_col: str) -> tuple:
    """(bytes or None, seconds, error or None, skip, error kind or None) for one record; never raises.

    The object is read exactly at the path in its URI (:func:`open_uri`: nothing in a key is parsed).
    A planning error is the input's own (a bad key); an object over ``max_bytes`` is too; any other read
    error is transient (the store, the network: a rerun tries again).
    """
    t0 = time.perf_counter()
    blob, err, skip = None, r.get("pre_error"), False
    kind = None if err is None else INPUT
    if err is None and r.get("check_sha"):
        try:
            fs, p = open_uri(r["check_uri"], storage)
            skip = fs.exists(p) and sha256_hex(fs.cat_file(p)) == r["check_sha"]
        except Exception:  # an unreadable previous output just means: redo it
            skip = False
    if err is None and not skip:
        try:
            fs, p = open_uri(r[uri_col], storage)
            blob = read_limited(fs, p, max_bytes)
        except FileNotFoundError:
            err, kind = "read: object not found", TRANSIENT
        except StorageError as e:  # over the size limit
            err, kind = f"read: {error_text(e)}", INPUT
        except Exception as e:  # one unreadable object must not stop the stream
            err, kind = f"read: {error_text(e)}", TRANSIENT
    return blob, time.perf_counter() - t0, err, skip, kind


def error_text(e: BaseException) -> str:
    """An exception as a manifest row's one line: our own errors by their message, a library's as 'Type: message'."""
    return one_line(e, 500, typed=type(e).__name__ not in OWN_ERRORS)

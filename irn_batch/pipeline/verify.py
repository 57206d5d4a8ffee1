"""`irn-batch verify PREFIX_OR_MANIFEST`: every `ok` row's object exists with its recorded size and sha256.

Works on ingest manifests (checks ``lr_uri``) and restore manifests (checks ``out_uri``). Which rows: the
``ok`` rows that are their input's latest attempt (an input whose latest attempt failed has no output to
check), each object against the latest of those that names it (by ``finished_at``), whichever job and
input wrote it, so a row whose object now holds other bytes is reported, not hidden behind a later row of
its key. Every other ``ok`` row is counted as superseded (a later attempt of its input, or a later ok row
of the same object: a rerun, ``overwrite=true``); ``--all`` checks every ``ok`` row, and a superseded row
then fails when its bytes are gone.
A manifest in its output's own ``_manifest`` folder is checked where the output is now: a copied or moved
output's objects, never the place it was written (irn_batch.pipeline.locate). Objects are
hashed in a thread pool straight from storage, a bounded batch of rows at a time; nothing needs Ray. Given
a job's output prefix, it also reports temp objects left by a writer that was killed mid-write (they are
never under a final key), and ``--remove-temp`` deletes those older than ``--temp-age`` seconds.
"""
from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from irn_batch.storage.manifest import MANIFEST_DIR, latest_table, part_paths, read_manifest
from irn_batch.pipeline import locate
from irn_batch.storage import StorageConfig, StorageError, leftover_temps, open_fs, open_uri, sha256_hex, to_uri

BATCH_ROWS = 1024  # rows checked per round: the check's memory does not grow with the manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the verify subcommand."""
    parser.add_argument("target", help="a manifest (Parquet file or folder of parts) or a job's output prefix")
    parser.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint (else AWS_ENDPOINT_URL)")
    parser.add_argument("--region", default=None)
    parser.add_argument("--anon", action="store_true", help="anonymous access to a public bucket")
    parser.add_argument("--workers", type=int, default=8, help="objects checked in parallel")
    parser.add_argument("--quiet", action="store_true", help="print only problems and the summary")
    parser.add_argument("--all", action="store_true",
                        help="also check ok rows superseded by a later ok row for the same object")
    parser.add_argument("--remove-temp", action="store_true",
                        help="delete temp objects left by killed writers under the prefix")
    parser.add_argument("--temp-age", type=float, default=3600.0,
                        help="only temp objects older than this many seconds (a live job may be writing)")


def check_object(uri: str, size: int | None, sha: str | None, storage: StorageConfig) -> str | None:
    """None when the object matches, else the problem in a few words."""
    try:
        fs, path = open_uri(uri, storage)  # the path exactly as recorded
        data = fs.cat_file(path)
    except FileNotFoundError:
        return "missing"
    except Exception as e:  # storage errors vary by backend
        return f"unreadable ({type(e).__name__}: {e})"
    if size is not None and len(data) != size:
        return f"size {len(data)} != recorded {size}"
    if sha and sha256_hex(data) != sha:
        return "sha256 differs from the recorded one"
    return None


def verify(target: str, storage: StorageConfig, workers: int = 8, out=None, quiet: bool = False,
           remove_temp: bool = False, temp_age: float = 3600.0, all_rows: bool = False) -> dict[str, Any]:
    """Check a manifest's ok rows (and a prefix's leftover temp objects); returns counts and the problems.

    Counts: ``checked``, ``ok``, ``problems`` (missing/mismatched objects), ``error_rows`` (inputs whose
    latest attempt is an error), ``superseded`` (ok rows replaced by a later ok row of their object; checked
    only with ``all_rows``), ``temp_objects``; ``problem_list`` holds (URI, problem) pairs.
    """
    out = out or sys.stdout  # looked up at call time, so redirected output is honoured
    fs, path = open_fs(target, storage)
    sub = f"{path.rstrip('/')}/{MANIFEST_DIR}"
    is_prefix = fs.isdir(sub)
    mpath = sub if is_prefix else path
    parts = part_paths(fs, mpath)
    if not parts:
        raise FileNotFoundError(f"{target}: no manifest found (no Parquet parts)")
    with fs.open(parts[0], "rb") as f:
        restore = "out_uri" in pq.read_schema(f).names
    col, prefix = ("out_uri", "out") if restore else ("lr_uri", "lr")
    input_col = "key" if restore else "source_uri"
    # only the columns the check needs: a manifest of millions of rows stays small in memory
    table = read_manifest(fs, mpath, columns=list(dict.fromkeys([input_col, "key", col, f"{prefix}_key",
                                                                 f"{prefix}_bytes", f"{prefix}_sha256", "status",
                                                                 "finished_at"])))
    # errors: inputs whose latest attempt failed (an error that a later run fixed is history)
    table = table.append_column("row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    latest = latest_table(table.select([input_col, "status", "finished_at", "row"]), input_col)
    errors = pc.sum(pc.equal(latest["status"], "error")).as_py() or 0
    current = latest.filter(pc.fill_null(pc.equal(latest["status"], "ok"), False))["row"]
    del latest
    rows = table.filter(pc.fill_null(pc.equal(table["status"], "ok"), False))
    del table
    root = to_uri(fs, path) if is_prefix else locate.manifest_root(fs, mpath)
    recorded = rows[col].to_pylist()
    uris, errs = locate.relocate(recorded, rows["key"].to_pylist(), rows[f"{prefix}_key"].to_pylist(), root)
    # a recorded key that would leave the output is never followed: a problem of its own
    problems = [(u, e) for u, e in zip(recorded, errs) if e is not None]
    del recorded, errs
    rows = rows.set_column(rows.column_names.index(col), col, pa.array(uris, pa.string()))
    rows = rows.filter(pc.is_valid(rows[col]))
    # by default: the ok rows that are their input's latest attempt, each object against the latest of
    # those that names it; the other ok rows are superseded (a later attempt of the input, or a later ok
    # row of the object) and checked with --all
    latest = rows.filter(pc.is_in(rows["row"], value_set=current.combine_chunks()))
    latest = latest_table(latest, col) if latest.num_rows else latest
    superseded = rows.num_rows - latest.num_rows
    rows = (rows if all_rows else latest).select([col, f"{prefix}_bytes", f"{prefix}_sha256"])
    del latest
    for uri, problem in problems:
        print(f"FAIL {uri}: {problem}", file=out)
    checked = len(problems)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for batch in rows.to_batches(BATCH_ROWS):
            recs = batch.to_pylist()
            results = pool.map(lambda r: check_object(r[col], r[f"{prefix}_bytes"], r[f"{prefix}_sha256"], storage),
                               recs)
            for r, p in zip(recs, results):
                checked += 1
                if p is not None:
                    problems.append((r[col], p))
                if p is not None or not quiet:
                    print(f"{'OK  ' if p is None else 'FAIL'} {r[col]}{'' if p is None else ': ' + p}", file=out)
    summary = {"checked": checked, "ok": checked - len(problems), "problems": len(problems), "error_rows": errors,
               "superseded": superseded, "temp_objects": 0}
    print(f"verify: {checked} {'rows' if all_rows else 'objects'} checked, {summary['ok']} ok, {summary['problems']} "
          f"missing/mismatched; {errors} inputs whose latest attempt is an error; {superseded} ok rows superseded "
          f"by a later ok row of their object ({'checked' if all_rows else 'not checked; --all checks them'})",
          file=out)
    if is_prefix:
        temps = leftover_temps(fs, path, temp_age)
        summary["temp_objects"] = len(temps)
        for t in temps:
            if remove_temp:
                fs.rm_file(t)
            print(f"TEMP {t}{' (removed)' if remove_temp else ''}", file=out)
        if temps:
            print(f"verify: {len(temps)} temp objects older than {temp_age:g} s left by killed writers "
                  f"({'removed' if remove_temp else 'remove them with --remove-temp'})", file=out)
    summary["problem_list"] = problems
    return summary


def run(args: argparse.Namespace) -> int:
    """Exit 0 when every ok row checks out, 1 on any missing/mismatched object, 2 when there is no manifest."""
    storage = StorageConfig(endpoint_url=args.endpoint_url, region=args.region, anon=args.anon)
    try:
        summary = verify(args.target, storage, args.workers, quiet=args.quiet, remove_temp=args.remove_temp,
                         temp_age=args.temp_age, all_rows=args.all)
    except (FileNotFoundError, StorageError) as e:
        print(f"irn-batch verify: error: {e}", file=sys.stderr)
        return 2
    return 1 if summary["problems"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="irn-batch verify", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

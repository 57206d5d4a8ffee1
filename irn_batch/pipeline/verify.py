"""`irn-batch verify PREFIX_OR_MANIFEST`: every `ok` row's object exists with its recorded size and sha256.

Works on ingest manifests (checks ``lr_uri``) and restore manifests (checks ``out_uri``). Objects are
hashed in a thread pool straight from storage; nothing needs Ray.
"""
from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from irn_batch.manifest import MANIFEST_DIR, latest_rows, part_paths, read_manifest
from irn_batch.storage import StorageConfig, open_fs, sha256_hex


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the verify subcommand."""
    parser.add_argument("target", help="a manifest (Parquet file or folder of parts) or a job's output prefix")
    parser.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint (else AWS_ENDPOINT_URL)")
    parser.add_argument("--region", default=None)
    parser.add_argument("--anon", action="store_true", help="anonymous access to a public bucket")
    parser.add_argument("--workers", type=int, default=8, help="objects checked in parallel")
    parser.add_argument("--quiet", action="store_true", help="print only problems and the summary")


def check_object(uri: str, size: int | None, sha: str | None, storage: StorageConfig) -> str | None:
    """None when the object matches, else the problem in a few words."""
    try:
        fs, path = open_fs(uri, storage)
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


def verify(target: str, storage: StorageConfig, workers: int = 8, out=sys.stdout, quiet: bool = False) -> dict[str, Any]:
    """Check a manifest's ok rows; returns counts and the list of problems."""
    fs, path = open_fs(target, storage)
    sub = f"{path.rstrip('/')}/{MANIFEST_DIR}"
    mpath = sub if fs.isdir(sub) else path
    if not part_paths(fs, mpath):
        raise FileNotFoundError(f"{target}: no manifest found (no Parquet parts)")
    table = read_manifest(fs, mpath)
    col = "out_uri" if "out_uri" in table.column_names else "lr_uri"
    prefix = col.split("_")[0]
    rows = list(latest_rows(table.filter(_is_ok(table)), col).values())
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(lambda r: check_object(r[col], r[f"{prefix}_bytes"], r[f"{prefix}_sha256"], storage),
                                rows))
    problems = [(r[col], p) for r, p in zip(rows, results) if p is not None]
    for r, p in zip(rows, results):
        if p is not None or not quiet:
            print(f"{'OK  ' if p is None else 'FAIL'} {r[col]}{'' if p is None else ': ' + p}", file=out)
    errors = sum(1 for s in table.column("status").to_pylist() if s == "error")
    summary = {"checked": len(rows), "ok": len(rows) - len(problems), "problems": len(problems),
               "error_rows": errors}
    print(f"verify: {summary['checked']} objects checked, {summary['ok']} ok, {summary['problems']} "
          f"missing/mismatched; {errors} error rows in the manifest (not checked)", file=out)
    summary["problem_list"] = problems
    return summary


def _is_ok(table):
    import pyarrow.compute as pc

    return pc.equal(table.column("status"), "ok")


def run(args: argparse.Namespace) -> int:
    """Exit 0 when every ok row checks out, 1 on any missing/mismatched object, 2 when there is no manifest."""
    storage = StorageConfig(endpoint_url=args.endpoint_url, region=args.region, anon=args.anon)
    try:
        summary = verify(args.target, storage, args.workers, quiet=args.quiet)
    except FileNotFoundError as e:
        print(f"irn-batch verify: error: {e}", file=sys.stderr)
        return 2
    return 1 if summary["problems"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="irn-batch verify", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

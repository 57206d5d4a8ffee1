"""Planning benchmark: driver time and memory to plan an ingest rerun and a restore of N inputs.

Planning is the only part of a job whose driver memory grows with the number of inputs (the stream
itself holds a bounded window). For each N this lays out N (empty) input files and an earlier ingest
manifest of N ``ok`` rows, then plans, in a fresh process each, an ingest rerun (list, join with the
manifest, decide skip/redo) and a restore of everything. Reported: peak RSS growth over the process after
its imports, per input, and seconds. Prints a table, writes JSON.

    .venv/bin/python benchmarks/bench_plan.py --sizes 10000 100000 400000
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = "irn-x2-0000000000000000"


def lay_out(work: Path, n: int) -> None:
    """N empty input files in folders of 1,000 and an earlier manifest with one ok row each."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(ROOT))
    from irn_batch.storage.manifest import INGEST_SCHEMA

    keys = [f"d{i // 1000:04d}/img{i:07d}.png" for i in range(n)]
    for d in sorted({k.split("/", 1)[0] for k in keys}):
        (work / "in" / d).mkdir(parents=True, exist_ok=True)
    for k in keys:
        (work / "in" / k).touch()
    (work / "lr" / "_manifest").mkdir(parents=True, exist_ok=True)
    step = 100_000
    for part, i in enumerate(range(0, n, step)):
        ks = keys[i:i + step]
        m = len(ks)
        cols = {name: pa.nulls(m, field.type) for name, field in zip(INGEST_SCHEMA.names, INGEST_SCHEMA)}
        cols.update(job_id=pa.array(["ingest-old"] * m), key=pa.array(ks),
                    source_uri=pa.array([f"{work}/in/{k}" for k in ks]),
                    lr_uri=pa.array([f"{work}/lr/{k}" for k in ks]),
                    lr_sha256=pa.array([f"{j:064x}" for j in range(i, i + m)]), model_id=pa.array([MODEL] * m),
                    status=pa.array(["ok"] * m), z_seed=pa.array(np.arange(i, i + m, dtype=np.int64)),
                    width=pa.array(np.full(m, 640, np.int64)), height=pa.array(np.full(m, 480, np.int64)),
                    finished_at=pa.array(np.full(m, 1.0)))
        pq.write_table(pa.table(cols, schema=INGEST_SCHEMA),
                       work / "lr" / "_manifest" / f"ingest-old-part-{part:05d}.parquet")


CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from irn_batch.pipeline.config import IngestConfig, RestoreConfig
from irn_batch.settings import load_config
from irn_batch.pipeline import ingest, restore
warm, work, which = sys.argv[2], sys.argv[3], sys.argv[4]
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
def run(root):
    if which == "ingest":
        cfg = load_config(IngestConfig, None, [f"input={root}/in", f"output={root}/lr"])
        items = ingest.plan(cfg, "%s")[0]
    else:
        cfg = load_config(RestoreConfig, None, [f"input={root}/lr", f"output={root}/hr"])
        if hasattr(restore, "output_settings"):  # restores that resume: (items, manifest dir)
            items = restore.plan(cfg, "%s", restore.output_settings(cfg, 0.0))[0]
        else:  # older code: a list of dicts
            items = restore.plan(cfg, "%s")
    if hasattr(items, "num_rows"):
        return items.num_rows, items["check_sha"].null_count
    return len(items), sum(1 for r in items if not r["check_sha"])  # older code: a list of dicts
run(warm)  # libraries' one-off allocations (Arrow kernels, Parquet reader) out of the figure
base = peak()
t0 = time.perf_counter()
n, todo = run(work)
print(json.dumps({"n": n, "to_redo": todo, "seconds": time.perf_counter() - t0, "growth": peak() - base}))
""" % (MODEL, MODEL, MODEL)


def measure(code_root: Path, warm: Path, work: Path, which: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(code_root), str(warm), str(work), which], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _commit(root: Path) -> str:
    """The checkout's commit (with '+changes' when its tree differs), to say which code a row measured."""
    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(root), *a], capture_output=True, text=True).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 400_000])
    parser.add_argument("--code", action="append", default=[],
                        help="NAME=PATH of another checkout to measure in the same run (e.g. an older commit)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "bench_plan.json"))
    args = parser.parse_args(argv)
    codes = {"this": ROOT, **{c.split("=", 1)[0]: Path(c.split("=", 1)[1]) for c in args.code}}
    rows = []
    warm = Path(tempfile.mkdtemp(prefix="bench_plan_warm_"))
    lay_out(warm, 10)
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="bench_plan_") as d:
            work = Path(d)
            lay_out(work, n)
            for name, root in codes.items():
                for which in ("ingest", "restore"):
                    r = measure(root, warm, work, which)
                    assert r["n"] == n and (which == "restore" or r["to_redo"] == 0), r
                    rows.append({"code": name, "job": which, "inputs": n, "seconds": r["seconds"],
                                 "growth_mib": r["growth"] / 2**20, "bytes_per_input": r["growth"] / n})
                    print(f"{name:>8} {which:<7} {n:>9,} inputs: {r['seconds']:7.2f} s, "
                          f"+{r['growth'] / 2**20:7.1f} MiB ({r['growth'] / n:6.0f} B/input)", flush=True)
    lines = ["| code | job | inputs | plan s | driver RSS growth MiB | bytes per input |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['code']} | {r['job']} | {r['inputs']:,} | {r['seconds']:.2f} | {r['growth_mib']:.1f} | "
              f"{r['bytes_per_input']:.0f} |" for r in rows]
    print("\n" + "\n".join(lines))
    res = {"device": f"CPU ({platform.processor() or platform.machine()}), load average at end "
                     f"{os.getloadavg()[0]:.1f}", "code": {name: _commit(root) for name, root in codes.items()},
           "rows": rows}
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Driver memory of whole ingest jobs against their number of images (Ray Data's per-block cost included).

Each job runs in a fresh driver process on its own embedded Ray: N tiny PNGs (32x32, so the model is
cheap and the run measures the pipeline), a small untrained IRN, two 1-CPU actors. Reported: the driver's
peak RSS growth over the job (planning included), the number of Ray Data blocks, and seconds. Ray Data
keeps tens of KB of driver memory per block; ``--max-blocks`` sets the pipeline's cap (0 = the default
``MAX_BLOCKS``, a huge value = no cap, one block per batch). Prints a table, writes JSON.

    .venv/bin/python benchmarks/bench_driver_memory.py --images 1000 4000 12000 --uncapped 12000
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

CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[1])
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
import irn_batch.pipeline.stream as common
if int(sys.argv[5]):
    common.MAX_BLOCKS = int(sys.argv[5])
import ray
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
from irn_batch.pipeline.config import IngestConfig
from irn_batch.settings import load_config
from irn_batch.pipeline.ingest import run_ingest
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
src, out, model, batch = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[6])
args = [f"model={model}", "actors.pool_size=2", f"actors.batch_size={batch}", "progress_s=1e9"]
run_ingest(load_config(IngestConfig, None, [f"input={src}/warm", f"output={out}/warm", *args]), log=lambda *a: None)
before, t0 = rss(), time.perf_counter()
s = run_ingest(load_config(IngestConfig, None, [f"input={src}/in", f"output={out}/lr", *args]), log=lambda *a: None)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
n = s["total"]
rows = max(batch, -(-n // common.MAX_BLOCKS))
print(json.dumps({"images": n, "ok": s["ok"], "blocks": -(-n // rows), "seconds": time.perf_counter() - t0,
                  "growth": max(peak, rss()) - before}))
"""


def make_inputs(folder: Path, n: int) -> None:
    """n tiny PNGs (32x32 gradients) under folder/in, and 8 more under folder/warm for the warm-up job."""
    import numpy as np
    from PIL import Image

    for sub, count in (("in", n), ("warm", 8)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            img = (np.add.outer(np.arange(32), np.arange(32)) * (i % 7 + 1) % 256).astype(np.uint8)
            Image.fromarray(np.stack([img, img.T, 255 - img], -1)).save(folder / sub / f"{i:06d}.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[1000, 4000, 12000])
    parser.add_argument("--uncapped", type=int, nargs="*", default=[12000], help="also run these without the cap")
    parser.add_argument("--batch-size", type=int, default=1, help="records per actor call (1 = most blocks)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "bench_driver_memory.json"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from irn_batch.model.checkpoint import save_checkpoint
    from irn_batch.model import IRN, IRNConfig

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_drv_") as d:
        work = Path(d)
        model = work / "model.safetensors"
        save_checkpoint(IRN(IRNConfig(scale=2, blocks=1, growth=8)).eval(), model)
        runs = [(n, 0) for n in args.images] + [(n, 10**9) for n in args.uncapped]
        for n, cap in runs:
            src = work / f"src{n}"
            if not src.exists():
                make_inputs(src, n)
            out = work / f"out{n}-{cap}"
            res = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(src), str(out), str(model), str(cap),
                                  str(args.batch_size)], capture_output=True, text=True, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            assert r["ok"] == r["images"] == n, r
            r.update(cap="none" if cap else "default", growth_mib=r["growth"] / 2**20)
            rows.append(r)
            print(f"{n:>7,} images, cap {r['cap']:<7}: {r['blocks']:>6} blocks, driver +{r['growth_mib']:.0f} MiB, "
                  f"{r['seconds']:.1f} s", flush=True)
    lines = ["| images | block cap | blocks | driver peak growth MiB | job s |", "|---|---|---|---|---|"]
    lines += [f"| {r['images']:,} | {r['cap']} | {r['blocks']:,} | {r['growth_mib']:.0f} | {r['seconds']:.1f} |"
              for r in rows]
    print("\n" + "\n".join(lines))
    res = {"device": f"CPU ({platform.processor() or platform.machine()}), 2 cores, load average at end "
                     f"{os.getloadavg()[0]:.1f}", "batch_size": args.batch_size, "rows": rows}
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""CLI start-up: wall seconds of the commands that should answer at once (issue 19: under 0.5 s).

    python benchmarks/bench_cli.py                        # this tree
    python benchmarks/bench_cli.py --tree /tmp/old_main   # another checkout, for a before/after table

Each command runs as a fresh ``python -m irn_batch.cli`` process (in a temporary folder, so the tree timed is
the one on PYTHONPATH or installed, not the current directory) (what a shell user waits for), ``--runs``
times, alternating commands so load spreads evenly; the table gives the median and the maximum. Writes
``docs/results/bench_cli.json`` (or ``--out``). The LR file and checkpoint ``info`` reads are made once
by the script itself (a tiny x2 model on a 64x64 image), so the timing is start-up, not the model.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands(work: Path) -> dict[str, list[str]]:
    return {
        "--help": ["--help"],
        "info LR": ["info", str(work / "lr.png")],
        "info checkpoint": ["info", str(ROOT / "irn_batch" / "weights" / "irn_x2.safetensors")],
        "bad argument": ["downscale", str(work / "hr.png"), "-o", str(work / "out.bmp")],
    }


def _prepare(work: Path, env: dict[str, str]) -> None:
    """A small HR PNG and its LR (made with the shipped x2 weights) for ``info``."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:64, 0:64]
    Image.fromarray(np.stack([x * 4, y * 4, (x + y) * 2], -1).astype(np.uint8)).save(work / "hr.png")
    subprocess.run([sys.executable, "-m", "irn_batch.cli", "downscale", str(work / "hr.png"), "-o",
                    str(work / "lr.png")], env=env, cwd=work, check=True, capture_output=True)


def run(runs: int, tree: Path | None) -> dict:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _prepare(work, env)
        commands = _commands(work)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(runs):
            for name, argv in commands.items():
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "irn_batch.cli", *argv], env=env, cwd=work, capture_output=True)
                times[name].append(time.perf_counter() - t0)
    rows = [{"command": n, "median_s": statistics.median(t), "max_s": max(t), "runs": len(t)}
            for n, t in times.items()]
    return {"tree": str(tree or ROOT), "python": sys.version.split()[0], "cpus": os.cpu_count(), "rows": rows}


def table(result: dict) -> str:
    lines = [f"CLI start-up ({result['tree']}), wall seconds per fresh process", "",
             "| command | median s | max s | runs |", "| --- | --- | --- | --- |"]
    lines += [f"| `irn-batch {r['command']}` | {r['median_s']:.3f} | {r['max_s']:.3f} | {r['runs']} |"
              for r in result["rows"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--tree", type=Path, default=None, help="checkout to time instead of this one")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "bench_cli.json")
    args = p.parse_args(argv)
    result = run(args.runs, args.tree)
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Training throughput of one worker: samples/s and HR pixels/s per train step, fp32 vs bf16 autocast,
for batch x patch variants, next to the patch sampler's own rate (does feeding keep up?).

    python benchmarks/bench_train.py                      # CPU, quick variants
    python benchmarks/bench_train.py --variants 16x144 --steps 2 --device cuda
Prints a Markdown table and writes docs/results/bench_train.json (and .md).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.data import PatchSampler, load_images  # noqa: E402
from training.loop import TrainConfig, build_model, new_optimizer, train_step  # noqa: E402


def bench_sampler(sampler: PatchSampler, batch: int, seconds: float = 1.0) -> float:
    """Patch samples per second of the sampler alone (crop, flips, LR crop, stacking)."""
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sampler.sample(batch)
        n += batch
    return n / (time.perf_counter() - t0)


def bench_step(cfg: TrainConfig, sampler: PatchSampler, device: torch.device, steps: int, warmup: int) -> dict:
    """Mean seconds per train step (data on the device already; the first ``warmup`` steps are not timed)."""
    model = build_model(cfg).to(device)
    opt = new_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(0)
    batches = [tuple(t.to(device) for t in sampler.sample(cfg.batch)) for _ in range(steps + warmup)]
    times, cpu = [], []
    for i, (hr, lr) in enumerate(batches):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        stats = train_step(model, opt, hr, lr, cfg, 1000 + i, gen)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    # CPU seconds per step do not grow when other jobs share the machine (wall time does): with one
    # thread they are the step time of an idle core.
    return {"step_s": sum(times) / len(times), "cpu_s": sum(cpu) / len(cpu), "loss": stats["loss"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/datasets/photos/train")
    p.add_argument("--variants", default="4x64,8x96", help="comma-separated BATCHxPATCH (paper: 16x144)")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--images", type=int, default=8, help="training images to load (sampler needs a few)")
    p.add_argument("--out", default="docs/results/bench_train")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          (args.device if args.device != "auto" else "cpu"))
    images = load_images(args.data, args.scale)[: args.images]
    rows = []
    for variant in args.variants.split(","):
        batch, patch = (int(v) for v in variant.split("x"))
        sampler = PatchSampler(images, patch, args.scale, seed=0)
        feed = bench_sampler(sampler, batch)
        for prec in args.precisions.split(","):
            cfg = TrainConfig(scale=args.scale, batch=batch, patch=patch, bf16=prec == "bf16", iterations=10_000)
            r = bench_step(cfg, sampler, device, args.steps, args.warmup)
            sps, spc = batch / r["step_s"], batch / r["cpu_s"]
            rows.append({
                "device": device.type, "batch": batch, "patch": patch, "precision": prec,
                "step_s": round(r["step_s"], 3), "cpu_s_per_step": round(r["cpu_s"], 3),
                "samples_per_cpu_s": round(spc, 2), "hr_mpix_per_cpu_s": round(spc * patch * patch / 1e6, 4),
                "samples_per_s": round(sps, 2), "hr_mpix_per_s": round(sps * patch * patch / 1e6, 4),
                # the sampler (wall clock, so a lower bound on a busy machine) against the step's best-case rate
                "sampler_samples_per_s": round(feed, 1), "feed_margin": round(feed / max(sps, spc), 1),
                # the paper's 500k x 16 x 144^2 at this variant's pixel rate (per CPU second: one idle core)
                "paper_500k_days_one_core": round(500_000 * 16 * 144**2 / (spc * patch * patch) / 86400, 1),
            })
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    head = ("| device | batch x patch | precision | s/step | CPU s/step | samples/s | samples/CPU-s | HR MP/s "
            "| HR MP/CPU-s | sampler samples/s | feed margin |\n" + "| --- " * 11 + "|\n")
    table = head + "".join(
        f"| {r['device']} | {r['batch']}x{r['patch']} | {r['precision']} | {r['step_s']:.3f} "
        f"| {r['cpu_s_per_step']:.3f} "
        f"| {r['samples_per_s']:.2f} | {r['samples_per_cpu_s']:.2f} "
        f"| {r['hr_mpix_per_s']:.4f} | {r['hr_mpix_per_cpu_s']:.4f} "
        f"| {r['sampler_samples_per_s']:.0f} | {r['feed_margin']:.0f}x |\n" for r in rows)
    print(table)
    env = {"torch": torch.__version__, "threads": args.threads, "cpu": platform.processor() or platform.machine(),
           "cuda": torch.cuda.get_device_name() if device.type == "cuda" else None, "scale": args.scale,
           "steps": args.steps, "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
           "model": "IRN blocks=8 growth=32 (paper architecture)",
           "note": "one worker; per-step time includes forward, inverse, backward, clip and Adam"}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    out.with_suffix(".md").write_text(f"Training throughput per worker ({env['cpu']}, {args.threads} threads, "
                                      f"torch {torch.__version__}, x{args.scale})\n\n" + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

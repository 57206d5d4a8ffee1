"""Seconds per x4 train step with each codec layer (training/codec.py), from the shipped x4 weights.

    python benchmarks/bench_train_codec.py [--steps 3] [--batch 4] [--patch 128]
Prints a Markdown table and writes docs/results/train_lossy_x4/bench_codec.json. CPU seconds per step
(process time, one torch thread) do not grow when other jobs share the machine; wall seconds do.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.data import PatchSampler, load_images  # noqa: E402
from training.loop import TrainConfig, build_model, new_optimizer, train_step  # noqa: E402

VARIANTS = [  # (label, codec, clean_weight, rate_weight)
    ("none (today)", "none", 0.0, 0.0),
    ("jpeg STE", "jpeg", 0.0, 0.0),
    ("jpeg STE + clean", "jpeg", 0.5, 0.0),
    ("jpeg STE + clean + rate", "jpeg", 0.5, 0.1),
    ("webp STE + clean + rate", "webp", 0.5, 0.1),
    ("avif STE + clean + rate", "avif", 0.5, 0.1),
    ("diffjpeg + clean + rate", "diffjpeg", 0.5, 0.1),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent.parent / "shared/datasets/photos/train"))
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--out", default=str(ROOT / "docs/results/train_lossy_x4/bench_codec.json"))
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    base = TrainConfig(scale=4, batch=a.batch, patch=a.patch, iterations=1000, schedule="constant", lr=5e-5,
                       z_scale=0.0, restore_temperature=0.0, bf16=True,
                       init_from=str(ROOT / "irn_batch/weights/irn_x4.safetensors"))
    sampler = PatchSampler(load_images(a.data, 4), a.patch, 4, seed=0)
    batches = [sampler.sample(a.batch) for _ in range(a.steps + 1)]
    rows = []
    for label, codec, clean, rate in VARIANTS:
        cfg = replace(base, codec=codec, codec_clean_weight=clean, codec_rate_weight=rate)
        model = build_model(cfg)
        opt = new_optimizer(model, cfg)
        gen = torch.Generator().manual_seed(0)
        wall, cpu = [], []
        for i, (hr, lr) in enumerate(batches):
            t0, c0 = time.perf_counter(), time.process_time()
            train_step(model, opt, hr, lr, cfg, i, gen)
            if i:  # the first step warms up
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
        rows.append({"variant": label, "codec": codec, "clean_weight": clean, "rate_weight": rate,
                     "step_wall_s": sum(wall) / len(wall), "step_cpu_s": sum(cpu) / len(cpu)})
        print(f"| {label} | {rows[-1]['step_cpu_s']:.2f} | {rows[-1]['step_wall_s']:.2f} |", flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"batch": a.batch, "patch": a.patch, "steps": a.steps, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

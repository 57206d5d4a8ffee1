"""Single-process training (no Ray): used for the CPU default weights and by the Ray worker loop's logic.

    python -m training.local OUT_DIR configs/train/cpu_x2.yaml [key=value ...]

Resumes from OUT_DIR/state.safetensors when present; writes OUT_DIR/metrics.jsonl, and on every checkpoint
OUT_DIR/model.safetensors (latest) and OUT_DIR/best.safetensors (best validation Y-PSNR so far: of the restore
from the codec-stored LR when a codec is in the loop, else of the lossless restore).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import OmegaConf

from training.data import PatchSampler, center_crops, load_images
from training.loop import TrainConfig, build_model, export_bytes, load_state_bytes, new_optimizer, state_bytes
from training.loop import train_step, validate
from training.report import training_report


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def run_local(cfg: TrainConfig, data_url: str, val_url: str, out_dir: Path, val_every: int, ckpt_every: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    model = build_model(cfg)
    opt = new_optimizer(model, cfg)
    state_path = out_dir / "state.safetensors"
    start = load_state_bytes(state_path.read_bytes(), model, opt) if state_path.exists() else 0
    images = load_images(data_url, cfg.scale)
    sampler = PatchSampler(images, cfg.patch, cfg.scale, seed=cfg.seed + start)
    val = center_crops(load_images(val_url, cfg.scale), cfg.val_crop)
    gen = torch.Generator().manual_seed(cfg.seed + 1 + start)
    best_path = out_dir / "best.json"
    # with a codec in the loop "best" is the restore from the lossy LR, the figure that run trains for
    key = "lossy_psnr_y" if cfg.val_codec() else "psnr_y"
    best = json.loads(best_path.read_text()).get(key, -1.0) if best_path.exists() else -1.0
    log = (out_dir / "metrics.jsonl").open("a")
    t0, done = time.time(), 0
    print(f"start at iteration {start} of {cfg.iterations}", flush=True)
    for it in range(start, cfg.iterations):
        hr, lr_ref = sampler.sample(cfg.batch)
        stats = train_step(model, opt, hr, lr_ref, cfg, it, gen)
        done += 1
        last = it + 1 == cfg.iterations
        if (it + 1) % 10 == 0:
            stats.update(iteration=it + 1, elapsed_s=time.time() - t0, it_per_s=done / (time.time() - t0))
            log.write(json.dumps({"kind": "train", **stats}) + "\n")
            log.flush()
        if (it + 1) % val_every == 0 or last:
            v = validate(model, val, temperature=0.0, codec=cfg.val_codec(), quality=cfg.val_quality)
            v.update(iteration=it + 1, elapsed_s=time.time() - t0)
            log.write(json.dumps({"kind": "val", **v}) + "\n")
            log.flush()
            print(json.dumps(v), flush=True)
            if v[key] > best:
                best = v[key]
                _atomic_write(out_dir / "best.safetensors", export_bytes(model, cfg, it + 1, {f"val_{key}": f"{best:.3f}"}))
                _atomic_write(best_path, json.dumps(v).encode())
        if (it + 1) % ckpt_every == 0 or last:
            _atomic_write(state_path, state_bytes(model, opt, it + 1, cfg))
            _atomic_write(out_dir / "model.safetensors", export_bytes(model, cfg, it + 1))
    log.close()
    write_report(out_dir)


def write_report(out_dir: Path) -> None:
    """metrics.csv/json and the PNG curves from OUT_DIR/metrics.jsonl."""
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    for name, data in training_report([json.loads(line) for line in lines if line.strip()]).items():
        _atomic_write(out_dir / name, data)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out_dir, cfg_path, overrides = Path(argv[0]), argv[1], argv[2:]
    raw = OmegaConf.merge(OmegaConf.load(cfg_path), OmegaConf.from_dotlist(overrides))
    run = raw.pop("run")
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainConfig), raw))
    cfg.codec_spec()  # a bad codec setting fails here, not at the first step
    torch.set_num_threads(int(run.get("threads", torch.get_num_threads())))
    # Denormal floats make CPU convolutions orders of magnitude slower once small weights/gradients appear.
    torch.set_flush_denormal(True)
    print(json.dumps(asdict(cfg)), flush=True)
    run_local(cfg, run.data, run.val, out_dir, int(run.val_every), int(run.ckpt_every))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Single-process training (no Ray): used for the CPU default weights and by the Ray worker loop's logic.

    python -m training.local OUT_DIR configs/train/cpu_x2.yaml [key=value ...]

Resumes from OUT_DIR/state.safetensors when present; writes OUT_DIR/metrics.jsonl, and on every checkpoint
OUT_DIR/model.safetensors (latest) and OUT_DIR/best.safetensors (best validation Y-PSNR so far: of the restore
from the codec-stored LR when a codec is in the loop, else of the lossless restore).

A campaign that spans sessions and machines (issue 16) also names ``run.publish_dir``: a folder in the
repository that every checkpoint refreshes with ``model.safetensors`` (weights + iteration, no Adam state) and
``metrics.jsonl``, so committing that folder is all a resume needs. On a machine without OUT_DIR/state, the run
starts from the published weights at their iteration, so the cosine schedule continues where it stopped; Adam's
moments start from zero, and ``run.rewarm`` iterations ramp the scheduled lr up linearly from there
(Adam's first steps with empty moments are full-size sign steps; the ramp keeps them small).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

import torch
from omegaconf import MISSING

from irn_batch.model.checkpoint import checkpoint_from_bytes
from irn_batch.settings import load_config
from irn_batch.storage import write_object

from training.data import PatchSampler, center_crops, load_images
from training.loop import TrainConfig, build_model, export_bytes, load_state_bytes, new_optimizer, state_bytes
from training.loop import native_bf16, train_step, validate
from training.report import training_report


def _atomic_write(path: Path, data: bytes) -> None:
    write_object(str(path), data)  # storage's one atomic write (temp file, fsync, replace)


@dataclass
class LocalRun:
    """The ``run`` section of a local training config: data, cadence, and the campaign's publish folder."""

    data: str = MISSING
    val: str = MISSING
    val_every: int = 200
    ckpt_every: int = 50
    threads: Optional[int] = None
    publish_dir: Optional[str] = None
    rewarm: int = 100
    stop_after: Optional[int] = None


@dataclass
class LocalConfig(TrainConfig):
    """A local training config: the ``TrainConfig`` fields at the top level, plus ``run``."""

    run: LocalRun = field(default_factory=LocalRun)


def run_local(cfg: TrainConfig, data_url: str, val_url: str, out_dir: Path, val_every: int, ckpt_every: int,
              publish_dir: Path | None = None, rewarm: int = 100, stop_after: int | None = None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    model = build_model(cfg)
    opt = new_optimizer(model, cfg)
    state_path = out_dir / "state.safetensors"
    resumed_at = None  # set when this launch starts from published weights with a fresh Adam
    if state_path.exists():
        start = load_state_bytes(state_path.read_bytes(), model, opt)
    elif publish_dir is not None and (publish_dir / "model.safetensors").exists():
        start = resumed_at = load_published(publish_dir, model, cfg, out_dir)
    else:
        start = 0
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
    end = cfg.iterations if stop_after is None else min(cfg.iterations, start + stop_after)
    for it in range(start, end):
        hr, lr_ref = sampler.sample(cfg.batch)
        ramp = 1.0 if resumed_at is None or rewarm <= 0 else min(1.0, (it - resumed_at + 1) / rewarm)
        stats = train_step(model, opt, hr, lr_ref, cfg, it, gen, lr_factor=ramp)
        done += 1
        last = it + 1 == end
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
            if publish_dir is not None:
                publish(out_dir, publish_dir)
    log.close()
    write_report(out_dir)
    if publish_dir is not None:
        write_report(publish_dir)


def publish(out_dir: Path, publish_dir: Path) -> None:
    """Copy what a resume on another machine needs (weights with their iteration, the history) to publish_dir."""
    publish_dir.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "metrics.jsonl"):
        _atomic_write(publish_dir / name, (out_dir / name).read_bytes())


def load_published(publish_dir: Path, model, cfg: TrainConfig, out_dir: Path) -> int:
    """Load published weights into ``model``; copy their history into out_dir; return their iteration.

    Raises ValueError when the published run is of another architecture or planned total than ``cfg``
    (a changed plan is a new campaign, not a resume: the schedule would jump).
    """
    data = (publish_dir / "model.safetensors").read_bytes()
    ckpt = checkpoint_from_bytes(data, str(publish_dir / "model.safetensors"))
    if ckpt.model.config != model.config:
        raise ValueError(f"{publish_dir}: published weights are {ckpt.model.config}, this run is {model.config}")
    planned = json.loads(ckpt.metadata.get("train_config", "{}")).get("iterations")
    if planned is not None and planned != cfg.iterations:
        raise ValueError(f"{publish_dir}: published run planned {planned} iterations, this config {cfg.iterations}")
    model.load_state_dict(ckpt.model.state_dict(), strict=True)
    history = publish_dir / "metrics.jsonl"
    if history.exists() and not (out_dir / "metrics.jsonl").exists():
        _atomic_write(out_dir / "metrics.jsonl", history.read_bytes())
    return int(ckpt.metadata["trained_iterations"])


def write_report(out_dir: Path) -> None:
    """metrics.csv/json and the PNG curves from OUT_DIR/metrics.jsonl."""
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    for name, data in training_report([json.loads(line) for line in lines if line.strip()]).items():
        _atomic_write(out_dir / name, data)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out_dir, cfg_path, overrides = Path(argv[0]), argv[1], argv[2:]
    loaded = load_config(LocalConfig, cfg_path, overrides, require_file=True)
    run = loaded.run
    cfg = TrainConfig(**{f.name: getattr(loaded, f.name) for f in fields(TrainConfig)})
    cfg.codec_spec()  # a bad codec setting fails here, not at the first step
    torch.set_num_threads(run.threads or torch.get_num_threads())
    if cfg.bf16 and not native_bf16(torch.device("cpu")):
        # emulated bf16 is several times slower than fp32 on such CPUs (4.5x measured on an AVX2-only one)
        print("warning: bf16 autocast asked for, but this CPU has no native bf16 (oneDNN); training in fp32",
              file=sys.stderr, flush=True)
        cfg.bf16 = False
    # Denormal floats make CPU convolutions orders of magnitude slower once small weights/gradients appear.
    torch.set_flush_denormal(True)
    print(json.dumps(asdict(cfg)), flush=True)
    run_local(cfg, run.data, run.val, out_dir, run.val_every, run.ckpt_every,
              publish_dir=Path(run.publish_dir) if run.publish_dir else None, rewarm=run.rewarm,
              stop_after=run.stop_after)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

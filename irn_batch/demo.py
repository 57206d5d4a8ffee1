"""`make demo`: ingest the bundled samples through the Ray pipeline, restore them, compare with bicubic.

Prints a per-image table (Y-PSNR of the IRN restore and of bicubic down+up against the original; bytes
of the original and of the stored LR) and writes ``side_by_side.png`` (original | LR | restored | bicubic).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

from irn_batch.checkpoint import default_weights_path
from irn_batch.container import encode
from irn_batch.imageio import decode_image, to_uint8
from irn_batch.metrics import bicubic_lr, bicubic_resize, psnr_y


def _row(images: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """(H, W, 3) uint8 images side by side on a white strip, top-aligned."""
    h = max(i.shape[0] for i in images)
    w = sum(i.shape[1] for i in images) + gap * (len(images) - 1)
    out = np.full((h, w, 3), 255, np.uint8)
    x = 0
    for im in images:
        out[: im.shape[0], x : x + im.shape[1]] = im[..., :3]
        x += im.shape[1] + gap
    return out


def _stack(rows: list[np.ndarray], gap: int = 4) -> np.ndarray:
    w = max(r.shape[1] for r in rows)
    out = np.full((sum(r.shape[0] for r in rows) + gap * (len(rows) - 1), w, 3), 255, np.uint8)
    y = 0
    for r in rows:
        out[y : y + r.shape[0], : r.shape[1]] = r
        y += r.shape[0] + gap
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns 0, or 2 when the default weights are not there yet."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default: a fresh temporary folder)")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--model", default=None, help="checkpoint (default: the package's weights)")
    args = parser.parse_args(argv)
    if args.model is None and not default_weights_path(args.scale).is_file():
        print(f"demo: the default weights {default_weights_path(args.scale)} are missing (they are still being "
              "trained); rerun when they are there, or pass --model PATH", file=sys.stderr)
        return 2

    from irn_batch.pipeline.config import IngestConfig, RestoreConfig, load_config
    from irn_batch.pipeline.ingest import run_ingest
    from irn_batch.pipeline.restore import run_restore

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="irn_demo_"))
    samples = sorted(Path(str(resources.files("irn_batch") / "samples")).glob("*.png"))
    src = out / "input"
    shutil.rmtree(out / "lr", ignore_errors=True)
    shutil.rmtree(out / "restored", ignore_errors=True)
    src.mkdir(parents=True, exist_ok=True)
    for p in samples:
        shutil.copyfile(p, src / p.name)
    common = [f"scale={args.scale}", "ray.num_cpus=2", "actors.pool_size=2", "actors.batch_size=1", "progress_s=5"]
    if args.model:
        common.append(f"model={args.model}")
    run_ingest(load_config(IngestConfig, None, [f"input={src}", f"output={out / 'lr'}", *common]))
    run_restore(load_config(RestoreConfig, None, [f"input={out / 'lr'}", f"output={out / 'restored'}", *common]))

    s = args.scale
    print(f"\n{'image':<16}{'size':>10}{'IRN Y-PSNR':>12}{'bicubic':>10}{'orig bytes':>12}{'LR bytes':>10}")
    rows, gains = [], []
    for p in samples:
        orig = to_uint8(decode_image((src / p.name).read_bytes()).rgb)
        lr_bytes = (out / "lr" / p.name).read_bytes()
        lr = to_uint8(decode_image(lr_bytes).rgb)
        rest = to_uint8(decode_image((out / "restored" / p.name).read_bytes()).rgb)
        bic = to_uint8(bicubic_resize(bicubic_lr(orig, s), orig.shape[:2]))
        p_irn, p_bic = psnr_y(rest, orig, crop=s), psnr_y(bic, orig, crop=s)
        gains.append(p_irn - p_bic)
        print(f"{p.stem:<16}{orig.shape[1]:>5}x{orig.shape[0]:<4}{p_irn:>12.2f}{p_bic:>10.2f}"
              f"{p.stat().st_size:>12}{len(lr_bytes):>10}")
        rows.append(_row([orig, lr, rest, bic]))
    print(f"mean gain of IRN over bicubic: {np.mean(gains):+.2f} dB")
    picture = out / "side_by_side.png"
    picture.write_bytes(encode(_stack(rows)))
    print(f"side-by-side (original | LR | restored | bicubic): {picture}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``irn-batch evaluate``: the IRN paper's table for any weights on a folder of HR images.

Per image and as a mean, with Y-PSNR / Y-SSIM cropping ``scale`` border pixels (paper protocol):

* ``irn_z``: the HR restore from the 8-bit (PNG) LR with z ~ N(0, I), the mean over ``--draws`` draws
  (z seeds 0..draws-1);
* ``irn_z0``: the HR restore with z = 0;
* ``bicubic``: Bicubic & Bicubic: ``metrics.bicubic_lr`` (the reference LR of training), rounded to
  8 bits, upscaled with ``metrics.bicubic_resize``;
* ``lr``: the model's 8-bit LR against the bicubic reference LR (no crop): how "normal" the LR looks.

The command is ``irn-batch evaluate`` (``irn_batch.cli.evaluate``). The model path is exactly the CLI's (``rescale.downscale_image`` -> PNG LR -> ``restore_image``).
Writes ``eval.md``, ``eval.json`` and ``grid.png`` (HR | IRN LR | IRN restore | bicubic restore crops)
under ``--out``; an image that cannot be read is reported and skipped.
"""
from __future__ import annotations

import io
import math
import sys
import time

import numpy as np
from PIL import Image, ImageDraw

from irn_batch.model.checkpoint import Checkpoint
from irn_batch.io.colour import to_uint8
from irn_batch.io.decode import DecodedImage, ImageError, decode_image
from irn_batch.metrics import bicubic_lr, bicubic_resize, psnr_y, ssim_y
from irn_batch.io.lr_file import read_lr
from irn_batch.rescale import downscale_image, restore_image
from irn_batch.storage import StorageConfig, StorageError, open_fs

METHODS = ("irn_z", "irn_z0", "bicubic", "lr")
LABELS = {
    "irn_z": "IRN, z ~ N(0, I)",
    "irn_z0": "IRN, z = 0",
    "bicubic": "Bicubic & Bicubic",
    "lr": "IRN LR vs bicubic LR",
}


def score(a, b, crop: int) -> dict[str, float]:
    """Y-PSNR and Y-SSIM of two (H, W, 3) images (uint8 or [0, 1] floats) with ``crop`` border pixels removed."""
    return {"psnr_y": psnr_y(a, b, crop), "ssim_y": ssim_y(a, b, crop)}


def bicubic_restore(hr: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic & Bicubic: (H, W, 3) [0, 1] HR -> 8-bit bicubic LR -> bicubic upscale, (H, W, 3) uint8."""
    lr = to_uint8(bicubic_lr(hr, scale))
    h, w = lr.shape[0] * scale, lr.shape[1] * scale  # the padded size; crop back to the original below
    up = bicubic_resize(lr, (h, w))
    return to_uint8(up[: hr.shape[0], : hr.shape[1]])


def evaluate_image(ckpt: Checkpoint, hr: np.ndarray, draws: int, tile: int | None, precision: str) -> tuple[dict, dict]:
    """Scores of one (H, W, 3) float HR image, and the images used (for the grid)."""
    s = ckpt.model.scale
    h, w = hr.shape[:2]
    img = DecodedImage(rgb=hr.astype(np.float32), alpha=None, width=w, height=h, mode="RGB", format="PNG")
    lr_png, _ = downscale_image(ckpt, img, z_seed=0, tile=tile, precision=precision)
    lr = read_lr(lr_png)[1].rgb  # (h, w, 3) float32 on the 8-bit grid
    z0 = restore_image(ckpt, lr_png, temperature=0.0, tile=tile, precision=precision)
    rows = {"irn_z0": score(z0, hr, s)}
    sampled = [
        restore_image(ckpt, lr_png, temperature=1.0, z_seed=k, tile=tile, precision=precision) for k in range(draws)
    ]
    per_draw = [score(x, hr, s) for x in sampled]
    rows["irn_z"] = {k: float(np.mean([d[k] for d in per_draw])) for k in ("psnr_y", "ssim_y")} if draws else {}
    bic = bicubic_restore(hr, s)
    rows["bicubic"] = score(bic, hr, s)
    rows["lr"] = score(lr, bicubic_lr(hr, s), 0)
    shown = z0 if ckpt.default_temperature == 0 or not sampled else sampled[0]
    return rows, {"hr": hr, "lr": lr, "irn": shown, "bicubic": bic}


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if len(finite) == len(values) and values else (math.inf if values else math.nan)


def summarise(per_image: list[dict]) -> dict:
    """Mean of every method/metric over the images that were scored."""
    ok = [r for r in per_image if "error" not in r]
    return {m: {k: _mean([r[m][k] for r in ok if r.get(m)]) for k in ("psnr_y", "ssim_y")} for m in METHODS}


def markdown(result: dict) -> str:
    """The per-image and mean table, Y-PSNR (dB) / Y-SSIM."""
    head = "| image | " + " | ".join(LABELS[m] for m in METHODS) + " |"
    lines = [
        f"Model `{result['model_id']}` (x{result['scale']}), {result['draws']} z draws, crop {result['scale']}; "
        "cells are Y-PSNR (dB) / Y-SSIM.",
        "",
        head,
        "|" + " --- |" * (len(METHODS) + 1),
    ]

    def cell(r: dict) -> str:
        return f"{r['psnr_y']:.2f} / {r['ssim_y']:.4f}" if r else "-"

    for r in result["images"]:
        name = r["image"].rsplit("/", 1)[-1]
        if "error" in r:
            lines.append(f"| {name} | error: {r['error']} |" + " |" * (len(METHODS) - 1))
        else:
            lines.append(f"| {name} | " + " | ".join(cell(r[m]) for m in METHODS) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{cell(result['mean'][m])}**" for m in METHODS) + " |")
    return "\n".join(lines) + "\n"


def grid_png(panels: list[tuple[str, dict]], scale: int, size: int = 192) -> bytes:
    """Rows of centre crops: HR | IRN LR (nearest, enlarged) | IRN restore | bicubic restore."""
    cols = ("HR", "IRN LR", "IRN restore", "Bicubic restore")
    pad, label = 4, 16
    im = Image.new("RGB", (len(cols) * (size + pad) + pad, label + len(panels) * (size + label + pad) + pad), "white")
    d = ImageDraw.Draw(im)
    for c, text in enumerate(cols):
        d.text((pad + c * (size + pad), 2), text, fill="black")
    for r, (name, p) in enumerate(panels):
        h, w = p["hr"].shape[:2]
        side = min(size, h, w) // scale * scale
        y, x = (h - side) // 2 // scale * scale, (w - side) // 2 // scale * scale
        lr = p["lr"][y // scale : (y + side) // scale, x // scale : (x + side) // scale]
        window = (slice(y, y + side), slice(x, x + side))
        crops = [p["hr"][window], lr, p["irn"][window], p["bicubic"][window]]
        top = label + r * (size + label + pad)
        d.text((pad, top), name[:60], fill="black")
        for c, crop in enumerate(crops):
            pixels = crop if crop.dtype == np.uint8 else to_uint8(crop)
            tile = Image.fromarray(pixels).resize((size, size), Image.NEAREST)
            im.paste(tile, (pad + c * (size + pad), top + label - 2))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def evaluate(
    ckpt: Checkpoint, uris: list[str], draws: int = 5, grid: int = 4, tile: int | None = None,
    precision: str = "fp32", max_pixels: int = 64_000_000, log=lambda m: print(m, file=sys.stderr, flush=True),
    storage: StorageConfig | None = None,
) -> tuple[dict, bytes | None]:
    """(result dict, grid PNG bytes) for the images at ``uris``."""
    per_image, panels, t0 = [], [], time.time()
    for uri in uris:
        try:
            fs, path = open_fs(uri, storage)
            hr = decode_image(fs.cat_file(path), max_pixels=max_pixels).rgb
            rows, shown = evaluate_image(ckpt, hr, draws, tile, precision)
        except (ImageError, OSError, StorageError) as e:
            log(f"{uri}: skipped ({e})")
            per_image.append({"image": uri, "error": str(e)})
            continue
        per_image.append({"image": uri, "width": hr.shape[1], "height": hr.shape[0], **rows})
        if len(panels) < grid:
            panels.append((uri.rsplit("/", 1)[-1], shown))
        log(f"{uri}: " + ", ".join(f"{m} {rows[m]['psnr_y']:.2f} dB" for m in METHODS if rows[m]))
    result = {
        "model_id": ckpt.model_id, "scale": ckpt.model.scale, "draws": draws, "crop": ckpt.model.scale,
        "precision": precision, "default_temperature": ckpt.default_temperature,
        "n_images": sum("error" not in r for r in per_image), "seconds": round(time.time() - t0, 1),
        "mean": summarise(per_image), "images": per_image,
        "bicubic": "antialiased bicubic, a = -0.5 (torch interpolate antialias=True = Pillow BICUBIC), 8-bit LR",
    }
    return result, (grid_png(panels, ckpt.model.scale) if panels else None)

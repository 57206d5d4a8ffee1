"""Rate–distortion of IRN's LR files against the codecs a user would pick instead.

For each image (decoded original = the reference; RGB only, an alpha plane is ignored) and each scale:

* ``irn <container>``: the model's LR (``rescale.downscale_pixels``, run once per image, scale and weights)
  written as an LR file (``lr_file.write_lr``: metadata inside) in PNG, WebP lossless, and WebP, JPEG
  4:2:0 and 4:4:4 and AVIF 4:2:0 and 4:4:4 over a quality grid, then read back and restored (``rescale.restore_pixels``,
  the weights' default temperature and the z seed the CLI would store). Lossy containers use the weights
  the CLI picks for them (``resolve_model(..., lossy=True)``: the compression-aware ones where shipped).
* ``bicubic <container>``: the bicubic LR (``metrics.bicubic_lr``, 8-bit) in the same containers (plain
  files, no metadata), upscaled with ``metrics.bicubic_resize``: the upscaler baseline.
* ``hr <codec>``: the HR itself as JPEG 4:2:0, JPEG 4:4:4, WebP and AVIF 4:2:0 over a quality grid.
* ``thumb+hr <codec>``: a photo service's status quo, a bicubic x4 JPEG 4:2:0 thumbnail (quality
  ``--thumb-quality``) stored beside the HR codec's file: its bytes are added to each HR point.

Every point records bpp (all stored bytes of the file, metadata included, * 8 / HR pixels), Y-PSNR
(BT.601, ``scale`` border pixels cropped: the IRN paper's protocol) and RGB PSNR (same crop) of the
decoded/restored HR against the decoded original, and for LR methods the decoded LR's Y-PSNR against the
bicubic LR (no crop: is it still a faithful thumbnail?). Curves are averaged over images at each quality
setting (mean bpp, mean PSNR in dB); Bjøntegaard deltas (``irn_batch.evaluation.bdrate``) are computed on the mean
curves. Encoders are Pillow's through ``irn_batch.io.container`` (WebP method 4, AVIF speed 6 = Pillow's
default). The vocabulary (containers, grids, labels, mean curves) is ``rd_curves``; the report ``rd_report``;
the command ``irn-batch rd`` lives in ``irn_batch.cli.evaluation``.
"""
from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import replace

import numpy as np

from irn_batch.evaluation.rd_curves import LOSSLESS, THUMB_SCALE, ENCODINGS, Plan, method_key, settings
from irn_batch.evaluation.rd_report import summarise
from irn_batch.io.container import Encoding, encode
from irn_batch.io.lr_file import read_lr, write_lr
from irn_batch.io.colour import to_uint8
from irn_batch.io.decode import DecodedImage, ImageError, decode_image
from irn_batch.metrics import bicubic_lr, bicubic_resize, psnr_rgb, psnr_y
from irn_batch.model.checkpoint import Checkpoint
from irn_batch.rescale import content_seed, downscale_pixels, restore_pixels
from irn_batch.storage import StorageConfig, StorageError, open_fs


def _point(quality: int, nbytes: int, hr_pixels: int, restored, ref, scale: int, lr=None, lr_ref=None) -> dict:
    out = {"quality": quality, "bytes": nbytes, "bpp": nbytes * 8 / hr_pixels,
           "psnr_y": psnr_y(restored, ref, scale), "psnr_rgb": psnr_rgb(restored, ref, scale)}
    if lr is not None:
        out["lr_psnr_y"] = psnr_y(lr, lr_ref, 0)
    return out


def bicubic_up(lr: np.ndarray, scale: int, height: int, width: int) -> np.ndarray:
    """(h, w, 3) LR -> bicubic x``scale`` upscale cropped to (height, width, 3) uint8 (as ``evaluate``)."""
    up = bicubic_resize(lr, (lr.shape[0] * scale, lr.shape[1] * scale))
    return to_uint8(up[:height, :width])


def centre_crop(img: DecodedImage, side: int | None) -> DecodedImage:
    """The RGB of ``img`` (alpha dropped), centre-cropped to at most ``side`` x ``side`` when given."""
    rgb = img.rgb
    if side:
        y, x = max(0, (img.height - side) // 2), max(0, (img.width - side) // 2)
        rgb = np.ascontiguousarray(rgb[y : y + side, x : x + side])
    return replace(img, rgb=rgb, alpha=None, height=rgb.shape[0], width=rgb.shape[1])


def measure_hr(ref: np.ndarray, plan: Plan) -> dict[int, dict[str, list[dict]]]:
    """The HR codecs and thumbnail+HR points of one (H, W, 3) float reference, per scale (the crop differs)."""
    h, w = ref.shape[:2]
    hr8 = to_uint8(ref)
    thumb = encode(to_uint8(bicubic_lr(ref, THUMB_SCALE)), Encoding("jpeg", plan.thumb_quality, "4:2:0"))
    out: dict[int, dict[str, list[dict]]] = {s: {} for s in plan.scales}
    for codec, qualities in plan.hr_qualities.items():
        for q in qualities:
            data = encode(hr8, ENCODINGS[codec](q))
            dec = decode_image(data).rgb
            for s in plan.scales:
                p = _point(q, len(data), h * w, dec, ref, s)
                out[s].setdefault(method_key("hr", codec), []).append(p)
                both = len(data) + len(thumb)
                out[s].setdefault(method_key("thumb+hr", codec), []).append(
                    {**p, "bytes": both, "bpp": both * 8 / (h * w), "thumb_bytes": len(thumb)})
    return out


def smallest_reaching(hr8: np.ndarray, codec: str, target_psnr: float, crop: int) -> dict | None:
    """The smallest file of HR codec ``codec`` (an ``ENCODINGS`` key) whose decoded (H, W, 3) uint8 image
    reaches ``target_psnr`` Y-PSNR (dB, ``crop`` border pixels removed): {"quality", "bytes", "psnr_y"}, or
    None when even quality 100 does not. Bisection over quality 1..100 (7 encodes), which assumes a codec's
    Y-PSNR rises with its quality setting.
    """
    def trial(q: int) -> dict:
        data = encode(hr8, ENCODINGS[codec](q))
        return {"quality": q, "bytes": len(data), "psnr_y": psnr_y(decode_image(data).rgb, hr8, crop)}

    best, lo, hi = trial(100), 1, 100
    if best["psnr_y"] < target_psnr:
        return None
    while lo < hi:  # invariant: quality hi reaches the target (best is its trial)
        mid = (lo + hi) // 2
        t = trial(mid)
        if t["psnr_y"] >= target_psnr:
            best, hi = t, mid
        else:
            lo = mid + 1
    return best


def measure_bicubic(ref: np.ndarray, scale: int, plan: Plan) -> dict[str, list[dict]]:
    """The bicubic-down, LR container, bicubic-up points of one reference at ``scale``."""
    h, w = ref.shape[:2]
    lr_ref = bicubic_lr(ref, scale)
    lr8 = to_uint8(lr_ref)
    out: dict[str, list[dict]] = {}
    for key, q in plan.lr_points():
        data = encode(lr8, ENCODINGS[key](q))
        dec = decode_image(data).rgb
        out.setdefault(method_key("bicubic", key), []).append(
            _point(q, len(data), h * w, bicubic_up(dec, scale, h, w), ref, scale, dec, lr_ref))
    return out


def measure_irn(img: DecodedImage, z_seed: int, models: dict[str, Checkpoint], plan: Plan) -> dict[str, list[dict]]:
    """IRN's LR file in every container, restored, for one image at one scale.

    ``models``: {"lossless": weights for PNG/WebP-lossless LRs, "lossy": weights for lossy LRs}. The network
    runs forward once per weights; a restore runs once per distinct decoded LR (lossless containers share one).
    """
    ref, h, w = img.rgb, img.height, img.width
    scale = models["lossless"].model.scale
    lr_ref = bicubic_lr(ref, scale)
    forward: dict[str, tuple] = {}
    restored: dict[tuple[str, bytes], np.ndarray] = {}
    out: dict[str, list[dict]] = {}
    for key, q in plan.lr_points():
        ckpt = models["lossless" if key in LOSSLESS else "lossy"]
        if ckpt.model_id not in forward:
            forward[ckpt.model_id] = downscale_pixels(ckpt, img, z_seed=z_seed)
        pixels, meta = forward[ckpt.model_id]
        data = write_lr(pixels, meta, ENCODINGS[key](q))
        lr_meta, lr = read_lr(data)
        cache = (ckpt.model_id, hashlib.sha256(lr.rgb.tobytes()).digest())
        if cache not in restored:
            restored[cache] = restore_pixels(ckpt, lr_meta, lr)
        out.setdefault(method_key("irn", key), []).append(
            _point(q, len(data), h * w, restored[cache], ref, scale, lr.rgb, lr_ref))
    return out


def measure_image(data: bytes, models: dict[int, dict[str, Checkpoint]], plan: Plan) -> tuple[dict, dict]:
    """({scale: {method: [points]}}, image info) for one source file's bytes; ImageError if unusable."""
    img = centre_crop(decode_image(data), plan.crop)
    if min(img.width, img.height) <= 2 * max(plan.scales):
        raise ImageError(f"{img.width}x{img.height} is too small for the x{max(plan.scales)} border crop")
    per_scale = measure_hr(img.rgb, plan)
    for s in plan.scales:
        per_scale[s].update(measure_bicubic(img.rgb, s, plan))
        per_scale[s].update(measure_irn(img, content_seed(data), models[s], plan))
    return per_scale, {"width": img.width, "height": img.height}


def rd(uris: list[str], models: dict[int, dict[str, Checkpoint]], plan: Plan, storage: StorageConfig | None = None,
       log=lambda m: print(m, file=sys.stderr, flush=True)) -> dict:
    """Measure every image at ``uris`` (skipping, and listing, those that cannot be read) and summarise."""
    per_scale: dict[int, list] = {s: [] for s in plan.scales}
    images, skipped, t0 = [], [], time.time()
    for uri in uris:
        try:
            fs, path = open_fs(uri, storage)
            points, info = measure_image(fs.cat_file(path), models, plan)
        except (ImageError, OSError, StorageError) as e:
            log(f"{uri}: skipped ({e})")
            skipped.append({"image": uri, "error": str(e)})
            continue
        images.append({"image": uri, **info, "points": {str(s): points[s] for s in plan.scales}})
        for s in plan.scales:
            per_scale[s].append(points[s])
        png = {s: points[s][method_key("irn", "png")][0] for s in plan.scales}
        log(f"{uri}: " + ", ".join(f"x{s} IRN PNG {p['bpp']:.2f} bpp {p['psnr_y']:.2f} dB" for s, p in png.items())
            + f" ({time.time() - t0:.0f} s)")
    model_ids = {s: {k: ck.model_id for k, ck in models[s].items()} for s in plan.scales}
    return summarise(per_scale, images, skipped, model_ids, settings(plan), time.time() - t0)

"""``irn-batch rd``: rate–distortion of IRN's LR files against the codecs a user would pick instead.

For each image (decoded original = the reference; RGB only, an alpha plane is ignored) and each scale:

* ``irn <container>``: the model's LR (``rescale.downscale_pixels``, run once per image, scale and weights)
  written as an LR file (``container.write_lr``: metadata inside) in PNG, WebP lossless, and WebP, JPEG
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
setting (mean bpp, mean PSNR in dB); Bjøntegaard deltas (``irn_batch.bdrate``) are computed on the mean
curves. Encoders are Pillow's through ``irn_batch.container`` (WebP method 4, AVIF speed 6 = Pillow's
default). Output: ``rd.json``, ``rd.md`` and ``rd_x{scale}.png`` under ``--out`` (see ``rd_report``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from irn_batch.checkpoint import Checkpoint, CheckpointError, resolve_model
from irn_batch.container import Encoding, avif_available, encode, read_lr, write_lr
from irn_batch.imageio import DecodedImage, ImageError, decode_image, to_uint8
from irn_batch.metrics import bicubic_lr, bicubic_resize, psnr_rgb, psnr_y
from irn_batch.rescale import content_seed, downscale_pixels, restore_pixels
from irn_batch.storage import IMAGE_SUFFIXES, StorageConfig, StorageError, open_fs, to_uri

# Container keys: how each is encoded at quality q.
ENCODINGS = {
    "png": lambda q: Encoding("png"),
    "webp-lossless": lambda q: Encoding("webp", 100),
    "webp": lambda q: Encoding("webp", q),
    "jpeg420": lambda q: Encoding("jpeg", q, "4:2:0"),
    "jpeg444": lambda q: Encoding("jpeg", q, "4:4:4"),
    "avif": lambda q: Encoding("avif", q, "4:2:0"),
    "avif444": lambda q: Encoding("avif", q, "4:4:4"),
}
NAMES = {"png": "PNG", "webp-lossless": "WebP lossless", "webp": "WebP", "jpeg420": "JPEG 4:2:0",
         "jpeg444": "JPEG 4:4:4", "avif": "AVIF 4:2:0", "avif444": "AVIF 4:4:4"}
LOSSLESS = ("png", "webp-lossless")
LOSSY = ("webp", "jpeg420", "jpeg444", "avif", "avif444")
HR_CODECS = ("jpeg420", "jpeg444", "webp", "avif")
# Default grids. Each LR point costs a restore (about 9 s per megapixel on one core), so the LR grids are
# short: 4:2:0 LRs lose IRN's hidden detail and saturate early, so their grids reach lower; the 4:4:4 ones
# keep gaining up to q98. HR points cost only an encode, so the HR grids are long and reach low rates.
LR_QUALITIES = {"webp": (30, 50, 70, 85, 95), "jpeg420": (30, 50, 70, 85, 95), "jpeg444": (50, 70, 85, 95, 98),
                "avif": (30, 50, 70, 90), "avif444": (50, 70, 85, 95)}
HR_QUALITIES = (2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
THUMB_SCALE = 4
THUMB_QUALITY = 85


@dataclass
class Plan:
    """What to measure: scales, the quality grid of each lossy container (LR and HR) and the thumbnail."""

    scales: tuple[int, ...] = (2, 4)
    lr_qualities: dict[str, tuple[int, ...]] = field(default_factory=lambda: dict(LR_QUALITIES))
    hr_qualities: dict[str, tuple[int, ...]] = field(default_factory=lambda: {k: HR_QUALITIES for k in HR_CODECS})
    thumb_quality: int = THUMB_QUALITY
    crop: int | None = None  # centre crop (HR pixels per side) before anything else; None = whole image

    def lr_points(self) -> list[tuple[str, int]]:
        """(container key, quality) of every LR file measured: the lossless ones, then each lossy grid."""
        return [(k, 100) for k in LOSSLESS] + [(k, q) for k in LOSSY for q in self.lr_qualities.get(k, ())]


def method_key(family: str, container: str) -> str:
    """E.g. 'irn webp', 'hr jpeg420', 'thumb+hr avif', 'bicubic png'."""
    return f"{family} {container}"


def label(key: str) -> str:
    """A method's display name, e.g. 'IRN + WebP LR', 'HR JPEG 4:2:0', 'x4 thumbnail + HR AVIF 4:2:0'."""
    family, container = key.split(" ", 1)
    name = NAMES[container]
    return {"irn": f"IRN + {name} LR", "bicubic": f"bicubic + {name} LR", "hr": f"HR {name}",
            "thumb+hr": f"x{THUMB_SCALE} thumbnail + HR {name}"}[family]


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


def mean_curves(per_image: list[dict[str, list[dict]]]) -> dict[str, list[dict]]:
    """Mean over images of every field of each point, matched by quality (every image has every point)."""
    if not per_image:
        return {}
    out = {}
    for key, points in per_image[0].items():
        mean = []
        for i, p in enumerate(points):
            row = {"quality": p["quality"]}
            for field_name in ("bpp", "bytes", "psnr_y", "psnr_rgb", "lr_psnr_y", "thumb_bytes"):
                if field_name in p:
                    row[field_name] = float(np.mean([img[key][i][field_name] for img in per_image]))
            mean.append(row)
        out[key] = mean
    return out


def list_images(data: str, storage: StorageConfig | None = None) -> list[str]:
    """The image files directly under a folder/prefix URL (sorted), or the file itself. StorageError if absent."""
    fs, root = open_fs(data, storage)
    if fs.isfile(root):
        return [to_uri(fs, root)]
    if not fs.isdir(root):
        raise StorageError("no such file or folder")
    return [to_uri(fs, p) for p in sorted(fs.ls(root, detail=False)) if p.lower().endswith(IMAGE_SUFFIXES)]


def rd(uris: list[str], models: dict[int, dict[str, Checkpoint]], plan: Plan, storage: StorageConfig | None = None,
       log=lambda m: print(m, file=sys.stderr, flush=True)) -> dict:
    """Measure every image at ``uris`` (skipping, and listing, those that cannot be read) and summarise."""
    from irn_batch.rd_report import summarise

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


def settings(plan: Plan) -> dict:
    """What a run measured, as stored in rd.json (runs are merged only when these agree)."""
    return {
        "thumbnail": f"bicubic x{THUMB_SCALE} (metrics.bicubic_lr), JPEG 4:2:0 q{plan.thumb_quality}",
        "crop": plan.crop,
        "lr_qualities": {k: list(v) for k, v in plan.lr_qualities.items()},
        "hr_qualities": {k: list(v) for k, v in plan.hr_qualities.items()},
    }


def _quality(text: str) -> int:
    from irn_batch.cli import _quality as parse

    return parse(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``irn-batch rd``."""
    p.add_argument("data", nargs="?", help="folder, prefix URL (s3://...) or single image: the HR originals")
    p.add_argument("--scale", type=int, nargs="+", choices=(2, 4, 8), default=[2, 4], help="default: 2 4")
    p.add_argument("--out", required=True, help="folder for rd.json, rd.md and rd_x{scale}.png")
    p.add_argument("--model", nargs="+", default=[],
                   help="checkpoint path(s) or URL(s), one per scale (default: the shipped weights, the "
                        "compression-aware ones for lossy LRs where shipped)")
    p.add_argument("--qualities", type=_quality, nargs="+", default=None,
                   help="quality grid of the lossy LR containers (default per container: "
                        + "; ".join(f"{k} {' '.join(map(str, v))}" for k, v in LR_QUALITIES.items()) + ")")
    p.add_argument("--hr-qualities", type=_quality, nargs="+", default=None,
                   help=f"quality grid of the HR codecs (default {' '.join(map(str, HR_QUALITIES))})")
    p.add_argument("--thumb-quality", type=_quality, default=THUMB_QUALITY,
                   help=f"JPEG quality of the x{THUMB_SCALE} thumbnail in thumb+hr (default {THUMB_QUALITY})")
    p.add_argument("--limit", type=int, default=None, help="measure only the first N images")
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="measure only images K, K+N, K+2N, ... of the sorted list (K from 0), to run parts in "
                        "parallel and join them with --merge")
    p.add_argument("--crop", type=int, default=None,
                   help="centre-crop each image to N x N HR pixels (default: whole images; headers dominate "
                        "small crops)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--endpoint-url", default=None, help="S3 endpoint for s3:// URLs (default: AWS_ENDPOINT_URL)")
    p.add_argument("--merge", nargs="+", default=None, metavar="RD_JSON",
                   help="instead of measuring, join the rd.json files of earlier runs (e.g. one per scale or "
                        "--shard) and write the report for all their images")


def _shard(text: str) -> tuple[int, int]:
    from irn_batch.cli import UserError

    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(None, f"--shard must be K/N, e.g. 0/2, got {text!r}") from None
    if not 0 <= k < n:
        raise UserError(None, f"--shard K/N needs 0 <= K < N, got {text!r}")
    return k, n


def load_models(paths: list[str], scales: tuple[int, ...]) -> dict[int, dict[str, Checkpoint]]:
    """{scale: {"lossless": ckpt, "lossy": ckpt}}: a given checkpoint serves every container of its scale."""
    from irn_batch.cli import UserError

    given: dict[int, Checkpoint] = {}
    for path in paths:
        try:
            ckpt = resolve_model(path, 2)
        except CheckpointError as e:
            raise UserError(None if str(e).startswith(path) else path, str(e)) from None
        if ckpt.model.scale not in scales:
            raise UserError(path, f"model is x{ckpt.model.scale} but --scale is {' '.join(map(str, scales))}")
        given[ckpt.model.scale] = ckpt
    models = {}
    for s in scales:
        try:
            plain = given.get(s) or resolve_model(None, s)
            lossy = given.get(s) or resolve_model(None, s, lossy=True)
        except CheckpointError as e:
            raise UserError(None, str(e)) from None
        models[s] = {"lossless": plain, "lossy": lossy}
    return models


def run(args: argparse.Namespace) -> int:
    """Measure, write rd.json / rd.md / rd_x{scale}.png, print the BD table; 2 on a user error."""
    from irn_batch.cli import UserError
    from irn_batch import rd_report

    storage = StorageConfig(endpoint_url=args.endpoint_url)
    if args.merge:
        if args.data:
            raise UserError(None, "give either DATA or --merge, not both")
        runs = [_read_json(path, storage) for path in args.merge]
        try:
            merged = rd_report.merge(runs)
        except ValueError as e:
            raise UserError(None, f"cannot merge: {e}") from None
        except (KeyError, TypeError) as e:
            raise UserError(None, f"cannot merge: an rd.json lacks {e}") from None
        return _report(merged, args.out, storage)
    if not args.data:
        raise UserError(None, "DATA (a folder, URL or image) is required unless --merge is given")
    scales = tuple(dict.fromkeys(args.scale))
    if args.crop is not None and args.crop < 16:
        raise UserError(None, f"--crop must be at least 16 pixels, got {args.crop}")
    if args.limit is not None and args.limit < 1:
        raise UserError(None, f"--limit must be at least 1, got {args.limit}")
    if args.threads:
        torch.set_num_threads(args.threads)
    models = load_models(args.model, scales)
    plan = Plan(scales=scales, thumb_quality=args.thumb_quality, crop=args.crop)
    if args.qualities:
        plan.lr_qualities = {k: tuple(sorted(set(q for q in args.qualities if k != "webp" or q < 100)))
                             for k in LOSSY}
    if args.hr_qualities:
        plan.hr_qualities = {k: tuple(sorted(set(q for q in args.hr_qualities if k != "webp" or q < 100)))
                             for k in HR_CODECS}
    if not avif_available():
        print("irn-batch rd: this Pillow has no AVIF: AVIF curves are left out", file=sys.stderr)
        plan.lr_qualities.pop("avif", None)
        plan.lr_qualities.pop("avif444", None)
        plan.hr_qualities.pop("avif", None)
    try:
        uris = list_images(args.data, storage)[: args.limit]
    except (StorageError, OSError, ValueError) as e:
        raise UserError(args.data, str(e)) from None
    if args.shard:
        k, n = _shard(args.shard)
        uris = uris[k::n]
    if not uris:
        raise UserError(args.data, f"no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    result = rd(uris, models, plan, storage)
    if not result["n_images"]:
        raise UserError(args.data, f"none of the {len(uris)} images could be read (each is listed above)")
    return _report(result, args.out, storage)


def _read_json(path: str, storage: StorageConfig) -> dict:
    from irn_batch.cli import UserError

    try:
        fs, p = open_fs(path, storage)
        result = json.loads(fs.cat_file(p))
    except FileNotFoundError:
        raise UserError(path, "no such file") from None
    except (OSError, ValueError) as e:
        raise UserError(path, f"cannot read an rd.json ({e})") from None
    if not isinstance(result, dict) or not isinstance(result.get("images"), list) or "scales" not in result:
        raise UserError(path, "not an rd.json written by irn-batch rd")
    return result


def _report(result: dict, out: str, storage: StorageConfig) -> int:
    from irn_batch import rd_report
    from irn_batch.cli import UserError

    try:
        written = rd_report.write(result, out, storage)
    except (OSError, ValueError) as e:
        raise UserError(out, f"cannot write ({e})") from None
    print(rd_report.short_table(result))
    print(f"wrote {', '.join(written)}", file=sys.stderr)
    return 0

"""``irn-batch rd``: rate–distortion of IRN's LR files against the codecs a user would pick instead.

The command only reads its options, loads the weights and hands over: the measuring is
``irn_batch.evaluation.rd``, the vocabulary and grids ``evaluation.rd_curves``, the files written (``rd.json``,
``rd.md``, ``rd_x{scale}.png`` under ``--out``) ``evaluation.rd_report``. ``--shard K/N`` and ``--merge`` let
parts of a run go in parallel and be joined.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from irn_batch.cli.args import UserError, images_at, quality_arg
from irn_batch.evaluation import rd_report
from irn_batch.evaluation.rd import rd
from irn_batch.evaluation.rd_curves import HR_CODECS, HR_QUALITIES, LOSSY, LR_QUALITIES, THUMB_QUALITY, THUMB_SCALE, Plan
from irn_batch.io.container import avif_available
from irn_batch.model.checkpoint import Checkpoint, CheckpointError, resolve_model
from irn_batch.storage import IMAGE_SUFFIXES, StorageConfig, open_fs


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``irn-batch rd``."""
    p.add_argument("data", nargs="?", help="folder, prefix URL (s3://...) or single image: the HR originals")
    p.add_argument("--scale", type=int, nargs="+", choices=(2, 4, 8), default=[2, 4], help="default: 2 4")
    p.add_argument("--out", required=True, help="folder for rd.json, rd.md and rd_x{scale}.png")
    p.add_argument("--model", nargs="+", default=[],
                   help="checkpoint path(s) or URL(s), one per scale (default: the shipped weights, the "
                        "compression-aware ones for lossy LRs where shipped)")
    p.add_argument("--qualities", type=quality_arg, nargs="+", default=None,
                   help="quality grid of the lossy LR containers (default per container: "
                        + "; ".join(f"{k} {' '.join(map(str, v))}" for k, v in LR_QUALITIES.items()) + ")")
    p.add_argument("--hr-qualities", type=quality_arg, nargs="+", default=None,
                   help=f"quality grid of the HR codecs (default {' '.join(map(str, HR_QUALITIES))})")
    p.add_argument("--thumb-quality", type=quality_arg, default=THUMB_QUALITY,
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
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(None, f"--shard must be K/N, e.g. 0/2, got {text!r}") from None
    if not 0 <= k < n:
        raise UserError(None, f"--shard K/N needs 0 <= K < N, got {text!r}")
    return k, n


def load_models(paths: list[str], scales: tuple[int, ...]) -> dict[int, dict[str, Checkpoint]]:
    """{scale: {"lossless": ckpt, "lossy": ckpt}}: a given checkpoint serves every container of its scale."""

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
    uris = images_at(args.data, storage)[: args.limit]
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

    try:
        written = rd_report.write(result, out, storage)
    except (OSError, ValueError) as e:
        raise UserError(out, f"cannot write ({e})") from None
    print(rd_report.short_table(result))
    print(f"wrote {', '.join(written)}", file=sys.stderr)
    return 0

"""The single-image commands: ``downscale`` (HR image -> LR file), ``upscale`` (LR file -> restored image),
``info`` (an LR file's or checkpoint's metadata as JSON) and ``convert-official`` (import the official
IRN code's weights).

The container of every file written follows its ``-o`` suffix (``irn_batch.io.container``): an LR is PNG,
WebP, JPEG or AVIF; a restored image any of those or TIFF. A suffix no container has is refused. Photo
metadata an LR container cannot hold goes to ``<output>.meta.json`` and comes back on upscale.
"""
from __future__ import annotations

import argparse
import json
import sys

from irn_batch.cli.args import (
    UserError,
    add_codec_args,
    add_model_args,
    load_model,
    output_encoding,
    pick_device,
    read_input,
    remove_file,
    write_output,
)
from irn_batch.io.container import DEFAULT_QUALITY, LR_CONTAINERS, ContainerError, container_of
from irn_batch.io.lr_file import read_lr, read_lr_meta, read_photo_meta
from irn_batch.io.decode import ImageError
from irn_batch.io.photo_metadata import SETTINGS, SIDECAR_SUFFIX, MetadataError, PhotoMeta
from irn_batch.model.checkpoint_header import FORMAT, CheckpointError, read_metadata


def cmd_downscale(args: argparse.Namespace) -> int:
    from irn_batch import api

    enc = output_encoding(args.output, args.quality, args.subsampling, lr=True)
    data = read_input(args.input)
    ckpt = load_model(args.model, args.scale or 2, pick_device(args.device), lossy=not enc.lossless)
    if args.scale and args.scale != ckpt.model.scale:
        raise UserError(args.model, f"model is x{ckpt.model.scale} but --scale {args.scale} was given")
    try:
        lr = api.downscale(data, ckpt, container=enc.container, quality=enc.quality, subsampling=enc.subsampling,
                           seed=args.seed, metadata=args.metadata, precision=args.precision, tile=args.tile,
                           max_pixels=args.max_pixels)
    except ContainerError as e:  # e.g. an image with alpha asked for as JPEG
        raise UserError(args.output, str(e)) from None
    except ImageError as e:
        raise UserError(args.input, str(e)) from None
    sidecar = args.output + SIDECAR_SUFFIX
    if lr.sidecar is not None:  # before the LR, so that an LR never lacks the sidecar it needs
        write_output(sidecar, lr.sidecar)
    else:  # an earlier sidecar of this name must not bring back metadata this LR does not carry
        remove_file(sidecar, "a stale sidecar")
    write_output(args.output, lr.data)
    meta = lr.meta
    w, h = meta.lr_size
    print(f"{args.input} ({meta.width}x{meta.height}) -> {args.output} ({w}x{h} {enc.label}, {len(lr.data)} bytes, "
          f"{ckpt.model_id})", file=sys.stderr)
    if lr.pages > 1:  # an MPO's second picture, a HEIF's further images, a TIFF's thumbnails
        print(f"{args.input}: note: {lr.pages - 1} further picture(s) in the file are not kept (only the first "
              "is downscaled)", file=sys.stderr)
    outside = PhotoMeta.from_json(lr.sidecar).kinds() if lr.sidecar else []
    print(f"metadata: kept {','.join(lr.kept) or 'none'}"
          + (f" ({','.join(outside)} in {sidecar})" if outside else "")
          + (f"; dropped {','.join(lr.dropped)}" if lr.dropped else ""), file=sys.stderr)
    return 0


def _sidecar(path: str) -> bytes | None:
    """``<path>.meta.json``: the photo metadata an LR container could not hold, or None where there is none."""
    import fsspec

    try:
        with fsspec.open(path + SIDECAR_SUFFIX, "rb") as f:
            return f.read()
    except (OSError, ValueError):  # no sidecar (the LR container held everything)
        return None


def cmd_upscale(args: argparse.Namespace) -> int:
    from irn_batch import api

    enc = output_encoding(args.output, args.quality, args.subsampling, lr=False)
    data = read_input(args.input)
    try:
        meta = read_lr_meta(data)
    except ImageError as e:
        raise UserError(args.input, str(e)) from None
    if args.model is not None:
        ckpt = load_model(args.model, 2, pick_device(args.device))
    else:  # the shipped weights that made the LR (by its recorded model id)
        try:
            ckpt = api.model_for_lr(data, device=pick_device(args.device))
        except CheckpointError as e:
            raise UserError(None, str(e)) from None
    side = _sidecar(args.input)
    try:
        out = api.restore_file(data, ckpt, container=enc.container, quality=enc.quality, subsampling=enc.subsampling,
                               sidecar=side, temperature=args.temperature, seed=args.seed, precision=args.precision,
                               tile=args.tile)
    except ImageError as e:
        raise UserError(args.input, str(e)) from None
    except MetadataError as e:
        raise UserError(args.input + SIDECAR_SUFFIX, str(e)) from None
    except ContainerError as e:  # e.g. an image with alpha asked for as JPEG
        raise UserError(args.output, str(e)) from None
    write_output(args.output, out.data)
    print(f"{args.input} -> {args.output} ({meta.width}x{meta.height} {enc.label})", file=sys.stderr)
    print(f"metadata: wrote {','.join(out.kept) or 'none'}"
          + (f"; {enc.container} cannot hold {','.join(out.not_held)} (dropped)" if out.not_held else "")
          + (f"; dropped {','.join(out.dropped)}" if out.dropped else ""), file=sys.stderr)
    return 0


def file_info(data: bytes, name: str) -> dict:
    """Metadata of an LR file (any LR container) or a checkpoint, as a JSON-ready dict."""
    container = container_of(data)
    if container in LR_CONTAINERS:
        try:
            meta, _ = read_lr(data)
        except ImageError as e:
            raise UserError(name, str(e)) from None
        w, h = meta.lr_size
        return {"kind": "lr", "container": container, "bytes": len(data), **vars(meta), "lr_width": w,
                "lr_height": h, "photo_metadata": read_photo_meta(data).kinds()}
    try:
        meta = read_metadata(data)
    except CheckpointError:
        raise UserError(name, "neither an irn_batch LR file nor a safetensors checkpoint") from None
    if meta.get("format") != FORMAT:
        raise UserError(name, "a safetensors file, but not an irn_batch checkpoint")
    info: dict = {"kind": "checkpoint", **meta}
    try:
        info["config"] = json.loads(meta["config"])
        info["default_temperature"] = float(meta["default_temperature"])
    except (KeyError, ValueError):
        raise UserError(name, "checkpoint metadata is incomplete or corrupt") from None
    return info


def cmd_info(args: argparse.Namespace) -> int:
    print(json.dumps(file_info(read_input(args.input), args.input), indent=2, sort_keys=True))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from irn_batch.model.checkpoint import convert_official

    read_input(args.input)  # a clear "no such file" before torch.load's message
    try:
        model_id = convert_official(args.input, args.output, args.scale, blocks=args.blocks)
    except (CheckpointError, ValueError) as e:
        raise UserError(args.input, str(e).removeprefix(f"{args.input}: ")) from None
    print(model_id)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register downscale, upscale, info and convert-official on the top-level parser's subparsers."""
    defaults = ", ".join(f"{c} {q}" for c, q in DEFAULT_QUALITY.items() if c in ("webp", "jpeg", "avif"))
    p = sub.add_parser("downscale", help="HR image -> 8-bit LR file (PNG, WebP, JPEG or AVIF) with irn_batch metadata")
    p.add_argument("input", help="image path or URL")
    p.add_argument("-o", "--output", required=True,
                   help="LR path or URL; the suffix picks the container: .png (lossless), .webp, .jpg, .avif")
    p.add_argument("--scale", type=int, choices=(2, 4, 8), default=None, help="default 2 (or the model's)")
    p.add_argument("--seed", type=int, default=None, help="z seed stored in the LR (default: from the content)")
    p.add_argument("--max-pixels", type=int, default=200_000_000, help="refuse larger images")
    p.add_argument("--metadata", choices=SETTINGS, default="keep",
                   help="photo metadata kept with the LR (EXIF, XMP, IPTC, comment, PNG text, ICC): keep (default), "
                        "drop_gps or strip; what the LR container cannot hold goes to <output>.meta.json")
    add_codec_args(p, defaults)
    add_model_args(p)
    p.set_defaults(func=cmd_downscale)

    p = sub.add_parser("upscale", help="LR file -> image of the original size")
    p.add_argument("input", help="LR path or URL (PNG, WebP, JPEG or AVIF)")
    p.add_argument("-o", "--output", required=True,
                   help="output path or URL; the suffix picks the container: .png, .webp, .jpg, .avif, .tif")
    p.add_argument("--temperature", type=float, default=None, help="z temperature (default: the model's)")
    p.add_argument("--seed", type=int, default=None, help="z seed (default: the one stored in the LR)")
    add_codec_args(p, defaults)
    add_model_args(p, "checkpoint path or URL (default: the shipped weights whose model id the LR records)")
    p.set_defaults(func=cmd_upscale)

    p = sub.add_parser("info", help="print a checkpoint's or LR file's metadata as JSON")
    p.add_argument("input", help="file path or URL")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("convert-official", help="import weights saved by the official IRN code")
    p.add_argument("input", help="official .pth state dict")
    p.add_argument("--scale", type=int, choices=(2, 4, 8), required=True)
    p.add_argument("--blocks", type=int, default=8)
    p.add_argument("-o", "--output", required=True, help="output .safetensors path or URL")
    p.set_defaults(func=cmd_convert)

"""``irn-batch``: single-image downscale/upscale, file info, official-weight import, and the entry
points of the batch verify, evaluate and rd (rate-distortion) commands.

The container of every file written follows its ``-o`` suffix (``irn_batch.container``): an LR is PNG,
WebP, JPEG or AVIF; a restored image any of those or TIFF. A suffix no container has is refused.

Files may be local paths or fsspec URLs (s3://..., file://...). A user mistake (missing file, corrupt
image or checkpoint, wrong model) prints one line, ``irn-batch: error: <file>: <reason>``, and exits
with status 2.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

import fsspec
import torch

from irn_batch.checkpoint import (
    CheckpointError,
    convert_official,
    load_checkpoint,
    packaged_path_for,
    read_bytes,
    read_metadata,
    resolve_model,
)
from irn_batch.container import (
    DEFAULT_QUALITY,
    LR_CONTAINERS,
    SUBSAMPLINGS,
    ContainerError,
    Encoding,
    container_of,
    encode,
    encoding_for_path,
    read_lr,
)
from irn_batch.imageio import ImageError, decode_image
from irn_batch.rescale import PRECISIONS, content_seed, downscale_image, restore_pixels
from irn_batch.tiling import DEFAULT_OVERLAP, DEFAULT_TILE

EXIT_USER = 2
_MIN_TILE = 2 * DEFAULT_OVERLAP + 8  # tiling keeps a core of at least 8 pixels inside the overlaps


class UserError(Exception):
    """A mistake the user can fix; printed as one line."""

    def __init__(self, where: str | None, reason: str):
        super().__init__(f"{where}: {reason}" if where else reason)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse's own two-line usage+error becomes our one-line format.
        raise UserError(None, f"{message} (see '{self.prog} --help')")


def _read(path: str) -> bytes:
    try:
        return read_bytes(path)
    except FileNotFoundError:
        raise UserError(path, "no such file") from None
    except IsADirectoryError:
        raise UserError(path, "is a directory") from None
    except (OSError, ValueError) as e:
        raise UserError(path, f"cannot read ({e})") from None


def _write(path: str, data: bytes) -> None:
    """Write ``data`` to a local path (atomically, creating folders) or an fsspec URL."""
    try:
        if "://" in path and not path.startswith("file://"):
            with fsspec.open(path, "wb") as f:
                f.write(data)
            return
        p = Path(path.removeprefix("file://"))
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(p)
    except (OSError, ValueError) as e:
        raise UserError(path, f"cannot write ({e})") from None


def _model(path: str | None, scale: int, device: str, lossy: bool = False):
    try:
        ckpt = resolve_model(path, scale, lossy)
    except CheckpointError as e:
        msg = str(e)  # most checkpoint messages already name the file; add it where one does not
        raise UserError(None if path is None or msg.startswith(path) else path, msg) from None
    ckpt.model.to(device)
    return ckpt


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(None, "--device cuda requested but no CUDA device is available")
    return name


def _encoding(path: str, quality: int | None, subsampling: str | None, lr: bool) -> Encoding:
    """The encoding ``-o`` asks for; LR files only in the LR containers."""
    try:
        enc = encoding_for_path(path, quality, subsampling)
    except ContainerError as e:
        raise UserError(path, str(e)) from None
    if lr and enc.container not in LR_CONTAINERS:
        raise UserError(path, f"an LR file is one of {', '.join(LR_CONTAINERS)} (name it .png, .webp, .jpg or .avif)")
    return enc


def cmd_downscale(args: argparse.Namespace) -> int:
    enc = _encoding(args.output, args.quality, args.subsampling, lr=True)
    data = _read(args.input)
    ckpt = _model(args.model, args.scale or 2, _device(args.device), lossy=not enc.lossless)
    if args.scale and args.scale != ckpt.model.scale:
        raise UserError(args.model, f"model is x{ckpt.model.scale} but --scale {args.scale} was given")
    try:
        img = decode_image(data, max_pixels=args.max_pixels)
    except ImageError as e:
        raise UserError(args.input, str(e)) from None
    seed = content_seed(data) if args.seed is None else args.seed
    try:
        lr, meta = downscale_image(ckpt, img, z_seed=seed, tile=args.tile, precision=args.precision, encoding=enc)
    except ContainerError as e:  # e.g. an image with alpha asked for as JPEG
        raise UserError(args.output, str(e)) from None
    _write(args.output, lr)
    w, h = meta.lr_size
    print(f"{args.input} ({img.width}x{img.height}) -> {args.output} ({w}x{h} {enc.label}, {len(lr)} bytes, "
          f"{ckpt.model_id})", file=sys.stderr)
    return 0


def _model_for_lr(model_id: str, path: str | None, device: str):
    """``path`` if given, else the shipped weights that made the LR (by its recorded model id)."""
    if path is not None:
        return _model(path, 2, device)
    try:
        ckpt = load_checkpoint(packaged_path_for(model_id))
    except CheckpointError as e:
        raise UserError(None, str(e)) from None
    ckpt.model.to(device)
    return ckpt


def cmd_upscale(args: argparse.Namespace) -> int:
    enc = _encoding(args.output, args.quality, args.subsampling, lr=False)
    data = _read(args.input)
    try:
        meta, lr = read_lr(data)
    except ImageError as e:
        raise UserError(args.input, str(e)) from None
    ckpt = _model_for_lr(meta.model_id, args.model, _device(args.device))
    try:
        pixels = restore_pixels(
            ckpt, meta, lr, temperature=args.temperature, z_seed=args.seed, tile=args.tile, precision=args.precision
        )
    except ImageError as e:
        raise UserError(args.input, str(e)) from None
    try:
        out = encode(pixels, enc)
    except ContainerError as e:  # e.g. an image with alpha asked for as JPEG
        raise UserError(args.output, str(e)) from None
    _write(args.output, out)
    print(f"{args.input} -> {args.output} ({meta.width}x{meta.height} {enc.label})", file=sys.stderr)
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
                "lr_height": h}
    try:
        meta = read_metadata(data)
    except CheckpointError:
        raise UserError(name, "neither an irn_batch LR file nor a safetensors checkpoint") from None
    if meta.get("format") != "irn_batch/1":
        raise UserError(name, "a safetensors file, but not an irn_batch checkpoint")
    info: dict = {"kind": "checkpoint", **meta}
    try:
        info["config"] = json.loads(meta["config"])
        info["default_temperature"] = float(meta["default_temperature"])
    except (KeyError, ValueError):
        raise UserError(name, "checkpoint metadata is incomplete or corrupt") from None
    return info


def cmd_info(args: argparse.Namespace) -> int:
    print(json.dumps(file_info(_read(args.input), args.input), indent=2, sort_keys=True))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    _read(args.input)  # a clear "no such file" before torch.load's message
    try:
        model_id = convert_official(args.input, args.output, args.scale, blocks=args.blocks)
    except (CheckpointError, ValueError) as e:
        raise UserError(args.input, str(e).removeprefix(f"{args.input}: ")) from None
    print(model_id)
    return 0


def _lazy(module: str):
    """Subcommands implemented elsewhere: import only when used (they pull in Ray)."""

    def add(parser: argparse.ArgumentParser) -> None:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            parser.set_defaults(func=lambda a: _missing(module))
            return
        mod.add_arguments(parser)
        parser.set_defaults(func=mod.run)

    return add


def _missing(module: str) -> int:
    raise UserError(None, f"this subcommand needs {module}, which is not available in this installation")


def _tile(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value % 8 or value < _MIN_TILE:
        raise argparse.ArgumentTypeError(f"must be a multiple of 8 and at least {_MIN_TILE}, got {value}")
    return value


def _quality(text: str) -> int:
    """A quality argument, 1..100."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer within 1..100, got {text!r}") from None
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be within 1..100, got {value}")
    return value


def _add_codec_args(p: argparse.ArgumentParser, defaults: str) -> None:
    p.add_argument("--quality", type=_quality, default=None,
                   help=f"quality of a lossy container, 1..100 (WebP 100 = lossless; defaults: {defaults})")
    p.add_argument("--subsampling", choices=SUBSAMPLINGS, default=None,
                   help="JPEG/AVIF chroma subsampling (defaults: JPEG 4:2:0, AVIF 4:4:4)")


def _add_model_args(p: argparse.ArgumentParser,
                    model_help: str = "checkpoint path or URL (default: the shipped weights for the scale and "
                                      "container)") -> None:
    p.add_argument("--model", help=model_help)
    p.add_argument("--tile", type=_tile, default=None,
                   help=f"tile side in HR pixels, a multiple of 8 >= {_MIN_TILE} (default {DEFAULT_TILE})")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu: reproducible z)")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = _Parser(prog="irn-batch", description="Invertible image rescaling (IRN), one image or many.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    defaults = ", ".join(f"{c} {q}" for c, q in DEFAULT_QUALITY.items() if c in ("webp", "jpeg", "avif"))
    p = sub.add_parser("downscale", help="HR image -> 8-bit LR file (PNG, WebP, JPEG or AVIF) with irn_batch metadata")
    p.add_argument("input", help="image path or URL")
    p.add_argument("-o", "--output", required=True,
                   help="LR path or URL; the suffix picks the container: .png (lossless), .webp, .jpg, .avif")
    p.add_argument("--scale", type=int, choices=(2, 4, 8), default=None, help="default 2 (or the model's)")
    p.add_argument("--seed", type=int, default=None, help="z seed stored in the LR (default: from the content)")
    p.add_argument("--max-pixels", type=int, default=200_000_000, help="refuse larger images")
    _add_codec_args(p, defaults)
    _add_model_args(p)
    p.set_defaults(func=cmd_downscale)

    p = sub.add_parser("upscale", help="LR file -> image of the original size")
    p.add_argument("input", help="LR path or URL (PNG, WebP, JPEG or AVIF)")
    p.add_argument("-o", "--output", required=True,
                   help="output path or URL; the suffix picks the container: .png, .webp, .jpg, .avif, .tif")
    p.add_argument("--temperature", type=float, default=None, help="z temperature (default: the model's)")
    p.add_argument("--seed", type=int, default=None, help="z seed (default: the one stored in the LR)")
    _add_codec_args(p, defaults)
    _add_model_args(p, "checkpoint path or URL (default: the shipped weights whose model id the LR records)")
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

    # Only the chosen external subcommand is imported, so `downscale` never loads Ray.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, module, text in (
        ("verify", "irn_batch.pipeline.verify", "check a batch of LR outputs against their manifest"),
        ("evaluate", "irn_batch.evaluate", "PSNR/SSIM evaluation against bicubic"),
        ("rd", "irn_batch.rd", "rate-distortion of IRN LR containers against standard codecs"),
    ):
        p = sub.add_parser(name, help=text)
        if chosen == name:
            _lazy(module)(p)
    return parser


def _one_line(msg: str, limit: int = 400) -> str:
    """Error text as one line of bounded length (torch's state-dict errors span many lines)."""
    msg = " ".join(msg.split())
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser(argv).parse_args(argv)
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"irn-batch: error: {_one_line(str(e))}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `irn-batch info x | head`: the reader left; no traceback, as other CLI tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's documented recipe
        return 141


if __name__ == "__main__":
    raise SystemExit(main())

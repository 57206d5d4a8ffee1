"""What every ``irn-batch`` command shares: the one-line user error, the parser that raises it, argument
types (quality, tile), the codec and model options, and reading, writing and removing a file or URL.

Torch-free: ``--help``, ``info`` and argument errors answer without loading torch (1.5 s or more); the
model helpers import the checkpoint module when a command runs.
"""
from __future__ import annotations

import argparse

from irn_batch.errors import one_line
from irn_batch.io.container import LR_CONTAINERS, SUBSAMPLINGS, ContainerError, Encoding, encoding_for_path
from irn_batch.model.checkpoint_header import CheckpointError
from irn_batch.rescale.settings import DEFAULT_TILE, MIN_TILE, PRECISIONS

EXIT_USER = 2


class UserError(Exception):
    """A mistake the user can fix; printed as one line, ``irn-batch: error: <where>: <reason>``."""

    def __init__(self, where: str | None, reason: str):
        super().__init__(f"{where}: {reason}" if where else reason)


def error_line(e: UserError) -> str:
    """The line the CLI prints for ``e`` (bounded: torch's state-dict errors span many lines)."""
    return f"irn-batch: error: {one_line(e, 400)}"


class Parser(argparse.ArgumentParser):
    """argparse's own two-line usage + error becomes a :class:`UserError` (one line, exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(None, f"{message} (see '{self.prog} --help')")


def read_input(path: str) -> bytes:
    """The bytes at a local path or fsspec URL; UserError naming the path if there are none."""
    import fsspec

    try:
        with fsspec.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise UserError(path, "no such file") from None
    except IsADirectoryError:
        raise UserError(path, "is a directory") from None
    except (OSError, ValueError) as e:
        raise UserError(path, f"cannot read ({e})") from None


def write_output(path: str, data: bytes) -> None:
    """Write ``data`` atomically to a local path (creating folders) or an fsspec URL (storage's atomic write)."""
    from irn_batch.storage import write_object

    try:
        write_object(path, data)
    except (OSError, ValueError) as e:
        raise UserError(path, f"cannot write ({e})") from None


def remove_file(path: str, what: str) -> None:
    """Remove a file (local path or fsspec URL) if it exists; ``what`` names it in the error."""
    import fsspec

    try:
        fs, p = fsspec.core.url_to_fs(path)
        if fs.exists(p):
            fs.rm_file(p)
    except (OSError, ValueError) as e:
        raise UserError(path, f"cannot remove {what} ({e})") from None


def images_at(data: str, storage) -> list[str]:
    """The images at ``data`` (a folder, prefix URL or one image): UserError if it cannot be listed."""
    from irn_batch.storage import NoSuchFolder, StorageError, list_images

    try:
        return list_images(data, storage)
    except NoSuchFolder as e:
        raise UserError(None, str(e)) from None
    except (StorageError, OSError, ValueError) as e:
        raise UserError(data, str(e)) from None


def load_model(path: str | None, scale: int, device: str, lossy: bool = False):
    """The checkpoint at ``path`` (or the shipped one for ``scale`` and the container kind) on ``device``."""
    from irn_batch.model.checkpoint import resolve_model

    try:
        ckpt = resolve_model(path, scale, lossy)
    except CheckpointError as e:
        msg = str(e)  # most checkpoint messages already name the file; add it where one does not
        raise UserError(None if path is None or msg.startswith(path) else path, msg) from None
    ckpt.model.to(device)
    return ckpt


def pick_device(name: str) -> str:
    """``--device``: cpu, cuda, cuda:N, or auto (CUDA when there is one)."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(None, "--device cuda requested but no CUDA device is available")
    return name


def output_encoding(path: str, quality: int | None, subsampling: str | None, lr: bool) -> Encoding:
    """The encoding ``-o`` asks for by its suffix; LR files only in the LR containers."""
    try:
        enc = encoding_for_path(path, quality, subsampling)
    except ContainerError as e:
        raise UserError(path, str(e)) from None
    if lr and enc.container not in LR_CONTAINERS:
        raise UserError(path, f"an LR file is one of {', '.join(LR_CONTAINERS)} (name it .png, .webp, .jpg or .avif)")
    return enc


def tile_arg(text: str) -> int:
    """A ``--tile`` argument: a multiple of 8, at least ``MIN_TILE`` HR pixels."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value % 8 or value < MIN_TILE:
        raise argparse.ArgumentTypeError(f"must be a multiple of 8 and at least {MIN_TILE}, got {value}")
    return value


def quality_arg(text: str) -> int:
    """A quality argument, 1..100."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer within 1..100, got {text!r}") from None
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be within 1..100, got {value}")
    return value


def add_codec_args(p: argparse.ArgumentParser, defaults: str) -> None:
    """``--quality`` and ``--subsampling`` of an output file."""
    p.add_argument("--quality", type=quality_arg, default=None,
                   help=f"quality of a lossy container, 1..100 (WebP 100 = lossless; defaults: {defaults})")
    p.add_argument("--subsampling", choices=SUBSAMPLINGS, default=None,
                   help="JPEG/AVIF chroma subsampling (defaults: JPEG 4:2:0, AVIF 4:4:4)")


def add_model_args(p: argparse.ArgumentParser,
                   model_help: str = "checkpoint path or URL (default: the shipped weights for the scale and "
                                     "container)") -> None:
    """``--model``, ``--tile``, ``--precision`` and ``--device`` of a command that runs the network."""
    p.add_argument("--model", help=model_help)
    p.add_argument("--tile", type=tile_arg, default=None,
                   help=f"tile side in HR pixels, a multiple of 8 >= {MIN_TILE} (default {DEFAULT_TILE})")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu: reproducible z)")

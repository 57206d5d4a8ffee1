"""The Python face of irn_batch: what a script, a notebook or a user's own Ray Data pipeline needs, without
the CLI or a job. The ``irn-batch downscale``/``upscale`` commands are thin wrappers over these functions,
so a file made here is byte for byte the one the CLI makes with the same settings.

- :func:`load_model`: the shipped weights for a scale (plain or compression-aware) or a checkpoint file;
- :func:`downscale`: an HR image (PIL image, array or file bytes) -> an :class:`LRFile` (bytes + metadata);
- :func:`downscale_to_pixels`: the same, as LR pixels and their :class:`~irn_batch.io.lr_file.LRMeta`;
- :func:`read_lr_metadata`: what an LR file records (model id, scale, original size, z seed, source mode);
- :func:`restore` and :func:`restore_file`: an LR file -> the HR pixels, or the HR image file's bytes;
- :class:`Downscaler` and :class:`Restorer`: callable classes for ``ray.data.Dataset.map_batches``
  (Ray's batch-inference convention: the model is loaded once in ``__init__``; ``__call__`` maps a
  ``dict[str, np.ndarray]`` batch to another).

Arrays are (H, W) grey or (H, W, 3|4) RGB(A), uint8 or uint16; they are stored as a lossless PNG first, so an
array and the same picture as a PNG file give the same LR pixels. Errors: ``ImageError`` (not an image, not an LR,
an LR of another model), ``ContainerError`` (e.g. alpha asked for as JPEG), ``CheckpointError``,
``MetadataError``; all are ``ValueError``.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from irn_batch.io import photo_metadata as pm
from irn_batch.io.container import LR_CONTAINERS, ContainerError, Encoding
from irn_batch.io.lr_file import LRMeta, read_lr, read_lr_meta
from irn_batch.io.decode import DEFAULT_MAX_PIXELS, GREY_MODES, DecodedImage, ImageError, decode_image, mode_depth

ImageLike = Any  # PIL.Image.Image | np.ndarray | bytes


@dataclass(frozen=True)
class LRFile:
    """An LR file made by :func:`downscale`.

    ``data``: the file (its container holds ``meta`` and as much photo metadata as it can); ``sidecar``: JSON
    of the photo metadata the container cannot hold (store it as ``<lr name>.meta.json``; None when there is
    none); ``kept``/``dropped``: the kinds of photo metadata (exif, xmp, iptc, comment, text, icc).
    """

    data: bytes
    meta: LRMeta
    sidecar: bytes | None
    kept: tuple[str, ...]
    dropped: tuple[str, ...]
    pages: int = 1  # pictures in the source; only the first is downscaled


def load_model(model: str | Path | None = None, *, scale: int = 2, lossy: bool = False, device: str = "cpu"):
    """A ready-to-run :class:`~irn_batch.model.checkpoint.Checkpoint` on ``device``: the checkpoint at
    ``model`` (path or fsspec URL), else the shipped weights for ``scale`` (``lossy``: the compression-aware
    ones, for WebP/JPEG/AVIF LRs). Raises CheckpointError."""
    from irn_batch.model.checkpoint import resolve_model

    ckpt = resolve_model(None if model is None else str(model), scale, lossy)
    ckpt.model.to(device)
    return ckpt


def model_for_lr(lr: bytes, model=None, device: str = "cpu"):
    """The model that restores LR file ``lr``: ``model`` (a Checkpoint, a path or URL) if given, else the
    shipped weights whose id the LR records (CheckpointError naming the id when none is shipped)."""
    if model is not None and not isinstance(model, (str, Path)):
        return model
    if model is not None:
        return load_model(model, device=device)
    from irn_batch.model.checkpoint import load_checkpoint, packaged_path_for

    ckpt = load_checkpoint(packaged_path_for(read_lr_meta(lr).model_id))
    ckpt.model.to(device)
    return ckpt


def image_bytes(image: ImageLike) -> bytes:
    """An image as file bytes: bytes unchanged; an array or a PIL image as a lossless PNG (a PIL image keeps
    its ICC profile and EXIF). Raises ImageError for anything else."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, np.ndarray):
        from irn_batch.io.container import encode

        try:
            return encode(image, Encoding("png"))
        except ValueError as e:
            raise ImageError(f"not an image array: {e}") from None
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise ImageError(f"expected a PIL image, an array or file bytes, got {type(image).__name__}")
    buf = io.BytesIO()
    extra = {k: image.info[k] for k in ("icc_profile", "exif") if image.info.get(k)}
    image.save(buf, format="PNG", **extra)
    return buf.getvalue()


def _decode(data: bytes, max_pixels: int) -> DecodedImage:
    return decode_image(data, max_pixels=max_pixels)


def downscale_to_pixels(image: ImageLike, model=None, *, scale: int = 2, seed: int | None = None,
                        precision: str = "fp32", tile: int | None = None,
                        max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, LRMeta]:
    """An HR image -> ((ceil(H/s), ceil(W/s), 3|4) uint8 LR pixels, their LRMeta). ``model``: a Checkpoint,
    a path, or None for the shipped plain weights of ``scale``; ``seed``: the z seed recorded (default: from
    the content's sha256, as the CLI and the jobs do)."""
    from irn_batch.rescale import content_seed, downscale_pixels

    data = image_bytes(image)
    ckpt = model if _is_checkpoint(model) else load_model(model, scale=scale)
    seed = content_seed(data) if seed is None else seed
    return downscale_pixels(ckpt, _decode(data, max_pixels), z_seed=seed, tile=tile, precision=precision)


def downscale(image: ImageLike, model=None, *, scale: int = 2, container: str = "png", quality: int | None = None,
              subsampling: str | None = None, seed: int | None = None, metadata: str = "keep",
              precision: str = "fp32", tile: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> LRFile:
    """An HR image -> an LR file in ``container`` (png, webp, jpeg, avif; ``quality`` 1..100 for lossy ones).

    ``model`` None: the shipped weights for ``scale`` (compression-aware ones for a lossy container).
    ``metadata``: keep | drop_gps | strip, the photo metadata carried from the source (file bytes keep all
    of theirs; a PIL image its ICC and EXIF; an array none).
    """
    from irn_batch.rescale import content_seed, downscale_image

    enc = Encoding(container, quality, subsampling)
    if enc.container not in LR_CONTAINERS:
        raise ContainerError(f"an LR file is one of {', '.join(LR_CONTAINERS)}, got {container!r}")
    data = image_bytes(image)
    ckpt = model if _is_checkpoint(model) else load_model(model, scale=scale, lossy=not enc.lossless)
    img = _decode(data, max_pixels)
    photo = pm.for_lr(data, img.colour, pm.check_setting(metadata))
    seed = content_seed(data) if seed is None else seed
    lr, meta = downscale_image(ckpt, img, z_seed=seed, tile=tile, precision=precision, encoding=enc, photo=photo)
    outside = photo.split(enc.container)[1]
    return LRFile(lr, meta, outside.to_json() if outside.kinds() else None, tuple(photo.kinds()),
                  tuple(photo.dropped), img.pages)


def read_lr_metadata(lr: bytes) -> LRMeta:
    """What an LR file records: model id, scale, original width/height, z seed, alpha, source mode. Reads
    only the metadata (no pixels). Raises ImageError for a file that is not an irn_batch LR."""
    return read_lr_meta(lr)


@dataclass(frozen=True)
class Restored:
    """The HR image of :func:`restore_file`: ``data`` in ``encoding``; the photo metadata kinds written
    inside (``kept``), those the container cannot hold (``not_held``), those dropped before (``dropped``)."""

    data: bytes
    meta: LRMeta
    encoding: Encoding
    kept: tuple[str, ...]
    not_held: tuple[str, ...]
    dropped: tuple[str, ...]


def restore(lr: bytes, model=None, *, temperature: float | None = None, seed: int | None = None,
            precision: str = "fp32", tile: int | None = None, as_float: bool = False) -> np.ndarray:
    """An LR file -> the restored HR pixels at the original size, in the source's layout: (H, W) for a grey
    source, else (H, W, 3|4); uint8, or uint16 for a 16-bit source. ``as_float``: (H, W, 3|4) float32 in
    [0, 1] instead, the network's output before rounding. ``model`` None: the shipped weights that made the
    LR. Raises ImageError (not an LR, or one of another model) and CheckpointError."""
    from irn_batch.io.container import restore_array
    from irn_batch.rescale import restore_pixels

    meta, img = read_lr(lr)
    hr = restore_pixels(model_for_lr(lr, model), meta, img, temperature=temperature, z_seed=seed, tile=tile,
                        precision=precision, as_float=True)
    if as_float:
        return hr
    pixels, _depth = restore_array(hr, Encoding("png"), grey=meta.source_mode in GREY_MODES,
                                   bit_depth=mode_depth(meta.source_mode))
    return pixels[..., 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels


def restore_file(lr: bytes, model=None, *, container: str = "png", quality: int | None = None,
                 subsampling: str | None = None, sidecar: bytes | None = None, temperature: float | None = None,
                 seed: int | None = None, precision: str = "fp32", tile: int | None = None) -> Restored:
    """An LR file -> the restored HR image file in ``container`` (png, webp, jpeg, avif, tiff): grey sources
    come back grey, 16-bit ones at 16 bits where the container holds them, with the photo metadata of the LR
    (completed from its ``sidecar`` JSON, if given) written back, orientation 1 and sizes updated."""
    from irn_batch.io.container import encode, restore_array
    from irn_batch.io.lr_file import read_photo_meta

    meta = read_lr_meta(lr)
    enc = Encoding(container, quality, subsampling)
    hr = restore(lr, model, temperature=temperature, seed=seed, precision=precision, tile=tile, as_float=True)
    pixels, _depth = restore_array(hr, enc, grey=meta.source_mode in GREY_MODES, bit_depth=mode_depth(meta.source_mode))
    photo = read_photo_meta(lr)
    if sidecar is not None:
        photo = photo.filled_from(pm.PhotoMeta.from_json(sidecar))
    photo = pm.for_samples(pm.for_image(photo, meta.width, meta.height), pixels)
    inside, outside = photo.split(enc.container)
    data = encode(pixels, enc, photo=photo)
    return Restored(data, meta, enc, tuple(inside.kinds()), tuple(outside.kinds()), tuple(photo.dropped))


def _is_checkpoint(model) -> bool:
    return model is not None and not isinstance(model, (str, Path))


class Downscaler:
    """HR images -> LR files, for ``ds.map_batches(Downscaler, fn_constructor_kwargs={...},
    compute=ray.data.ActorPoolStrategy(size=N))`` (N actors, each holding the model).

    Reads the column ``column`` of each batch: image file bytes (``ray.data.read_binary_files``'s ``bytes``)
    or arrays (``ray.data.read_images``' ``image``). Adds ``lr`` (LR file bytes), ``lr_sidecar`` (JSON or
    None), ``model_id``, ``width`` and ``height`` (the original size); other columns pass through.
    """

    def __init__(self, model: str | None = None, *, scale: int = 2, container: str = "png",
                 quality: int | None = None, column: str = "bytes", device: str = "cpu", **options):
        self.ckpt = load_model(model, scale=scale, lossy=container != "png", device=device)
        self.container, self.quality, self.column, self.options = container, quality, column, options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        files = [downscale(x, self.ckpt, container=self.container, quality=self.quality, **self.options)
                 for x in batch[self.column]]
        return {**batch, "lr": _objects([f.data for f in files]), "lr_sidecar": _objects([f.sidecar for f in files]),
                "model_id": np.array([f.meta.model_id for f in files]),
                "width": np.array([f.meta.width for f in files]), "height": np.array([f.meta.height for f in files])}


class Restorer:
    """LR files -> HR images, for ``ds.map_batches(Restorer, fn_constructor_kwargs={...},
    compute=ray.data.ActorPoolStrategy(size=N))``.

    Reads LR file bytes from ``column``; adds ``image`` (the restored HR as an (H, W, C) uint8 array) or,
    with ``container`` set, ``hr`` (the HR file's bytes, as :func:`restore_file` makes them). ``model``
    None: each LR's own shipped weights, loaded once per model id.
    """

    def __init__(self, model: str | None = None, *, container: str | None = None, quality: int | None = None,
                 column: str = "bytes", device: str = "cpu"):
        self.ckpt = None if model is None else load_model(model, device=device)
        self.models: dict[str, Any] = {}
        self.container, self.quality, self.column, self.device = container, quality, column, device

    def _model(self, lr: bytes):
        if self.ckpt is not None:
            return self.ckpt
        model_id = read_lr_meta(lr).model_id
        if model_id not in self.models:
            self.models[model_id] = model_for_lr(lr, device=self.device)
        return self.models[model_id]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        lrs = [bytes(x) for x in batch[self.column]]
        if self.container is None:
            return {**batch, "image": _objects([restore(lr, self._model(lr)) for lr in lrs])}
        return {**batch, "hr": _objects([restore_file(lr, self._model(lr), container=self.container,
                                                      quality=self.quality).data for lr in lrs])}


def _objects(items: list) -> np.ndarray:
    """A 1-d object array (numpy would otherwise try to stack same-shaped images or split bytes)."""
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out

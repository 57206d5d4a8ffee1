"""HR image <-> LR file: the single place where both directions happen.

The CLI, the Ray pipeline, the quality floor and ``irn-batch rd`` all call ``downscale_pixels``/
``downscale_image`` and ``restore_pixels``/``restore_image``, so a restore gives the same bytes whichever
of them made or reads the LR.

LR file: 8-bit RGB (RGBA when the source had alpha) pixels of size ceil(W/s) x ceil(H/s) in one of the
LR containers of ``irn_batch.io.container`` (PNG, WebP, JPEG, AVIF), with ``LRMeta`` inside recording the
model id, scale, original size, z seed, alpha flag and rule, and the source's PIL mode. The image is
mirror-padded to a multiple of the scale before the
network and the restore is cropped back to the original size. z is never stored: it is drawn again
on the CPU from the seed, for the whole LR at once, so tiling never changes it.

An image whose (padded) HR side exceeds one tile (``tile``, default ``tiling.DEFAULT_TILE``) runs
through ``irn_batch.rescale.tiling``; smaller ones run whole. Both give the same result to a rounding step.
"""
from __future__ import annotations

import contextlib
import hashlib
from typing import Callable

import numpy as np
import torch

from irn_batch.rescale import tiling
from irn_batch.model.checkpoint import Checkpoint
from irn_batch.io.container import Encoding
from irn_batch.io.lr_file import LRMeta, read_lr, write_lr
from irn_batch.io.photo_metadata import PhotoMeta
from irn_batch.io.decode import DecodedImage, ImageError
from irn_batch.metrics import bicubic_resize
from irn_batch.rescale.settings import PRECISIONS
from irn_batch.model.transforms import crop_to, pad_to_multiple, sample_z


def content_seed(data: bytes) -> int:
    """A deterministic z seed from the source bytes: the first 8 bytes of their sha256, as an int63."""
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big") & (2**63 - 1)


def _device(ckpt: Checkpoint) -> torch.device:
    return next(ckpt.model.parameters()).device


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _run(tiled: Callable, whole: Callable, hr_side: int, tile: int | None, device: torch.device, precision: str):
    """``tiled(tile)`` when the HR side exceeds one tile, else ``whole()``; float32 on the CPU.

    Tiled runs keep the image on the CPU and send only tiles to the device, so device memory is bounded.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    limit = tiling.DEFAULT_TILE if tile is None else tile
    with torch.inference_mode():
        if hr_side > limit:
            return tiled(limit)
        with _autocast(device, precision):
            return whole().float().cpu()


def downscale_pixels(
    ckpt: Checkpoint, img: DecodedImage, *, z_seed: int, tile: int | None = None, precision: str = "fp32"
) -> tuple[np.ndarray, LRMeta]:
    """DecodedImage -> ((h, w, 3|4) uint8 LR pixels, their LRMeta). Runs on the model's device."""
    model, s = ckpt.model, ckpt.model.scale
    device = _device(ckpt)
    hr = pad_to_multiple(torch.from_numpy(img.rgb).permute(2, 0, 1)[None], s)  # (1, 3, H', W')
    hp, wp = hr.shape[-2:]
    lr = _run(
        lambda size: tiling.downscale_tiled(model, hr, tile=size, precision=precision),
        lambda: model.downscale(hr.to(device), quantize=False)[0],
        max(hp, wp),
        tile,
        device,
        precision,
    )
    meta = LRMeta(ckpt.model_id, s, img.width, img.height, int(z_seed), img.alpha is not None, img.mode)
    w_lr, h_lr = meta.lr_size
    lr = crop_to(lr, h_lr, w_lr)
    planes = [lr[0]]
    if img.alpha is not None:
        alpha = pad_to_multiple(torch.from_numpy(img.alpha)[None, None], s)
        planes.append(bicubic_resize(alpha, (hp // s, wp // s))[0, :, :h_lr, :w_lr])
    pixels = torch.cat(planes, 0).clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    return pixels.permute(1, 2, 0).numpy(), meta


def downscale_image(
    ckpt: Checkpoint,
    img: DecodedImage,
    *,
    z_seed: int,
    tile: int | None = None,
    precision: str = "fp32",
    encoding: Encoding = Encoding(),
    photo: PhotoMeta | None = None,
) -> tuple[bytes, LRMeta]:
    """DecodedImage -> (LR file bytes in ``encoding``, its LRMeta). Raises ContainerError for alpha in JPEG.
    ``photo``: photo metadata written inside as far as the container holds it (``lr_file.write_lr``)."""
    pixels, meta = downscale_pixels(ckpt, img, z_seed=z_seed, tile=tile, precision=precision)
    return write_lr(pixels, meta, encoding, photo), meta


def restore_image(ckpt: Checkpoint, lr_file: bytes, *, temperature: float | None = None,
                  z_seed: int | None = None, tile: int | None = None, precision: str = "fp32",
                  as_float: bool = False) -> np.ndarray:
    """LR file bytes (any LR container) -> (H, W, 3|4) uint8 at exactly the original size (``as_float``:
    float32 in [0, 1], the model's output before any rounding, for 16-bit outputs).

    Raises ImageError for a file that is not an LR or was made by another model than ``ckpt``.
    """
    meta, img = read_lr(lr_file)
    return restore_pixels(ckpt, meta, img, temperature=temperature, z_seed=z_seed, tile=tile, precision=precision,
                          as_float=as_float)


def restore_pixels(ckpt: Checkpoint, meta: LRMeta, img: DecodedImage, *, temperature: float | None = None,
                   z_seed: int | None = None, tile: int | None = None, precision: str = "fp32",
                   as_float: bool = False) -> np.ndarray:
    """A decoded LR and its LRMeta -> (H, W, 3|4) uint8 at exactly the original size (H, W from ``meta``);
    with ``as_float``, float32 in [0, 1] instead (clipped, not rounded)."""
    if meta.model_id != ckpt.model_id:
        raise ImageError(
            f"LR was made by model {meta.model_id}, but the loaded model is {ckpt.model_id}; "
            "pass the matching checkpoint with --model"
        )
    model, s = ckpt.model, ckpt.model.scale
    if meta.scale != s:  # cannot happen with matching ids, but a clear message beats a shape error
        raise ImageError(f"LR is x{meta.scale} but the model is x{s}")
    device = _device(ckpt)
    temperature = ckpt.default_temperature if temperature is None else float(temperature)
    seed = meta.z_seed if z_seed is None else int(z_seed)
    lr = torch.from_numpy(img.rgb).permute(2, 0, 1)[None]  # (1, 3, h, w), exact k/255 values
    z = sample_z(model.z_shape(lr), temperature, seed=seed)  # whole LR on the CPU: tiling never changes z
    h, w = lr.shape[-2:]
    hr = _run(
        lambda size: tiling.upscale_tiled(model, lr, z, tile=size, precision=precision),
        lambda: model.upscale(lr.to(device), z=z.to(device)),
        max(h, w) * s,
        tile,
        device,
        precision,
    )
    planes = [crop_to(hr[0], meta.height, meta.width)]
    if img.alpha is not None:
        alpha = bicubic_resize(torch.from_numpy(img.alpha)[None, None], (h * s, w * s))
        planes.append(crop_to(alpha[0], meta.height, meta.width))
    hr = torch.cat(planes, 0).clamp(0.0, 1.0)
    if as_float:
        return np.ascontiguousarray(hr.permute(1, 2, 0).numpy())
    pixels = hr.mul(255.0).round().to(torch.uint8)
    return pixels.permute(1, 2, 0).numpy()

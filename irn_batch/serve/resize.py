"""Resized views (``width=``/``height=``: fit within, never enlarged): the size a request gets, and the
resampling. A view no larger than the LR is made from the LR (the network does not run); a larger one from
the full restore. Lanczos resampling (Pillow's ``LANCZOS``, a = 3) of 8-bit samples; a grey source stays
grey. A resized view carries no photo metadata (its sizes and thumbnails would no longer describe it).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from irn_batch.io.colour import to_uint8
from irn_batch.io.container import ContainerError, Encoding, encode
from irn_batch.io.decode import decode_image


def fit_within(width: int, height: int, box_w: int | None, box_h: int | None) -> tuple[int, int]:
    """(w, h) of a ``width`` x ``height`` image scaled to fit ``box_w`` x ``box_h`` (None: no bound on that
    side), aspect kept, never larger than the image; each side at least 1 pixel."""
    scale = min(1.0, box_w / width if box_w else 1.0, box_h / height if box_h else 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resized(data: bytes, size: tuple[int, int], enc: Encoding, grey: bool) -> bytes:
    """Image file bytes -> the image at ``size`` (w, h) in ``enc``: (H, W, 3|4) uint8 from the decode, resampled
    with Lanczos, grey (one channel) where the source was grey and the container has a grey mode."""
    img = decode_image(data)
    planes = to_uint8(img.rgb) if img.alpha is None else np.dstack([to_uint8(img.rgb), to_uint8(img.alpha)])
    im = Image.fromarray(np.ascontiguousarray(planes))
    if grey:
        im = im.convert("LA" if img.alpha is not None else "L")
    out = np.asarray(im.resize(size, Image.Resampling.LANCZOS))
    try:
        return encode(out, enc)
    except ContainerError:
        if out.ndim == 3 and out.shape[2] in (2, 4):
            raise  # alpha in a container without it (JPEG): the caller says so
        rgb = np.repeat((out if out.ndim == 2 else out[..., 0])[..., None], 3, axis=2)  # WebP: R = G = B
        return encode(rgb, enc)

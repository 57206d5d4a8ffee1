"""Image decoding: every image irn_batch reads goes through here (``irn_batch.container`` encodes).

Decoding rules (``decode_image``), applied in this order:

* Size guard: the pixel count is read from the header, before any pixel is decoded; more than
  ``max_pixels`` (default 200 million) is refused. Pillow's own decompression-bomb limit
  (``PIL.Image.MAX_IMAGE_PIXELS``, refused above twice that) is reported the same way.
* Formats: PNG, JPEG (and MPO, whose first frame is the photo), WebP, TIFF, BMP, GIF, PPM/PGM, TGA,
  and AVIF where Pillow has it.
  Anything else, zero bytes, truncated or corrupt data is refused with the reason.
* Animated or multi-page files (more than one frame) are refused: "animated image with N frames is
  not supported".
* EXIF orientation is applied, so the pixels are upright as a viewer shows them.
* Colour: grayscale (1-bit, 8-bit, 16-bit) is replicated to R=G=B. Palette images are expanded through
  their palette. CMYK, YCbCr and LAB are converted to RGB by Pillow. Colour profiles are not applied:
  the values are taken as sRGB.
* Precision: 8-bit samples become k/255; 16-bit grayscale ("I;16") and 16-bit RGB/RGBA PNGs keep all
  16 bits (k/65535). Mode "I" (32-bit integer) must hold values in 0..65535, read as 16-bit. Float
  images (mode "F") are accepted when every value is finite and within [0, 1], otherwise refused.
  Other 16-bit layouts (16-bit TIFF RGB, 16-bit gray+alpha) are reduced to 8 bits by Pillow.
* Alpha: an alpha channel (RGBA, LA, PA) or a transparency key (palette or RGB/L ``tRNS``) is kept as a
  separate ``alpha`` plane in [0, 1]. The LR file carries it as the fourth channel of an RGBA PNG,
  downscaled with ``metrics.bicubic_resize`` (antialiased bicubic, i.e. area-like); the restore
  upscales it with the same bicubic. The network itself only ever sees the RGB planes.
* Tiny images (1x1, 1xN) are valid: the model pads them.
"""
from __future__ import annotations

import io
import sys
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, features

DEFAULT_MAX_PIXELS = 200_000_000

# A short allow-list: Pillow's rarer plugins (EPS runs Ghostscript, for one) are attack surface we do not
# need. JPEG covers MPO (multi-picture JPEGs from phones), which Pillow opens through the JPEG plugin.
_FORMATS = ["PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF", "PPM", "TGA"]
Image.init()
if features.check("avif") and "AVIF" in Image.OPEN:
    _FORMATS.append("AVIF")

# EXIF orientation tag value -> numpy transform on (H, W, ...) arrays (same as Pillow's exif_transpose).
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}
_SWAP16 = {"16B": "16L", "16L": "16B", "16N": "16B" if sys.byteorder == "little" else "16L"}


class ImageError(ValueError):
    """An input that is not a usable image; the message is the reason in plain words."""


@dataclass
class DecodedImage:
    rgb: np.ndarray  # (H, W, 3) float32 in [0, 1]
    alpha: np.ndarray | None  # (H, W) float32 in [0, 1], None when the source has no transparency
    width: int
    height: int
    mode: str  # the source's PIL mode, e.g. "RGB", "I;16", "P", "CMYK"
    format: str  # the source's PIL format, e.g. "PNG", "JPEG"


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if len(data) == 0:
        raise ImageError("empty file (0 bytes)")
    try:
        im = Image.open(io.BytesIO(data), formats=_FORMATS)
    except Image.DecompressionBombError as e:
        raise ImageError(f"image too large (decompression-bomb guard: {e})") from e
    except Image.UnidentifiedImageError as e:
        raise ImageError("not a recognised image (supported: " + ", ".join(_FORMATS) + ")") from e
    w, h = im.size
    if w * h > max_pixels:
        raise ImageError(f"image is {w}x{h} = {w * h} pixels, more than the limit of {max_pixels}")
    if w < 1 or h < 1:
        raise ImageError(f"image has no pixels ({w}x{h})")
    frames = getattr(im, "n_frames", 1)
    if frames > 1 and im.format != "MPO":
        raise ImageError(f"animated image with {frames} frames is not supported")
    return im


def _png_rgb16(data: bytes, im: Image.Image, tiles: list) -> np.ndarray | None:
    """Full 16-bit samples of a 16-bit RGB(A) PNG, or None when ``im`` is not one.

    Pillow unpacks such files to 8 bits by keeping each sample's high byte. Decoding the same stream
    a second time with the byte order swapped yields the low bytes, so no PNG decoder of our own is
    needed: unfiltering and interlacing stay Pillow's.
    """
    if im.format != "PNG" or len(tiles) != 1:
        return None
    tile = tiles[0]
    rawmode = tile.args if isinstance(tile.args, str) else None
    if rawmode not in ("RGB;16B", "RGBA;16B"):
        return None
    hi = np.asarray(im)  # im is already loaded with the original rawmode
    again = Image.open(io.BytesIO(data), formats=["PNG"])
    again.tile = [again.tile[0]._replace(args=rawmode[:-3] + _SWAP16["16B"])]
    lo = np.asarray(again)
    return hi.astype(np.uint16) * 256 + lo


def _to_float(im: Image.Image, data: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W, 3) float32 RGB and optional (H, W) alpha, before orientation."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        gray = np.asarray(im).astype(np.float32) / 65535.0
        return np.repeat(gray[..., None], 3, axis=2), None
    if mode == "I":
        arr = np.asarray(im)
        if arr.min() < 0 or arr.max() > 65535:
            raise ImageError(f"32-bit integer image with values {arr.min()}..{arr.max()}, outside 0..65535")
        gray = arr.astype(np.float32) / 65535.0
        return np.repeat(gray[..., None], 3, axis=2), None
    if mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        if not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0:
            raise ImageError("float image with values that are not finite or outside [0, 1]")
        return np.repeat(arr[..., None], 3, axis=2), None
    tiles = list(im.tile)  # load() clears them; the 16-bit check needs the rawmode
    im.load()
    deep = _png_rgb16(data, im, tiles)
    if deep is not None:
        arr = deep.astype(np.float32) / 65535.0
        return np.ascontiguousarray(arr[..., :3]), (arr[..., 3].copy() if arr.shape[2] == 4 else None)
    has_alpha = "A" in mode or "a" in mode or im.has_transparency_data
    arr = np.asarray(im.convert("RGBA" if has_alpha else "RGB")).astype(np.float32) / 255.0
    return np.ascontiguousarray(arr[..., :3]), (arr[..., 3].copy() if has_alpha else None)


def _orientation(im: Image.Image) -> int:
    try:
        value = int(im.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block must not cost the image: treat it as upright
        return 1
    return value if value in _ORIENT else 1


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode image bytes by the rules in the module docstring; raise ImageError with the reason."""
    try:
        with warnings.catch_warnings():
            # Our own size guard runs first; Pillow's warnings (bomb, odd EXIF) are not the caller's business.
            warnings.simplefilter("ignore")
            im = _open(data, max_pixels)
            source_mode, fmt = im.mode, im.format or "?"
            rgb, alpha = _to_float(im, data)
            orient = _orientation(im)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"image too large (decompression-bomb guard: {e})") from e
    except MemoryError as e:
        raise ImageError("not enough memory to decode the image") from e
    except Exception as e:  # Pillow's plugins raise many types (OSError, SyntaxError, struct.error, ...)
        reason = str(e) or type(e).__name__
        raise ImageError(f"corrupt, truncated or unsupported image data ({reason})") from e
    if orient != 1:
        rgb = np.ascontiguousarray(_ORIENT[orient](rgb))
        alpha = None if alpha is None else np.ascontiguousarray(_ORIENT[orient](alpha))
    h, w = rgb.shape[:2]
    return DecodedImage(rgb=rgb, alpha=alpha, width=w, height=h, mode=source_mode, format=fmt)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Float [0, 1] -> uint8 by clipping and rounding x*255 to the nearest integer."""
    return np.round(np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)

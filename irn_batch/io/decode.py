"""Image decoding: every image irn_batch reads goes through here (``irn_batch.io.container`` encodes).

Decoding rules (``decode_image``), applied in this order:

* Size guard: the pixel count is read from the header, before any pixel is decoded; more than
  ``max_pixels`` (default 200 million) is refused. Pillow's own decompression-bomb limit
  (``PIL.Image.MAX_IMAGE_PIXELS``, refused above twice that) is reported the same way.
* Formats: PNG, JPEG (and MPO), WebP, TIFF, BMP, GIF, PPM/PGM, TGA, AVIF where Pillow has it, and
  HEIC/HEIF (phones' default) through the ``pillow-heif`` plugin, registered here when it is installed.
  Anything else, zero bytes, truncated or corrupt data is refused with the reason.
* Several pictures in one file: an MPO (a phone's JPEG with extra pictures; the first is the primary
  image, CIPA DC-007), a HEIF with several top-level pictures (the primary one is read) and a TIFF whose
  further pages are all smaller than the first in both width and height (thumbnails, reduced-resolution
  copies) are read as their first picture; the other pictures are not decoded; they are counted in
  ``DecodedImage.pages`` (the ingest manifest's ``extra_frames``). Any other file with more than one frame
  is refused:
  an animation (GIF, PNG, WebP, AVIF) with "animated image with N frames is not supported", a TIFF with
  a further page as large as the first with "multi-page TIFF: page N is WxH, not smaller than the first".
* EXIF orientation is applied, so the pixels are upright as a viewer shows them.
* Pixel modes, by an explicit list (any other mode is refused, never guessed):
  1, L, LA, La and 16/32-bit gray (I;16*, I, F) are replicated to R=G=B; P and PA are expanded through
  their palette; RGB, RGBA, RGBa (un-premultiplied) and RGBX (padding dropped) are read as they are;
  YCbCr (JFIF, full-range BT.601) and HSV are converted to RGB by Pillow; LAB is CIE L*a*b* converted
  to sRGB by ImageCms (the embedded profile, else ImageCms's built-in D50 Lab profile); CMYK goes
  through its embedded profile, and without one through Pillow's uncalibrated conversion
  (R = (255 - C)(255 - K)/255, ...), which ``colour`` says.
* Colour (ICC profiles): the decoded values are sRGB, as a colour-managed viewer shows them. A file
  without an embedded profile is taken as sRGB (the convention of the web and of cameras). A file with
  one is converted to sRGB by Pillow's ImageCms (littlecms) with the **perceptual** rendering intent, at
  8 bits per sample; a profile whose conversion changes no 8-bit value by more than 1 (checked on a
  grid of colours) counts as sRGB already, and the values, 16-bit ones included, are kept untouched.
  A profile that cannot be read or does not fit the pixels (say, a CMYK profile on an RGB image) never
  costs the image: the values are read as if there were no profile. ``DecodedImage.colour`` says which
  happened, in one line, and the ingest manifest records it (column ``colour``): "sRGB",
  "sRGB (embedded profile 'NAME')", "converted from 'NAME' to sRGB (perceptual)", "uncalibrated CMYK
  conversion (no profile)", or any of these followed by "; ICC profile unusable: REASON".
* Precision: 8-bit samples become k/255; 16-bit grayscale ("I;16") and 16-bit RGB/RGBA PNGs keep all
  16 bits (k/65535) unless a profile conversion runs. Mode "I" (32-bit integer) must hold values in
  0..65535, read as 16-bit. Float images (mode "F") are accepted when every value is finite and within
  [0, 1], otherwise refused. Other 16-bit layouts (16-bit TIFF RGB, 16-bit gray+alpha) are reduced to
  8 bits by Pillow.
* Alpha: only from modes that carry an alpha channel (RGBA, RGBa, LA, La, PA) or from transparency
  information: a palette's transparency (PNG tRNS, GIF) and the tRNS colour key of 1/2/4/8/16-bit gray
  and 8/16-bit RGB PNGs, compared with the samples at their full depth. Nothing else gives alpha (LAB
  has an "A" in its name and no alpha). Alpha is kept as a separate ``alpha`` plane in [0, 1]; the LR
  carries it in its container's alpha channel (``irn_batch.io.container``). The network itself only ever
  sees the RGB planes.
* Tiny images (1x1, 1xN) are valid: the model pads them.
* What the source was, for the restore to give it back: ``grey`` (a gray mode: 1, L, LA, La, I;16*, I, F,
  or a palette whose every entry has R = G = B; the model still sees R=G=B), ``bit_depth`` (bits per sample as decoded: 1, 2, 4, 8, 16 or 32 for
  float), ``gamut_clipped`` (for an RGB profile converted to sRGB: the fraction of pixels whose colour sRGB
  cannot hold, i.e. converted back to the source profile they miss their source values by more than 3
  levels of 255 in some channel; None when no RGB conversion ran), and the container, JPEG quality and
  chroma subsampling, and losslessness of the file (``irn_batch.io.source_format``).
"""
from __future__ import annotations

import io
import sys
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, features

from irn_batch.errors import one_line
from irn_batch.io.colour import colour_manage
from irn_batch.io.colour import _GRAY, _GRAY_DEEP, _PALETTE, _RGB, _gray
from irn_batch.io.source_format import describe

DEFAULT_MAX_PIXELS = 200_000_000

# A short allow-list: Pillow's rarer plugins (EPS runs Ghostscript, for one) are attack surface we do not
# need. JPEG covers MPO (multi-picture JPEGs from phones), which Pillow opens through the JPEG plugin.
_FORMATS = ["PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF", "PPM", "TGA"]
Image.init()
if features.check("avif") and "AVIF" in Image.OPEN:
    _FORMATS.append("AVIF")
try:  # HEIC/HEIF from phones: the pillow-heif plugin (a dependency; optional for a source checkout)
    import pillow_heif

    pillow_heif.register_heif_opener()
    _FORMATS.append("HEIF")
except ImportError:  # pragma: no cover
    pillow_heif = None

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

# The pixel modes decode_image accepts, by how they become RGB (see the module docstring).
_CONVERTED = frozenset({"CMYK", "YCbCr", "HSV", "LAB"})
# The gray source modes: their restores are written gray (irn_batch.io.container.GreyDepth).
GREY_MODES = _GRAY_DEEP | _GRAY
# Modes with an alpha channel. Everything else has alpha only through transparency information.
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# PNG gray at 2 or 4 bits: Pillow scales the samples to 0..255 but leaves the tRNS key at the file's depth.
_KEY_SCALE = {"L;2": 85, "L;4": 17}
# Formats whose further frames are pictures of their own (not an animation): see _pages().
_STILL_MULTI = frozenset({"MPO", "HEIF", "TIFF"})
# Further pictures that are never checked for size: an MPO's and a HEIF's extras are pictures of their own.
_EXTRA_PICTURES = frozenset({"MPO", "HEIF"})


class ImageError(ValueError):
    """An input that is not a usable image; the message is the reason in plain words."""


@dataclass
class DecodedImage:
    rgb: np.ndarray  # (H, W, 3) float32 in [0, 1], sRGB
    alpha: np.ndarray | None  # (H, W) float32 in [0, 1], None when the source has no transparency
    width: int
    height: int
    mode: str  # the source's PIL mode, e.g. "RGB", "I;16", "P", "CMYK"
    format: str  # the source's PIL format, e.g. "PNG", "JPEG"
    colour: str = "sRGB"  # what colour management did, one line (see the module docstring)
    pages: int = 1  # pictures in the file; only the first is decoded (MPO, HEIF, TIFF with thumbnails)
    grey: bool = False  # the source is a gray image (rgb then has R=G=B)
    bit_depth: int = 8  # bits per sample as decoded: 1, 2, 4, 8, 16, or 32 (float)
    gamut_clipped: float | None = None  # fraction of pixels sRGB could not hold (RGB profiles converted)
    container: str = "?"  # the file's container: jpeg, png, webp, tiff, avif, heif, gif, bmp, ppm, tga
    quality: int | None = None  # a JPEG's estimated IJG quality (irn_batch.io.source_format.jpeg_quality)
    lossless: bool = False  # the file stores its pixels losslessly (PNG, lossless WebP, TIFF without JPEG...)
    subsampling: str | None = None  # a colour JPEG's chroma subsampling: "4:2:0" or "4:4:4"


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
    return im


def _pages(im: Image.Image) -> int:
    """How many pictures the file holds, after checking that the first one alone is the image."""
    frames = getattr(im, "n_frames", 1)
    if frames <= 1 or im.format in _EXTRA_PICTURES:
        return frames
    if im.format not in _STILL_MULTI:
        raise ImageError(f"animated image with {frames} frames is not supported")
    w, h = im.size
    for page in range(1, frames):
        im.seek(page)
        pw, ph = im.size
        if pw >= w or ph >= h:
            raise ImageError(
                f"multi-page TIFF: page {page + 1} is {pw}x{ph}, not smaller than the first ({w}x{h}); "
                "only one image (with thumbnails) per file is supported"
            )
    im.seek(0)
    return frames


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


def _is_rgb_key(key) -> bool:
    return isinstance(key, tuple) and len(key) == 3 and all(isinstance(v, int) for v in key)


def _key_alpha(samples: np.ndarray, key) -> np.ndarray:
    """(H, W) alpha from a tRNS colour key (int for gray, 3-tuple for RGB, at the samples' depth):
    0 where every channel equals the key, else 1."""
    key = np.asarray(key, dtype=np.int64).reshape(-1)
    if samples.ndim == 2:
        samples = samples[..., None]
    return (samples != key).any(axis=2).astype(np.float32)


def _samples(im: Image.Image, data: bytes) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """(H, W, 3) float32 RGB before colour management, optional (H, W) alpha, and whether it is deeper
    than 8 bits. ``im`` is not loaded yet."""
    mode = im.mode
    key = im.info.get("transparency")
    tiles = list(im.tile)  # load() clears them; the 16-bit and the tRNS checks need the rawmode
    rawmode = tiles[0].args if len(tiles) == 1 and isinstance(tiles[0].args, str) else None
    im.load()
    if mode in _GRAY_DEEP:
        arr = np.asarray(im)
        if mode == "F":
            arr = arr.astype(np.float32)
            if not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0:
                raise ImageError("float image with values that are not finite or outside [0, 1]")
            return _gray(arr), None, True
        if mode == "I" and (arr.min() < 0 or arr.max() > 65535):
            raise ImageError(f"32-bit integer image with values {arr.min()}..{arr.max()}, outside 0..65535")
        alpha = _key_alpha(arr, key) if isinstance(key, int) else None
        return _gray(arr.astype(np.float32) / 65535.0), alpha, True
    if mode in _GRAY:
        if mode in ("LA", "La"):
            la = np.asarray(im.convert("LA") if mode == "La" else im).astype(np.float32) / 255.0
            return _gray(la[..., 0]), la[..., 1].copy(), False
        gray = np.asarray(im.convert("L"))
        alpha = None
        if isinstance(key, int):
            alpha = _key_alpha(gray, key * _KEY_SCALE.get(rawmode, 1))
        return _gray(gray.astype(np.float32) / 255.0), alpha, False
    if mode in _PALETTE:
        has_alpha = mode == "PA" or im.has_transparency_data  # palette alpha or a transparent index
        arr = np.asarray(im.convert("RGBA")).astype(np.float32) / 255.0
        return np.ascontiguousarray(arr[..., :3]), (arr[..., 3].copy() if has_alpha else None), False
    if mode in _RGB:
        deep = _png_rgb16(data, im, tiles)
        if deep is not None:
            alpha = _key_alpha(deep, key) if deep.shape[2] == 3 and _is_rgb_key(key) else None
            arr = deep.astype(np.float32) / 65535.0
            return np.ascontiguousarray(arr[..., :3]), (arr[..., 3].copy() if arr.shape[2] == 4 else alpha), True
        if mode in ("RGBA", "RGBa"):
            arr = np.asarray(im.convert("RGBA")).astype(np.float32) / 255.0
            return np.ascontiguousarray(arr[..., :3]), arr[..., 3].copy(), False
        rgb = np.asarray(im.convert("RGB") if mode == "RGBX" else im)
        alpha = _key_alpha(rgb, key) if mode == "RGB" and _is_rgb_key(key) else None
        return rgb.astype(np.float32) / 255.0, alpha, False
    if mode in _CONVERTED:
        return np.asarray(im.convert("RGB")).astype(np.float32) / 255.0, None, False
    raise ImageError(f"unsupported pixel mode {mode!r}")


def _orientation(im: Image.Image) -> int:
    try:
        value = int(im.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block must not cost the image: treat it as upright
        return 1
    return value if value in _ORIENT else 1


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode image bytes by the rules in the module docstring.

    Returns RGB as (H, W, 3) float32 in [0, 1] (sRGB) and alpha as (H, W) float32 or None.
    Raises ImageError with the reason (one line) for anything that is not a usable image.
    """
    try:
        with warnings.catch_warnings():
            # Our own size guard runs first; Pillow's warnings (bomb, odd EXIF) are not the caller's business.
            warnings.simplefilter("ignore")
            im = _open(data, max_pixels)
            pages = _pages(im)
            source_mode, fmt = im.mode, im.format or "?"
            container, quality, lossless, subsampling = describe(im, data)
            depth = _bit_depth(im)
            rgb, alpha, deep = _samples(im, data)
            depth = 16 if deep and depth == 8 else depth
            grey = source_mode in GREY_MODES or (source_mode in _PALETTE and _grey_palette(im))
            rgb, colour, clipped = colour_manage(im, rgb, deep)
            orient = _orientation(im)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"image too large (decompression-bomb guard: {e})") from e
    except MemoryError as e:
        raise ImageError("not enough memory to decode the image") from e
    except Exception as e:  # Pillow's plugins raise many types (OSError, SyntaxError, struct.error, ...)
        raise ImageError(f"corrupt, truncated or unsupported image data ({one_line(e, 200)})") from e
    if orient != 1:
        rgb = np.ascontiguousarray(_ORIENT[orient](rgb))
        alpha = None if alpha is None else np.ascontiguousarray(_ORIENT[orient](alpha))
    h, w = rgb.shape[:2]
    return DecodedImage(rgb=rgb, alpha=alpha, width=w, height=h, mode=source_mode, format=fmt, colour=colour,
                        pages=pages, grey=grey, bit_depth=depth, gamut_clipped=clipped,
                        container=container, quality=quality, lossless=lossless, subsampling=subsampling)


def _grey_palette(im: Image.Image) -> bool:
    """Whether every entry of a (loaded) palette image's palette has R = G = B (a gray GIF or PNG)."""
    try:
        pal = np.asarray(im.getpalette("RGB") or [], dtype=np.int16).reshape(-1, 3)
    except Exception:  # an odd palette is simply not called gray
        return False
    return pal.size > 0 and bool((pal[:, 0] == pal[:, 1]).all() and (pal[:, 1] == pal[:, 2]).all())


def mode_depth(mode: str) -> int:
    """Bits per sample a PIL mode implies (1 for "1", 32 for "F", 16 for I;16*/I, else 8): the depth of a
    source known only by the mode its LR records."""
    return 1 if mode == "1" else 32 if mode == "F" else 16 if mode in _GRAY_DEEP else 8


def _bit_depth(im: Image.Image) -> int:
    """Bits per sample before decoding, from the mode and the tile's raw mode (8 unless known otherwise;
    16-bit RGB PNGs are found by ``_samples``)."""
    if im.mode == "1":
        return 1
    if im.mode == "F":
        return 32
    if im.mode in _GRAY_DEEP:
        return 16
    tiles = list(im.tile)
    rawmode = tiles[0].args if len(tiles) == 1 and isinstance(tiles[0].args, str) else None
    return {"L;2": 2, "L;4": 4}.get(rawmode, 8)

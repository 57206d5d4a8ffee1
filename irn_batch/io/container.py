"""Containers: the one module that encodes pixels to image files (LR files with their metadata: ``lr_file``).

The CLI, the pipeline, the quality floor, training and ``irn-batch rd`` all encode through here, so a
container behaves the same everywhere.

Containers (``Encoding.container``):

* ``png``: lossless, 8-bit RGB or RGBA. Quality has no effect.
* ``webp``: lossy (4:2:0) at quality 1..99; quality 100 is lossless WebP. Holds alpha.
* ``jpeg``: lossy at quality 1..100 with 4:2:0 or 4:4:4 chroma subsampling. JPEG has no alpha channel.
* ``avif``: lossy AV1 still image (Pillow's own AVIF support) at quality 1..100, 4:2:0 or 4:4:4. Holds alpha.
* ``tiff``: lossless (deflate), for restored outputs only.
* ``heif``: lossy HEVC still image (``.heic``, through the pillow-heif plugin), for restored outputs only,
  so that a phone's HEIC original can come back as HEIC (``format: source``).

Restored outputs (``restore_array``): a gray source is written gray, by BT.601 luma
(0.299 R + 0.587 G + 0.114 B of the model's float output, rounded), as one channel (plus alpha) in PNG,
JPEG, TIFF, AVIF and HEIF, and as RGB with R = G = B exactly in WebP, which has no gray mode (a lossy WebP
then decodes with R, G, B within a level or two of each other). A 1-bit source comes back gray, and
1-bit again (luma >= 0.5 is white) when it goes back into its own container (``format: source``, PNG or
TIFF). A source deeper than 8 bits (16-bit gray or RGB PNG, 16-bit gray TIFF, float) comes back at 16 bits
in PNG (all layouts) and TIFF (gray without alpha), rounded from the float output, never from an 8-bit
rounding; every other case is 8-bit and ``restore_array`` says that the depth was reduced.

``source_encoding``: the container a restore with ``format: source`` writes: the original's own (JPEG at
its estimated quality and its chroma subsampling, PNG, lossless or lossy WebP, TIFF, AVIF, HEIF);
containers irn_batch does not write (GIF, BMP, PPM, TGA) become PNG, which loses nothing of their 8-bit
pixels.

Default qualities (``DEFAULT_QUALITY``) are chosen from ``irn-batch rd`` on the validation photos (see
``docs/results/rd_plain_weights/``, measured with the plain weights).

Alpha rule: the LR's alpha plane is the HR alpha downscaled with ``metrics.bicubic_resize`` (recorded as
``alpha_rule=bicubic``) and stored in the container's own alpha channel. JPEG cannot hold it: where the
caller named the file (the CLI's ``-o x.jpg``) an LR with alpha is refused (``ContainerError``); where
irn_batch names the file (ingest) it is stored as WebP at the same quality (``for_alpha``).
"""
from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

import numpy as np
from PIL import Image, PngImagePlugin, features

from irn_batch.io import photo_metadata as pm

LR_CONTAINERS = ("png", "webp", "jpeg", "avif")
OUTPUT_CONTAINERS = (*LR_CONTAINERS, "tiff", "heif")
SUBSAMPLINGS = ("4:2:0", "4:4:4")
# Chosen with `irn-batch rd` on the 11 validation photos (docs/results/rd_plain_weights/, plain weights):
# the knee of each LR container's curve, where 10 more quality points buy about 0.3-0.8 dB of restore for
# 50-75 % more bytes. AVIF defaults to 4:4:4: at q70 it restores 0.46 dB (x2) / 0.17 dB (x4) better than
# 4:2:0 for 8 % / 7 % more bytes, since 4:2:0 chroma erases what IRN hides in the LR's colour planes. JPEG
# keeps 4:2:0: 4:4:4 only pays above about 0.3 bits per HR pixel at x4.
DEFAULT_QUALITY = {"png": 100, "webp": 85, "jpeg": 85, "avif": 70, "tiff": 100, "heif": 90}
DEFAULT_SUBSAMPLING = {"jpeg": "4:2:0", "avif": "4:4:4"}
SUFFIX = {"png": ".png", "webp": ".webp", "jpeg": ".jpg", "avif": ".avif", "tiff": ".tif", "heif": ".heic"}
_BY_SUFFIX = {".png": "png", ".webp": "webp", ".jpg": "jpeg", ".jpeg": "jpeg", ".avif": "avif",
              ".tif": "tiff", ".tiff": "tiff", ".heic": "heif", ".heif": "heif"}
LR_SUFFIXES = tuple(sfx for sfx, name in _BY_SUFFIX.items() if name in LR_CONTAINERS)
_ALIASES = {"jpg": "jpeg", "tif": "tiff", "heic": "heif"}
_PIL_FORMAT = {"png": "PNG", "webp": "WEBP", "jpeg": "JPEG", "avif": "AVIF", "tiff": "TIFF", "heif": "HEIF"}
_HAS_ALPHA = {"png", "webp", "avif", "tiff", "heif"}
# Containers that hold one gray channel, and those that hold 16-bit samples (PNG any layout, TIFF gray).
_GREY_CONTAINERS = {"png", "jpeg", "tiff", "avif", "heif"}
# Original containers restored as themselves with format: source; the others (gif, bmp, ppm, tga) as PNG.
_SOURCE_WRITABLE = {"jpeg", "png", "webp", "tiff", "avif", "heif"}



class ContainerError(ValueError):
    """A request a container cannot satisfy (unknown container, alpha in JPEG, no AVIF in this Pillow)."""


def avif_available() -> bool:
    """Whether the installed Pillow can write and read AVIF."""
    return features.check("avif") and "AVIF" in Image.SAVE


@dataclass(frozen=True)
class Encoding:
    """How an image is stored: container, quality (1..100; None = the container's default) and, for JPEG and
    AVIF, chroma subsampling (None = the container's default). Raises ``ContainerError`` for an unknown
    container or out-of-range value."""

    container: str = "png"
    quality: int | None = None
    subsampling: str | None = None

    def __post_init__(self) -> None:
        name = _ALIASES.get(str(self.container).lower(), str(self.container).lower())
        if name not in OUTPUT_CONTAINERS:
            raise ContainerError(f"unknown container {self.container!r} (one of {', '.join(OUTPUT_CONTAINERS)})")
        object.__setattr__(self, "container", name)
        q = DEFAULT_QUALITY[name] if self.quality is None else int(self.quality)
        if not 1 <= q <= 100:
            raise ContainerError(f"quality must be within 1..100, got {self.quality}")
        object.__setattr__(self, "quality", q if name not in ("png", "tiff") else 100)
        if self.subsampling is None:
            object.__setattr__(self, "subsampling", DEFAULT_SUBSAMPLING.get(name, "4:2:0"))
        if self.subsampling not in SUBSAMPLINGS:
            raise ContainerError(f"subsampling must be one of {', '.join(SUBSAMPLINGS)}, got {self.subsampling!r}")
        if name not in ("jpeg", "avif"):
            object.__setattr__(self, "subsampling", "4:2:0" if name == "webp" else "4:4:4")

    @property
    def lossless(self) -> bool:
        return self.container in ("png", "tiff") or (self.container == "webp" and self.quality == 100)

    @property
    def suffix(self) -> str:
        return SUFFIX[self.container]

    @property
    def label(self) -> str:
        """Short description, e.g. 'png', 'webp q90', 'webp lossless', 'jpeg 4:2:0 q90'."""
        if self.lossless:
            return self.container if self.container != "webp" else "webp lossless"
        sub = f" {self.subsampling}" if self.container in ("jpeg", "avif") else ""
        return f"{self.container}{sub} q{self.quality}"

    def for_alpha(self, has_alpha: bool) -> Encoding:
        """The encoding irn_batch uses when it names the file: JPEG with alpha becomes WebP, same quality."""
        return replace(self, container="webp") if has_alpha and self.container == "jpeg" else self


def encoding_for_path(path: str, quality: int | None = None, subsampling: str | None = None) -> Encoding:
    """The encoding a file name asks for (by suffix); ``ContainerError`` for a suffix no container has."""
    suffix = PurePosixPath(path).suffix.lower()
    if suffix not in _BY_SUFFIX:
        known = ", ".join(sorted(_BY_SUFFIX))
        raise ContainerError(f"cannot tell the container from the suffix {suffix or '(none)'!r} (use one of {known})")
    return Encoding(_BY_SUFFIX[suffix], quality, subsampling)


def encode(pixels: np.ndarray, enc: Encoding = Encoding(), *, text: dict[str, str] | None = None,
           xmp: bytes | None = None, icc: bytes | None = None, photo: pm.PhotoMeta | None = None) -> bytes:
    """Pixels -> file bytes in ``enc``; ``text`` as PNG text chunks, ``xmp`` as an XMP packet (in place of
    ``photo.xmp``), ``icc`` as the embedded ICC profile (in place of ``photo.icc``), ``photo``: the photo
    metadata to embed, as far as the container holds it (``photo_metadata.HOLDS``; the caller reports the
    rest), already made to fit the pixels (``photo_metadata.for_image``).

    Pixels: (H, W, 3|4) uint8 RGB(A); gray ones (H, W) or (H, W, 1|2) uint8 (gray, gray + alpha) for the
    containers with a gray mode; uint16 (any of these layouts) for PNG, and gray without alpha for TIFF;
    (H, W) bool (1-bit) for PNG and TIFF. Raises ``ContainerError`` for alpha in JPEG, a layout the
    container cannot hold, or AVIF/HEIF without Pillow support; ``ValueError`` for other arrays.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4) or pixels.dtype not in (np.uint8, np.uint16, bool) \
            or (pixels.dtype == bool and pixels.shape[2] != 1):
        raise ValueError(f"expected (H, W, 1|2|3|4) uint8/uint16 or (H, W) bool pixels, got {pixels.dtype} "
                         f"{pixels.shape}")
    channels, name = pixels.shape[2], enc.container
    if channels in (2, 4) and name not in _HAS_ALPHA:
        raise ContainerError(f"{name.upper()} cannot store the alpha channel of this image; use png, webp or avif")
    if channels <= 2 and name not in _GREY_CONTAINERS:
        raise ContainerError(f"{name.upper()} has no gray mode; pass R = G = B pixels")
    if (pixels.dtype == np.uint16 and not (name == "png" or (name == "tiff" and channels == 1))) or (
            pixels.dtype == bool and name not in ("png", "tiff")):
        raise ContainerError(f"{name.upper()} cannot store {pixels.dtype} pixels of {channels} channel(s) here")
    if name == "avif" and not avif_available():
        raise ContainerError("this Pillow was built without AVIF support (pip install -U pillow)")
    if name == "heif" and "HEIF" not in Image.SAVE:
        raise ContainerError("HEIF needs the pillow-heif plugin (pip install pillow-heif)")
    photo = (photo or pm.PhotoMeta()).split(name)[0]
    if xmp is not None:
        photo = replace(photo, xmp=xmp)
    if icc is not None:
        photo = replace(photo, icc=icc)
    if pixels.dtype == np.uint16 and name == "png" and channels > 1:
        return _png16(pixels, {**pm.png_chunks(photo), **(text or {})}, photo.icc, photo.exif)
    arr = np.ascontiguousarray(pixels[..., 0] if channels == 1 else pixels)
    im = Image.fromarray(arr, "LA") if channels == 2 else Image.fromarray(arr)
    buf = io.BytesIO()
    extra = pm.pillow_options(photo, name)
    if name == "png":
        info = PngImagePlugin.PngInfo()
        for key, value in {**pm.png_chunks(photo), **(text or {})}.items():
            if key != pm.PNG_XMP_KEY and _latin1(value):  # XMP always goes in iTXt (as the XMP spec says)
                info.add_text(key, value)
            else:
                info.add_itxt(key, value)
        im.save(buf, format="PNG", pnginfo=info, compress_level=6, **extra)
    elif name == "tiff":
        im.save(buf, format="TIFF", compression="tiff_adobe_deflate", **extra)
    elif name == "heif":
        im.save(buf, format="HEIF", quality=enc.quality, **extra)
    else:
        opts: dict = {"quality": enc.quality, **extra}
        if name == "webp":
            opts.update(lossless=enc.quality == 100, method=4)
        else:
            opts["subsampling"] = enc.subsampling
        im.save(buf, format=_PIL_FORMAT[name], **opts)
    return pm.finish(buf.getvalue(), name, photo)


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png16(pixels: np.ndarray, text: dict[str, str], icc: bytes | None, exif: bytes | None = None) -> bytes:
    """(H, W, 2|3|4) uint16 -> a 16-bit PNG (gray + alpha, RGB, RGBA), which Pillow cannot write.

    Every row uses the Sub filter (computed with numpy); iCCP, eXIf and iTXt chunks carry ``icc``, ``exif``
    (an EXIF block, with or without its ``Exif\\0\\0`` header) and ``text``.
    """
    h, w, c = pixels.shape
    colour_type = {2: 4, 3: 2, 4: 6}[c]
    rows = pixels.astype(">u2").reshape(h, w * c).view(np.uint8).reshape(h, w * c * 2)
    bpp = 2 * c
    sub = rows.copy()
    sub[:, bpp:] = rows[:, bpp:] - rows[:, :-bpp]  # uint8 arithmetic wraps modulo 256, as PNG wants
    raw = np.concatenate([np.ones((h, 1), np.uint8), sub], axis=1).tobytes()
    out = [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))]
    if icc is not None:
        out.append(_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc)))
    if exif:
        out.append(_chunk(b"eXIf", exif.removeprefix(b"Exif\x00\x00")))
    for key, value in text.items():
        out.append(_chunk(b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + value.encode("utf-8")))
    out += [_chunk(b"IDAT", zlib.compress(raw, 6)), _chunk(b"IEND", b"")]
    return b"".join(out)


def restore_array(hr: np.ndarray, enc: Encoding, *, grey: bool, bit_depth: int, one_bit: bool = False
                  ) -> tuple[np.ndarray, int]:
    """The restore's float output -> (the array ``encode`` writes in ``enc``, its bits per sample).

    ``hr``: (H, W, 3|4) float in [0, 1] (RGB, alpha). ``grey``: the source was gray; ``bit_depth``: its
    bits per sample; ``one_bit``: write a 1-bit source as 1-bit (PNG/TIFF only, else ignored). Rules in the
    module docstring; the returned depth is 1, 8 or 16 (8 where a deeper source could not be kept).
    """
    hr = np.clip(np.asarray(hr, dtype=np.float32), 0.0, 1.0)
    rgb, alpha = hr[..., :3], (hr[..., 3:] if hr.shape[-1] == 4 else None)
    name = enc.container
    if grey:
        luma = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
        if one_bit and bit_depth == 1 and alpha is None and name in ("png", "tiff"):
            return luma >= 0.5, 1
        planes = luma[..., None] if name in _GREY_CONTAINERS else np.repeat(luma[..., None], 3, axis=2)
    else:
        planes = rgb
    if alpha is not None:
        planes = np.concatenate([planes, alpha], axis=2)
    deep = bit_depth > 8 and (name == "png" or (name == "tiff" and planes.shape[2] == 1))
    if deep:
        return np.round(planes * 65535.0).astype(np.uint16), 16
    return np.round(planes * 255.0).astype(np.uint8), 8


def source_encoding(container: str | None, quality: int | None, lossless: bool | None,
                    subsampling: str | None = None) -> Encoding:
    """The encoding ``format: source`` writes for an original of ``container`` (source_format's names),
    JPEG ``quality`` and ``subsampling`` (None: the defaults) and ``lossless`` flag (rules in the module
    docstring)."""
    name = (container or "").lower()
    if name == "heif" and "HEIF" not in Image.SAVE:
        name = "png"
    if name == "avif" and not avif_available():
        name = "png"
    if name not in _SOURCE_WRITABLE:
        return Encoding("png")
    if name == "jpeg":
        return Encoding("jpeg", quality, subsampling if subsampling in SUBSAMPLINGS else None)
    if name == "webp":
        return Encoding("webp", 100 if lossless else None)
    return Encoding(name)


# Further suffixes of the containers format: source writes (a .mpo's primary picture is a plain JPEG).
_SOURCE_SUFFIXES = {**_BY_SUFFIX, ".jpe": "jpeg", ".jfif": "jpeg", ".mpo": "jpeg", ".heics": "heif", ".heifs": "heif",
                    ".hif": "heif"}


def source_container_of_key(key: str) -> str | None:
    """The container a key's suffix names ('a.JPG' -> 'jpeg', 'b.mpo' -> 'jpeg'), None for others."""
    return _SOURCE_SUFFIXES.get(PurePosixPath(key).suffix.lower())


def container_of(data: bytes) -> str | None:
    """The container of file bytes, from their signature (None when not one of ours)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis"):
        return "avif"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return None

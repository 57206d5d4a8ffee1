"""Containers: the one module that encodes images to files and writes and reads irn_batch LR files.

The CLI, the pipeline, the quality floor, training and ``irn-batch rd`` all encode through here, so a
container behaves the same everywhere.

Containers (``Encoding.container``):

* ``png``: lossless, 8-bit RGB or RGBA. Quality has no effect.
* ``webp``: lossy (4:2:0) at quality 1..99; quality 100 is lossless WebP. Holds alpha.
* ``jpeg``: lossy at quality 1..100 with 4:2:0 or 4:4:4 chroma subsampling. JPEG has no alpha channel.
* ``avif``: lossy AV1 still image (Pillow's own AVIF support) at quality 1..100, 4:2:0 or 4:4:4. Holds alpha.
* ``tiff``: lossless (deflate), for restored outputs only.

Default qualities (``DEFAULT_QUALITY``) are chosen from ``irn-batch rd`` on the validation photos (see
``docs/results/rd_plain_weights/``, measured with the plain weights).

LR metadata (``LRMeta``) travels inside every LR file: PNG ``tEXt`` chunks named ``irn_batch:*``
(as in format version 1), or an XMP packet with the same fields as attributes in the namespace ``XMP_NS``
for WebP, JPEG and AVIF. ``irn-batch info`` reads it back from any container.

Alpha rule: the LR's alpha plane is the HR alpha downscaled with ``metrics.bicubic_resize`` (recorded as
``alpha_rule=bicubic``) and stored in the container's own alpha channel. JPEG cannot hold it: where the
caller named the file (the CLI's ``-o x.jpg``) an LR with alpha is refused (``ContainerError``); where
irn_batch names the file (ingest) it is stored as WebP at the same quality (``for_alpha``).
"""
from __future__ import annotations

import html
import io
import re
import warnings
from dataclasses import dataclass, fields, replace
from pathlib import PurePosixPath

import numpy as np
from PIL import Image, PngImagePlugin, features

from irn_batch.imageio import DecodedImage, ImageError, decode_image

LR_CONTAINERS = ("png", "webp", "jpeg", "avif")
OUTPUT_CONTAINERS = (*LR_CONTAINERS, "tiff")
SUBSAMPLINGS = ("4:2:0", "4:4:4")
# Chosen with `irn-batch rd` on the 11 validation photos (docs/results/rd_plain_weights/, plain weights):
# the knee of each LR container's curve, where 10 more quality points buy about 0.3-0.8 dB of restore for
# 50-75 % more bytes. AVIF defaults to 4:4:4: at q70 it restores 0.46 dB (x2) / 0.17 dB (x4) better than
# 4:2:0 for 8 % / 7 % more bytes, since 4:2:0 chroma erases what IRN hides in the LR's colour planes. JPEG
# keeps 4:2:0: 4:4:4 only pays above about 0.3 bits per HR pixel at x4.
DEFAULT_QUALITY = {"png": 100, "webp": 85, "jpeg": 85, "avif": 70, "tiff": 100}
DEFAULT_SUBSAMPLING = {"jpeg": "4:2:0", "avif": "4:4:4"}
SUFFIX = {"png": ".png", "webp": ".webp", "jpeg": ".jpg", "avif": ".avif", "tiff": ".tif"}
_BY_SUFFIX = {".png": "png", ".webp": "webp", ".jpg": "jpeg", ".jpeg": "jpeg", ".avif": "avif",
              ".tif": "tiff", ".tiff": "tiff"}
LR_SUFFIXES = tuple(sfx for sfx, name in _BY_SUFFIX.items() if name in LR_CONTAINERS)
_ALIASES = {"jpg": "jpeg", "tif": "tiff"}
_PIL_FORMAT = {"png": "PNG", "webp": "WEBP", "jpeg": "JPEG", "avif": "AVIF", "tiff": "TIFF"}
_HAS_ALPHA = {"png", "webp", "avif", "tiff"}

PREFIX = "irn_batch:"
LR_FORMAT = "irn_batch-lr/2"
_READABLE_FORMATS = ("irn_batch-lr/1", LR_FORMAT)  # version 1: PNG only, no alpha_rule (it was bicubic)
XMP_NS = "https://irn-batch.invalid/ns/lr/"


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
           xmp: bytes | None = None) -> bytes:
    """(H, W, 3|4) uint8 pixels -> file bytes in ``enc``; ``text`` as PNG text chunks, ``xmp`` as an XMP packet.

    Raises ``ContainerError`` for alpha in JPEG or AVIF without Pillow support, ``ValueError`` for pixels
    that are not (H, W, 3|4) uint8.
    """
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ValueError(f"expected (H, W, 3|4) uint8 pixels, got {pixels.dtype} {pixels.shape}")
    if pixels.shape[2] == 4 and enc.container not in _HAS_ALPHA:
        raise ContainerError(f"{enc.container.upper()} cannot store the alpha channel of this image; "
                             "use png, webp or avif")
    if enc.container == "avif" and not avif_available():
        raise ContainerError("this Pillow was built without AVIF support (pip install -U pillow)")
    im = Image.fromarray(np.ascontiguousarray(pixels))
    buf = io.BytesIO()
    if enc.container == "png":
        info = PngImagePlugin.PngInfo()
        for key, value in (text or {}).items():
            try:
                value.encode("latin-1")
                info.add_text(key, value)
            except UnicodeEncodeError:
                info.add_itxt(key, value)
        im.save(buf, format="PNG", pnginfo=info, compress_level=6)
    elif enc.container == "tiff":
        im.save(buf, format="TIFF", compression="tiff_adobe_deflate")
    else:
        opts: dict = {"quality": enc.quality}
        if xmp is not None:
            opts["xmp"] = xmp
        if enc.container == "webp":
            opts.update(lossless=enc.quality == 100, method=4)
        else:
            opts["subsampling"] = enc.subsampling
        im.save(buf, format=_PIL_FORMAT[enc.container], **opts)
    return buf.getvalue()


# --- LR files -------------------------------------------------------------------------------------------


@dataclass
class LRMeta:
    """What an LR file records about itself (PNG text chunks or XMP attributes)."""

    model_id: str
    scale: int
    width: int  # original (HR) size in pixels
    height: int
    z_seed: int
    has_alpha: bool
    source_mode: str
    alpha_rule: str = "bicubic"  # how the LR alpha was made from the HR alpha, and is undone

    def to_text(self) -> dict[str, str]:
        """The fields as ``irn_batch:*`` strings, the format version first."""
        out = {PREFIX + "format": LR_FORMAT}
        for f in fields(self):
            value = getattr(self, f.name)
            out[PREFIX + f.name] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return out

    @classmethod
    def from_text(cls, d: dict[str, str]) -> LRMeta:
        """Parse ``irn_batch:*`` strings; ImageError when they are missing, invalid or of an unknown version."""
        if d.get(PREFIX + "format") not in _READABLE_FORMATS:
            raise ImageError("not an irn_batch LR image (no irn_batch metadata in the file)")
        try:
            meta = cls(
                model_id=d[PREFIX + "model_id"],
                scale=int(d[PREFIX + "scale"]),
                width=int(d[PREFIX + "width"]),
                height=int(d[PREFIX + "height"]),
                z_seed=int(d[PREFIX + "z_seed"]),
                has_alpha={"1": True, "0": False}[d[PREFIX + "has_alpha"]],
                source_mode=d.get(PREFIX + "source_mode", "?"),
                alpha_rule=d.get(PREFIX + "alpha_rule", "bicubic"),
            )
        except (KeyError, ValueError) as e:
            raise ImageError(f"not an irn_batch LR image (metadata missing or invalid: {e})") from e
        if meta.scale < 2 or meta.width < 1 or meta.height < 1 or not meta.model_id:
            raise ImageError("not an irn_batch LR image (metadata out of range)")
        if meta.alpha_rule != "bicubic":
            raise ImageError(f"LR alpha rule {meta.alpha_rule!r} is not known to this version of irn_batch")
        return meta

    @property
    def lr_size(self) -> tuple[int, int]:
        """(width, height) of the LR image."""
        return -(-self.width // self.scale), -(-self.height // self.scale)


_XMP_ATTR = re.compile(rb'irnb:([A-Za-z_]+)="([^"]*)"')


def _xmp_packet(text: dict[str, str]) -> bytes:
    attrs = "".join(f'\n    irnb:{k.removeprefix(PREFIX)}="{html.escape(v, quote=True)}"' for k, v in text.items())
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        f'  <rdf:Description rdf:about="" xmlns:irnb="{XMP_NS}"{attrs}/>\n'
        '</rdf:RDF></x:xmpmeta>\n<?xpacket end="r"?>'
    ).encode("utf-8")


def _xmp_text(xmp: bytes) -> dict[str, str]:
    """Our fields from an XMP packet (attributes only; no XML parser touches untrusted input)."""
    if XMP_NS.encode() not in xmp:
        return {}
    return {PREFIX + k.decode(): html.unescape(v.decode("utf-8", "replace")) for k, v in _XMP_ATTR.findall(xmp)}


def write_lr(pixels: np.ndarray, meta: LRMeta, enc: Encoding = Encoding()) -> bytes:
    """(h, w, 3|4) uint8 LR pixels + their LRMeta -> LR file bytes in ``enc`` (metadata inside).

    Raises ``ContainerError`` for an output-only container (tiff), alpha in JPEG, or AVIF without support.
    """
    if enc.container not in LR_CONTAINERS:
        raise ContainerError(f"{enc.container} is not an LR container (one of {', '.join(LR_CONTAINERS)})")
    text = meta.to_text()
    if enc.container == "png":
        return encode(pixels, enc, text=text)
    return encode(pixels, enc, xmp=_xmp_packet(text))


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


def read_lr_meta(data: bytes) -> LRMeta:
    """The LRMeta of LR file bytes in any LR container, without decoding the pixels; ImageError otherwise."""
    container = container_of(data)
    if container not in LR_CONTAINERS:
        raise ImageError("not an irn_batch LR image (not a PNG, WebP, JPEG or AVIF file)")
    if container == "avif" and not avif_available():
        raise ImageError("an AVIF LR, but this Pillow was built without AVIF support (pip install -U pillow)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data), formats=[_PIL_FORMAT[container]])
            info = dict(im.info)  # PNG text chunks before the image data, or the XMP packet
    except Exception as e:
        raise ImageError(f"corrupt {container.upper()} ({e or type(e).__name__})") from e
    if container == "png":
        text = {str(k): str(v) for k, v in info.items() if isinstance(v, str)}
    else:
        xmp = info.get("xmp")
        text = _xmp_text(xmp if isinstance(xmp, bytes) else str(xmp or "").encode())
    return LRMeta.from_text(text)


def read_lr(data: bytes) -> tuple[LRMeta, DecodedImage]:
    """Parse and validate an LR file in any LR container: its metadata and its decoded pixels.

    Raises ImageError when the metadata is missing or the pixels disagree with it (size, alpha).
    """
    meta = read_lr_meta(data)
    img = decode_image(data)
    if (img.width, img.height) != meta.lr_size:
        raise ImageError(
            f"LR is {img.width}x{img.height} but its metadata says {meta.lr_size[0]}x{meta.lr_size[1]}"
        )
    if (img.alpha is not None) != meta.has_alpha:
        raise ImageError("LR alpha channel does not match its metadata")
    return meta, img

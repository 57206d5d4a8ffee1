"""LR files: LR pixels + ``LRMeta`` (what the file records about itself) in one of the LR containers, written
and read back; a file's photo metadata and the hash of its decoded pixels.

LR metadata (``LRMeta``) travels inside every LR file: PNG ``tEXt`` chunks named ``irn_batch:*``
(as in format version 1), or an XMP packet with the same fields as attributes in the namespace ``XMP_NS``
for WebP, JPEG and AVIF, in one packet with the photo's own XMP (our namespace in its own
``rdf:Description``). ``irn-batch info`` reads it back from any container. Our fields are read from any
valid serialisation of the packet (attributes or elements, as exiftool, exiv2 and Pillow write them)
through ``irn_batch.io.xmp`` (defusedxml, size-bounded), so an LR tagged by a photo tool stays readable.

Photo metadata (``irn_batch.io.photo_metadata.PhotoMeta``: EXIF, XMP, IPTC, comment, PNG text, ICC) is
written by ``encode(..., photo=)`` into the kinds the container holds; ``read_photo_meta`` reads it back
from an LR without irn_batch's own fields. ``pixels_sha256`` identifies an LR's decoded pixels, so a file
whose metadata alone was edited can be told from one whose pixels changed.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass, fields

import numpy as np
from PIL import Image

from irn_batch.io import photo_metadata as pm
from irn_batch.io import xmp as xmplib
from irn_batch.io.container import (_PIL_FORMAT, LR_CONTAINERS, ContainerError, Encoding, avif_available, container_of,
                                    encode)
from irn_batch.io.colour import to_uint8
from irn_batch.io.decode import DecodedImage, ImageError, decode_image

PREFIX = "irn_batch:"
LR_FORMAT = "irn_batch-lr/2"
_READABLE_FORMATS = ("irn_batch-lr/1", LR_FORMAT)  # version 1: PNG only, no alpha_rule (it was bicubic)
XMP_NS = "https://irn-batch.invalid/ns/lr/"


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


def _xmp_packet(text: dict[str, str], photo_xmp: bytes | None = None) -> bytes:
    """Our fields as attributes of their own rdf:Description, in ``photo_xmp`` (the photo's own packet,
    any earlier irn_batch fields removed) or in a packet of their own."""
    root = None
    if photo_xmp:
        try:
            root = xmplib.edit(xmplib.parse(photo_xmp), drop_ns=XMP_NS)
        except xmplib.XMPError:
            root = None
    root = xmplib.new_packet() if root is None else root
    xmplib.add(root, XMP_NS, "irnb", {k.removeprefix(PREFIX): v for k, v in text.items()})
    return xmplib.serialise(root)


def _xmp_text(packet: bytes) -> dict[str, str]:
    """Our fields from an XMP packet, in any serialisation; ImageError for a packet that is refused."""
    try:
        root = xmplib.parse(packet)
    except xmplib.XMPError as e:
        raise ImageError(f"not an irn_batch LR image (its XMP packet is refused: {e})") from None
    return {PREFIX + k: v for k, v in xmplib.properties(root, XMP_NS).items()}


def write_lr(pixels: np.ndarray, meta: LRMeta, enc: Encoding = Encoding(),
             photo: pm.PhotoMeta | None = None) -> bytes:
    """(h, w, 3|4) uint8 LR pixels + their LRMeta -> LR file bytes in ``enc`` (metadata inside).

    ``photo``: the photo's metadata; what ``enc.container`` holds of it goes inside, made to fit the LR
    (orientation 1, LR pixel sizes); the caller keeps the rest (``photo.split``), e.g. in a sidecar.
    Raises ``ContainerError`` for an output-only container (tiff), alpha in JPEG, or AVIF without support.
    """
    if enc.container not in LR_CONTAINERS:
        raise ContainerError(f"{enc.container} is not an LR container (one of {', '.join(LR_CONTAINERS)})")
    text = meta.to_text()
    if photo is not None:
        photo = pm.for_image(photo, *meta.lr_size)
    if enc.container == "png":
        return encode(pixels, enc, text=text, photo=photo)
    photo_xmp = photo.split(enc.container)[0].xmp if photo else None  # None where too long for the container
    return encode(pixels, enc, xmp=_xmp_packet(text, photo_xmp), photo=photo)


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
        if not xmp:
            raise ImageError("not an irn_batch LR image (no XMP packet in the file: never an LR, or a tool "
                             "stripped its metadata)")
        text = _xmp_text(xmp if isinstance(xmp, bytes) else str(xmp).encode())
        if not text:
            raise ImageError("not an irn_batch LR image (its XMP packet has no irn_batch fields: never an LR, "
                             "or a tool removed them)")
    return LRMeta.from_text(text)


def read_photo_meta(data: bytes) -> pm.PhotoMeta:
    """The photo metadata inside LR file bytes, without irn_batch's own fields."""
    return pm.extract(data, drop_ns=XMP_NS, drop_text_prefix=PREFIX)


def pixels_sha256(img: DecodedImage) -> str:
    """sha256 (hex) of decoded pixels as (H, W, 3|4) uint8 (alpha last where present), shape first: equal
    for two files exactly when their decoded pixels are equal, whatever metadata they carry."""
    planes = to_uint8(img.rgb) if img.alpha is None else np.dstack([to_uint8(img.rgb), to_uint8(img.alpha)])
    planes = np.ascontiguousarray(planes)
    h = hashlib.sha256("x".join(str(n) for n in planes.shape).encode() + b"\n")
    h.update(planes.tobytes())
    return h.hexdigest()


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

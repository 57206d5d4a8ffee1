"""Photo metadata: what of a photo's EXIF, XMP, IPTC, comment, PNG text and ICC profile travels with it.

Kinds (``KINDS``) and how each is read from the source bytes:

* ``exif``: Pillow's ``Image.Exif`` (IFD0 with its Exif, GPS and interoperability IFDs); of a TIFF source
  only the descriptive IFD0 tags (``_TIFF_DESCRIPTIVE``), since the rest of a TIFF IFD0 is file structure.
* ``xmp``: the packet Pillow finds (``info['xmp']``), parsed with ``irn_batch.io.xmp`` (safe, size-bounded);
  a packet that does not parse is dropped, never the image.
* ``iptc``: the IIM records, read by exiv2 (``pyexiv2``) where Pillow's ``IptcImagePlugin`` finds any
  (JPEG, TIFF), as exiv2 key -> text (or list of texts).
* ``comment``: a JPEG/GIF comment, or a PNG ``Comment`` text chunk.
* ``png_text``: the other PNG text chunks (tEXt/zTXt/iTXt).
* ``icc``: the ICC profile, carried only where the decoded pixels are still in it: decode converts any
  other profile to sRGB (``io.decode``), so a converted profile is dropped (``for_pixels``) and the pixels
  are plain sRGB.

Which container holds what: ``HOLDS``. Pillow writes EXIF, ICC, XMP and the JPEG comment; exiv2 writes
IPTC (JPEG, TIFF) and, for TIFF (whose libtiff writer takes no EXIF sub-IFDs), EXIF and XMP. What a
container cannot hold goes into a sidecar (``to_json``: the ingest's ``<lr>.meta.json``) or is reported as
dropped. Every written copy has orientation 1 (decode applied it) and its own file's pixel sizes
(``for_image``). ``apply_setting`` implements ``metadata: keep | drop_gps | strip``.
"""
from __future__ import annotations

import base64
import io
import json
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image, IptcImagePlugin

from irn_batch.io import xmp as xmplib

KINDS = ("exif", "xmp", "iptc", "comment", "png_text", "icc")
SETTINGS = ("keep", "drop_gps", "strip")
HOLDS = {
    "png": frozenset({"exif", "xmp", "comment", "png_text", "icc"}),
    "jpeg": frozenset({"exif", "xmp", "iptc", "comment", "icc"}),
    "webp": frozenset({"exif", "xmp", "icc"}),
    "avif": frozenset({"exif", "xmp", "icc"}),
    "tiff": frozenset({"exif", "xmp", "iptc", "icc"}),
    "heif": frozenset({"exif", "xmp", "icc"}),  # through pillow-heif's save
}
SIDECAR_SUFFIX = ".meta.json"
SIDECAR_FORMAT = "irn_batch-meta/1"
MAX_SIDECAR = 32 * 1024 * 1024
PNG_XMP_KEY = "XML:com.adobe.xmp"
JPEG_XMP_MAX = 65504 - 4096  # an APP1 segment holds 65504 bytes of packet; 4 kB kept for irn_batch's fields
_EXIF_IFD, _GPS_IFD, _INTEROP_IFD = 0x8769, 0x8825, 0xA005
_ORIENTATION, _PIXEL_X, _PIXEL_Y = 0x0112, 0xA002, 0xA003
# IFD0 tags of a TIFF that describe the photo (the others describe the file: strips, sample format, ...)
_TIFF_DESCRIPTIVE = (270, 271, 272, 274, 305, 306, 315, 316, 33432)
_FORMATS = ["PNG", "JPEG", "WEBP", "TIFF", "GIF", "AVIF"]
try:  # a phone's HEIC carries EXIF and XMP too (pillow-heif, registered as io.decode registers it)
    import pillow_heif

    pillow_heif.register_heif_opener()
    _FORMATS.append("HEIF")
except ImportError:  # pragma: no cover
    pass


class MetadataError(ValueError):
    """A sidecar or setting that cannot be used (unknown setting, malformed sidecar); one line."""


def check_setting(setting: str) -> str:
    """``setting`` if it is one of ``SETTINGS``; MetadataError otherwise."""
    if setting not in SETTINGS:
        raise MetadataError(f"metadata must be one of {', '.join(SETTINGS)}, got {setting!r}")
    return setting


@dataclass(frozen=True)
class PhotoMeta:
    """The metadata of one image, kind by kind (None: absent). ``dropped``: kinds (and ``gps``) that the
    source had but that are not carried, by the setting or because they were unusable."""

    exif: bytes | None = None  # EXIF block as Pillow writes it (b"Exif\\0\\0" + TIFF structure)
    xmp: bytes | None = None  # UTF-8 XMP packet
    iptc: dict[str, Any] | None = None  # exiv2 key -> str | list[str]
    comment: bytes | None = None
    png_text: dict[str, str] | None = None
    icc: bytes | None = None
    dropped: tuple[str, ...] = field(default=())

    def kinds(self) -> list[str]:
        """The kinds present, in ``KINDS`` order."""
        return [k for k in KINDS if getattr(self, k)]

    def only(self, kinds) -> PhotoMeta:
        """A copy with just ``kinds`` (the others absent; ``dropped`` kept)."""
        return replace(self, **{k: None for k in KINDS if k not in kinds})

    def filled_from(self, other: PhotoMeta | None) -> PhotoMeta:
        """A copy where each kind absent here is taken from ``other``."""
        if other is None:
            return self
        return replace(self, **{k: getattr(other, k) for k in KINDS if not getattr(self, k)})

    def split(self, container: str) -> tuple[PhotoMeta, PhotoMeta]:
        """(what ``container`` holds, what it cannot hold). A JPEG holds an XMP packet of up to
        ``JPEG_XMP_MAX`` bytes (one APP1 segment, room left for irn_batch's fields); a longer one does not."""
        holds = HOLDS.get(container, frozenset())
        if container == "jpeg" and self.xmp and len(self.xmp) > JPEG_XMP_MAX:
            holds = holds - {"xmp"}
        return self.only(holds), replace(self.only(set(KINDS) - holds), dropped=())

    def to_json(self) -> bytes:
        """The sidecar object: JSON with the binary kinds in base64."""
        doc: dict[str, Any] = {"format": SIDECAR_FORMAT}
        for k in ("exif", "xmp", "comment", "icc"):
            if getattr(self, k):
                doc[k] = base64.b64encode(getattr(self, k)).decode("ascii")
        for k in ("iptc", "png_text"):
            if getattr(self, k):
                doc[k] = getattr(self, k)
        return json.dumps(doc, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> PhotoMeta:
        """Parse a sidecar (``to_json``); MetadataError when it is too large, not JSON or not ours."""
        if len(data) > MAX_SIDECAR:
            raise MetadataError(f"metadata sidecar of {len(data)} bytes is over the {MAX_SIDECAR}-byte limit")
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or doc.get("format") != SIDECAR_FORMAT:
                raise ValueError(f"not an {SIDECAR_FORMAT} document")
            blobs = {k: base64.b64decode(doc[k], validate=True) for k in ("exif", "xmp", "comment", "icc") if k in doc}
            texts = {k: doc[k] for k in ("iptc", "png_text") if k in doc}
            if not all(isinstance(v, dict) for v in texts.values()):
                raise ValueError("iptc and png_text must be objects")
        except (ValueError, TypeError) as e:
            raise MetadataError(f"malformed metadata sidecar ({e})") from None
        return cls(**blobs, **texts)


def _exif(raw: bytes) -> Image.Exif:
    """An Exif loaded from an EXIF block with its sub-IFDs materialised (so ``tobytes`` writes them)."""
    ex = Image.Exif()
    ex.load(raw)
    for tag in (_EXIF_IFD, _GPS_IFD):
        if tag in ex:
            ex.get_ifd(tag)
    if _EXIF_IFD in ex and _INTEROP_IFD in ex.get_ifd(_EXIF_IFD):
        ex.get_ifd(_INTEROP_IFD)
    return ex


def _tiff_exif(im: Image.Image) -> bytes | None:
    src = im.getexif()
    ex = Image.Exif()
    for tag in _TIFF_DESCRIPTIVE:
        if tag in src:
            ex[tag] = src[tag]
    for tag in (_EXIF_IFD, _GPS_IFD):
        sub = src.get_ifd(tag) if tag in src else {}
        if sub:
            ex.get_ifd(tag).update(sub)
    return ex.tobytes() if len(ex) or ex._ifds else None


def _iptc(data: bytes, im: Image.Image) -> dict[str, Any] | None:
    if im.format not in ("JPEG", "MPO", "TIFF") or not IptcImagePlugin.getiptcinfo(im):
        return None
    import pyexiv2

    pyexiv2.set_log_level(4)
    img = pyexiv2.ImageData(data)
    try:
        return img.read_iptc() or None
    finally:
        img.close()


def extract(data: bytes, *, drop_ns: str | None = None, drop_text_prefix: str | None = None) -> PhotoMeta:
    """The metadata of image bytes (any format decode reads). ``drop_ns``/``drop_text_prefix``: an XMP
    namespace and a PNG text-key prefix left out (irn_batch's own LR fields). A kind that cannot be read
    (malformed EXIF or XMP, say) is reported in ``dropped``; an unreadable file gives an empty PhotoMeta."""
    dropped: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data), formats=_FORMATS)
            text = dict(getattr(im, "text", {}) or {}) if im.format == "PNG" else {}  # chunks after IDAT too
            info = dict(im.info)
    except Exception:
        return PhotoMeta()
    out: dict[str, Any] = {}
    try:
        if im.format == "TIFF":
            out["exif"] = _tiff_exif(im)
        elif info.get("exif"):
            out["exif"] = _exif(bytes(info["exif"])).tobytes()
    except Exception:
        dropped.append("exif")
    packet = info.get("xmp") or info.get(PNG_XMP_KEY)
    if packet:
        try:
            root = xmplib.parse(packet)
            if drop_ns:
                xmplib.edit(root, drop_ns=drop_ns)
            out["xmp"] = xmplib.serialise(root) if xmplib.has_properties(root) else None
        except xmplib.XMPError:
            dropped.append("xmp")
    try:
        out["iptc"] = _iptc(data, im)
    except Exception:
        dropped.append("iptc")
    comment = info.get("comment") if im.format != "PNG" else text.get("Comment")
    out["comment"] = (comment.encode("utf-8") if isinstance(comment, str) else bytes(comment)) if comment else None
    skip = (PNG_XMP_KEY, "Comment")
    png_text = {str(k): str(v) for k, v in text.items()
                if k not in skip and not (drop_text_prefix and str(k).startswith(drop_text_prefix))}
    out["png_text"] = png_text or None
    out["icc"] = bytes(info["icc_profile"]) if info.get("icc_profile") else None
    return PhotoMeta(**out, dropped=tuple(dropped))


def _icc_is_rgb(icc: bytes) -> bool:
    try:
        from PIL import ImageCms
        return ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile.xcolor_space.strip().upper() == "RGB"
    except Exception:
        return False


def for_pixels(meta: PhotoMeta, colour: str) -> PhotoMeta:
    """Drop the ICC profile unless the decoded pixels are still in it: ``colour`` (DecodedImage.colour)
    says decode converted it to sRGB, or it is not a readable RGB profile."""
    if meta.icc and (colour.startswith("converted") or not _icc_is_rgb(meta.icc)):
        return replace(meta, icc=None, dropped=(*meta.dropped, "icc"))
    return meta


def for_lr(data: bytes, colour: str, setting: str) -> PhotoMeta:
    """The PhotoMeta of source bytes to keep with their LR: ``extract``, ``for_pixels`` (``colour``: the
    decoded image's), ``apply_setting``. Metadata that cannot be read never costs the image: it is
    reported in ``dropped`` (``unreadable``). Raises MetadataError only for an unknown setting."""
    check_setting(setting)
    try:
        return apply_setting(for_pixels(extract(data), colour), setting)
    except Exception:
        return PhotoMeta(dropped=("unreadable",))


def for_samples(meta: PhotoMeta, pixels) -> PhotoMeta:
    """Without the ICC profile (then in ``dropped``) when ``pixels`` (the array ``encode`` gets) are gray:
    the profile kept is an RGB one (``for_pixels``), which cannot describe gray samples."""
    shape = getattr(pixels, "shape", ())
    grey = len(shape) == 2 or (len(shape) == 3 and shape[2] <= 2)
    return replace(meta, icc=None, dropped=(*meta.dropped, "icc")) if grey and meta.icc else meta


def apply_setting(meta: PhotoMeta, setting: str) -> PhotoMeta:
    """``keep``: as is; ``drop_gps``: without the EXIF GPS IFD and XMP exif:GPS* properties (``gps`` is
    then in ``dropped`` where there was any); ``strip``: nothing (every kind present is in ``dropped``)."""
    check_setting(setting)
    if setting == "strip":
        return PhotoMeta(dropped=(*meta.dropped, *meta.kinds()))
    if setting == "keep":
        return meta
    had_gps, exif, packet = False, meta.exif, meta.xmp
    if exif:
        ex = _exif(exif)
        if _GPS_IFD in ex:
            had_gps = True
            ex._ifds.pop(_GPS_IFD, None)
            del ex[_GPS_IFD]
            exif = ex.tobytes()
    if packet:
        try:
            root = xmplib.parse(packet)
        except xmplib.XMPError:
            return replace(meta, exif=exif, xmp=None, dropped=(*meta.dropped, "xmp"))
        before = xmplib.properties(root, xmplib.EXIF)
        if any(k.startswith("GPS") for k in before):
            had_gps = True
            xmplib.edit(root, drop_gps=True)
            packet = xmplib.serialise(root) if xmplib.has_properties(root) else None
    return replace(meta, exif=exif, xmp=packet, dropped=(*meta.dropped, *(("gps",) if had_gps else ())))


def for_image(meta: PhotoMeta, width: int, height: int) -> PhotoMeta:
    """A copy for a file of ``width`` x ``height`` upright pixels: EXIF and XMP orientation 1 (where
    recorded) and their pixel-size fields (where recorded) set to this size."""
    exif, packet = meta.exif, meta.xmp
    if exif:
        ex = _exif(exif)
        if _ORIENTATION in ex:
            ex[_ORIENTATION] = 1
        if _EXIF_IFD in ex:
            sub = ex.get_ifd(_EXIF_IFD)
            for tag, value in ((_PIXEL_X, width), (_PIXEL_Y, height)):
                if tag in sub:
                    sub[tag] = value
        exif = ex.tobytes()
    if packet:
        try:
            packet = xmplib.serialise(xmplib.edit(xmplib.parse(packet), orientation=1, size=(width, height)))
        except xmplib.XMPError:  # a sidecar's packet is parsed here for the first time
            return replace(meta, exif=exif, xmp=None, dropped=(*meta.dropped, "xmp"))
    return replace(meta, exif=exif, xmp=packet)


def exif_tags(exif: bytes) -> dict[str, Any]:
    """The EXIF block as exiv2 keys -> text (its IFD pointers and thumbnail left out), for exiv2 writes."""
    import pyexiv2

    carrier = io.BytesIO()
    Image.new("L", (1, 1)).save(carrier, format="JPEG", exif=exif)
    pyexiv2.set_log_level(4)
    img = pyexiv2.ImageData(carrier.getvalue())
    try:
        tags = img.read_exif()
    finally:
        img.close()
    pointers = ("Exif.Image.ExifTag", "Exif.Image.GPSTag", "Exif.Photo.InteroperabilityTag")
    return {k: v for k, v in tags.items() if k not in pointers and not k.startswith("Exif.Thumbnail.")}


def pillow_options(meta: PhotoMeta, container: str) -> dict[str, Any]:
    """The keyword arguments of Pillow's ``save`` for what ``container`` holds of ``meta`` and Pillow
    writes there (PNG XMP, comment and text go in text chunks: ``png_chunks``)."""
    opts: dict[str, Any] = {}
    if meta.icc:
        opts["icc_profile"] = meta.icc
    if container == "tiff":
        return opts
    if meta.exif:
        opts["exif"] = meta.exif
    if meta.xmp and container != "png":
        opts["xmp"] = meta.xmp
    if meta.comment and container == "jpeg":
        opts["comment"] = meta.comment
    return opts


def png_chunks(meta: PhotoMeta) -> dict[str, str]:
    """PNG text chunks for ``meta``: its text, its comment as ``Comment``, its XMP as ``XML:com.adobe.xmp``."""
    chunks = dict(meta.png_text or {})
    if meta.comment:
        chunks["Comment"] = meta.comment.decode("utf-8", "replace")
    if meta.xmp:
        chunks[PNG_XMP_KEY] = meta.xmp.decode("utf-8", "replace")
    return chunks


def finish(data: bytes, container: str, meta: PhotoMeta) -> bytes:
    """Add what exiv2 writes to encoded bytes: IPTC (JPEG, TIFF) and, for TIFF, EXIF and XMP."""
    todo = container == "tiff" and (meta.exif or meta.xmp) or container in ("jpeg", "tiff") and meta.iptc
    if not todo:
        return data
    import pyexiv2

    pyexiv2.set_log_level(4)
    img = pyexiv2.ImageData(data)
    try:
        if container == "tiff" and meta.exif:
            img.modify_exif(exif_tags(meta.exif))
        if container == "tiff" and meta.xmp:
            img.modify_raw_xmp(meta.xmp.decode("utf-8"))
        if meta.iptc:
            img.modify_iptc(meta.iptc)
        return img.get_bytes()
    finally:
        img.close()

"""What the original file was: its container, a JPEG's quality, lossless or not, its sample depth.

The ingest manifest records this (columns ``source_container``, ``source_quality``, ``source_lossless``,
``bit_depth``) so that a restore with ``format: source`` can write the picture back in the container it
came in (``irn_batch.io.container.source_encoding``), and a lossless original made lossy is said so.

Rules (``describe``):

* Container: from Pillow's format name, lower case, with Pillow's aliases folded: "jpeg" (an MPO is a JPEG
  whose primary picture is a baseline JPEG: "jpeg"), "png", "webp", "tiff", "avif", "heif", "gif", "bmp",
  "ppm", "tga".
* JPEG quality: the IJG (libjpeg) quality 1..100 whose scaled standard tables (ITU-T T.81 Annex K, scaled as
  libjpeg's ``jpeg_quality_scaling``: 5000/q for q < 50, else 200 - 2q, percent) are nearest to the file's
  quantisation tables (sum of absolute differences over the luminance table and, when present, the first
  chrominance table). Files made by libjpeg-based encoders (Pillow, most cameras' "quality" settings,
  ImageMagick, GIMP) give their quality back exactly; other encoders' tables give the nearest IJG quality.
  A file without tables (or not a JPEG) has quality None.
* JPEG chroma subsampling: "4:4:4" or "4:2:0" as the file has it (Pillow's ``get_sampling``); 4:2:2 and
  other layouts are given as "4:4:4", the nearest that ``irn_batch.io.container`` writes without losing more
  chroma; None for gray JPEGs and other containers.
* Lossless: PNG, GIF, BMP, PPM, TGA, and TIFF unless its compression is JPEG; WebP when its first chunk is
  VP8L (lossless WebP); JPEG, HEIF and AVIF are lossy.
* Bit depth: bits per sample as decoded (``irn_batch.io.decode``): 1 for a 1-bit image, 2 or 4 for such PNG
  gray, 16 for 16-bit gray or RGB(A) PNG samples kept at 16 bits, 32 for float ("F") images, else 8.
"""
from __future__ import annotations

import numpy as np

# ITU-T T.81 Annex K.1 luminance and chrominance quantisation tables, natural (row-major) order, as
# Pillow's ``Image.quantization`` lists them.
_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.int64)
_CHROMA = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99, *([99] * 32)], dtype=np.int64)

_NAMES = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp", "TIFF": "tiff", "AVIF": "avif",
          "HEIF": "heif", "GIF": "gif", "BMP": "bmp", "PPM": "ppm", "TGA": "tga"}
_LOSSLESS = frozenset({"png", "gif", "bmp", "ppm", "tga"})
_TIFF_LOSSY = frozenset({"jpeg", "tiff_jpeg", "webp"})


def _scaled(table: np.ndarray, quality: int) -> np.ndarray:
    """libjpeg's table for ``quality`` (baseline: values clamped to 1..255)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((table * scale + 50) // 100, 1, 255)


_CANDIDATES = {q: (_scaled(_LUMA, q), _scaled(_CHROMA, q)) for q in range(1, 101)}


def jpeg_quality(tables: dict | None) -> int | None:
    """The IJG quality (1..100) nearest to a JPEG's quantisation ``tables`` (Pillow's ``im.quantization``:
    {index: 64 values in natural order}); None when there are none or they are not 64-entry tables."""
    if not tables:
        return None
    luma = tables.get(0)
    chroma = tables.get(1)
    try:
        luma = np.asarray(list(luma), dtype=np.int64)
        chroma = None if chroma is None else np.asarray(list(chroma), dtype=np.int64)
    except (TypeError, ValueError):
        return None
    if luma.shape != (64,) or (chroma is not None and chroma.shape != (64,)):
        return None

    def distance(q: int) -> int:
        lt, ct = _CANDIDATES[q]
        d = int(np.abs(lt - luma).sum())
        return d + (int(np.abs(ct - chroma).sum()) if chroma is not None else 0)

    # ties (tables clamped at 1 or 255) go to the highest quality giving those tables
    return min(range(100, 0, -1), key=distance)


def container_name(pil_format: str | None) -> str:
    """Pillow's format name -> our container name ('MPO' -> 'jpeg'); unknown ones lower-cased."""
    return _NAMES.get(pil_format or "", (pil_format or "?").lower())


def _webp_lossless(data: bytes) -> bool:
    # RIFF header (12 bytes), then the first chunk: VP8 (lossy), VP8L (lossless) or VP8X (extended; the
    # image chunk follows the optional ICCP/ANIM chunks, so look for VP8L among the chunk tags)
    if data[12:16] == b"VP8L":
        return True
    if data[12:16] == b"VP8X":
        pos = 12
        while pos + 8 <= min(len(data), 1 << 20):
            tag, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
            if tag in (b"VP8 ", b"VP8L"):
                return tag == b"VP8L"
            pos += 8 + size + (size & 1)
    return False


def jpeg_subsampling(im) -> str | None:
    """A JPEG's chroma subsampling as ``irn_batch.io.container`` names it (rules above); None for gray."""
    from PIL import JpegImagePlugin

    try:
        sampling = JpegImagePlugin.get_sampling(im)
    except Exception:  # no frame header layers: not one we can tell
        return None
    return None if sampling < 0 else "4:2:0" if sampling == 2 else "4:4:4"


def describe(im, data: bytes) -> tuple[str, int | None, bool, str | None]:
    """(container, JPEG quality or None, lossless, JPEG subsampling or None) of an opened Pillow image
    ``im`` and its file bytes."""
    name = container_name(im.format)
    if name == "jpeg":
        return name, jpeg_quality(getattr(im, "quantization", None)), False, jpeg_subsampling(im)
    if name == "tiff":
        compression = str(im.info.get("compression", "raw")).lower()
        return name, None, compression not in _TIFF_LOSSY, None
    if name == "webp":
        return name, None, _webp_lossless(data), None
    return name, None, name in _LOSSLESS, None

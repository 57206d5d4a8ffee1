"""PNG files written by hand, for what Pillow cannot write: 16-bit RGB(A), extra chunks (tRNS, iCCP)."""
from __future__ import annotations

import struct
import zlib

import numpy as np


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    a, b, c = (v.astype(np.int32) for v in (a, b, c))
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def png16(samples: np.ndarray, width: int = 0, height: int = 0) -> bytes:
    """A 16-bit RGB/RGBA PNG written by hand, rows cycling through all five PNG filter types."""
    h, w, c = samples.shape
    color_type = {3: 2, 4: 6}[c]
    rows = samples.astype(">u2").reshape(h, w * c).view(np.uint8).reshape(h, w * c * 2)
    bpp = 2 * c
    out, prev = [], np.zeros_like(rows[0])
    for y, row in enumerate(rows):
        left = np.concatenate([np.zeros(bpp, np.uint8), row[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.uint8), prev[:-bpp]])
        kind = y % 5
        pred = [
            np.zeros_like(row),
            left,
            prev,
            ((left.astype(np.int32) + prev) // 2).astype(np.uint8),
            _paeth(left, prev, upleft).astype(np.uint8),
        ][kind]
        out.append(bytes([kind]) + ((row.astype(np.int32) - pred) % 256).astype(np.uint8).tobytes())
        prev = row
    ihdr = struct.pack(">IIBBBBB", width or w, height or h, 16, color_type, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"".join(out)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def with_chunk(png: bytes, kind: bytes, body: bytes) -> bytes:
    """``png`` with one more chunk inserted before its first IDAT (where tRNS and iCCP belong)."""
    at = png.index(b"IDAT") - 4
    return png[:at] + chunk(kind, body) + png[at:]


def iccp(profile: bytes, name: bytes = b"icc") -> bytes:
    """The body of an iCCP chunk: name, NUL, compression method 0, zlib stream."""
    return name + b"\0\0" + zlib.compress(profile)

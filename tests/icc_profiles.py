"""Small ICC v2 profiles written byte by byte for the colour tests (ICC.1:2001-04 layouts), no downloads.

``rgb_profile`` is a matrix/TRC display profile (Adobe RGB (1998) primaries, adapted to D50, gamma 563/256
like Adobe's own); ``gray_profile`` a gray TRC profile; ``cmyk_profile`` an output profile whose A2B0 is a
lut8 from CMYK to CIELAB. lcms (through Pillow's ImageCms) reads all three.
"""
from __future__ import annotations

import struct

# D50-adapted colorants of Adobe RGB (1998), as in Adobe's published profile (XYZ, s15Fixed16 values).
ADOBE_RGB_D50 = ((0.60974, 0.31111, 0.01947), (0.20528, 0.62567, 0.06087), (0.14919, 0.06322, 0.74457))
D50 = (0.9642, 1.0, 0.8249)


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + bytes(4) + _s15(x) + _s15(y) + _s15(z)


def _desc(text: str) -> bytes:
    ascii_ = text.encode("ascii") + b"\0"
    # textDescriptionType: ASCII part, empty Unicode part, empty ScriptCode part (67 bytes).
    return b"desc" + bytes(4) + struct.pack(">I", len(ascii_)) + ascii_ + bytes(8) + bytes(3) + bytes(67)


def _curve(gamma: float) -> bytes:
    return b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)


def _profile(device_class: bytes, space: bytes, pcs: bytes, tags: list[tuple[bytes, bytes]], intent: int = 0) -> bytes:
    table = struct.pack(">I", len(tags))
    offset = 128 + 4 + 12 * len(tags)
    body = b""
    for sig, data in tags:
        data += bytes(-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = 128 + len(table) + len(body)
    header = (
        struct.pack(">I", size) + b"none" + struct.pack(">I", 0x02100000) + device_class + space + pcs
        + struct.pack(">6H", 2020, 1, 1, 0, 0, 0) + b"acsp" + bytes(4) + bytes(4) + bytes(4) + bytes(4) + bytes(8)
        + struct.pack(">I", intent) + _s15(D50[0]) + _s15(D50[1]) + _s15(D50[2]) + b"none" + bytes(44)
    )
    assert len(header) == 128
    return header + table + body


def rgb_profile(name: str = "Adobe RGB (1998) lookalike", colorants=ADOBE_RGB_D50, gamma: float = 563 / 256) -> bytes:
    """A matrix/TRC RGB display profile (default: Adobe RGB (1998) primaries)."""
    r, g, b = colorants
    return _profile(b"mntr", b"RGB ", b"XYZ ", [
        (b"desc", _desc(name)), (b"wtpt", _xyz(*D50)),
        (b"rXYZ", _xyz(*r)), (b"gXYZ", _xyz(*g)), (b"bXYZ", _xyz(*b)),
        (b"rTRC", _curve(gamma)), (b"gTRC", _curve(gamma)), (b"bTRC", _curve(gamma)),
    ])


def gray_profile(name: str = "Gray gamma 1.8", gamma: float = 1.8) -> bytes:
    tags = [(b"desc", _desc(name)), (b"wtpt", _xyz(*D50)), (b"kTRC", _curve(gamma))]
    return _profile(b"mntr", b"GRAY", b"XYZ ", tags)


def cmyk_profile(name: str = "Test CMYK (lut8)") -> bytes:
    """A CMYK output profile: A2B0 is a 2-point lut8 CLUT to CIELAB whose paper is warm (b* = +8)."""
    clut = b""
    for c in (0, 1):  # the first input channel varies slowest
        for m in (0, 1):
            for y in (0, 1):
                for k in (0, 1):
                    ink = (c + m + y) / 3
                    lightness = 94 * (1 - 0.85 * k) * (1 - 0.6 * ink)
                    a = 40 * m - 30 * c
                    b_ = 8 + 50 * y - 35 * c - 20 * m
                    clut += bytes([round(lightness * 255 / 100), round(a + 128), round(b_ + 128)])
    ramp = bytes(range(256))
    identity = b"".join(_s15(1.0 if i == j else 0.0) for i in range(3) for j in range(3))
    lut = b"mft1" + bytes(4) + bytes([4, 3, 2, 0]) + identity + ramp * 4 + clut + ramp * 3
    return _profile(b"prtr", b"CMYK", b"Lab ", [(b"desc", _desc(name)), (b"wtpt", _xyz(*D50)), (b"A2B0", lut)])

"""Decoding rules of irn_batch.imageio on real files made with Pillow (or written byte by byte)."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from irn_batch.imageio import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    decode_image,
    to_uint8,
)

RNG = np.random.default_rng(1234)


def save(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def rgb8(h: int = 13, w: int = 17) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _chunk(kind: bytes, body: bytes) -> bytes:
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
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"".join(out))) + _chunk(b"IEND", b"")


def test_rgb_exact_k_over_255():
    x = rgb8()
    img = decode_image(save(Image.fromarray(x)))
    assert (img.width, img.height, img.mode, img.format) == (17, 13, "RGB", "PNG")
    assert img.rgb.dtype == np.float32 and img.alpha is None
    np.testing.assert_array_equal(to_uint8(img.rgb), x)
    np.testing.assert_allclose(img.rgb, x / 255.0, atol=1e-7)


@pytest.mark.parametrize("mode", ["L", "1"])
def test_grayscale_replicated(mode):
    g = RNG.integers(0, 256, (9, 11), dtype=np.uint8)
    im = Image.fromarray(g).convert(mode)
    img = decode_image(save(im))
    expected = np.asarray(im.convert("L")) / 255.0
    assert img.mode == mode
    for ch in range(3):
        np.testing.assert_allclose(img.rgb[..., ch], expected, atol=1e-7)


def test_16bit_gray_full_precision():
    g = RNG.integers(0, 65536, (7, 10)).astype(np.uint16)
    img = decode_image(save(Image.fromarray(g)))
    assert img.mode.startswith("I;16")
    np.testing.assert_allclose(img.rgb[..., 1], g / 65535.0, rtol=0, atol=1e-7)
    # Low bits survive: an 8-bit path would lose them.
    assert np.abs(img.rgb[..., 0] * 65535 - g).max() < 0.01


@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_rgb_png_full_precision(channels):
    x = RNG.integers(0, 65536, (11, 9, channels)).astype(np.uint16)
    img = decode_image(png16(x))
    np.testing.assert_allclose(img.rgb, x[..., :3] / 65535.0, atol=1e-7)
    if channels == 4:
        np.testing.assert_allclose(img.alpha, x[..., 3] / 65535.0, atol=1e-7)
    else:
        assert img.alpha is None


def test_palette_without_and_with_transparency():
    x = rgb8(8, 8)
    p = Image.fromarray(x).quantize(colors=16)
    img = decode_image(save(p))
    assert img.mode == "P" and img.alpha is None
    np.testing.assert_array_equal(to_uint8(img.rgb), np.asarray(p.convert("RGB")))

    index = np.asarray(p)[0, 0]
    pt = p.copy()
    pt.info["transparency"] = int(index)
    img = decode_image(save(pt, transparency=int(index)))
    assert img.alpha is not None
    np.testing.assert_array_equal(img.alpha == 0, np.asarray(p) == index)
    assert (img.alpha[np.asarray(p) != index] == 1).all()


def test_rgba_and_la_keep_alpha():
    x = RNG.integers(0, 256, (6, 5, 4), dtype=np.uint8)
    img = decode_image(save(Image.fromarray(x)))
    np.testing.assert_array_equal(to_uint8(img.rgb), x[..., :3])
    np.testing.assert_array_equal(to_uint8(img.alpha), x[..., 3])
    la = Image.fromarray(x[..., :2].copy(), mode="LA")
    img = decode_image(save(la))
    assert img.mode == "LA"
    np.testing.assert_array_equal(to_uint8(img.rgb[..., 2]), x[..., 0])
    np.testing.assert_array_equal(to_uint8(img.alpha), x[..., 1])


def test_cmyk_jpeg_converted_by_pillow():
    cmyk = Image.fromarray(RNG.integers(0, 256, (16, 16, 4), dtype=np.uint8), mode="CMYK")
    data = save(cmyk, "JPEG", quality=95)
    img = decode_image(data)
    assert img.mode == "CMYK" and img.format == "JPEG"
    np.testing.assert_array_equal(to_uint8(img.rgb), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied(orientation):
    x = rgb8(5, 8)  # not square, so a 90-degree turn shows in the shape
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = save(Image.fromarray(x), "PNG", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    img = decode_image(data)
    assert (img.height, img.width) == expected.shape[:2]
    np.testing.assert_array_equal(to_uint8(img.rgb), expected)
    if orientation in (5, 6, 7, 8):
        assert (img.width, img.height) == (5, 8)


def test_exif_rotated_jpeg_with_alpha_free_shape():
    exif = Image.Exif()
    exif[0x0112] = 6
    img = decode_image(save(Image.fromarray(rgb8(10, 30)), "JPEG", exif=exif.tobytes()))
    assert (img.width, img.height) == (10, 30)


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animated_refused(fmt):
    frames = [Image.fromarray(rgb8(8, 8)) for _ in range(3)]
    data = save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with pytest.raises(ImageError, match="animated image with 3 frames is not supported"):
        decode_image(data)


def test_mpo_uses_the_primary_picture():
    """Phones write MPO (a JPEG plus extra pictures); it is one photo, not an animation."""
    main, extra = Image.fromarray(np.full((8, 10, 3), 200, np.uint8)), Image.fromarray(np.zeros((4, 5, 3), np.uint8))
    data = save(main, "MPO", save_all=True, append_images=[extra])
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    img = decode_image(data)
    assert (img.format, img.width, img.height) == ("MPO", 10, 8)
    assert abs(float(img.rgb.mean()) - 200 / 255) < 0.02


def test_multipage_tiff_refused():
    pages = [Image.fromarray(rgb8(8, 8)) for _ in range(2)]
    with pytest.raises(ImageError, match="2 frames"):
        decode_image(save(pages[0], "TIFF", save_all=True, append_images=pages[1:]))


def test_float_tiff_rule():
    f = RNG.random((6, 7)).astype(np.float32)
    img = decode_image(save(Image.fromarray(f, mode="F"), "TIFF"))
    assert img.mode == "F"
    np.testing.assert_allclose(img.rgb[..., 0], f, atol=0)
    for bad in (f * 3.0, np.where(f > 0.5, np.nan, f).astype(np.float32), f - 1.0):
        with pytest.raises(ImageError, match="float image"):
            decode_image(save(Image.fromarray(bad.astype(np.float32), mode="F"), "TIFF"))


def test_empty_truncated_corrupt_and_non_images():
    with pytest.raises(ImageError, match="empty file"):
        decode_image(b"")
    good = save(Image.fromarray(rgb8(40, 40)))
    with pytest.raises(ImageError, match="truncated|corrupt"):
        decode_image(good[: len(good) // 2])
    corrupt = bytearray(good)
    idat = good.index(b"IDAT")
    corrupt[idat + 8 : idat + 40] = bytes(32)  # smash the deflate stream (and its CRC no longer fits)
    with pytest.raises(ImageError):
        decode_image(bytes(corrupt))
    with pytest.raises(ImageError, match="not a recognised image"):
        decode_image(b"hello, I am a text file\n" * 10)
    jpeg = save(Image.fromarray(rgb8(64, 64)), "JPEG")
    with pytest.raises(ImageError):
        decode_image(jpeg[:200])


def test_bomb_guard_checks_header_before_decoding():
    data = save(Image.fromarray(rgb8(20, 30)))
    with pytest.raises(ImageError, match="more than the limit of 599"):
        decode_image(data, max_pixels=599)
    assert decode_image(data, max_pixels=600).width == 30
    # A header claiming 100000 x 100000 pixels with almost no data: refused from the header alone.
    bomb = png16(np.zeros((1, 1, 3), np.uint16), width=100_000, height=100_000)
    with pytest.raises(ImageError, match="pixels|too large"):
        decode_image(bomb)
    assert 100_000 * 100_000 > DEFAULT_MAX_PIXELS
    # Below Pillow's own limit, our header check is what refuses it (no pixel buffer is allocated).
    bomb = png16(np.zeros((1, 1, 3), np.uint16), width=15_000, height=10_000)
    with pytest.raises(ImageError, match="15000x10000 = 150000000 pixels, more than the limit of 100000000"):
        decode_image(bomb, max_pixels=100_000_000)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 1)])
def test_tiny_images_are_valid(shape):
    img = decode_image(save(Image.fromarray(rgb8(*shape))))
    assert (img.height, img.width) == shape


def test_to_uint8_clips_and_rounds():
    x = np.array([-0.5, 0.0, 0.4 / 255, 0.6 / 255, 1.0, 7.0], dtype=np.float32)
    np.testing.assert_array_equal(to_uint8(x), [0, 0, 0, 1, 255, 255])


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "TIFF", "WEBP", "BMP"])
def test_mutated_files_give_image_or_image_error(fmt):
    """Fuzz: damaged bytes either still decode or raise ImageError, never another exception."""
    rng = np.random.default_rng(len(fmt))
    good = save(Image.fromarray(rgb8(24, 24)), fmt)
    for trial in range(40):
        data = bytearray(good)
        if trial % 3 == 0:
            data = data[: int(rng.integers(1, len(data)))]
        else:
            for pos in rng.integers(0, len(data), size=int(rng.integers(1, 8))):
                data[pos] = int(rng.integers(0, 256))
        try:
            img = decode_image(bytes(data), max_pixels=1_000_000)
        except ImageError as e:
            assert str(e)
        else:
            assert img.rgb.shape == (img.height, img.width, 3) and np.isfinite(img.rgb).all()

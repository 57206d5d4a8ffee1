"""Decoding rules of irn_batch.io.decode on real files made with Pillow (or written byte by byte)."""
from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image, ImageOps

from png_bytes import chunk, png16, with_chunk
from irn_batch.io.colour import to_uint8
from irn_batch.io.decode import DEFAULT_MAX_PIXELS, ImageError, decode_image

RNG = np.random.default_rng(1234)


def save(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def rgb8(h: int = 13, w: int = 17) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


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
    assert (img.format, img.width, img.height, img.pages) == ("MPO", 10, 8, 2)
    assert abs(float(img.rgb.mean()) - 200 / 255) < 0.02


def test_tiff_with_a_thumbnail_page_is_its_first_page():
    """A TIFF's smaller further pages (thumbnails) are ignored and counted; a full-size page is refused."""
    main, thumb = rgb8(30, 40), rgb8(6, 8)
    data = save(Image.fromarray(main), "TIFF", save_all=True, append_images=[Image.fromarray(thumb)])
    img = decode_image(data)
    assert (img.width, img.height, img.pages, img.format) == (40, 30, 2, "TIFF")
    np.testing.assert_array_equal(to_uint8(img.rgb), main)
    pages = [Image.fromarray(rgb8(8, 8)) for _ in range(2)]
    with pytest.raises(ImageError, match=r"multi-page TIFF: page 2 is 8x8, not smaller than the first \(8x8\)"):
        decode_image(save(pages[0], "TIFF", save_all=True, append_images=pages[1:]))
    wider = [Image.fromarray(rgb8(8, 8)), Image.fromarray(rgb8(4, 9))]  # smaller area, but wider
    with pytest.raises(ImageError, match="page 2 is 9x4"):
        decode_image(save(wider[0], "TIFF", save_all=True, append_images=wider[1:]))
    assert decode_image(save(Image.fromarray(main), "TIFF")).pages == 1


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


# ---- modes by rule: alpha only from alpha modes and transparency information -----------------------

def _set_extra_samples(tiff: bytes, value: int) -> bytes:
    """A little-endian TIFF from Pillow with its ExtraSamples tag (338, one SHORT) set to ``value``."""
    entry = struct.pack("<HHI", 338, 3, 1)
    at = tiff.index(entry)
    return tiff[: at + 8] + struct.pack("<H", value) + tiff[at + 10 :]


def test_lab_tiff_has_no_alpha_and_is_converted_as_cielab():
    """Issue 10, item 5: the "A" in "LAB" is not alpha; the values are CIE L*a*b*, not RGB bytes."""
    from PIL import ImageCms

    srgb, lab_profile = ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB")
    x = RNG.integers(60, 200, (8, 8, 3), dtype=np.uint8)  # within what 8-bit L*a*b* holds well
    lab = ImageCms.profileToProfile(Image.fromarray(x), srgb, lab_profile, outputMode="LAB")
    lab.info.pop("icc_profile", None)
    data = save(lab, "TIFF")
    img = decode_image(data)
    assert (img.mode, img.alpha, img.colour) == ("LAB", None, "converted from 'CIELAB D50' to sRGB (perceptual)")
    stored = Image.open(io.BytesIO(data))
    expected = np.asarray(ImageCms.profileToProfile(stored, lab_profile, srgb, outputMode="RGB"))
    np.testing.assert_array_equal(to_uint8(img.rgb), expected)
    assert np.abs(to_uint8(img.rgb).astype(int) - x).max() <= 10  # 8-bit L*a*b* quantisation only
    assert np.abs(to_uint8(img.rgb).astype(int) - np.asarray(stored)).max() > 30  # not the bytes as RGB


@pytest.mark.parametrize("mode", ["YCbCr", "CMYK"])
def test_ycbcr_and_cmyk_without_profile(mode):
    x = rgb8(9, 7)
    data = save(Image.fromarray(x).convert(mode), "TIFF")
    img = decode_image(data)
    assert img.mode == mode and img.alpha is None
    np.testing.assert_array_equal(to_uint8(img.rgb), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    assert img.colour == ("uncalibrated CMYK conversion (no profile)" if mode == "CMYK" else "sRGB")
    if mode == "YCbCr":
        assert np.abs(to_uint8(img.rgb).astype(int) - x).max() <= 3


def test_premultiplied_gray_alpha_and_palette_alpha_tiff():
    g = RNG.integers(0, 256, (5, 6), dtype=np.uint8)
    a = RNG.integers(1, 256, (5, 6), dtype=np.uint8)
    premult = np.round(g.astype(int) * a / 255).astype(np.uint8)
    data = _set_extra_samples(save(Image.fromarray(np.dstack([premult, a]), mode="LA"), "TIFF"), 1)
    img = decode_image(data)
    assert img.mode == "La"
    np.testing.assert_array_equal(to_uint8(img.alpha), a)
    straight = np.asarray(Image.open(io.BytesIO(data)).convert("LA"))[..., 0]
    np.testing.assert_array_equal(to_uint8(img.rgb[..., 0]), straight)
    assert np.abs(straight.astype(int) - g)[a >= 128].max() <= 1  # un-premultiplied
    pa = Image.fromarray(np.dstack([g % 16, a]), mode="LA").convert("PA")
    pa = Image.frombytes("PA", pa.size, pa.tobytes())
    pa.putpalette(RNG.integers(0, 256, 768, dtype=np.uint8).tobytes())
    img = decode_image(save(pa, "TIFF"))
    assert img.mode == "PA"
    np.testing.assert_array_equal(to_uint8(img.alpha), np.asarray(pa)[..., 1])
    np.testing.assert_array_equal(to_uint8(img.rgb), np.asarray(pa.convert("RGB")))


def test_rgb_tiff_extra_samples():
    """ExtraSamples 2 (unassociated) is RGBA, 1 (associated) is un-premultiplied, 0 (unspecified) is no alpha."""
    x = RNG.integers(0, 256, (4, 5, 4), dtype=np.uint8)
    x[..., 3] = 255  # premultiplied and straight agree where alpha is full
    base = save(Image.fromarray(x), "TIFF")
    for extra, has_alpha in ((2, True), (1, True), (0, False)):
        img = decode_image(_set_extra_samples(base, extra))
        assert (img.alpha is not None) == has_alpha, extra
        np.testing.assert_array_equal(to_uint8(img.rgb), x[..., :3])


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_gray_png_transparency_key_at_every_depth(bits):
    levels = 2**bits - 1
    samples = RNG.integers(0, levels + 1, (6, 7))
    samples[0, 0] = 1
    gray = (samples * (255 // levels)).astype(np.uint8)
    data = save(Image.fromarray(gray), "PNG", bits=bits) if bits < 8 else save(Image.fromarray(gray), "PNG")
    img = decode_image(with_chunk(data, b"tRNS", struct.pack(">H", 1)))  # key: sample value 1 at the file's depth
    assert img.alpha is not None
    np.testing.assert_array_equal(img.alpha == 0, samples == 1)
    np.testing.assert_array_equal(to_uint8(img.rgb[..., 0]), gray)
    assert decode_image(data).alpha is None


def test_sixteen_bit_png_transparency_keys():
    """tRNS on 16-bit gray and 16-bit RGB PNGs gives alpha, matched on all 16 bits."""
    g = RNG.integers(0, 65536, (5, 8)).astype(np.uint16)
    g[1, 1], g[2, 2] = 1000, 1000 + 256  # same high byte as the key, different low byte
    img = decode_image(save(Image.fromarray(g), "PNG", transparency=1000))
    assert img.mode == "I;16"
    np.testing.assert_array_equal(img.alpha == 0, g == 1000)
    np.testing.assert_allclose(img.rgb[..., 0], g / 65535.0, atol=1e-7)

    x = RNG.integers(0, 65536, (6, 5, 3)).astype(np.uint16)
    key = (1234, 40000, 7)
    x[0, 0], x[3, 4], x[2, 2] = key, key, (1234, 40000, 8)  # the last differs in the low byte only
    img = decode_image(with_chunk(png16(x), b"tRNS", struct.pack(">3H", *key)))
    np.testing.assert_array_equal(img.alpha == 0, (x == key).all(axis=2))
    assert img.alpha.sum() == 30 - 2
    np.testing.assert_allclose(img.rgb, x / 65535.0, atol=1e-7)


def test_rgb_png_transparency_key_and_no_alpha_without_information():
    x = rgb8(6, 6)
    x[2, 3] = (9, 8, 7)
    img = decode_image(save(Image.fromarray(x), "PNG", transparency=(9, 8, 7)))
    np.testing.assert_array_equal(img.alpha == 0, (x == (9, 8, 7)).all(axis=2))
    for fmt in ("PNG", "JPEG", "WEBP", "BMP", "TGA", "TIFF", "PPM"):
        assert decode_image(save(Image.fromarray(x), fmt)).alpha is None, fmt


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TGA", "TIFF"])
def test_alpha_modes_keep_alpha(fmt):
    x = RNG.integers(0, 256, (6, 5, 4), dtype=np.uint8)
    img = decode_image(save(Image.fromarray(x), fmt, **({"lossless": True} if fmt == "WEBP" else {})))
    np.testing.assert_array_equal(to_uint8(img.alpha), x[..., 3])


def test_32_bit_integer_gray_rule():
    g = RNG.integers(0, 65536, (4, 6)).astype(np.int32)
    img = decode_image(save(Image.fromarray(g, mode="I"), "TIFF"))
    assert (img.mode, img.alpha) == ("I", None)
    np.testing.assert_allclose(img.rgb[..., 2], g / 65535.0, atol=1e-7)
    for bad in (g - 70_000, g + 70_000):
        with pytest.raises(ImageError, match="outside 0..65535"):
            decode_image(save(Image.fromarray(bad.astype(np.int32), mode="I"), "TIFF"))


def test_bmp_tga_gif_modes():
    x = rgb8(5, 7)
    p = Image.fromarray(x).quantize(colors=8)
    for fmt in ("BMP", "TGA", "GIF"):
        img = decode_image(save(p, fmt))
        assert img.alpha is None, fmt
        np.testing.assert_array_equal(to_uint8(img.rgb), np.asarray(p.convert("RGB")), err_msg=fmt)
    gif = decode_image(save(p, "GIF", transparency=int(np.asarray(p)[0, 0])))
    np.testing.assert_array_equal(gif.alpha == 0, np.asarray(p) == np.asarray(p)[0, 0])

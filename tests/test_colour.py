"""Colour rules of irn_batch.io.decode: ICC profiles are converted to sRGB at decode (issue 10, items 5 and 6).

The profiles are written byte by byte (tests/icc_profiles.py); the expected values come from Pillow's
ImageCms applied independently to the stored pixels, as a colour-managed viewer would.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from icc_profiles import cmyk_profile, gray_profile, rgb_profile
from png_bytes import iccp, png16, with_chunk
from irn_batch.cli import main
from irn_batch.io.colour import to_uint8
from irn_batch.io.decode import decode_image

RNG = np.random.default_rng(2024)
SRGB = ImageCms.createProfile("sRGB")
ADOBE = rgb_profile()  # "Adobe RGB (1998) lookalike"
RED = (231, 57, 46)  # the red of the issue, as displayed (sRGB)


def save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def profile(data: bytes) -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(io.BytesIO(data))


def displayed(data: bytes, icc: bytes, mode: str = "RGB") -> np.ndarray:
    """What a colour-managed viewer shows: the stored pixels through ``icc`` into sRGB (perceptual)."""
    stored = Image.open(io.BytesIO(data)).convert(mode)
    return np.asarray(ImageCms.profileToProfile(stored, profile(icc), SRGB, outputMode="RGB"))


def adobe_picture(h: int = 24, w: int = 10) -> np.ndarray:
    """Adobe-RGB values: the issue's red (as displayed) in the top 16 rows, random colours below."""
    to_adobe = ImageCms.buildTransform(SRGB, profile(ADOBE), "RGB", "RGB")
    red = np.asarray(ImageCms.applyTransform(Image.new("RGB", (w, 16), RED), to_adobe))
    return np.concatenate([red, RNG.integers(0, 256, (h - 16, w, 3), dtype=np.uint8)])


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF"])
def test_embedded_rgb_profile_is_converted_to_srgb(fmt):
    """Issue 10, item 6: a file with an Adobe RGB profile decodes to what a colour-managed viewer shows."""
    raw = adobe_picture()
    data = save(Image.fromarray(raw), fmt, icc_profile=ADOBE, **({"quality": 98} if fmt != "TIFF" else {}))
    img = decode_image(data)
    assert img.colour == "converted from 'Adobe RGB (1998) lookalike' to sRGB (perceptual)"
    got = to_uint8(img.rgb).astype(int)
    np.testing.assert_allclose(got, displayed(data, ADOBE), atol=1)
    stored = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    assert np.abs(got[:8] - RED).max() <= (2 if fmt in ("PNG", "TIFF") else 6)  # away from the random rows
    assert np.abs(stored[:8] - RED).max() > 20  # the raw values are not what a viewer shows


def test_profile_converts_colour_and_leaves_alpha_and_palette_transparency_alone():
    raw = adobe_picture()
    a = RNG.integers(0, 256, raw.shape[:2], dtype=np.uint8)
    data = save(Image.fromarray(np.dstack([raw, a])), "PNG", icc_profile=ADOBE)
    img = decode_image(data)
    np.testing.assert_array_equal(to_uint8(img.alpha), a)
    np.testing.assert_allclose(to_uint8(img.rgb).astype(int), displayed(data, ADOBE), atol=1)
    p = Image.fromarray(raw).quantize(colors=32)
    data = save(p, "PNG", icc_profile=ADOBE, transparency=int(np.asarray(p)[0, 0]))
    img = decode_image(data)
    assert img.mode == "P" and img.colour.startswith("converted from")
    np.testing.assert_array_equal(img.alpha == 0, np.asarray(p) == np.asarray(p)[0, 0])
    np.testing.assert_allclose(to_uint8(img.rgb).astype(int), displayed(data, ADOBE), atol=1)


def test_srgb_profile_keeps_the_values_untouched_even_at_16_bits():
    srgb_bytes = ImageCms.ImageCmsProfile(SRGB).tobytes()
    x = RNG.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    img = decode_image(save(Image.fromarray(x), "PNG", icc_profile=srgb_bytes))
    assert img.colour == "sRGB (embedded profile 'sRGB built-in')"
    np.testing.assert_array_equal(to_uint8(img.rgb), x)
    # A 16-bit RGB PNG with the sRGB profile in an iCCP chunk keeps all 16 bits.
    x16 = RNG.integers(0, 65536, (5, 6, 3)).astype(np.uint16)
    img = decode_image(with_chunk(png16(x16), b"iCCP", iccp(srgb_bytes)))
    assert img.colour.startswith("sRGB (embedded profile")
    np.testing.assert_allclose(img.rgb, x16 / 65535.0, atol=1e-7)


def test_sixteen_bit_png_with_another_profile_is_converted_at_8_bits():
    x16 = RNG.integers(0, 65536, (5, 6, 3)).astype(np.uint16)
    img = decode_image(with_chunk(png16(x16), b"iCCP", iccp(ADOBE)))
    assert img.colour == "converted from 'Adobe RGB (1998) lookalike' to sRGB (perceptual, 8-bit)"
    eight = Image.fromarray(np.round(x16 / 257).astype(np.uint8))
    expected = np.asarray(ImageCms.profileToProfile(eight, profile(ADOBE), SRGB, outputMode="RGB"))
    np.testing.assert_allclose(to_uint8(img.rgb).astype(int), expected, atol=1)


def test_cmyk_jpeg_with_a_profile_goes_through_it():
    cmyk_icc = cmyk_profile()
    cmyk = Image.fromarray(RNG.integers(0, 256, (16, 16, 4), dtype=np.uint8), mode="CMYK")
    data = save(cmyk, "JPEG", quality=95, icc_profile=cmyk_icc)
    img = decode_image(data)
    assert (img.mode, img.alpha) == ("CMYK", None)
    assert img.colour == "converted from 'Test CMYK (lut8)' to sRGB (perceptual)"
    expected = displayed(data, cmyk_icc, mode="CMYK")
    np.testing.assert_allclose(to_uint8(img.rgb).astype(int), expected, atol=1)
    naive = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    assert np.abs(naive - expected).max() > 20  # the profile really changed something
    no_profile = decode_image(save(cmyk, "JPEG", quality=95))
    assert no_profile.colour == "uncalibrated CMYK conversion (no profile)"


def test_gray_profile_on_gray_png():
    gray_icc = gray_profile()
    g = RNG.integers(0, 256, (6, 7), dtype=np.uint8)
    data = save(Image.fromarray(g), "PNG", icc_profile=gray_icc)
    img = decode_image(data)
    assert img.colour == "converted from 'Gray gamma 1.8' to sRGB (perceptual)" and img.alpha is None
    np.testing.assert_allclose(to_uint8(img.rgb).astype(int), displayed(data, gray_icc, mode="L"), atol=1)


@pytest.mark.parametrize(
    "icc, reason",
    [
        (b"this is not an ICC profile", "ICC profile unusable: "),
        (ADOBE[:200], "ICC profile unusable: "),
        (cmyk_profile(), "ICC profile unusable: a CMYK profile does not fit a RGB image"),
    ],
    ids=["garbage", "truncated", "wrong-space"],
)
def test_unusable_profile_never_costs_the_image(icc, reason):
    x = RNG.integers(0, 256, (5, 5, 3), dtype=np.uint8)
    for fmt in ("PNG", "JPEG"):
        data = save(Image.fromarray(x), fmt, icc_profile=icc, quality=95)
        img = decode_image(data)
        assert img.colour.startswith("sRGB; " + reason), img.colour
        assert "\n" not in img.colour
        np.testing.assert_array_equal(to_uint8(img.rgb), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def test_profile_name_is_one_printable_line():
    odd = rgb_profile(name="evil\nname\twith\x07controls " + "x" * 200)
    img = decode_image(save(Image.fromarray(adobe_picture()), "PNG", icc_profile=odd))
    assert img.colour.startswith("converted from 'evil?name?with?controls x")
    assert img.colour.isprintable() and len(img.colour) < 140


# ---- the whole way: HR file -> LR -> restored file, through the CLI ---------------------------------

def _cli(capsys, *argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def test_lab_tiff_restores_to_jpeg(capsys, tmp_path: Path, tiny_ckpt_path):
    """Issue 10, item 5: an 8x8 LAB TIFF has no alpha, so ``upscale -o out.jpg`` works."""
    lab = ImageCms.profileToProfile(Image.new("RGB", (8, 8), RED), SRGB, ImageCms.createProfile("LAB"),
                                    outputMode="LAB")
    src = tmp_path / "lab.tif"
    lab.save(src)
    assert Image.open(src).mode == "LAB"
    assert _cli(capsys, "downscale", src, "-o", tmp_path / "lr.png", "--model", tiny_ckpt_path)[0] == 0
    info_rc = main(["info", str(tmp_path / "lr.png")])
    assert info_rc == 0 and '"has_alpha": false' in capsys.readouterr().out
    rc, err = _cli(capsys, "upscale", tmp_path / "lr.png", "-o", tmp_path / "out.jpg", "--model", tiny_ckpt_path)
    assert rc == 0, err
    out = Image.open(tmp_path / "out.jpg")
    assert (out.format, out.mode, out.size) == ("JPEG", "RGB", (8, 8))


def test_displayed_colour_survives_the_round_trip(capsys, tmp_path: Path, tiny_ckpt_path):
    """Issue 10, item 6: an Adobe RGB file comes back as the same file holding its sRGB (displayed) values.

    The model is a random one, so the restore is compared with the restore of an sRGB file made by
    ImageCms from the same picture: bit for bit the same, and not the restore of the raw values.
    """
    raw = adobe_picture(24, 20)
    shown = np.asarray(ImageCms.profileToProfile(Image.fromarray(raw), profile(ADOBE), SRGB, outputMode="RGB"))
    files = {"adobe": (raw, ADOBE), "srgb": (shown, None), "raw": (raw, None)}
    restored = {}
    for name, (pixels, icc) in files.items():
        src, lr, out = tmp_path / f"{name}.png", tmp_path / f"{name}.lr.png", tmp_path / f"{name}.out.png"
        Image.fromarray(pixels).save(src, **({"icc_profile": icc} if icc else {}))
        assert _cli(capsys, "downscale", src, "-o", lr, "--model", tiny_ckpt_path, "--seed", 7)[0] == 0
        assert _cli(capsys, "upscale", lr, "-o", out, "--model", tiny_ckpt_path)[0] == 0
        im = Image.open(out)
        assert "icc_profile" not in im.info  # sRGB, every viewer's default
        restored[name] = np.asarray(im)
    np.testing.assert_array_equal(restored["adobe"], restored["srgb"])
    assert np.abs(restored["adobe"].astype(int) - restored["raw"]).max() > 20

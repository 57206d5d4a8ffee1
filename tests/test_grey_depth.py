"""Grey, 1-bit and 16-bit sources come back as such; wide-gamut clipping is measured (issue 13, part C).

Unit checks of the decode flags and of ``restore_array``/``encode``, then ingest -> restore jobs on the
local disk and on the loopback S3 server with a real local Ray.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from icc_profiles import rgb_profile
from irn_batch.io.container import ContainerError, Encoding, encode, restore_array
from irn_batch.io.colour import srgb_icc
from irn_batch.io.decode import decode_image
from job_setup import Job
from png_bytes import png16

pytest_plugins = ["pipeline_fixtures"]


def _png(arr: np.ndarray, mode: str | None = None, **kw) -> bytes:
    buf = io.BytesIO()
    (Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)).save(buf, format="PNG", **kw)
    return buf.getvalue()


def smooth_image_gray() -> np.ndarray:
    y, x = np.mgrid[0:24, 0:32].astype(np.float32)
    return np.clip(128 + 90 * np.sin(x / 5) * np.cos(y / 6), 0, 255).astype(np.uint8)


def _gradient16(h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth 16-bit gray ramp with thousands of levels (sky-like): uint16 (h, w)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.round((0.2 + 0.6 * (x / (w - 1)) * 0.8 + 0.1 * y / (h - 1)) * 65535).astype(np.uint16)


def _sources() -> dict[str, bytes]:
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:40, 0:56].astype(np.float32)
    grey = np.clip(128 + 60 * np.sin(x / 7) * np.cos(y / 9) + rng.normal(0, 3, x.shape), 0, 255).astype(np.uint8)
    bilevel = ((np.sin(x / 4) + np.cos(y / 5)) > 0).astype(np.uint8) * 255
    deep = _gradient16()
    deep_rgb = np.stack([deep, deep[::-1], np.flip(deep, 1)], -1)
    sat = np.zeros((32, 32, 3), np.uint8)
    sat[:16, :, 1] = 255  # Adobe RGB's pure green: far outside sRGB
    sat[16:] = 128
    return {"grey.png": _png(grey), "bilevel.png": _png(bilevel, "1"), "deep.png": _png(deep),
            "deep_rgb.png": png16(deep_rgb), "wide.png": _png(sat, icc_profile=rgb_profile())}


# ---- decode flags ----------------------------------------------------------------------------------

def test_decode_records_grey_bit_depth_and_gamut_clipping():
    src = _sources()
    got = {k: decode_image(v) for k, v in src.items()}
    assert [(got[k].grey, got[k].bit_depth) for k in ("grey.png", "bilevel.png", "deep.png", "deep_rgb.png")] == [
        (True, 8), (True, 1), (True, 16), (False, 16)]
    assert got["grey.png"].mode == "L" and got["bilevel.png"].mode == "1" and got["deep.png"].mode == "I;16"
    assert np.array_equal(got["grey.png"].rgb[..., 0], got["grey.png"].rgb[..., 2])
    assert got["grey.png"].gamut_clipped is None  # no profile, nothing converted
    # half the pixels are Adobe RGB's pure green, the other half mid gray (inside sRGB)
    assert got["wide.png"].gamut_clipped == pytest.approx(0.5, abs=0.01)
    assert got["wide.png"].colour.startswith("converted from")
    assert len(srgb_icc()) > 100
    # a palette image is gray when every palette entry is (a gray GIF); a colour palette is not
    gray_gif = io.BytesIO()
    Image.fromarray(smooth_image_gray()).convert("P").save(gray_gif, format="GIF")
    colour_gif = io.BytesIO()
    Image.fromarray(np.stack([smooth_image_gray(), smooth_image_gray()[::-1], smooth_image_gray()[:, ::-1]], -1)
                    ).convert("P").save(colour_gif, format="GIF")
    assert decode_image(gray_gif.getvalue()).grey and not decode_image(colour_gif.getvalue()).grey


# ---- restore_array / encode ------------------------------------------------------------------------

def test_grey_restores_are_one_channel_or_exact_rgb_grey():
    rng = np.random.default_rng(0)
    hr = rng.uniform(0, 1, (9, 11, 3)).astype(np.float32)
    luma = np.round((hr[..., 0] * 0.299 + hr[..., 1] * 0.587 + hr[..., 2] * 0.114) * 255)
    for name in ("png", "jpeg", "tiff"):
        arr, depth = restore_array(hr, Encoding(name), grey=True, bit_depth=8)
        assert arr.shape == (9, 11, 1) and depth == 8 and np.array_equal(arr[..., 0], luma)
        assert Image.open(io.BytesIO(encode(arr, Encoding(name)))).mode == "L"
    arr, _ = restore_array(hr, Encoding("webp", 100), grey=True, bit_depth=8)  # WebP has no gray mode
    back = np.asarray(Image.open(io.BytesIO(encode(arr, Encoding("webp", 100)))).convert("RGB"))
    assert np.array_equal(back[..., 0], back[..., 1]) and np.array_equal(back[..., 1], back[..., 2])
    assert np.array_equal(back[..., 0], luma)
    with pytest.raises(ContainerError, match="no gray mode"):
        encode(arr[..., :1], Encoding("webp"))
    # a colour source stays colour; alpha rides along
    arr, _ = restore_array(np.concatenate([hr, hr[..., :1]], -1), Encoding("png"), grey=False, bit_depth=8)
    assert arr.shape == (9, 11, 4)


def test_one_bit_and_sixteen_bit_outputs():
    hr = np.repeat(np.linspace(0, 1, 64, dtype=np.float32)[None, :, None], 3, 2).repeat(4, 0)
    bits, depth = restore_array(hr, Encoding("png"), grey=True, bit_depth=1, one_bit=True)
    assert bits.dtype == bool and depth == 1 and bits[:, :32].sum() == 0 and bits[:, 32:].all()
    assert Image.open(io.BytesIO(encode(bits, Encoding("tiff")))).mode == "1"
    gray, depth = restore_array(hr, Encoding("png"), grey=True, bit_depth=1)  # not its own container: gray
    assert gray.dtype == np.uint8 and depth == 8
    deep, depth = restore_array(hr, Encoding("png"), grey=True, bit_depth=16)
    assert deep.dtype == np.uint16 and depth == 16
    img = decode_image(encode(deep, Encoding("png")))
    assert img.mode == "I;16" and len(np.unique(img.rgb[..., 0])) == 64
    # 16-bit RGB(A): Pillow cannot write it, container._png16 does; the decoder reads all 16 bits back
    rgb16, _ = restore_array(hr * np.float32([1, 0.5, 0.25]), Encoding("png"), grey=False, bit_depth=16)
    back = decode_image(encode(rgb16, Encoding("png")))
    assert back.bit_depth == 16 and np.array_equal(np.round(back.rgb * 65535).astype(np.uint16), rgb16)
    rgba16 = np.concatenate([rgb16, rgb16[..., :1]], -1)
    back = decode_image(encode(rgba16, Encoding("png"), icc=srgb_icc()))
    assert np.array_equal(np.round(back.alpha * 65535).astype(np.uint16), rgba16[..., 3])
    # JPEG and WebP hold 8 bits: the depth is reduced and restore_array says so
    for enc in (Encoding("jpeg"), Encoding("webp", 100)):
        arr, depth = restore_array(hr, enc, grey=False, bit_depth=16)
        assert arr.dtype == np.uint8 and depth == 8


# ---- jobs: local disk and loopback S3 ----------------------------------------------------------------

@pytest.fixture(scope="module", params=["local", "s3"])
def job(request, tmp_path_factory, calm_ckpt_path):
    job = Job(request, tmp_path_factory, "greydepth", _sources(), calm_ckpt_path)
    job.summary = job.ingest()
    return job


def test_ingest_manifest_records_depth_grey_and_clipping(job):
    assert job.summary["ok"] == 5 and job.summary["error"] == 0
    rows = job.rows("lr")
    assert {k: (r["mode"], r["bit_depth"], r["grey"]) for k, r in rows.items()} == {
        "grey.png": ("L", 8, True), "bilevel.png": ("1", 1, True), "deep.png": ("I;16", 16, True),
        "deep_rgb.png": ("RGB", 16, False), "wide.png": ("RGB", 8, False)}
    assert rows["wide.png"]["gamut_clipped"] == pytest.approx(0.5, abs=0.01)
    assert rows["grey.png"]["gamut_clipped"] is None


def test_restore_gives_grey_one_bit_and_sixteen_bit_back(job):
    src = job.src
    summary = job.restore("hr")  # format: source, the default
    assert (summary["ok"], summary["error"], summary["depth_reduced"]) == (5, 0, 0)
    out = {k: job.cat(f"hr/{k}") for k in src}
    grey = Image.open(io.BytesIO(out["grey.png"]))
    assert grey.mode == "L"
    original = np.asarray(Image.open(io.BytesIO(src["grey.png"]))).astype(np.float64)
    mse = np.mean((np.asarray(grey).astype(np.float64) - original) ** 2)
    assert 10 * np.log10(255 ** 2 / mse) > 24.0  # the calm model restores, in gray
    bilevel = Image.open(io.BytesIO(out["bilevel.png"]))
    assert bilevel.mode == "1"
    agree = np.asarray(bilevel) == np.asarray(Image.open(io.BytesIO(src["bilevel.png"])))
    assert agree.mean() > 0.9
    deep = decode_image(out["deep.png"])
    assert deep.mode == "I;16" and len(np.unique(deep.rgb[..., 0])) > 256  # no 8-bit staircase
    deep_rgb = decode_image(out["deep_rgb.png"])
    assert deep_rgb.bit_depth == 16 and len(np.unique(deep_rgb.rgb[..., 0])) > 256
    wide = Image.open(io.BytesIO(out["wide.png"]))
    assert wide.mode == "RGB" and wide.info.get("icc_profile") == srgb_icc()
    rows = job.rows("hr")
    assert {k: r["out_bit_depth"] for k, r in rows.items()} == {
        "grey.png": 8, "bilevel.png": 1, "deep.png": 16, "deep_rgb.png": 16, "wide.png": 8}
    assert rows["wide.png"]["out_icc"].startswith("sRGB (the original was converted from")
    assert all(r["out_icc"] is None for k, r in rows.items() if k != "wide.png")


def test_restore_to_an_eight_bit_container_says_the_depth_was_reduced(job):
    summary = job.restore("webp", "format=webp", "quality=100")
    assert summary["ok"] == 5 and summary["depth_reduced"] == 2
    rows = job.rows("webp")
    assert {k for k, r in rows.items() if r["depth_reduced"]} == {"deep.png", "deep_rgb.png"}
    grey = np.asarray(Image.open(io.BytesIO(job.cat("webp/grey.webp"))).convert("RGB"))
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])


def test_cli_upscale_of_a_grey_and_a_sixteen_bit_source(tmp_path, calm_ckpt_path):
    from irn_batch.cli import main

    src = _sources()
    for name in ("grey.png", "deep.png"):
        (tmp_path / name).write_bytes(src[name])
        lr, hr = tmp_path / f"lr_{name}", tmp_path / f"hr_{name}"
        assert main(["downscale", str(tmp_path / name), "-o", str(lr), "--model", str(calm_ckpt_path)]) == 0
        assert main(["upscale", str(lr), "-o", str(hr), "--model", str(calm_ckpt_path)]) == 0
        back = decode_image(hr.read_bytes())
        assert back.grey and back.mode == {"grey.png": "L", "deep.png": "I;16"}[name]
    assert len(np.unique(decode_image((tmp_path / "hr_deep.png").read_bytes()).rgb)) > 256

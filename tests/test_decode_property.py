"""Property-based tests (hypothesis) of decode -> downscale -> encode -> restore (issue 10).

Valid images of many modes and sizes (1..300 px) go the whole way with a tiny random checkpoint: never a
crash, the restore has the input's size, and alpha is present exactly when the input had it. Random and
damaged bytes of valid files decode or raise ImageError with one line; nothing else, and never a hang.
The examples are derandomised, so every run tries the same inputs.
"""
from __future__ import annotations

import contextlib
import io
import signal
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms

from icc_profiles import cmyk_profile, rgb_profile
from png_bytes import png16, with_chunk
from irn_batch.io.container import Encoding, encode
from irn_batch.io.decode import ImageError, decode_image
from irn_batch.rescale import downscale_image, restore_image

# Same examples every run, no example database on disk; tiny_ckpt is read-only, so sharing it across examples is fine.
SETTINGS = dict(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
HANG_GUARD_S = 60  # generous: a decode of these small files takes milliseconds


@contextlib.contextmanager
def hang_guard(seconds: float = HANG_GUARD_S):
    """Fail (instead of hanging the suite) when the body runs longer than ``seconds``."""
    def expired(signum, frame):
        raise AssertionError(f"no result within {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


# kind -> (writer(rng, h, w) -> file bytes, whether the file has alpha)
def _l(rng, h, w):
    return _save(Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)), "PNG")


def _la(rng, h, w):
    return _save(Image.fromarray(rng.integers(0, 256, (h, w, 2), dtype=np.uint8), mode="LA"), "PNG")


def _rgb(rng, h, w):
    return _save(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)), "PNG")


def _rgba(rng, h, w):
    return _save(Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8)), "PNG")


def _palette(rng, h, w, transparent: bool):
    im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).quantize(colors=int(rng.integers(2, 64)))
    return _save(im, "PNG", **({"transparency": int(np.asarray(im)[0, 0])} if transparent else {}))


def _gray16(rng, h, w, transparent: bool):
    g = rng.integers(0, 65536, (h, w)).astype(np.uint16)
    return _save(Image.fromarray(g), "PNG", **({"transparency": int(g[0, 0])} if transparent else {}))


def _rgb16(rng, h, w, channels: int, transparent: bool = False):
    x = rng.integers(0, 65536, (h, w, channels)).astype(np.uint16)
    png = png16(x)
    return with_chunk(png, b"tRNS", struct.pack(">3H", *x[0, 0, :3])) if transparent else png


def _cmyk_jpeg(rng, h, w, profile: bool):
    im = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), mode="CMYK")
    return _save(im, "JPEG", quality=90, **({"icc_profile": cmyk_profile()} if profile else {}))


def _adobe_jpeg(rng, h, w):
    im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return _save(im, "JPEG", quality=90, icc_profile=rgb_profile())


def _lab_tiff(rng, h, w):
    rgb = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    lab = ImageCms.profileToProfile(rgb, ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"),
                                    outputMode="LAB")
    return _save(lab, "TIFF")


KINDS = {
    "L": (_l, False),
    "LA": (_la, True),
    "RGB": (_rgb, False),
    "RGBA": (_rgba, True),
    "P": (lambda r, h, w: _palette(r, h, w, False), False),
    "P+tRNS": (lambda r, h, w: _palette(r, h, w, True), True),
    "I;16": (lambda r, h, w: _gray16(r, h, w, False), False),
    "I;16+tRNS": (lambda r, h, w: _gray16(r, h, w, True), True),
    "RGB16": (lambda r, h, w: _rgb16(r, h, w, 3), False),
    "RGB16+tRNS": (lambda r, h, w: _rgb16(r, h, w, 3, True), True),
    "RGBA16": (lambda r, h, w: _rgb16(r, h, w, 4), True),
    "CMYK-JPEG": (lambda r, h, w: _cmyk_jpeg(r, h, w, False), False),
    "CMYK-JPEG+ICC": (lambda r, h, w: _cmyk_jpeg(r, h, w, True), False),
    "Adobe-JPEG": (_adobe_jpeg, False),
    "LAB-TIFF": (_lab_tiff, False),
}
LR_ENCODINGS = [Encoding("png"), Encoding("webp", 90), Encoding("jpeg", 90)]


@st.composite
def valid_images(draw, kind: str, max_side: int = 300):
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    seed = draw(st.integers(0, 2**32 - 1))
    writer, has_alpha = KINDS[kind]
    return kind, writer(np.random.default_rng(seed), h, w), (h, w), has_alpha  # kind, file, (H, W), alpha


@pytest.mark.parametrize("kind", sorted(KINDS))
@settings(max_examples=8, **SETTINGS)
@given(draw=st.data())
def test_any_valid_image_goes_the_whole_way(tiny_ckpt, kind, draw):
    _, data, (h, w), has_alpha = draw.draw(valid_images(kind))
    enc = draw.draw(st.sampled_from(LR_ENCODINGS))
    z_seed = draw.draw(st.integers(0, 2**63 - 1))
    with hang_guard():
        img = decode_image(data)
        assert (img.height, img.width) == (h, w)
        assert (img.alpha is not None) == has_alpha
        assert img.rgb.shape == (h, w, 3) and img.rgb.dtype == np.float32
        assert np.isfinite(img.rgb).all() and img.rgb.min() >= 0 and img.rgb.max() <= 1
        lr, meta = downscale_image(tiny_ckpt, img, z_seed=z_seed, encoding=enc.for_alpha(has_alpha))
        assert meta.has_alpha == has_alpha and (meta.width, meta.height) == (w, h)
        out = restore_image(tiny_ckpt, lr)
        assert out.shape == (h, w, 4 if has_alpha else 3) and out.dtype == np.uint8
        again = decode_image(encode(out, Encoding("png")))  # the restored file reads back the same
        assert (again.height, again.width, again.alpha is not None) == (h, w, has_alpha)


@st.composite
def damaged_files(draw, kind: str):
    _, data, _, _ = draw(valid_images(kind, max_side=40))
    how = draw(st.sampled_from(["truncate", "flip", "splice", "random"]))
    buf = bytearray(data)
    if how == "truncate":
        buf = buf[: draw(st.integers(0, len(buf) - 1))]
    elif how == "flip":
        for _ in range(draw(st.integers(1, 12))):
            buf[draw(st.integers(0, len(buf) - 1))] = draw(st.integers(0, 255))
    elif how == "splice":  # a run of bytes from elsewhere in the file, or new ones
        at = draw(st.integers(0, len(buf) - 1))
        buf[at : at + draw(st.integers(1, 64))] = draw(st.binary(min_size=0, max_size=64))
    else:
        keep = draw(st.integers(0, 16))  # a valid signature, then noise
        buf = buf[:keep] + bytearray(draw(st.binary(min_size=0, max_size=2048)))
    return how, bytes(buf)


@pytest.mark.parametrize("kind", sorted(KINDS))
@settings(max_examples=40, **SETTINGS)
@given(draw=st.data())
def test_damaged_bytes_decode_or_raise_one_line_image_error(kind, draw):
    how, data = draw.draw(damaged_files(kind))
    with hang_guard():
        try:
            img = decode_image(data, max_pixels=1_000_000)
        except ImageError as e:
            msg = str(e)
            assert msg and "\n" not in msg, (kind, how, msg)
        else:
            assert img.rgb.shape == (img.height, img.width, 3) and np.isfinite(img.rgb).all()
            assert img.alpha is None or img.alpha.shape == (img.height, img.width)
            assert "\n" not in img.colour


@pytest.mark.parametrize("size", [0, 1, 7, 64, 4096])
def test_random_bytes_are_refused_in_one_line(size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    with pytest.raises(ImageError) as err, hang_guard():
        decode_image(data)
    assert "\n" not in str(err.value)

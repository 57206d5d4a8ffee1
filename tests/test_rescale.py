"""HR <-> LR PNG (the default container) through irn_batch.rescale with a small random-weight model."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from irn_batch.rescale import tiling
from irn_batch.model.checkpoint import load_checkpoint
from irn_batch.io.container import encode
from irn_batch.io.lr_file import LRMeta, read_lr, read_lr_meta
from irn_batch.io.decode import ImageError, decode_image
from irn_batch.metrics import psnr_rgb
from irn_batch.rescale import content_seed, downscale_image, restore_image
from irn_batch.model.transforms import pad_to_multiple, sample_z

RNG = np.random.default_rng(99)


def smooth_image(h: int, w: int, channels: int = 3) -> np.ndarray:
    """A smooth uint8 test picture (random low-frequency colour field)."""
    coarse = torch.from_numpy(RNG.random((1, channels, 4, 4)).astype(np.float32))
    up = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
    return (up[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)


def decoded(x: np.ndarray):
    return decode_image(encode(x))


def test_meta_text_round_trip_and_refusals():
    meta = LRMeta("irn-x2-0123456789abcdef", 2, 51, 37, 2**62 + 5, True, "RGBA")
    text = meta.to_text()
    assert all(k.startswith("irn_batch:") for k in text)
    assert LRMeta.from_text(text) == meta
    assert meta.lr_size == (26, 19)
    with pytest.raises(ImageError, match="not an irn_batch LR image"):
        LRMeta.from_text({})
    for key, bad in (("irn_batch:scale", "two"), ("irn_batch:width", "0"), ("irn_batch:has_alpha", "yes")):
        with pytest.raises(ImageError, match="not an irn_batch LR image"):
            LRMeta.from_text({**text, key: bad})
    broken = dict(text)
    del broken["irn_batch:model_id"]
    with pytest.raises(ImageError, match="not an irn_batch LR image"):
        LRMeta.from_text(broken)


def test_content_seed_is_deterministic_int63():
    a, b = content_seed(b"image one"), content_seed(b"image two")
    assert a == content_seed(b"image one") and a != b
    assert 0 <= a < 2**63 and 0 <= b < 2**63


@pytest.mark.parametrize("h,w", [(37, 51), (1, 1), (2, 9), (16, 16)])
def test_downscale_writes_expected_lr(tiny_ckpt, h, w):
    x = smooth_image(h, w)
    png, meta = downscale_image(tiny_ckpt, decoded(x), z_seed=11)
    assert meta == LRMeta(tiny_ckpt.model_id, 2, w, h, 11, False, "RGB")
    assert read_lr_meta(png) == meta
    lr = np.asarray(Image.open(io.BytesIO(png)))
    assert lr.shape == ((h + 1) // 2, (w + 1) // 2, 3) and lr.dtype == np.uint8
    # Independently: mirror-pad, run the raw bijection, take the first 3 channels, round to 8 bits.
    hr = pad_to_multiple(torch.from_numpy(x / np.float32(255)).permute(2, 0, 1)[None], 2)
    with torch.no_grad():
        expected = tiny_ckpt.model(hr)[0, :3].clamp(0, 1).mul(255).round().to(torch.uint8)
    np.testing.assert_array_equal(lr, expected.permute(1, 2, 0).numpy())


def test_restore_is_original_size_reproducible_and_uses_stored_seed(tiny_ckpt):
    x = smooth_image(29, 42)
    png, meta = downscale_image(tiny_ckpt, decoded(x), z_seed=5)
    out = restore_image(tiny_ckpt, png)
    assert out.shape == (29, 42, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, restore_image(tiny_ckpt, png))  # bit for bit
    # The same restore by hand: z from the stored seed at the default temperature, on the CPU.
    lr = torch.from_numpy(np.asarray(Image.open(io.BytesIO(png))) / np.float32(255)).permute(2, 0, 1)[None]
    z = sample_z(tiny_ckpt.model.z_shape(lr), tiny_ckpt.default_temperature, seed=5)
    with torch.no_grad():
        hr = tiny_ckpt.model.upscale(lr, z=z)[0, :, :29, :42]
    np.testing.assert_array_equal(out, hr.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy())
    assert not np.array_equal(out, restore_image(tiny_ckpt, png, z_seed=6))
    cold = restore_image(tiny_ckpt, png, temperature=0.0)
    with torch.no_grad():
        zero = tiny_ckpt.model.upscale(lr, z=torch.zeros_like(z))[0, :, :29, :42]
    np.testing.assert_array_equal(cold, zero.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy())


def test_round_trip_with_true_z_is_near_exact(tiny_ckpt):
    """With the z the downscale produced and no quantisation, the restore is the input (float path)."""
    x = torch.from_numpy(smooth_image(24, 30) / np.float32(255)).permute(2, 0, 1)[None]
    with torch.no_grad():
        lr, z = tiny_ckpt.model.downscale(x, quantize=False)
        back = tiny_ckpt.model.upscale(lr, z=z)
    assert (back - x).abs().max() < 1e-5


def test_restore_refuses_other_model(tiny_ckpt, other_ckpt_path):
    png, _ = downscale_image(tiny_ckpt, decoded(smooth_image(8, 8)), z_seed=1)
    other = load_checkpoint(other_ckpt_path)
    with pytest.raises(ImageError, match=f"made by model {tiny_ckpt.model_id}.*{other.model_id}"):
        restore_image(other, png)


def test_restore_refuses_plain_and_tampered_png(tiny_ckpt):
    with pytest.raises(ImageError, match="not an irn_batch LR image"):
        restore_image(tiny_ckpt, encode(smooth_image(8, 8)))
    png, meta = downscale_image(tiny_ckpt, decoded(smooth_image(10, 10)), z_seed=1)
    wrong_size = LRMeta(**{**vars(meta), "width": 30})
    with pytest.raises(ImageError, match="metadata says"):
        read_lr(encode(np.asarray(Image.open(io.BytesIO(png))), text=wrong_size.to_text()))


def test_alpha_rides_along_as_fourth_channel(tiny_ckpt):
    x = smooth_image(26, 34, channels=4)
    png, meta = downscale_image(tiny_ckpt, decoded(x), z_seed=3)
    assert meta.has_alpha
    assert Image.open(io.BytesIO(png)).mode == "RGBA"
    out = restore_image(tiny_ckpt, png)
    assert out.shape == (26, 34, 4)
    assert psnr_rgb(np.repeat(out[..., 3:], 3, 2), np.repeat(x[..., 3:], 3, 2)) > 35  # smooth alpha survives


def test_sixteen_bit_grayscale_source(tiny_ckpt):
    g = (smooth_image(20, 21)[..., 0].astype(np.uint16) * 257 + 3).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(g).save(buf, format="PNG")
    png, meta = downscale_image(tiny_ckpt, decode_image(buf.getvalue()), z_seed=1)
    assert meta.source_mode.startswith("I;16")
    assert restore_image(tiny_ckpt, png).shape == (20, 21, 3)


def test_bf16_precision_close_to_fp32(tiny_ckpt):
    img = decoded(smooth_image(16, 20))
    png32, _ = downscale_image(tiny_ckpt, img, z_seed=1)
    png16, _ = downscale_image(tiny_ckpt, img, z_seed=1, precision="bf16")
    a = np.asarray(Image.open(io.BytesIO(png32))).astype(int)
    b = np.asarray(Image.open(io.BytesIO(png16))).astype(int)
    assert np.abs(a - b).max() <= 3
    with pytest.raises(ValueError, match="precision"):
        downscale_image(tiny_ckpt, img, z_seed=1, precision="fp8")


def _count_calls(monkeypatch, obj, name: str) -> list:
    """Wrap ``obj.name`` so each call is recorded (the real method still runs)."""
    calls, real = [], getattr(obj, name)

    def spy(*args, **kwargs):
        calls.append(args[0].shape if args and hasattr(args[0], "shape") else None)
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, name, spy)
    return calls


def test_tiled_path_is_used_and_matches_whole(tiny_ckpt, monkeypatch):
    """Above one tile, rescale runs the network tile by tile; the result equals the whole-image one to
    a rounding step (the module's promise). Which path ran is seen by counting the network's calls and
    their input sizes, never by float differences, which depend on the CPU's kernels (issue 10, item 12).
    """
    x = smooth_image(70, 90)
    img = decoded(x)
    down = _count_calls(monkeypatch, tiny_ckpt.model, "downscale")
    tiled_calls = _count_calls(monkeypatch, tiling, "downscale_tiled")
    whole_png, _ = downscale_image(tiny_ckpt, img, z_seed=2, tile=4096)
    assert len(down) == 1 and down[0][-2:] == (70, 90) and not tiled_calls  # one call on the whole image
    down.clear()
    tiled_png, _ = downscale_image(tiny_ckpt, img, z_seed=2, tile=80)
    assert len(tiled_calls) == 1 and len(down) > 1  # tiling ran, several windows
    assert all(max(shape[-2:]) <= 80 for shape in down)  # each no larger than a tile
    a = np.asarray(Image.open(io.BytesIO(whole_png))).astype(int)
    b = np.asarray(Image.open(io.BytesIO(tiled_png))).astype(int)
    assert np.abs(a - b).max() <= 1  # at most a rounding step

    up = _count_calls(monkeypatch, tiny_ckpt.model, "upscale")
    restored_whole = restore_image(tiny_ckpt, whole_png, tile=4096)
    assert len(up) == 1
    up.clear()
    restored_tiled = restore_image(tiny_ckpt, whole_png, tile=80)
    assert len(up) > 1 and all(max(shape[-2:]) <= 40 for shape in up)  # LR windows of at most tile/scale
    assert restored_tiled.shape == restored_whole.shape == (70, 90, 3)
    assert np.abs(restored_whole.astype(int) - restored_tiled.astype(int)).max() <= 1
    # Default tile: an image within one tile takes the whole-image path (same bytes as tile=4096).
    assert downscale_image(tiny_ckpt, img, z_seed=2)[0] == whole_png

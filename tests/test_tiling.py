"""Tiled processing: the window grid, agreement with whole-image processing, no seams, bad arguments."""
from __future__ import annotations

from importlib import resources

import numpy as np
import pytest
import torch
from PIL import Image

from irn_batch.metrics import psnr_y
from irn_batch.model import IRN, IRNConfig
from irn_batch.model.coupling import DenseBlock
from irn_batch.rescale.tiling import _spans, downscale_tiled, upscale_tiled
from irn_batch.model.transforms import quantize_8bit, sample_z

SAMPLE = str(resources.files("irn_batch") / "samples" / "coffee.png")


def perturbed(scale: int, seed: int = 0) -> IRN:
    """Non-trivial couplings (a fresh IRN is the identity and would hide seams)."""
    torch.manual_seed(seed)
    model = IRN(IRNConfig(scale=scale)).eval()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, DenseBlock):
                mod.conv5.weight.normal_(0.0, 0.02)
    return model


def photo(h: int, w: int) -> torch.Tensor:
    img = np.array(Image.open(SAMPLE).convert("RGB"))[:h, :w]
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255


def hwc(t: torch.Tensor) -> torch.Tensor:
    return t[0].permute(1, 2, 0).clamp(0, 1)


@pytest.mark.parametrize("size", list(range(1, 140)))
@pytest.mark.parametrize("tile, overlap", [(64, 16), (24, 8), (40, 0), (80, 32)])
def test_spans_partition_with_context(size, tile, overlap):
    spans = list(_spans(size, tile, overlap))
    covered = []
    for start, a, b in spans:
        assert start <= a < b <= start + min(tile, size) <= size  # every window has the same length
        assert a == 0 or a - start >= overlap  # context before the core unless at the border
        assert b == size or start + tile - b >= overlap  # and after it
        covered.extend(range(a, b))
    assert covered == list(range(size))


def seam_mask(h: int, w: int, tile: int, overlap: int) -> torch.Tensor:
    """True on the two pixels either side of every core boundary (in the grid's units)."""
    mask = torch.zeros(h, w, dtype=torch.bool)
    for _, a, _ in list(_spans(h, tile, overlap))[1:]:
        mask[a - 1 : a + 1] = True
    for _, a, _ in list(_spans(w, tile, overlap))[1:]:
        mask[:, a - 1 : a + 1] = True
    return mask


@pytest.mark.parametrize("scale, tile, overlap, width", [(2, 48, 16, 128), (4, 96, 32, 160)])
def test_tiled_matches_whole_and_has_no_seams(scale, tile, overlap, width):
    model = perturbed(scale)
    hr = photo(96, width)
    with torch.inference_mode():
        lr, z = model.downscale(hr, quantize=False)
        whole = model.upscale(lr, z)
    lr_t = downscale_tiled(model, hr, tile, overlap)
    hr_t = upscale_tiled(model, lr, z, tile, overlap)
    assert lr_t.dtype == torch.float32 and lr_t.shape == lr.shape and hr_t.shape == hr.shape
    assert len(list(_spans(lr.shape[-1], tile // scale, overlap // scale))) >= 3  # really tiled
    # Agreement: Y-PSNR of the restored image against the original within 0.05 dB of whole processing.
    lr_q, lr_tq = quantize_8bit(lr), quantize_8bit(lr_t)
    zs = sample_z(model.z_shape(lr), 1.0, seed=1)
    with torch.inference_mode():
        rest_whole = model.upscale(lr_q, zs)
    rest_tiled = upscale_tiled(model, lr_tq, zs, tile, overlap)
    gap = abs(psnr_y(hwc(rest_whole), hwc(hr), scale) - psnr_y(hwc(rest_tiled), hwc(hr), scale))
    assert gap < 0.05
    # No seams: the difference to whole processing is tiny everywhere, on core borders included.
    d_lr = (lr_t - lr).abs()[0].amax(0)
    d_hr = (hr_t - whole).abs()[0].amax(0)
    assert d_lr.max() < 0.5 / 255 and d_hr.max() < 0.5 / 255
    m = seam_mask(*d_lr.shape, tile // scale, overlap // scale)
    assert d_lr[m].mean() < 0.5 / 255 and d_hr.mean() < 0.1 / 255


def test_zero_overlap_shows_seams_the_test_would_catch():
    """Guard for the test above: without overlap the tile borders do differ from whole processing."""
    model = perturbed(2)
    hr = photo(64, 96)
    with torch.inference_mode():
        lr, _ = model.downscale(hr, quantize=False)
    d = (downscale_tiled(model, hr, 32, 0) - lr).abs()[0].amax(0)
    m = seam_mask(*d.shape, 16, 0)
    assert d[m].mean() > 3 * d[~m].mean()


def test_single_window_equals_whole_and_bf16_is_close():
    model = perturbed(2, seed=2)
    hr = photo(40, 56)
    with torch.inference_mode():
        lr, z = model.downscale(hr, quantize=False)
        hr_back = model.upscale(lr, z)
    assert torch.equal(downscale_tiled(model, hr, 64, 16), lr)
    assert torch.equal(upscale_tiled(model, lr, z, 64, 16), hr_back)
    lr_b = downscale_tiled(model, hr, 64, 16, precision="bf16")
    assert lr_b.dtype == torch.float32
    assert 0 < (lr_b - lr).abs().max() < 0.5 / 255


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"tile": 60, "overlap": 16}, "multiples of 8"),
        ({"tile": 64, "overlap": 28}, "multiples of 8"),
        ({"tile": 32, "overlap": 16}, "exceed twice"),
        ({"precision": "fp16"}, "precision"),
    ],
)
def test_bad_arguments(kwargs, msg):
    model = perturbed(2)
    with pytest.raises(ValueError, match=msg):
        downscale_tiled(model, torch.rand(1, 3, 16, 16), **kwargs)
    with pytest.raises(ValueError, match="multiples of 2"):
        downscale_tiled(model, torch.rand(1, 3, 15, 16))
    with pytest.raises(ValueError, match="z"):
        upscale_tiled(model, torch.rand(1, 3, 8, 8), torch.rand(1, 9, 8, 6))

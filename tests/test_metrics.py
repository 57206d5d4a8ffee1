"""Metrics against values worked out by hand and a naive reference SSIM."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from irn_batch.metrics import (
    bicubic_lr,
    bicubic_resize,
    psnr_lr_vs_bicubic,
    psnr_rgb,
    psnr_y,
    rgb_to_y,
    ssim_y,
)

RNG = np.random.default_rng(7)


def test_rgb_to_y_bt601_endpoints_and_weights():
    black, white = np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 3), 255, np.uint8)
    np.testing.assert_allclose(rgb_to_y(black), 16.0)
    np.testing.assert_allclose(rgb_to_y(white), 235.0)  # 16 + 65.481 + 128.553 + 24.966
    red = np.zeros((1, 1, 3), np.float32)
    red[..., 0] = 1.0
    np.testing.assert_allclose(rgb_to_y(red), 16.0 + 65.481, rtol=1e-6)
    x = RNG.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    np.testing.assert_allclose(rgb_to_y(x), rgb_to_y(x / 255.0))  # uint8 and float agree


@pytest.mark.parametrize("k", [1, 3, 10])
def test_psnr_constant_offset(k):
    a = RNG.integers(20, 200, (24, 24, 3)).astype(np.uint8)
    b = a + np.uint8(k)
    # Every channel moves by k levels: RGB error k, Y error k * 219/255.
    assert psnr_rgb(a, b) == pytest.approx(20 * math.log10(255 / k), abs=1e-9)
    assert psnr_y(a, b, crop=2) == pytest.approx(20 * math.log10(255 / (k * 219 / 255)), abs=1e-9)


def test_psnr_identical_is_inf_and_crop_removes_border():
    a = RNG.integers(0, 256, (20, 20, 3)).astype(np.uint8)
    assert psnr_y(a, a, 4) == math.inf and psnr_rgb(a, a) == math.inf
    b = a.copy()
    b[:3] = 0
    b[:, -3:] = 255
    assert psnr_y(a, b, crop=3) == math.inf
    assert psnr_y(a, b, crop=2) < 40
    with pytest.raises(ValueError):
        psnr_y(a, b[:19], 0)
    with pytest.raises(ValueError):
        psnr_y(a, a, crop=10)


def test_ssim_identical_is_one_and_constants_closed_form():
    a = RNG.integers(0, 256, (32, 32, 3)).astype(np.uint8)
    assert ssim_y(a, a, crop=2) == pytest.approx(1.0, abs=1e-12)
    # Two flat images: no variance, so SSIM = (2 mx my + C1) / (mx^2 + my^2 + C1).
    x, y = np.full((20, 20, 3), 100, np.uint8), np.full((20, 20, 3), 140, np.uint8)
    mx, my = 16 + 100 * 219 / 255, 16 + 140 * 219 / 255
    c1 = (0.01 * 255) ** 2
    assert ssim_y(x, y, 0) == pytest.approx((2 * mx * my + c1) / (mx**2 + my**2 + c1), rel=1e-9)


def _ssim_naive(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM written out window by window, with the Gaussian weights built separately."""
    ya, yb = rgb_to_y(a), rgb_to_y(b)
    r = np.arange(11) - 5
    g1 = np.exp(-(r**2) / (2 * 1.5**2))
    w = np.outer(g1, g1) / np.outer(g1, g1).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for i in range(ya.shape[0] - 10):
        for j in range(ya.shape[1] - 10):
            pa, pb = ya[i : i + 11, j : j + 11], yb[i : i + 11, j : j + 11]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
            cov = (w * (pa - ma) * (pb - mb)).sum()
            vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_matches_naive_reference():
    a = RNG.integers(0, 256, (22, 25, 3)).astype(np.uint8)
    noise = RNG.normal(0, 12, a.shape)
    b = np.clip(a + noise, 0, 255).astype(np.uint8)
    got = ssim_y(a, b, crop=2)
    assert got == pytest.approx(_ssim_naive(a[2:-2, 2:-2], b[2:-2, 2:-2]), abs=1e-10)
    assert 0 < got < 0.99
    assert ssim_y(torch.from_numpy(a / 255.0), b, 2) == pytest.approx(got, abs=1e-12)


def test_bicubic_resize_properties():
    flat = np.full((16, 20, 3), 0.3, np.float32)
    np.testing.assert_allclose(bicubic_resize(flat, (8, 10)), 0.3, atol=1e-6)
    x = RNG.random((12, 14, 3)).astype(np.float32)
    np.testing.assert_allclose(bicubic_resize(x, (12, 14)), x, atol=1e-6)  # same size: identity
    small = bicubic_resize(x, (6, 7))
    assert small.shape == (6, 7, 3) and small.dtype == np.float32
    assert small.min() >= 0 and small.max() <= 1  # clamped despite bicubic overshoot
    t = torch.from_numpy(x).permute(2, 0, 1)
    np.testing.assert_allclose(bicubic_resize(t[None], (6, 7))[0].permute(1, 2, 0).numpy(), small, atol=1e-6)
    assert bicubic_resize(t[0], (6, 7)).shape == (6, 7)
    u8 = (x * 255).round().astype(np.uint8)
    np.testing.assert_allclose(bicubic_resize(u8, (6, 7)), bicubic_resize(u8 / np.float32(255), (6, 7)), atol=1e-6)


def test_lr_psnr_against_bicubic():
    hr = RNG.random((15, 17, 3)).astype(np.float32)
    lr = bicubic_lr(hr, 2)
    assert lr.shape == (8, 9, 3)
    assert psnr_lr_vs_bicubic(lr, hr, 2) == math.inf
    assert psnr_lr_vs_bicubic(np.clip(lr + 2 / 255, 0, 1), hr, 2) < 50

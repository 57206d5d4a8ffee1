"""Image quality metrics with the IRN paper's protocol, and the one bicubic resize used everywhere.

Inputs are (H, W, 3) RGB images: uint8 arrays (0..255) or float arrays/tensors in [0, 1]. Everything
is computed in float64 on the CPU.

* ``rgb_to_y``: BT.601 luma, Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 with R, G, B on the
  0..255 scale, i.e. Y = 16 + 65.481 r + 128.553 g + 24.966 b for r, g, b in [0, 1] (the official
  IRN/EDSR evaluation code's formula). Y is on the [0, 255] scale (16..235) and is not rounded.
* ``psnr_y``/``ssim_y``: on Y with ``crop`` pixels removed from every border (the paper crops
  ``scale``). PSNR peak is 255; identical images give ``inf``. SSIM uses an 11x11 Gaussian window
  (sigma 1.5), C1 = (0.01*255)^2, C2 = (0.03*255)^2, valid-region filtering, mean of the SSIM map.
* ``psnr_rgb``: over all three RGB channels on the [0, 255] scale.
* ``bicubic_resize``: ``torch.nn.functional.interpolate(mode="bicubic", antialias=True,
  align_corners=False)`` on [0, 1] floats, clamped to [0, 1]. Training's reference LR, the
  Bicubic & Bicubic baseline, the alpha channel and the evaluation all use this function.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from irn_batch.model.transforms import pad_to_multiple


def _to_float(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """(H, W, C) uint8 or [0, 1] float -> float64 numpy on the [0, 1] scale."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x.astype(np.float64) / 255.0
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"expected uint8 or float pixels, got {x.dtype}")
    return x.astype(np.float64)


def _pair(a, b, crop: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = _to_float(a), _to_float(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if crop < 0 or 2 * crop >= min(a.shape[0], a.shape[1]):
        raise ValueError(f"cannot crop {crop} pixels from each border of a {a.shape[1]}x{a.shape[0]} image")
    if crop:
        a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
    return a, b


def rgb_to_y(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """(H, W, 3) RGB -> (H, W) BT.601 luma on the [0, 255] scale (16..235)."""
    x = _to_float(x)
    return 16.0 + x[..., 0] * 65.481 + x[..., 1] * 128.553 + x[..., 2] * 24.966


def _psnr(mse: float) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def psnr_y(a, b, crop: int) -> float:
    """PSNR (dB) on BT.601 Y with ``crop`` border pixels removed."""
    a, b = _pair(a, b, crop)
    return _psnr(float(np.mean((rgb_to_y(a) - rgb_to_y(b)) ** 2)))


def psnr_rgb(a, b, crop: int = 0) -> float:
    """PSNR (dB) over the RGB channels on the [0, 255] scale."""
    a, b = _pair(a, b, crop)
    return _psnr(float(np.mean(((a - b) * 255.0) ** 2)))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]  # (1, 1, size, size)


def ssim_y(a, b, crop: int) -> float:
    """Mean SSIM on BT.601 Y (scale [0, 255]) with ``crop`` border pixels removed."""
    a, b = _pair(a, b, crop)
    if min(a.shape[0], a.shape[1]) < 11:
        raise ValueError("SSIM needs at least 11x11 pixels after cropping")
    x = torch.from_numpy(rgb_to_y(a))[None, None]
    y = torch.from_numpy(rgb_to_y(b))[None, None]
    w = _gaussian_window()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mu_x**2
    syy = F.conv2d(y * y, w) - mu_y**2
    sxy = F.conv2d(x * y, w) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return float((num / den).mean())


def bicubic_resize(img: np.ndarray | torch.Tensor, size: tuple[int, int]) -> np.ndarray | torch.Tensor:
    """Antialiased bicubic resize to ``size`` = (H, W), clamped to [0, 1].

    Tensors: (B, C, H, W), (C, H, W) or (H, W) floats in [0, 1], returned with the same rank and dtype.
    Arrays: (H, W) or (H, W, C), uint8 or [0, 1] float, returned as float32 in [0, 1].
    """
    if isinstance(img, torch.Tensor):
        rank = img.dim()
        x = img.reshape((1,) * (4 - rank) + tuple(img.shape)) if rank < 4 else img
        y = F.interpolate(x.float(), size=tuple(size), mode="bicubic", antialias=True, align_corners=False)
        y = y.clamp(0.0, 1.0).to(img.dtype)
        return y.reshape(y.shape[4 - rank :]) if rank < 4 else y
    arr = np.asarray(img)
    arr = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
    t = torch.from_numpy(np.ascontiguousarray(arr))
    t = t[None] if t.dim() == 2 else t.permute(2, 0, 1)
    out = bicubic_resize(t, size)
    return (out[0] if arr.ndim == 2 else out.permute(1, 2, 0)).numpy()


def bicubic_lr(hr: np.ndarray | torch.Tensor, scale: int) -> np.ndarray:
    """The bicubic reference LR of an (H, W, 3) image: mirror-padded to a multiple of ``scale`` like
    the model's input, then resized to (ceil(H/s), ceil(W/s)). Returns float32 (h, w, 3) in [0, 1]."""
    x = torch.from_numpy(_to_float(hr).astype(np.float32)).permute(2, 0, 1)[None]
    x = pad_to_multiple(x, scale)
    lr = bicubic_resize(x, (x.shape[2] // scale, x.shape[3] // scale))
    return lr[0].permute(1, 2, 0).numpy()


def psnr_lr_vs_bicubic(lr, hr, scale: int) -> float:
    """RGB PSNR (dB) of a model's LR against the bicubic-downscaled HR (how "normal" the LR looks)."""
    return psnr_rgb(lr, bicubic_lr(hr, scale))

"""Tiled IRN downscale/upscale: peak memory set by the tile size, not the image size.

Each axis is cut into *cores* that partition the image; each core runs inside a ``tile``-long window
that gives it at least ``overlap`` pixels of context on every side that is not an image border (the
last window is aligned to the image end, so all windows have one shape), and only the core of each
window's output is kept. The network's influence decays fast with distance, so the kept cores match
whole-image processing; what differs lies in the discarded margins, not at the pasted seams.

Choice of defaults (measured, docs/results/bench_model.md; ``benchmarks/bench_model.py --study``):
- overlap: with no overlap the LR differs by up to 51 8-bit steps at the seams (random non-trivial
  weights, photo crop). With 16 HR px the x2 LR and HR stay within 0.5/255 of whole-image processing
  and the round-trip Y-PSNR gap is < 0.05 dB, but x4 upscaling still differs by ~3 steps (only 4 LR
  px of context at the coarsest level); 32 px passes every bound for x2 and x4 (tests/test_tiling.py).
- tile: the overlap costs (tile / (tile - 2*overlap))^2 extra work: 1.78x at 256, 1.31x at 512,
  1.14x at 1024. 512 keeps the waste moderate while one window's working set stays ~100-200 MiB
  (x4 dense-block buffer 176 x 256 x 256 fp32 = 46 MiB), so a 24-MP x4 image stays far below 2 GiB.

Windows run on the model's device (under ``torch.autocast`` bf16 for ``precision="bf16"``); results
are gathered into a float32 CPU tensor.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn

from irn_batch.rescale.settings import DEFAULT_OVERLAP, DEFAULT_TILE, PRECISIONS  # noqa: F401 (re-exported)


def _check(tile: int, overlap: int, scale: int, precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if tile % 8 or overlap % 8 or tile % scale or overlap % scale:
        raise ValueError(f"tile ({tile}) and overlap ({overlap}) must be multiples of 8 and of the scale")
    if overlap < 0 or tile - 2 * overlap < 8:
        raise ValueError(f"tile ({tile}) must exceed twice the overlap ({overlap}) by at least 8")


def _spans(size: int, tile: int, overlap: int) -> Iterator[tuple[int, int, int]]:
    """Yield (window_start, core_start, core_end) along one axis of ``size`` units.

    Cores partition [0, size); every window is ``tile`` long (or the whole axis when shorter) and
    leaves at least ``overlap`` units of context on each side of its core that is not an image border.
    The last window is aligned to the end of the axis, so all windows have the same shape.
    """
    if size <= tile:
        yield 0, 0, size
        return
    core = 0
    while True:
        start = max(core - overlap, 0)
        if start + tile >= size:
            yield size - tile, core, size
            return
        end = start + tile - overlap
        yield start, core, end
        core = end


def _precision_ctx(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _run_tiled(
    fn: Callable[..., torch.Tensor],
    inputs: tuple[torch.Tensor, ...],
    lr_size: tuple[int, int],
    in_factor: int,
    out_factor: int,
    out_channels: int,
    tile_lr: int,
    overlap_lr: int,
    device: torch.device,
    precision: str,
) -> torch.Tensor:
    """Grid in LR units; ``inputs`` hold ``in_factor`` pixels per LR unit, the output ``out_factor``."""
    h, w = lr_size
    out = torch.empty((1, out_channels, h * out_factor, w * out_factor), dtype=torch.float32)
    with torch.inference_mode(), _precision_ctx(device, precision):
        for ys, y0, y1 in _spans(h, tile_lr, overlap_lr):
            wh = min(tile_lr, h)
            for xs, x0, x1 in _spans(w, tile_lr, overlap_lr):
                ww = min(tile_lr, w)
                rows = slice(ys * in_factor, (ys + wh) * in_factor)
                cols = slice(xs * in_factor, (xs + ww) * in_factor)
                res = fn(*(t[:, :, rows, cols].to(device=device, dtype=torch.float32) for t in inputs))
                core = res[
                    :, :, (y0 - ys) * out_factor : (y1 - ys) * out_factor,
                    (x0 - xs) * out_factor : (x1 - xs) * out_factor,
                ]
                out[:, :, y0 * out_factor : y1 * out_factor, x0 * out_factor : x1 * out_factor] = core.to(
                    "cpu", torch.float32
                )
    return out


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def downscale_tiled(model: nn.Module, hr: torch.Tensor, tile: int = DEFAULT_TILE,
                    overlap: int = DEFAULT_OVERLAP, precision: str = "fp32") -> torch.Tensor:
    """HR (1, 3, H, W) in [0, 1], H and W multiples of the scale -> unquantized LR (1, 3, H/s, W/s), float32 CPU."""
    s = model.scale
    _check(tile, overlap, s, precision)
    if hr.dim() != 4 or hr.shape[0] != 1 or hr.shape[2] % s or hr.shape[3] % s:
        raise ValueError(f"expected HR of shape (1, C, H, W) with H, W multiples of {s}, got {tuple(hr.shape)}")
    c = model.config.channels

    def lr_of(window: torch.Tensor) -> torch.Tensor:
        lr, _ = model.downscale(window, quantize=False)
        return lr

    lr_size = (hr.shape[2] // s, hr.shape[3] // s)
    return _run_tiled(lr_of, (hr,), lr_size, s, 1, c, tile // s, overlap // s, _model_device(model), precision)


def upscale_tiled(model: nn.Module, lr: torch.Tensor, z: torch.Tensor, tile: int = DEFAULT_TILE,
                  overlap: int = DEFAULT_OVERLAP, precision: str = "fp32") -> torch.Tensor:
    """LR (1, 3, h, w) and z (1, Cz, h, w) -> HR (1, 3, h*s, w*s), float32 CPU.

    z is given whole (drawn once for the full LR), so tiling never changes the random detail.
    """
    s = model.scale
    _check(tile, overlap, s, precision)
    if lr.dim() != 4 or lr.shape[0] != 1 or z.shape[0] != 1 or z.shape[2:] != lr.shape[2:]:
        raise ValueError(f"expected LR (1, C, h, w) and z (1, Cz, h, w), got {tuple(lr.shape)} and {tuple(z.shape)}")
    lr_size = (lr.shape[2], lr.shape[3])
    return _run_tiled(model.upscale, (lr, z), lr_size, 1, s, lr.shape[1], tile // s, overlap // s, _model_device(model), precision)

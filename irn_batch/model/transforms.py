"""Stateless tensor transforms shared by the model, the CLI, training and the pipeline."""
from __future__ import annotations

import torch
import torch.nn.functional as F


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to the 8-bit grid; the gradient passes straight through."""
    return _RoundSTE.apply(x)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Mirror-pad (B, C, H, W) at the bottom/right so H and W are multiples of ``multiple``.

    Reflection needs the padding to be smaller than the side, so very thin images fall back to edge
    replication for the part that reflection cannot cover.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def crop_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Crop (..., H, W) to its top-left ``height`` x ``width``."""
    return x[..., :height, :width]


def sample_z(
    shape: tuple[int, ...],
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """Draw z ~ N(0, temperature^2 I) on the CPU, so a seed gives the same z on every device.

    Temperature 0 gives exact zeros without touching the generator.
    """
    if temperature == 0:
        return torch.zeros(shape)
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator) * temperature

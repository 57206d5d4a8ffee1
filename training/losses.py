"""The IRN training objective, term for term as in the official implementation."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from irn_batch.model import IRN
from irn_batch.transforms import quantize_8bit


@dataclass(frozen=True)
class LossWeights:
    fit: float  # lambda_fit: scale**2 in the paper (4 for x2, 16 for x4, 64 for x8)
    ce: float = 1.0
    rec: float = 1.0

    @classmethod
    def paper(cls, scale: int) -> "LossWeights":
        return cls(fit=float(scale**2))


def fit_loss(y: torch.Tensor, lr_ref: torch.Tensor) -> torch.Tensor:
    """Per-sample sum of squared errors, averaged over the batch: (B,3,h,w) x2 -> scalar."""
    return (y - lr_ref).pow(2).sum(dim=(1, 2, 3)).mean()


def latent_loss(z: torch.Tensor) -> torch.Tensor:
    """sum(z^2) / batch: the negative log-likelihood of z under N(0, I) up to a constant."""
    return z.pow(2).sum() / z.shape[0]


def reconstruction_loss(hr: torch.Tensor, restored: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Charbonnier (smooth L1) summed per sample, averaged over the batch."""
    return torch.sqrt((hr - restored).pow(2) + eps).sum(dim=(1, 2, 3)).mean()


def irn_loss(
    model: IRN,
    hr: torch.Tensor,
    lr_ref: torch.Tensor,
    weights: LossWeights,
    z_scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """The three terms and their weighted sum for one batch.

    hr: (B, 3, H, W) in [0, 1]; lr_ref: (B, 3, H/s, W/s) bicubic reference. The reverse pass gets the
    quantized y and a *fresh* eps ~ N(0, I) scaled by ``z_scale`` (1 = paper; 0 = restore with z = 0).
    """
    out = model(hr)
    c = model.config.channels
    y, z = out[:, :c], out[:, c:]
    l_fit = weights.fit * fit_loss(y, lr_ref)
    l_ce = weights.ce * latent_loss(z)
    if z_scale:
        eps = torch.randn(z.shape, generator=generator).to(z) * z_scale
    else:
        eps = torch.zeros_like(z)
    restored = model.inverse(torch.cat((quantize_8bit(y), eps), 1))
    l_rec = weights.rec * reconstruction_loss(hr, restored)
    return {"loss": l_fit + l_ce + l_rec, "fit": l_fit, "ce": l_ce, "rec": l_rec}

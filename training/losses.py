"""The IRN training objective, term for term as in the official implementation."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from irn_batch.model import IRN
from irn_batch.model.transforms import quantize_8bit
from training.codec import CodecSpec, apply_codec, jpeg_rate_proxy


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
    codec: CodecSpec | None = None,
) -> dict[str, torch.Tensor]:
    """The three terms and their weighted sum for one batch.

    hr: (B, 3, H, W) in [0, 1]; lr_ref: (B, 3, H/s, W/s) bicubic reference. The reverse pass gets the
    quantized y and a *fresh* eps ~ N(0, I) scaled by ``z_scale`` (1 = paper; 0 = restore with z = 0).
    With ``codec`` the reverse pass gets the decoded LR instead (:func:`irn_codec_loss`).
    """
    if codec is not None:
        return irn_codec_loss(model, hr, lr_ref, weights, codec, z_scale, generator)
    out = model(hr)
    c = model.config.channels
    y, z = out[:, :c], out[:, c:]
    l_fit = weights.fit * fit_loss(y, lr_ref)
    l_ce = weights.ce * latent_loss(z)
    if z_scale:
        eps = torch.randn(z.shape, generator=generator).to(z) * z_scale
    else:
        eps = torch.zeros_like(z)
    restored = model.upscale(quantize_8bit(y), z=eps)
    l_rec = weights.rec * reconstruction_loss(hr, restored)
    return {"loss": l_fit + l_ce + l_rec, "fit": l_fit, "ce": l_ce, "rec": l_rec}


def irn_codec_loss(
    model: IRN,
    hr: torch.Tensor,
    lr_ref: torch.Tensor,
    weights: LossWeights,
    codec: CodecSpec,
    z_scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """The IRN objective with a codec between the 8-bit LR and the reverse pass.

    Per sample a codec and a quality are drawn from ``codec`` with ``generator``; the reverse pass restores
    from the decoded LR (term ``rec``) and, when ``codec.clean_weight`` > 0, also from the lossless 8-bit LR
    (term ``rec_clean``, weighted ``clean_weight * weights.rec``), in one batched inverse pass. ``rate`` is
    ``codec.rate_weight`` times the mean estimated JPEG bits of the LR (:func:`training.codec.jpeg_rate_proxy`);
    ``bits`` is that estimate unweighted (reported, not optimised). Returns scalars keyed loss, fit, ce,
    rec, rec_clean, rate, bits, quality (mean drawn quality).
    """
    out = model(hr)
    c = model.config.channels
    y, z = out[:, :c], out[:, c:]
    l_fit = weights.fit * fit_loss(y, lr_ref)
    l_ce = weights.ce * latent_loss(z)
    lr8 = quantize_8bit(y)
    names, quality = codec.draw(hr.shape[0], generator)
    decoded = apply_codec(lr8, names, quality).to(lr8.dtype)
    if z_scale:
        eps = torch.randn(z.shape, generator=generator).to(z) * z_scale
    else:
        eps = torch.zeros_like(z)
    if codec.clean_weight > 0:
        restored = model.upscale(torch.cat((decoded, lr8), 0), z=torch.cat((eps, eps), 0))
        restored, restored_clean = restored.chunk(2, 0)
        l_clean = codec.clean_weight * weights.rec * reconstruction_loss(hr, restored_clean)
    else:
        restored = model.upscale(decoded, z=eps)
        l_clean = torch.zeros((), device=hr.device)
    l_rec = weights.rec * reconstruction_loss(hr, restored)
    bits = jpeg_rate_proxy(lr8, quality).mean()
    l_rate = codec.rate_weight * bits if codec.rate_weight else torch.zeros((), device=hr.device)
    return {
        "loss": l_fit + l_ce + l_rec + l_clean + l_rate,
        "fit": l_fit,
        "ce": l_ce,
        "rec": l_rec,
        "rec_clean": l_clean,
        "rate": l_rate,
        "bits": bits.detach(),
        "quality": quality.float().mean(),
    }

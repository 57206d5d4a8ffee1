"""The codec in the training loop: the 8-bit LR goes through a lossy codec before the inverse pass.

Two kinds of codec layer, both taking and returning (B, 3, h, w) RGB in [0, 1]:

- a real codec (Pillow's JPEG 4:2:0, WebP or AVIF) with a straight-through gradient: the forward pass
  returns exactly what the codec decodes (each sample encoded to bytes and decoded again, as a stored LR
  file would be), the backward pass is the identity (as in the IJCV extension of IRN);
- kornia's differentiable JPEG (``kornia.enhance.jpeg_codec_differentiable``, Reich et al. 2024), whose
  gradient follows the codec's maths.

A codec and a quality are drawn per sample (explicit ``torch.Generator``), so one model learns to serve
a range of qualities. :func:`jpeg_rate_proxy` is a differentiable estimate of an LR's JPEG size (bits),
used as the rate term of the objective: neither codec layer gives one.
"""
from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from kornia.color import rgb_to_ycbcr
from kornia.enhance import jpeg_codec_differentiable
from PIL import Image

from irn_batch.io import container
from irn_batch.io import colour
from irn_batch.io.decode import decode_image
from irn_batch.io.container import Encoding

# Pillow format names of the real codecs; "diffjpeg" is kornia's differentiable JPEG.
REAL_CODECS = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF"}
CODECS = (*REAL_CODECS, "diffjpeg")


def parse_codecs(spec: str) -> tuple[str, ...]:
    """``"none"`` -> (); ``"jpeg"`` -> ("jpeg",); ``"jpeg+webp"`` -> one of them drawn per sample.

    Raises ValueError naming the unknown codec.
    """
    if spec == "none":
        return ()
    names = tuple(n.strip() for n in spec.split("+"))
    for n in names:
        if n not in CODECS:
            raise ValueError(f"unknown codec {n!r} in {spec!r}: expected none or a '+'-list of {', '.join(CODECS)}")
    return names


@dataclass(frozen=True)
class CodecSpec:
    """What the training objective does with the LR (see :func:`training.losses.irn_loss`).

    codecs: codec names, one drawn per sample; quality: inclusive (min, max) of the per-sample quality
    (0-100, each codec's own scale); clean_weight: weight of the restore from the lossless 8-bit LR,
    relative to the restore from the decoded LR; rate_weight: loss per estimated JPEG bit of the LR
    (:func:`jpeg_rate_proxy`).
    """

    codecs: tuple[str, ...]
    quality: tuple[int, int] = (70, 95)
    clean_weight: float = 0.5
    rate_weight: float = 0.0

    def __post_init__(self) -> None:
        if not self.codecs:
            raise ValueError("a CodecSpec needs at least one codec")
        for n in self.codecs:
            if n not in CODECS:
                raise ValueError(f"unknown codec {n!r}: expected one of {', '.join(CODECS)}")
        lo, hi = self.quality
        if not 1 <= lo <= hi <= 100:
            raise ValueError(f"codec quality range {lo}..{hi} must satisfy 1 <= min <= max <= 100")
        if self.clean_weight < 0 or self.rate_weight < 0:
            raise ValueError("codec clean_weight and rate_weight must be >= 0")

    def draw(self, batch: int, generator: torch.Generator | None) -> tuple[list[str], torch.Tensor]:
        """Per-sample codec names and integer qualities, shape (B,), drawn uniformly."""
        lo, hi = self.quality
        quality = torch.randint(lo, hi + 1, (batch,), generator=generator)
        if len(self.codecs) == 1:
            return [self.codecs[0]] * batch, quality
        pick = torch.randint(0, len(self.codecs), (batch,), generator=generator)
        return [self.codecs[i] for i in pick.tolist()], quality


# --- real codecs (Pillow) ---


def encode(rgb: np.ndarray, codec: str, quality: int) -> bytes:
    """(h, w, 3) uint8 -> the codec's file bytes through ``irn_batch.io.container`` (the one module that owns
    every container). JPEG and AVIF are 4:2:0, WebP lossy."""
    return container.encode(rgb, Encoding(codec, int(quality), None if codec == "webp" else "4:2:0"))


def decode(data: bytes) -> np.ndarray:
    """Codec bytes -> (h, w, 3) uint8, decoded by ``irn_batch.io.decode`` as every image is."""
    return colour.to_uint8(decode_image(data).rgb)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(3, h, w) in [0, 1] -> (h, w, 3) uint8 (rounded: exact for values on the 8-bit grid)."""
    return torch.round(x.detach().float().clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


class _RealCodecSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, codecs: list[str], quality: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = [
            torch.from_numpy(decode(encode(to_uint8(x[i]), codecs[i], int(quality[i])))).permute(2, 0, 1)
            for i in range(x.shape[0])
        ]
        return (torch.stack(out).float() / 255.0).to(x.device)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad, None, None


def real_codec(x: torch.Tensor, codecs: list[str], quality: torch.Tensor) -> torch.Tensor:
    """(B, 3, h, w) in [0, 1] -> each sample as the real codec decodes it (float32 on the 8-bit grid).

    Backward: identity (straight-through). codecs: B names from REAL_CODECS; quality: (B,) 0-100.
    """
    return _RealCodecSTE.apply(x, list(codecs), quality)


def diff_jpeg(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """kornia's differentiable JPEG 4:2:0 of (B, 3, h, w) in [0, 1] at per-sample quality (B,)."""
    return jpeg_codec_differentiable(x, quality.to(device=x.device, dtype=torch.float32))


def apply_codec(x: torch.Tensor, codecs: list[str], quality: torch.Tensor) -> torch.Tensor:
    """Each sample of the (B, 3, h, w) LR through its own codec and quality; returns (B, 3, h, w) float32."""
    idx_diff = [i for i, n in enumerate(codecs) if n == "diffjpeg"]
    if len(idx_diff) == len(codecs):
        return diff_jpeg(x, quality).float()
    if not idx_diff:
        return real_codec(x, codecs, quality)
    idx_real = [i for i, n in enumerate(codecs) if n != "diffjpeg"]
    out = [None] * len(codecs)
    parts = (
        (idx_diff, diff_jpeg(x[idx_diff], quality[idx_diff]).float()),
        (idx_real, real_codec(x[idx_real], [codecs[i] for i in idx_real], quality[idx_real])),
    )
    for idx, y in parts:
        for j, i in enumerate(idx):
            out[i] = y[j]
    return torch.stack(out)


# --- rate proxy: estimated JPEG bits of an LR ---


@functools.lru_cache(maxsize=128)
def jpeg_tables(quality: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """libjpeg's luma and chroma quantisation tables (64 values each, natural order) at ``quality``, as
    Pillow writes them (read back from a tiny encoded file, so they are exactly the codec's)."""
    data = encode(np.zeros((8, 8, 3), np.uint8), "jpeg", quality)
    with Image.open(io.BytesIO(data)) as im:
        q = im.quantization
    return tuple(q[0]), tuple(q[1])


@functools.lru_cache(maxsize=4)
def _dct_matrix(n: int = 8) -> torch.Tensor:
    """Orthonormal DCT-II matrix (n, n): JPEG's 8x8 forward DCT is D @ block @ D.T."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.float()


def _blocks(x: torch.Tensor) -> torch.Tensor:
    """(B, h, w) -> (B, N, 8, 8) blocks, replicate-padded at the bottom/right to multiples of 8."""
    b, h, w = x.shape
    ph, pw = -h % 8, -w % 8
    if ph or pw:
        x = F.pad(x[:, None], (0, pw, 0, ph), mode="replicate")[:, 0]
    h, w = x.shape[-2:]
    return x.reshape(b, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4).reshape(b, -1, 8, 8)


def jpeg_rate_proxy(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Differentiable estimate of the JPEG 4:2:0 size of each LR, in bits: (B, 3, h, w) in [0, 1] -> (B,).

    The LR is taken to YCbCr (JPEG's full-range BT.601), chroma averaged 2x2, cut into 8x8 blocks and
    transformed with JPEG's DCT; each coefficient c, divided by the libjpeg table entry Q at the sample's
    quality, costs log2(1 + |c / Q|) bits (about what an entropy coder spends on a quantised coefficient
    of that size; zero for coefficients that quantise to nothing). Not the codec's exact size:
    a smooth stand-in whose gradient says which coefficients cost bytes. Runs in float32 (no autocast).
    """
    with torch.autocast(x.device.type, enabled=False):
        ycc = rgb_to_ycbcr(x.float().clamp(0, 1)) * 255.0  # kornia centres chroma on 0.5, i.e. 127.5
        ycc = torch.cat((ycc[:, :1] - 128.0, ycc[:, 1:] - 127.5), 1)
        chroma = F.avg_pool2d(ycc[:, 1:], 2, ceil_mode=True)
        d = _dct_matrix().to(x.device)
        bits = []
        for i, q in enumerate(quality.tolist()):
            ty, tc = (torch.tensor(t, dtype=torch.float32, device=x.device).view(8, 8) for t in jpeg_tables(int(q)))
            cy = d @ _blocks(ycc[i : i + 1, 0]) @ d.T
            cc = d @ _blocks(chroma[i]) @ d.T
            bits.append(torch.log2(1 + (cy / ty).abs()).sum() + torch.log2(1 + (cc / tc).abs()).sum())
        return torch.stack(bits)

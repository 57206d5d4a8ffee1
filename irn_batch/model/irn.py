"""The Invertible Rescaling Network (Xiao et al., "Invertible Image Rescaling", ECCV 2020)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from irn_batch.model.coupling import AffineCoupling
from irn_batch.model.haar import HaarDownsampling
from irn_batch.model.recovery import LRRecovery
from irn_batch.model.transforms import quantize_8bit, sample_z


@dataclass(frozen=True)
class IRNConfig:
    """Everything needed to rebuild the network; stored in every checkpoint."""

    scale: int = 2
    blocks: int = 8  # coupling blocks per 2x level
    growth: int = 32  # dense-block growth channels
    clamp: float = 1.0
    channels: int = 3
    recovery_width: int = 0  # 0: no LR-recovery module (model/recovery.py) before the reverse pass
    recovery_layers: int = 4

    def __post_init__(self) -> None:
        if self.scale < 2 or self.scale & (self.scale - 1):
            raise ValueError(f"scale must be a power of two >= 2, got {self.scale}")
        if self.blocks < 1 or self.growth < 1:
            raise ValueError("blocks and growth must be positive")
        if self.recovery_width < 0 or (self.recovery_width and self.recovery_layers < 2):
            raise ValueError("recovery_width must be >= 0, and recovery_layers >= 2 when it is not 0")

    @property
    def levels(self) -> int:
        return int(math.log2(self.scale))

    @property
    def out_channels(self) -> int:
        """Channels after all levels: the LR image plus z."""
        return self.channels * self.scale**2

    def to_dict(self) -> dict:
        """The fields as a dict; without the recovery ones when there is no recovery module, so a plain
        network's stored config reads the same as before the module existed."""
        d = asdict(self)
        if not self.recovery_width:
            del d["recovery_width"], d["recovery_layers"]
        return d


class IRN(nn.Module):
    """HR (B, 3, H, W) <-> [LR (B, 3, H/s, W/s), z (B, 3(s^2-1), H/s, W/s)], H and W multiples of s.

    ``forward``/``inverse`` are the raw bijection; ``downscale``/``upscale`` are the rescaling contract
    with an 8-bit LR and a sampled z. With ``config.recovery_width`` > 0, ``upscale`` first passes the LR
    through an :class:`LRRecovery` (``self.recovery``), trained for LRs stored with a lossy codec.
    """

    def __init__(self, config: IRNConfig = IRNConfig()):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c = config.channels
        for _ in range(config.levels):
            layers.append(HaarDownsampling(c))
            c *= 4
            layers.extend(
                AffineCoupling(c, split=config.channels, growth=config.growth, clamp=config.clamp)
                for _ in range(config.blocks)
            )
        self.layers = nn.ModuleList(layers)
        self.recovery = (
            LRRecovery(config.channels, config.recovery_width, config.recovery_layers) if config.recovery_width else None
        )

    @property
    def scale(self) -> int:
        return self.config.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            y = layer.inverse(y)
        return y

    def downscale(self, hr: torch.Tensor, quantize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """HR in [0, 1] -> (LR, z); the LR is on the 8-bit grid unless ``quantize`` is False."""
        out = self(hr)
        c = self.config.channels
        lr = out[:, :c]
        return (quantize_8bit(lr) if quantize else lr), out[:, c:]

    def z_shape(self, lr: torch.Tensor) -> tuple[int, int, int, int]:
        b, _, h, w = lr.shape
        return (b, self.config.out_channels - self.config.channels, h, w)

    def upscale(
        self,
        lr: torch.Tensor,
        z: torch.Tensor | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """LR -> HR. Without ``z``, z ~ N(0, temperature^2 I) is drawn on the CPU from ``generator``.

        lr: (B, 3, h, w) in [0, 1]; z: (B, 3(s^2-1), h, w); returns (B, 3, h*s, w*s). The LR goes through
        the recovery module first where the network has one.
        """
        if self.recovery is not None:
            lr = self.recovery(lr)
        if z is None:
            z = sample_z(self.z_shape(lr), temperature, generator)
        z = z.to(device=lr.device, dtype=lr.dtype)
        return self.inverse(torch.cat((lr, z), 1))

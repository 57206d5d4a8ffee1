"""Haar wavelet downsampling: the fixed, exactly invertible first step of every IRN level."""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


def haar_filters(channels: int) -> torch.Tensor:
    """The four 2x2 Haar filters repeated per channel: shape (4*channels, 1, 2, 2)."""
    base = torch.tensor(
        [
            [[1.0, 1.0], [1.0, 1.0]],  # low-pass
            [[1.0, -1.0], [1.0, -1.0]],  # horizontal detail
            [[1.0, 1.0], [-1.0, -1.0]],  # vertical detail
            [[1.0, -1.0], [-1.0, 1.0]],  # diagonal detail
        ]
    ).unsqueeze(1)
    return base.repeat(channels, 1, 1, 1)


class HaarDownsampling(nn.Module):
    """(B, C, H, W) <-> (B, 4C, H/2, W/2), outputs grouped by filter.

    Channels ``0..C-1`` of the output hold the low-pass image of every input channel, the next C the
    horizontal details, and so on; this is the layout the official IRN code uses, so its weights fit.
    The filters are a buffer, not a parameter: nothing here is trained.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.register_buffer("weight", haar_filters(channels), persistent=False)

    # The Haar step runs outside autocast: it is exact and cheap, and a bf16 cast here would round the
    # image itself to 8 significant bits.
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self._forward(x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(y.device.type, enabled=False):
            return self._inverse(y)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        out = F.conv2d(x, self.weight.to(x.dtype), stride=2, groups=c) / 4.0
        # conv2d groups outputs by input channel (c, 4); regroup them by filter (4, c).
        out = out.reshape(b, c, 4, h // 2, w // 2).transpose(1, 2)
        return out.reshape(b, 4 * c, h // 2, w // 2)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        b, c4, h, w = y.shape
        c = c4 // 4
        x = y.reshape(b, 4, c, h, w).transpose(1, 2).reshape(b, c4, h, w)
        # The filters are orthogonal with squared norm 4, so the transpose undoes the /4 exactly.
        return F.conv_transpose2d(x, self.weight.to(y.dtype), stride=2, groups=c)

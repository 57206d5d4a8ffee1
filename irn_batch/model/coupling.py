"""The affine coupling block of IRN and the dense-block subnets inside it."""
from __future__ import annotations

import torch
from torch import nn


class DenseBlock(nn.Module):
    """Five 3x3 convolutions with dense connections: (B, c_in, H, W) -> (B, c_out, H, W).

    Conv k reads the input concatenated with the outputs of convs 1..k-1. The last conv starts at zero,
    so a freshly built coupling block is the identity.
    """

    def __init__(self, c_in: int, c_out: int, growth: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, growth, 3, padding=1)
        self.conv2 = nn.Conv2d(c_in + growth, growth, 3, padding=1)
        self.conv3 = nn.Conv2d(c_in + 2 * growth, growth, 3, padding=1)
        self.conv4 = nn.Conv2d(c_in + 3 * growth, growth, 3, padding=1)
        self.conv5 = nn.Conv2d(c_in + 4 * growth, c_out, 3, padding=1)
        self.act = nn.LeakyReLU(0.2, inplace=True)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            nn.init.xavier_normal_(conv.weight)
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.conv5.weight)
        nn.init.zeros_(self.conv5.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats.append(self.act(conv(torch.cat(feats, 1))))
        return self.conv5(torch.cat(feats, 1))


class AffineCoupling(nn.Module):
    """IRN's InvBlock: the first ``split`` channels are the LR branch, the rest the detail branch.

    forward:  y1 = x1 + F(x2);  s = clamp*(2*sigmoid(H(y1)) - 1);  y2 = x2*exp(s) + G(y1)
    inverse:  s = clamp*(2*sigmoid(H(y1)) - 1);  x2 = (y2 - G(y1)) / exp(s);  x1 = y1 - F(x2)
    """

    def __init__(self, channels: int, split: int = 3, growth: int = 32, clamp: float = 1.0):
        super().__init__()
        self.split = split
        self.clamp = clamp
        self.F = DenseBlock(channels - split, split, growth)
        self.G = DenseBlock(split, channels - split, growth)
        self.H = DenseBlock(split, channels - split, growth)

    def _log_scale(self, y1: torch.Tensor) -> torch.Tensor:
        return self.clamp * (2.0 * torch.sigmoid(self.H(y1)) - 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[:, : self.split], x[:, self.split :]
        y1 = x1 + self.F(x2)
        y2 = x2 * torch.exp(self._log_scale(y1)) + self.G(y1)
        return torch.cat((y1, y2), 1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y1, y2 = y[:, : self.split], y[:, self.split :]
        x2 = (y2 - self.G(y1)) / torch.exp(self._log_scale(y1))
        x1 = y1 - self.F(x2)
        return torch.cat((x1, x2), 1)

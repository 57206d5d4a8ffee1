"""The affine coupling block of IRN and the dense-block subnets inside it."""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


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
        # Without autograd the buffered path is safe (its in-place writes would break backward) and faster.
        if torch.is_grad_enabled():
            return self.forward_reference(x)
        return self.forward_buffered(x)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The textbook form: concatenate the input and all earlier outputs before every conv."""
        feats = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats.append(self.act(conv(torch.cat(feats, 1))))
        return self.conv5(torch.cat(feats, 1))

    def forward_buffered(self, x: torch.Tensor) -> torch.Tensor:
        """Inference form, same maths: every feature is written once into a preallocated buffer.

        Conv k reads the first channels of the buffer, so nothing is concatenated. The buffer is
        channels-last because oneDNN convolves NHWC directly; NCHW costs a layout reorder per conv, as
        expensive as the conv itself (measured, docs/results/bench_model.md). Under autocast the buffer
        takes the autocast dtype, so bf16 features are stored once and never cast back and forth.
        """
        b, c, h, w = x.shape
        g = self.conv1.out_channels
        dev = x.device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
        buf = torch.empty(
            (b, c + 4 * g, h, w), dtype=dtype, device=x.device, memory_format=torch.channels_last
        )
        buf[:, :c] = x
        n = c
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            buf[:, n : n + g] = F.leaky_relu(conv(buf[:, :n]), 0.2, inplace=True)
            n += g
        return self.conv5(buf).contiguous()


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

    # Subnet outputs are cast back to the coupling's dtype: under bf16 autocast only the convs run in
    # bf16, while the invertible arithmetic (add, exp scale, divide) stays in the input's precision.
    def _log_scale(self, y1: torch.Tensor) -> torch.Tensor:
        return self.clamp * (2.0 * torch.sigmoid(self.H(y1).to(y1.dtype)) - 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[:, : self.split], x[:, self.split :]
        y1 = x1 + self.F(x2).to(x.dtype)
        y2 = x2 * torch.exp(self._log_scale(y1)) + self.G(y1).to(x.dtype)
        return torch.cat((y1, y2), 1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y1, y2 = y[:, : self.split], y[:, self.split :]
        x2 = (y2 - self.G(y1).to(y.dtype)) / torch.exp(self._log_scale(y1))
        x1 = y1 - self.F(x2).to(y.dtype)
        return torch.cat((x1, x2), 1)

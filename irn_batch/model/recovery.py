"""A small LR-recovery network before IRN's reverse pass (the IJCV extension of IRN, Xiao et al. 2023).

A stored LR that went through a lossy codec (JPEG, WebP, AVIF) is no longer the LR the forward pass made;
IRN's reverse pass is a bijection and cannot undo the codec by itself. This residual CNN maps the decoded
LR towards the one the network expects. Its last convolution starts at zero, so a freshly added module is
the identity and fine-tuning starts from the plain network's behaviour.
"""
from __future__ import annotations

import torch
from torch import nn


class LRRecovery(nn.Module):
    """(B, channels, h, w) -> (B, channels, h, w): ``lr + f(lr)``, f = ``layers`` 3x3 convolutions.

    ``width`` feature channels between them, LeakyReLU(0.2); receptive field 2 * layers + 1 LR pixels.
    Parameters: 9 * (channels * width * 2 + width**2 * (layers - 2)) weights + biases.
    """

    def __init__(self, channels: int = 3, width: int = 32, layers: int = 4):
        super().__init__()
        if width < 1 or layers < 2:
            raise ValueError(f"LR recovery needs width >= 1 and layers >= 2, got {width} and {layers}")
        widths = [channels, *[width] * (layers - 1), channels]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(widths, widths[1:]))
        self.act = nn.LeakyReLU(0.2, inplace=True)  # on each conv's fresh output; autograd supports it
        nn.init.zeros_(self.convs[-1].weight)
        nn.init.zeros_(self.convs[-1].bias)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        # channels-last: these thin convolutions (3 -> width -> 3) run about twice as fast that way on CPU
        x = lr.contiguous(memory_format=torch.channels_last)
        for conv in self.convs[:-1]:
            x = self.act(conv(x))
        return (lr + self.convs[-1](x)).contiguous()

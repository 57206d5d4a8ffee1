"""How the network runs, as names and numbers only: precisions and the tile geometry.

Kept free of torch (and of every module that imports it) so that ``irn-batch --help``, ``info`` and
argument errors answer without loading torch, which costs 1.5 s or more on a quiet 2-core machine. The
numbers were chosen by measurement; why is written in ``irn_batch/rescale/tiling.py``, which uses them.
"""
from __future__ import annotations

# fp32: the reference. bf16: convolutions under autocast (docs/results/bench_model.md: 2.0-2.4x faster on a
# CPU with AVX512-BF16, at most 0.049 dB Y-PSNR lost with the shipped weights).
PRECISIONS = ("fp32", "bf16")

DEFAULT_TILE = 512  # HR pixels per window side; a multiple of 8 so every scale up to x8 tiles evenly
DEFAULT_OVERLAP = 32  # HR pixels of context on each side of a kept core; a multiple of 8
MIN_TILE = 2 * DEFAULT_OVERLAP + 8  # a window keeps a core of at least 8 pixels inside the overlaps

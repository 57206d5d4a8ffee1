"""Training data: HR images from any fsspec URL, decoded once, sampled as random aligned HR/LR patches."""
from __future__ import annotations

import io
from dataclasses import dataclass

import fsspec
import numpy as np
import torch
from PIL import Image

from irn_batch.metrics import bicubic_resize
from irn_batch.storage import list_images

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def bicubic_downscale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """The bicubic reference LR: antialiased bicubic (a = -0.5, like MATLAB imresize), (B,3,H,W) -> (B,3,H/s,W/s).

    One function with the evaluation's: ``irn_batch.metrics.bicubic_resize`` (torch, antialias=True).
    """
    h, w = hr.shape[-2:]
    return bicubic_resize(hr, (h // scale, w // scale))


def _decode_rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


@dataclass
class TrainImage:
    hr: torch.Tensor  # (3, H, W) uint8, H and W multiples of the scale
    lr: torch.Tensor  # (3, H/s, W/s) float32 bicubic reference of the whole image


def load_images(
    url: str, scale: int, storage_options: dict | None = None, shard: tuple[int, int] = (0, 1)
) -> list[TrainImage]:
    """Read and decode every image under ``url`` once (shard = (rank, world) keeps every world-th file)."""
    rank, world = shard
    paths = list_images(url, single=False, suffixes=IMAGE_SUFFIXES)[rank::world]
    if not paths:
        raise FileNotFoundError(f"no training images under {url}")
    images = []
    for path in paths:
        with fsspec.open(path, "rb", **(storage_options or {})) as f:
            rgb = _decode_rgb(f.read())
        h, w = (rgb.shape[0] // scale) * scale, (rgb.shape[1] // scale) * scale
        hr = torch.from_numpy(np.array(rgb[:h, :w])).permute(2, 0, 1).contiguous()
        # The reference LR is made from the whole image, so patch borders carry no resampling edge effects.
        lr = bicubic_downscale(hr.unsqueeze(0).float() / 255.0, scale)[0]
        images.append(TrainImage(hr, lr))
    return images


class PatchSampler:
    """Random HR patches with their bicubic LR, flipped/transposed at random (the 8 dihedral variants)."""

    def __init__(self, images: list[TrainImage], patch: int, scale: int, seed: int = 0):
        if patch % scale:
            raise ValueError(f"patch {patch} is not a multiple of scale {scale}")
        usable = [im for im in images if min(im.hr.shape[-2:]) >= patch]
        if not usable:
            raise ValueError(f"no training image is at least {patch}x{patch}")
        self.images, self.patch, self.scale = usable, patch, scale
        self.rng = np.random.default_rng(seed)

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, P, P) HR in [0, 1] and (B, 3, P/s, P/s) LR reference."""
        p, s = self.patch, self.scale
        hrs, lrs = [], []
        for _ in range(batch):
            im = self.images[self.rng.integers(len(self.images))]
            h, w = im.hr.shape[-2:]
            y = int(self.rng.integers(0, (h - p) // s + 1)) * s
            x = int(self.rng.integers(0, (w - p) // s + 1)) * s
            hr = im.hr[:, y : y + p, x : x + p].float() / 255.0
            lr = im.lr[:, y // s : (y + p) // s, x // s : (x + p) // s]
            if self.rng.random() < 0.5:
                hr, lr = hr.flip(-1), lr.flip(-1)
            if self.rng.random() < 0.5:
                hr, lr = hr.flip(-2), lr.flip(-2)
            if self.rng.random() < 0.5:
                hr, lr = hr.transpose(-1, -2), lr.transpose(-1, -2)
            hrs.append(hr)
            lrs.append(lr)
        return torch.stack(hrs), torch.stack(lrs)


def center_crops(images: list[TrainImage], size: int) -> list[TrainImage]:
    """Deterministic centre crops (validation); images smaller than ``size`` are kept whole."""
    out = []
    for im in images:
        h, w = im.hr.shape[-2:]
        s = im.hr.shape[-1] // im.lr.shape[-1]
        ch, cw = min(size, h) // s * s, min(size, w) // s * s
        y, x = (h - ch) // 2 // s * s, (w - cw) // 2 // s * s
        out.append(TrainImage(im.hr[:, y : y + ch, x : x + cw], im.lr[:, y // s : (y + ch) // s, x // s : (x + cw) // s]))
    return out

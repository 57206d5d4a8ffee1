"""Training images from any fsspec URL with storage options, decoded once and cached on local disk.

The disk cache holds each decoded image as an uint8 ``.npy`` (no pickle) named by
sha256(URL + etag or size + mtime), so a restarted job or a second epoch never re-reads object
storage, and a changed object gets a new entry. Undecodable files are skipped with a one-line message.
"""
from __future__ import annotations

import hashlib
import os
import sys
import uuid
from pathlib import Path

import numpy as np
import torch

from irn_batch.io.decode import ImageError, decode_image
from irn_batch.storage import IMAGE_SUFFIXES, StorageConfig, list_images, open_fs
from training.data import TrainImage, bicubic_downscale


def list_image_uris(url: str, storage: StorageConfig | None = None) -> list[str]:
    """Image files directly under ``url`` (sorted URIs without credentials); FileNotFoundError if no folder."""
    return list_images(url, storage, single=False)


def _version(info: dict) -> str:
    """What identifies one version of an object: its etag when the store has one, else size + mtime."""
    for key in ("ETag", "etag", "md5"):
        if info.get(key):
            return str(info[key]).strip('"')
    return f"{info.get('size')}:{info.get('mtime') or info.get('LastModified') or info.get('created')}"


def cache_key(uri: str, info: dict) -> str:
    return hashlib.sha256(f"{uri}\n{_version(info)}".encode()).hexdigest()


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def read_rgb8(uri: str, storage: StorageConfig | None, cache_dir: str | None, max_pixels: int) -> np.ndarray:
    """(H, W, 3) uint8 pixels of one image, from the disk cache when it holds this version."""
    fs, path = open_fs(uri, storage)
    info = fs.info(path)
    cached = Path(cache_dir) / f"{cache_key(uri, info)}.npy" if cache_dir else None
    if cached is not None and cached.is_file():
        try:
            return np.load(cached, allow_pickle=False)
        except (OSError, ValueError):
            pass  # a torn cache file: decode again and overwrite it
    with fs.open(path, "rb") as f:
        data = f.read()
    rgb = _to_uint8(decode_image(data, max_pixels=max_pixels).rgb)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.stem}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, rgb, allow_pickle=False)
        os.replace(tmp, cached)  # atomic: concurrent workers may write the same entry
    return rgb


def to_train_image(rgb: np.ndarray, scale: int) -> TrainImage:
    """Crop to a multiple of the scale and make the whole-image bicubic reference LR."""
    h, w = (rgb.shape[0] // scale) * scale, (rgb.shape[1] // scale) * scale
    hr = torch.from_numpy(np.array(rgb[:h, :w], copy=True)).permute(2, 0, 1).contiguous()
    lr = bicubic_downscale(hr.unsqueeze(0).float() / 255.0, scale)[0]
    return TrainImage(hr, lr)


def load_dataset(
    url: str,
    scale: int,
    storage: StorageConfig | None = None,
    shard: tuple[int, int] = (0, 1),
    cache_dir: str | None = None,
    max_pixels: int = 64_000_000,
    log=lambda msg: print(msg, file=sys.stderr, flush=True),
) -> list[TrainImage]:
    """The images of one shard (rank, world): every world-th file, or all files when there are fewer
    files than workers (the workers' samplers are seeded apart, so they still see different patches)."""
    rank, world = shard
    uris = list_image_uris(url, storage)
    if not uris:
        raise FileNotFoundError(f"{url}: no images ({', '.join(IMAGE_SUFFIXES)})")
    mine = uris[rank::world] if len(uris) >= world else uris
    images = []
    for uri in mine:
        try:
            images.append(to_train_image(read_rgb8(uri, storage, cache_dir, max_pixels), scale))
        except (ImageError, OSError) as e:
            log(f"{uri}: skipped ({e})")
    if not images:
        raise FileNotFoundError(f"{url}: none of the {len(mine)} images of shard {rank}/{world} could be read")
    return images

"""The rate–distortion vocabulary that ``rd`` (the measuring) and ``rd_report`` (the report) share.

The containers and codecs measured and how each is encoded at a quality (``ENCODINGS``: Pillow's encoders
through ``irn_batch.io.container``), their display names, the default quality grids, the thumbnail of the
``thumb+hr`` baseline, a run's :class:`Plan`, method keys and labels, and the mean curve over images
(mean bpp and mean dB at each quality setting: the aggregation behind every BD figure). Adding a codec
means editing this module only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from irn_batch.io.container import Encoding

# Container keys: how each is encoded at quality q.
ENCODINGS = {
    "png": lambda q: Encoding("png"),
    "webp-lossless": lambda q: Encoding("webp", 100),
    "webp": lambda q: Encoding("webp", q),
    "jpeg420": lambda q: Encoding("jpeg", q, "4:2:0"),
    "jpeg444": lambda q: Encoding("jpeg", q, "4:4:4"),
    "avif": lambda q: Encoding("avif", q, "4:2:0"),
    "avif444": lambda q: Encoding("avif", q, "4:4:4"),
}
NAMES = {"png": "PNG", "webp-lossless": "WebP lossless", "webp": "WebP", "jpeg420": "JPEG 4:2:0",
         "jpeg444": "JPEG 4:4:4", "avif": "AVIF 4:2:0", "avif444": "AVIF 4:4:4"}
LOSSLESS = ("png", "webp-lossless")
LOSSY = ("webp", "jpeg420", "jpeg444", "avif", "avif444")
HR_CODECS = ("jpeg420", "jpeg444", "webp", "avif")
# Default grids. Each LR point costs a restore (about 9 s per megapixel on one core), so the LR grids are
# short: 4:2:0 LRs lose IRN's hidden detail and saturate early, so their grids reach lower; the 4:4:4 ones
# keep gaining up to q98. HR points cost only an encode, so the HR grids are long and reach low rates.
LR_QUALITIES = {"webp": (30, 50, 70, 85, 95), "jpeg420": (30, 50, 70, 85, 95), "jpeg444": (50, 70, 85, 95, 98),
                "avif": (30, 50, 70, 90), "avif444": (50, 70, 85, 95)}
HR_QUALITIES = (2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
THUMB_SCALE = 4
THUMB_QUALITY = 85


@dataclass
class Plan:
    """What to measure: scales, the quality grid of each lossy container (LR and HR) and the thumbnail."""

    scales: tuple[int, ...] = (2, 4)
    lr_qualities: dict[str, tuple[int, ...]] = field(default_factory=lambda: dict(LR_QUALITIES))
    hr_qualities: dict[str, tuple[int, ...]] = field(default_factory=lambda: {k: HR_QUALITIES for k in HR_CODECS})
    thumb_quality: int = THUMB_QUALITY
    crop: int | None = None  # centre crop (HR pixels per side) before anything else; None = whole image

    def lr_points(self) -> list[tuple[str, int]]:
        """(container key, quality) of every LR file measured: the lossless ones, then each lossy grid."""
        return [(k, 100) for k in LOSSLESS] + [(k, q) for k in LOSSY for q in self.lr_qualities.get(k, ())]


def method_key(family: str, container: str) -> str:
    """E.g. 'irn webp', 'hr jpeg420', 'thumb+hr avif', 'bicubic png'."""
    return f"{family} {container}"


def label(key: str) -> str:
    """A method's display name, e.g. 'IRN + WebP LR', 'HR JPEG 4:2:0', 'x4 thumbnail + HR AVIF 4:2:0'."""
    family, container = key.split(" ", 1)
    name = NAMES[container]
    return {"irn": f"IRN + {name} LR", "bicubic": f"bicubic + {name} LR", "hr": f"HR {name}",
            "thumb+hr": f"x{THUMB_SCALE} thumbnail + HR {name}"}[family]


def mean_curves(per_image: list[dict[str, list[dict]]]) -> dict[str, list[dict]]:
    """Mean over images of every field of each point, matched by quality (every image has every point)."""
    if not per_image:
        return {}
    out = {}
    for key, points in per_image[0].items():
        mean = []
        for i, p in enumerate(points):
            row = {"quality": p["quality"]}
            for field_name in ("bpp", "bytes", "psnr_y", "psnr_rgb", "lr_psnr_y", "thumb_bytes"):
                if field_name in p:
                    row[field_name] = float(np.mean([img[key][i][field_name] for img in per_image]))
            mean.append(row)
        out[key] = mean
    return out


def settings(plan: Plan) -> dict:
    """What a run measured, as stored in rd.json (runs are merged only when these agree)."""
    return {
        "thumbnail": f"bicubic x{THUMB_SCALE} (metrics.bicubic_lr), JPEG 4:2:0 q{plan.thumb_quality}",
        "crop": plan.crop,
        "lr_qualities": {k: list(v) for k, v in plan.lr_qualities.items()},
        "hr_qualities": {k: list(v) for k, v in plan.hr_qualities.items()},
    }

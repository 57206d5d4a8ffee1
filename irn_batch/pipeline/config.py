"""The ingest and restore jobs' typed configs (loaded with :func:`irn_batch.settings.load_config`).

The settings both jobs have are declared once, in :class:`JobSettings`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from irn_batch.cluster import ActorConfig, RayConfig
from irn_batch.quality_floor import DEFAULT_CANDIDATES
from irn_batch.storage import StorageConfig




@dataclass
class LRConfig:
    """How ingest stores each LR (irn_batch.io.container / irn_batch.quality_floor)."""

    format: str = "png"  # without target_psnr: png | webp | jpeg | avif (JPEG + alpha is stored as WebP)
    quality: Optional[int] = None  # lossy containers; None -> the container's default
    subsampling: Optional[str] = None  # jpeg and avif: "4:2:0" or "4:4:4"; None = jpeg 4:2:0, avif 4:4:4
    # with target_psnr: "container:quality[:subsampling]" strings (or dicts), nominally smallest first
    candidates: list[Any] = field(default_factory=lambda: list(DEFAULT_CANDIDATES))


@dataclass
class JobSettings:
    """What the ingest and the restore job both have: where from and to, the model, the run's bookkeeping."""

    input: str = "???"
    output: str = "???"
    keys: Optional[list[str]] = None  # relative keys under ``input``; None -> every input the job finds
    manifest: Optional[str] = None  # default <output>/_manifest
    model: Optional[str] = None  # checkpoint path/URL; None -> package default weights for ``scale``
    scale: int = 2
    max_input_bytes: int = 256 * 1024 * 1024  # per object read
    job_id: Optional[str] = None
    rows_per_part: int = 1000
    progress_s: float = 10.0
    fail_on_error: bool = False
    actors: ActorConfig = field(default_factory=ActorConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    ray: RayConfig = field(default_factory=RayConfig)


@dataclass
class IngestConfig(JobSettings):
    """``jobs/ingest.py``: HR images under ``input`` -> LR files under ``output`` and a manifest."""

    include: Optional[list[str]] = None  # globs on the key or its file name; None -> every decodable format
    exclude: list[str] = field(default_factory=list)
    match_case: bool = False  # include/exclude globs are case-insensitive unless set
    dry_run: bool = False  # print the plan (inputs, left-out keys) and exit without work
    retry_errors: bool = False
    max_pixels: int = 64_000_000
    lr: LRConfig = field(default_factory=LRConfig)
    target_psnr: Optional[float] = None  # Y-PSNR floor (dB) each restore must reach; None -> lr.format as is
    fallback: str = "original"  # when no candidate reaches target_psnr: original (keep the source) | error
    floor_precision: Optional[str] = None  # the floor's check restores: fp32 | bf16; None -> actors.precision
    # photo metadata kept with each LR (irn_batch.io.photo_metadata): keep | drop_gps | strip
    metadata: str = "keep"


@dataclass
class RestoreConfig(JobSettings):
    """``jobs/restore.py``: ``input`` (a manifest file or folder, an ingest output or an LR prefix) -> HR."""

    glob: Optional[str] = None
    limit: Optional[int] = None
    format: str = "source"  # source (the original's container and key) | png | webp | jpeg | avif | tiff | heif
    quality: Optional[int] = None  # lossy containers; None -> the container's default
    subsampling: Optional[str] = None  # jpeg and avif: "4:2:0" or "4:4:4"; None = jpeg 4:2:0, avif 4:4:4
    temperature: Optional[float] = None  # None -> the checkpoint's default
    redo: bool = False  # restore again even where an intact earlier restore with these settings exists
    # replace objects at output paths that are not this output's own earlier restores (a user's files)
    overwrite: bool = False
    max_input_bytes: int = 64 * 1024 * 1024  # an LR file

"""Typed job configs: YAML defaults + OmegaConf dotlist overrides merged onto dataclass schemas."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from irn_batch.storage import StorageConfig

DEFAULT_INCLUDE = ["*.png", "*.jpg", "*.jpeg", "*.webp", "*.tif", "*.tiff", "*.bmp", "*.gif"]


@dataclass
class RayConfig:
    """Where to run: ``address`` None -> RAY_ADDRESS if set (ray job submit), else an embedded local Ray."""

    address: Optional[str] = None
    num_cpus: Optional[int] = None  # only for the embedded local Ray


@dataclass
class ActorConfig:
    """The model-actor pool: ``pool_size`` None -> one actor per ``num_cpus`` CPUs (or per GPU)."""

    pool_size: Optional[int] = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    batch_size: int = 4
    tile: Optional[int] = None
    precision: str = "fp32"
    retries: int = 2  # tries again on a fresh actor when the actor process dies mid-batch


# Ingest's quality-floor candidates, smallest first (irn_batch.floor.DEFAULT_CANDIDATES, measured).
DEFAULT_LR_CANDIDATES = ["avif:60:4:4:4", "avif:75:4:4:4", "avif:85:4:4:4", "avif:90:4:4:4", "avif:95:4:4:4",
                         "avif:98:4:4:4", "webp:100"]


@dataclass
class LRConfig:
    """How ingest stores each LR (irn_batch.container / irn_batch.floor)."""

    format: str = "png"  # without target_psnr: png | webp | jpeg | avif (JPEG + alpha is stored as WebP)
    quality: Optional[int] = None  # lossy containers; None -> the container's default
    subsampling: str = "4:2:0"  # jpeg and avif
    # with target_psnr: "container:quality[:subsampling]" strings (or dicts), nominally smallest first
    candidates: list[Any] = field(default_factory=lambda: list(DEFAULT_LR_CANDIDATES))


@dataclass
class IngestConfig:
    input: str = "???"
    output: str = "???"
    keys: Optional[list[str]] = None  # relative keys under ``input``; None -> list it with include/exclude
    include: list[str] = field(default_factory=lambda: list(DEFAULT_INCLUDE))
    exclude: list[str] = field(default_factory=list)
    manifest: Optional[str] = None  # default <output>/_manifest
    model: Optional[str] = None  # checkpoint path/URL; None -> package default weights for ``scale``
    scale: int = 2
    retry_errors: bool = False
    max_input_bytes: int = 256 * 1024 * 1024
    max_pixels: int = 64_000_000
    job_id: Optional[str] = None
    rows_per_part: int = 1000
    progress_s: float = 10.0
    fail_on_error: bool = False
    actors: ActorConfig = field(default_factory=ActorConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    lr: LRConfig = field(default_factory=LRConfig)
    target_psnr: Optional[float] = None  # Y-PSNR floor (dB) each restore must reach; None -> lr.format as is
    fallback: str = "original"  # when no candidate reaches target_psnr: original (keep the source) | error
    floor_precision: Optional[str] = None  # the floor's check restores: fp32 | bf16; None -> actors.precision


@dataclass
class RestoreConfig:
    input: str = "???"  # a manifest (file or directory), an ingest output prefix, or an LR prefix
    output: str = "???"
    keys: Optional[list[str]] = None
    glob: Optional[str] = None
    limit: Optional[int] = None
    manifest: Optional[str] = None  # default <output>/_manifest
    model: Optional[str] = None
    scale: int = 2
    format: str = "png"  # png | webp | jpeg | avif | tiff (irn_batch.container)
    quality: Optional[int] = None  # lossy containers; None -> the container's default
    subsampling: str = "4:2:0"  # jpeg and avif
    temperature: Optional[float] = None  # None -> the checkpoint's default
    redo: bool = False  # restore again even where an intact earlier restore with these settings exists
    max_input_bytes: int = 64 * 1024 * 1024
    job_id: Optional[str] = None
    rows_per_part: int = 1000
    progress_s: float = 10.0
    fail_on_error: bool = False
    actors: ActorConfig = field(default_factory=ActorConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    ray: RayConfig = field(default_factory=RayConfig)


def load_config(schema: type, yaml_path: str | Path | None, overrides: list[str] | None = None) -> Any:
    """Schema <- YAML file <- dotlist overrides; unknown keys or wrong types raise an error."""
    cfg = OmegaConf.structured(schema)
    if yaml_path is not None and Path(yaml_path).is_file():
        cfg = OmegaConf.merge(cfg, OmegaConf.load(yaml_path))
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(f"missing required settings: {', '.join(missing)} (pass e.g. {missing[0]}=...)")
    return OmegaConf.to_object(cfg)

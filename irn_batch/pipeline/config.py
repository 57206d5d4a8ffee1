"""Typed job configs: YAML defaults + OmegaConf dotlist overrides merged onto dataclass schemas."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from irn_batch.storage import SECRET_HELP, StorageConfig, secret_setting


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
    subsampling: Optional[str] = None  # jpeg and avif: "4:2:0" or "4:4:4"; None = jpeg 4:2:0, avif 4:4:4
    # with target_psnr: "container:quality[:subsampling]" strings (or dicts), nominally smallest first
    candidates: list[Any] = field(default_factory=lambda: list(DEFAULT_LR_CANDIDATES))


@dataclass
class IngestConfig:
    input: str = "???"
    output: str = "???"
    keys: Optional[list[str]] = None  # relative keys under ``input``; None -> list it with include/exclude
    include: Optional[list[str]] = None  # globs on the key or its file name; None -> every decodable format
    exclude: list[str] = field(default_factory=list)
    match_case: bool = False  # include/exclude globs are case-insensitive unless set
    dry_run: bool = False  # print the plan (inputs, left-out keys) and exit without work
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
    subsampling: Optional[str] = None  # jpeg and avif: "4:2:0" or "4:4:4"; None = jpeg 4:2:0, avif 4:4:4
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


class SecretSettingError(ValueError):
    """A credential given as a setting (dotlist override or YAML key); the message never holds its value."""


def refuse_secrets(overrides: list[str] | None, yaml_cfg: Any = None) -> None:
    """Raise SecretSettingError when an override or a YAML setting carries a credential.

    Checked before anything is logged or Ray starts: a job's command line is recorded by Ray (``ray job
    list``, the driver log), so a secret there is already exposed; the message says where to put it instead.
    """
    settings: list[Any] = list(overrides or [])
    trees = [yaml_cfg] if yaml_cfg is not None else []
    if overrides:
        try:  # also look inside values that are mappings: storage={key: ...}
            trees.append(OmegaConf.from_dotlist(list(overrides)))
        except Exception:  # a malformed override is reported by load_config without its value
            pass
    for tree in trees:
        stack = [("", OmegaConf.to_container(tree, resolve=False))]
        while stack:
            prefix, node = stack.pop()
            if isinstance(node, dict):
                stack.extend((f"{prefix}{k}.", v) for k, v in node.items())
            elif isinstance(node, list):
                stack.extend((prefix, v) for v in node)
            else:
                settings.append((prefix[:-1], node))
    name = secret_setting(settings)
    if name is not None:
        raise SecretSettingError(f"{name}: {SECRET_HELP}")


def load_config(schema: type, yaml_path: str | Path | None, overrides: list[str] | None = None) -> Any:
    """Schema <- YAML file <- dotlist overrides; unknown keys or wrong types raise an error.

    Raises SecretSettingError, before anything else, when a setting carries a credential.
    """
    refuse_secrets(overrides)
    cfg = OmegaConf.structured(schema)
    if yaml_path is not None and Path(yaml_path).is_file():
        loaded = OmegaConf.load(yaml_path)
        refuse_secrets(None, loaded)
        cfg = OmegaConf.merge(cfg, loaded)
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(f"missing required settings: {', '.join(missing)} (pass e.g. {missing[0]}=...)")
    return OmegaConf.to_object(cfg)

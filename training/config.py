"""The training job's typed config: YAML sections ``train``/``data``/``ray``/``run`` + dotlist overrides.

``train`` is :class:`training.loop.TrainConfig` field for field; a key that no dataclass declares, or a
value of the wrong type, is an error (OmegaConf structured merge).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf.errors import OmegaConfBaseException

from irn_batch.settings import load_config
from irn_batch.storage import StorageConfig
from training.loop import TrainConfig


@dataclass
class DataConfig:
    """Where the HR images are (any fsspec URL) and how to cache them."""

    train: str = "???"
    val: Optional[str] = None  # None -> no validation
    # Local folder for decoded images keyed by URL + etag/size (restarts skip object storage); None = memory only.
    cache_dir: Optional[str] = None
    max_pixels: int = 64_000_000  # per image; larger files are skipped with a message
    storage: StorageConfig = field(default_factory=StorageConfig)


@dataclass
class RayTrainConfig:
    """Cluster and workers. ``address`` None -> RAY_ADDRESS (ray job submit) or an embedded local Ray."""

    address: Optional[str] = None
    num_cpus: Optional[int] = None  # embedded local Ray only
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    threads_per_worker: Optional[int] = None  # torch intra-op threads; None -> int(cpus_per_worker)
    max_failures: int = 0  # FailureConfig: restarts from the latest checkpoint after a worker error


@dataclass
class RunSettings:
    """Where checkpoints and reports go and how often."""

    name: str = "irn_train"
    storage_path: str = "runs/ray"  # local folder or s3://bucket/prefix (endpoint from data.storage)
    val_every: int = 1000
    ckpt_every: int = 1000
    log_every: int = 100
    keep_checkpoints: int = 3
    # Stop after this many iterations in this launch (None = run to train.iterations); resumable later.
    stop_after: Optional[int] = None
    # Failure drill: the last worker raises once at this iteration (a marker object under the run's storage
    # records it), so FailureConfig's restart from the latest checkpoint can be seen working.
    fail_at: Optional[int] = None


@dataclass
class JobConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    ray: RayTrainConfig = field(default_factory=RayTrainConfig)
    run: RunSettings = field(default_factory=RunSettings)


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


def load_job_config(yaml_path: str | Path | None, overrides: list[str] | None = None) -> JobConfig:
    """Schema <- YAML <- ``key=value`` overrides, checked: unknown keys, bad types or missing values raise."""
    try:
        job: JobConfig = load_config(JobConfig, yaml_path, overrides, require_file=True)
    except OmegaConfBaseException as e:  # an unknown key or a wrong type: OmegaConf's first line
        where = f"{yaml_path}: " if yaml_path else ""
        raise ConfigError(where + str(e).splitlines()[0]) from None
    except (FileNotFoundError, ValueError) as e:  # no such file, a credential, missing settings
        raise ConfigError(str(e)) from None
    validate_job(job)
    return job


def validate_job(job: JobConfig) -> None:
    """Cross-field checks the schema cannot express."""
    t, r = job.train, job.ray
    if r.num_workers < 1:
        raise ConfigError("ray.num_workers must be >= 1")
    if t.batch % r.num_workers:
        raise ConfigError(f"train.batch {t.batch} (global) is not divisible by ray.num_workers {r.num_workers}")
    if t.patch % t.scale:
        raise ConfigError(f"train.patch {t.patch} is not a multiple of train.scale {t.scale}")
    if t.schedule not in ("multistep", "cosine", "constant"):
        raise ConfigError(f"train.schedule must be multistep, cosine or constant, not {t.schedule!r}")
    try:
        t.codec_spec()
    except ValueError as e:
        raise ConfigError(f"train.codec: {e}") from None
    for key in ("val_every", "ckpt_every", "log_every"):
        if getattr(job.run, key) < 1:
            raise ConfigError(f"run.{key} must be >= 1")
    if "/" in job.run.name or not job.run.name:
        raise ConfigError(f"run.name {job.run.name!r} must be a non-empty name without '/'")


def _submitted_with_working_dir() -> bool:
    """True inside a ``ray job submit --working-dir`` driver (its cwd is a temporary copy of that dir)."""
    try:
        env = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")).get("runtime_env") or {}
    except ValueError:
        return False
    return bool(env.get("working_dir"))


def check_submitted_paths(job: JobConfig) -> None:
    """Under ``ray job submit --working-dir``, relative local paths point into a temporary copy of the
    working dir: checkpoints written there would vanish, so run.storage_path must be absolute or a URL."""
    if not _submitted_with_working_dir():
        return
    url = job.run.storage_path
    if "://" not in url and not os.path.isabs(url):
        raise ConfigError(
            f"run.storage_path {url!r} is relative, i.e. inside ray job submit's temporary working dir; "
            "pass an absolute path or an s3:// URL (e.g. run.storage_path=$PWD/runs/ray)"
        )
    for key in ("train", "val"):
        path = getattr(job.data, key)
        if path and "://" not in path and not os.path.isabs(path) and not os.path.exists(path):
            raise ConfigError(
                f"data.{key} {path!r} is relative and not inside the submitted working dir; "
                f"pass an absolute path or URL (e.g. data.{key}=$PWD/{path})"
            )

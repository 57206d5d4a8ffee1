"""Where the work runs: connecting to Ray, sizing the model-actor pool, and a model on an actor's device.

``RayConfig`` and ``ActorConfig`` are the ``ray`` and ``actors`` sections of the ingest and restore configs
(the on-demand service and multi-node work build on the same pieces).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import ray

from irn_batch.model.checkpoint import Checkpoint, checkpoint_from_bytes


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


def init_ray(rc: RayConfig) -> None:
    """Connect to ``rc.address`` / RAY_ADDRESS (set by ``ray job submit``), else start an embedded Ray.

    ``address="local"`` matters: a bare ``ray.init()`` would attach to any cluster that happens to run on
    this machine.
    """
    if not ray.is_initialized():
        address = rc.address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address)
        else:
            ray.init(address="local", num_cpus=rc.num_cpus, include_dashboard=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the drivers print their own progress lines
    ctx.print_on_execution_start = False
    # Our stages turn every per-record problem into a row and never raise, so a failed block means its
    # worker died; stream_rows finds the records of such blocks and redoes them rather than aborting the job.
    ctx.max_errored_blocks = -1


def pool_size(ac: ActorConfig, n_items: int) -> int:
    """Actors to start: configured, else as many as the cluster's CPUs (or GPUs) allow; at most ``n_items``."""
    if ac.pool_size:
        return max(1, min(ac.pool_size, max(n_items, 1)))
    res = ray.cluster_resources()
    if ac.num_gpus > 0:
        n = int(res.get("GPU", 0) // ac.num_gpus)
        if n == 0:  # Ray would keep the actors pending for ever
            raise ValueError(f"actors.num_gpus={ac.num_gpus} but the cluster has {res.get('GPU', 0):g} GPUs "
                             "(set actors.num_gpus=0, or actors.pool_size for an autoscaling cluster)")
    else:
        n = int(res.get("CPU", 1) // max(ac.num_cpus, 1e-3))
    return max(1, min(n, max(n_items, 1)))


def actor_model(ckpt_bytes: bytes, ac: ActorConfig) -> Checkpoint:
    """The checkpoint an actor holds, on its device, with torch set up for the resources Ray gave it."""
    import torch

    torch.set_num_threads(max(1, int(ac.num_cpus)))  # Ray only sets OMP_NUM_THREADS
    ckpt = checkpoint_from_bytes(ckpt_bytes)
    if ac.num_gpus > 0:
        if not torch.cuda.is_available():
            raise RuntimeError(f"actors.num_gpus={ac.num_gpus} but this actor sees no CUDA device")
        # fixed kernel choice: a restore must give the same bytes on every run on the same device
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        ckpt.model.to("cuda")
    return ckpt


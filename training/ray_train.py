"""IRN training on Ray Train (Train V2 ``TorchTrainer``): one CPU worker to many GPUs, data-parallel.

Each worker samples patches from its own shard of the images (``train.batch`` is the global batch,
split evenly); gradients are averaged by DDP, so the recipe does not depend on the worker count.
Every ``run.ckpt_every`` iterations rank 0 reports a checkpoint directory:

    state.safetensors   model + Adam state + iteration (training.loop.state_bytes), to resume
    model.safetensors   the model as an irn_batch checkpoint (training.loop.export_bytes), to use
    history.json        every logged train/val record so far, so the curve survives restarts

to ``RunConfig(storage_path, name)``. Launching again with the same storage path and name resumes
from the latest one; ``FailureConfig(max_failures)`` restarts failed workers from it too.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import ray
import ray.train
import ray.train.torch
import torch
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from irn_batch.storage import open_fs
from training.config import JobConfig
from training.data import PatchSampler, center_crops
from training.datasource import load_dataset
from training.loop import build_model, export_bytes, load_state_bytes, new_optimizer, state_bytes
from training.loop import train_step, validate
from training.report import training_report

HISTORY = "history.json"


class _Replica:
    """What ``train_step``/``irn_loss`` need from a model, with the forward pass going through DDP.

    The inverse pass uses the same parameters, so DDP's gradient hooks still see each one once per backward.
    """

    def __init__(self, wrapped: torch.nn.Module, net: torch.nn.Module):
        self.wrapped, self.net = wrapped, net
        self.config = net.config

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.wrapped(x)

    def upscale(self, lr: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net.upscale(lr, z=z)

    def train(self, mode: bool = True):
        self.wrapped.train(mode)
        return self

    def parameters(self):
        return self.net.parameters()


def _restore(net, opt) -> tuple[int, list[dict]]:
    """(iteration, history) from the run's latest checkpoint, or (0, []) on a fresh run."""
    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return 0, []
    with ckpt.as_directory() as d:
        start = load_state_bytes((Path(d) / "state.safetensors").read_bytes(), net, opt)
        hist = Path(d) / HISTORY
        history = json.loads(hist.read_text()) if hist.exists() else []
    return start, [r for r in history if r.get("iteration", 0) <= start]


def _report(metrics: dict, files: dict[str, bytes] | None, it: int) -> None:
    """Every rank must call this the same number of times; only rank 0 passes files."""
    if files is None:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory(prefix="irn_ckpt_") as d:
        for name, data in files.items():
            (Path(d) / name).write_bytes(data)
        ckpt = ray.train.Checkpoint.from_directory(d)
        ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=f"checkpoint_{it:08d}")


def _fail_once(job: JobConfig, n: int) -> None:
    """The ``run.fail_at`` drill: raise the first time only (marker object in the run's storage)."""
    fs, root = open_fs(f"{job.run.storage_path.rstrip('/')}/{job.run.name}", job.data.storage)
    marker = f"{root}/.failure_drill_{n}"
    if fs.exists(marker):
        return
    fs.makedirs(root, exist_ok=True)
    fs.pipe_file(marker, b"1")
    raise RuntimeError(f"injected failure at iteration {n} (run.fail_at)")


def train_loop_per_worker(config: dict) -> None:
    """The worker function: ``config["job"]`` is the :class:`JobConfig`."""
    job: JobConfig = config["job"]
    cfg, run, data = job.train, job.run, job.data
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(job.ray.threads_per_worker or max(1, int(job.ray.cpus_per_worker)))
    device = ray.train.torch.get_device()

    net = build_model(cfg).to(device)
    opt = new_optimizer(net, cfg)
    start, history = _restore(net, opt)
    replica = _Replica(ray.train.torch.prepare_model(net), net)
    stop = cfg.iterations if run.stop_after is None else min(cfg.iterations, start + run.stop_after)

    t_load = time.time()
    images = load_dataset(data.train, cfg.scale, data.storage, (rank, world), data.cache_dir, data.max_pixels)
    sampler = PatchSampler(images, cfg.patch, cfg.scale, seed=cfg.seed + 7919 * rank + start)
    val = None
    if rank == 0 and data.val:
        val = center_crops(load_dataset(data.val, cfg.scale, data.storage, (0, 1), data.cache_dir), cfg.val_crop)
    load_s = time.time() - t_load
    gen = torch.Generator().manual_seed(cfg.seed + 1 + 104729 * rank + start)
    local_batch = cfg.batch // world
    if rank == 0:
        print(f"worker 0/{world}: {len(images)} images ({load_s:.1f}s), iterations {start} -> {stop}", flush=True)

    # Wall time accumulated over earlier launches, so the curve's time axis continues across restarts.
    wall0 = max((r.get("wall_s", 0.0) for r in history), default=0.0)
    t0, data_s, step_s, last = time.time(), 0.0, 0.0, {}
    for it in range(start, stop):
        n = it + 1
        t = time.perf_counter()
        hr, lr_ref = sampler.sample(local_batch)
        hr, lr_ref = hr.to(device, non_blocking=True), lr_ref.to(device, non_blocking=True)
        t1 = time.perf_counter()
        if run.fail_at == n and rank == world - 1:
            _fail_once(job, n)
        stats = train_step(replica, opt, hr, lr_ref, cfg, it, gen)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        data_s, step_s = data_s + (t1 - t), step_s + (time.perf_counter() - t1)
        if n % run.log_every == 0 or n == stop:
            done = n - start
            stats.update(kind="train", iteration=n, wall_s=round(wall0 + time.time() - t0, 2),
                         samples_per_s=done * cfg.batch / (time.time() - t0), data_fraction=data_s / (data_s + step_s))
            history.append(stats)
            last = stats
        if val is not None and (n % run.val_every == 0 or n == stop):
            v = validate(net, val, temperature=cfg.restore_temperature, seed=cfg.seed, codec=cfg.val_codec(),
                         quality=cfg.val_quality)
            v.update(kind="val", iteration=n, wall_s=round(wall0 + time.time() - t0, 2))
            history.append(v)
            last = {**last, **{f"val_{k}": x for k, x in v.items() if k not in ("kind", "iteration")}}
            print(json.dumps(v), flush=True)
        if n % run.ckpt_every == 0 or n == stop:
            metrics = {k: x for k, x in last.items() if isinstance(x, (int, float))}
            metrics["iteration"] = n
            files = None
            if rank == 0:
                files = {
                    "state.safetensors": state_bytes(net, opt, n, cfg),
                    "model.safetensors": export_bytes(net, cfg, n),
                    HISTORY: json.dumps(history).encode(),
                }
            _report(metrics, files, n)


def run_storage(job: JobConfig):
    """(storage_path, pyarrow filesystem or None) for RunConfig: s3:// URLs get an S3FileSystem with
    the configured endpoint (so a local S3 server works; credentials from the environment, profile or role), local paths become absolute."""
    url = job.run.storage_path
    if not url.startswith(("s3://", "s3a://")):
        return os.path.abspath(url), None
    import pyarrow.fs as pafs

    s = job.data.storage
    endpoint = s.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    kwargs: dict = {"anonymous": s.anon}
    if s.region:
        kwargs["region"] = s.region
    if endpoint:
        ep = urlparse(endpoint)
        kwargs.update(endpoint_override=ep.netloc or ep.path, scheme=ep.scheme or "https")
    return url.split("://", 1)[1].rstrip("/"), pafs.S3FileSystem(**kwargs)


def build_trainer(job: JobConfig) -> TorchTrainer:
    """The TorchTrainer for ``job`` (call ``.fit()``); Ray must be initialised."""
    r = job.ray
    resources = {"CPU": r.cpus_per_worker, **({"GPU": 1} if r.use_gpu else {})}
    storage_path, fs = run_storage(job)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": job},
        scaling_config=ScalingConfig(num_workers=r.num_workers, use_gpu=r.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=job.run.name,
            storage_path=storage_path,
            storage_filesystem=fs,
            failure_config=FailureConfig(max_failures=r.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=job.run.keep_checkpoints),
        ),
    )


def init_ray(job: JobConfig) -> None:
    """Connect to ``ray.address`` / RAY_ADDRESS (ray job submit), else start an embedded local Ray."""
    if ray.is_initialized():
        return
    address = job.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:  # "local": never attach to some other cluster that happens to run on this machine
        ray.init(address="local", num_cpus=job.ray.num_cpus, include_dashboard=False)


def write_report(job: JobConfig, history: list[dict]) -> str:
    """metrics.csv/json and the PNG curves under <storage_path>/<name>/report/; returns that URL."""
    out = f"{job.run.storage_path.rstrip('/')}/{job.run.name}/report"
    fs, root = open_fs(out, job.data.storage)
    fs.makedirs(root, exist_ok=True)
    for name, data in training_report(history).items():
        fs.pipe_file(f"{root}/{name}", data)
    return out


def read_history(checkpoint: ray.train.Checkpoint | None) -> list[dict]:
    if checkpoint is None:
        return []
    with checkpoint.as_directory() as d:
        p = Path(d) / HISTORY
        return json.loads(p.read_text()) if p.exists() else []


def run_training(job: JobConfig, log=print) -> dict:
    """Fit (or resume) the run, write its report, and return a summary (iteration, best val, paths)."""
    init_ray(job)
    result = build_trainer(job).fit()
    history = read_history(result.checkpoint)
    report = write_report(job, history) if history else None
    summary = {
        "name": job.run.name,
        "iteration": (result.metrics or {}).get("iteration"),
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "report": report,
        "metrics": result.metrics,
    }
    log(json.dumps(summary, default=str))
    return summary

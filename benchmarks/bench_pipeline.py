"""Pipeline benchmark: ingest/restore images/s and MP/s through Ray next to model-only throughput.

Model-only = the same per-image work (decode, network, PNG encode) in this process with torch using
``--cpus`` threads, no Ray and no storage. Pipeline = the Ray ingest/restore jobs on an embedded Ray with
``--cpus`` CPUs and one 1-CPU actor per CPU (Ray gives each actor 1 torch thread), timed end to end
(actor start-up included; Ray itself is started before timing). efficiency = pipeline MP/s / model MP/s;
the steady figures leave out the start-up (time to the first result). Driver memory: peak RSS of this process
during ingests of N and 2N images (flat = no per-image state kept); the local Ray's memory as the peak PSS
sum of its processes (RSS would count the shared object store once per worker). Prints a table, writes JSON.

    .venv/bin/python benchmarks/bench_pipeline.py --images 64 --size 384
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from irn_batch.checkpoint import checkpoint_bytes, checkpoint_from_bytes, default_weights_path  # noqa: E402
from irn_batch.container import encode  # noqa: E402
from irn_batch.imageio import decode_image  # noqa: E402
from irn_batch.model import IRN, IRNConfig  # noqa: E402
from irn_batch.rescale import content_seed, downscale_image, restore_image  # noqa: E402
from irn_batch.manifest import read_manifest  # noqa: E402
from irn_batch.storage import open_fs  # noqa: E402


PAGE = os.sysconf("SC_PAGE_SIZE")


def rss(pid: int) -> int:
    """Resident bytes of a process (Linux /proc), 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def pss(pid: int) -> int:
    """Proportional set size of a process: shared pages (Ray's object store is mapped into every worker)
    are split among the processes that map them, so a sum over processes counts each page once."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """All descendants of ``pid`` (the embedded Ray's processes for the driver), from /proc."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


class RssSampler:
    """Peak RSS of this process, and peak PSS of this process plus its descendants (the local Ray)."""

    def __init__(self, every: float = 0.5):
        self.every, self.pid = every, os.getpid()
        self.driver_peak = self.tree_peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            own = rss(self.pid)
            tree = pss(self.pid) + sum(pss(c) for c in descendants(self.pid))
            self.driver_peak, self.tree_peak = max(self.driver_peak, own), max(self.tree_peak, tree)
            time.sleep(self.every)

    def __enter__(self) -> "RssSampler":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


def make_images(folder: Path, n: int, size: int, seed: int = 0) -> int:
    """n smooth-plus-texture RGB PNGs of size x size; returns total pixels."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        f = rng.uniform(0.01, 0.2, (3, 2))
        img = np.stack([0.5 + 0.4 * np.sin(f[c, 0] * x + i) * np.cos(f[c, 1] * y) for c in range(3)], -1)
        img = np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1)
        Image.fromarray((img * 255).round().astype(np.uint8)).save(folder / f"img{i:04d}.png")
    return n * size * size


def model_only(ckpt_data: bytes, folder: Path, threads: int) -> dict:
    """Same per-image work as the actors, in-process: returns seconds for downscale and restore."""
    torch.set_num_threads(threads)
    ckpt = checkpoint_from_bytes(ckpt_data)
    files = sorted(folder.glob("*.png"))
    datas = [f.read_bytes() for f in files]
    lrs = []
    downscale_image(ckpt, decode_image(datas[0]), z_seed=0)  # warm-up
    t0 = time.perf_counter()
    for d in datas:
        lrs.append(downscale_image(ckpt, decode_image(d), z_seed=content_seed(d))[0])
    t_down = time.perf_counter() - t0
    t0 = time.perf_counter()
    for lr in lrs:
        encode(restore_image(ckpt, lr))
    return {"ingest_s": t_down, "restore_s": time.perf_counter() - t0}


def markdown(res: dict) -> str:
    """The result as a small Markdown report (what the README quotes)."""
    m, p, mm = res["model_only"], res["pipeline"], res["memory_mib"]
    lines = [
        "# Pipeline benchmark (`benchmarks/bench_pipeline.py`)", "",
        f"{res['device']}. Model: {res['model']}. {res['images']} images of {res['size']}x{res['size']} "
        f"({res['megapixels']} MP); {p['actors']} actors of 1 CPU, {p['batch_size']} images per actor call.", "",
        "| | model-only img/s | MP/s | Ray job img/s | MP/s | efficiency | job wall s | first result s "
        "| steady img/s | steady efficiency |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k in ("ingest", "restore"):
        steady = res["steady_efficiency"][k]
        lines.append(f"| {k} | {m[k + '_img_s']:.3f} | {m[k + '_mp_s']:.3f} | {p[k + '_img_s']:.3f} | "
                     f"{p[k + '_mp_s']:.3f} | {res['efficiency'][k]:.2f} | "
                     f"{p[k + '_wall_s']:.1f} | {p[k + '_first_result_s']:.1f} | {p[k + '_steady_img_s'] or 0:.3f} | "
                     f"{steady if steady is None else f'{steady:.2f}'} |")
    lines += [
        "", f"Driver peak RSS {mm['driver_peak_ingest_n']:.0f} MiB ({res['images']} images) vs "
        f"{mm['driver_peak_ingest_2n']:.0f} MiB ({2 * res['images']} images). Driver + local Ray peak PSS "
        f"{mm['ray_tree_pss_peak_ingest']:.0f} MiB (ingest), {mm['ray_tree_pss_peak_restore']:.0f} MiB (restore).",
        "",
        "Model-only runs the same per-image work (decode, network, PNG encode/decode) in one process with torch "
        "using all the cores. The Ray job is timed end to end (planning, actor start-up, reads, writes, "
        "manifest); efficiency = Ray job img/s / model-only img/s. Steady img/s counts the images finished "
        "after the first result over the time they took, i.e. without the fixed start-up.", "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4, help="records per actor call")
    parser.add_argument("--model", default=None, help="checkpoint (default: package weights, else random 8x32)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "bench_pipeline.json"))
    args = parser.parse_args(argv)

    if args.model:
        ckpt_data, source = Path(args.model).read_bytes(), args.model
    elif default_weights_path(2).is_file():
        ckpt_data, source = default_weights_path(2).read_bytes(), "package default x2"
    else:
        ckpt_data, source = checkpoint_bytes(IRN(IRNConfig(scale=2))), "random IRN x2 (8 blocks, growth 32)"
    work = Path(tempfile.mkdtemp(prefix="bench_pipe_"))
    model_path = work / "model.safetensors"
    model_path.write_bytes(ckpt_data)
    n = args.images
    pixels = make_images(work / "in", n, args.size)
    make_images(work / "in2x", 2 * n, args.size, seed=1)
    make_images(work / "warm", 2, 64, seed=2)
    mp = pixels / 1e6

    base = model_only(ckpt_data, work / "in", args.cpus)

    import ray

    from irn_batch.pipeline.config import IngestConfig, RestoreConfig, load_config
    from irn_batch.pipeline.ingest import run_ingest
    from irn_batch.pipeline.restore import run_restore

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    common = [f"model={model_path}", f"actors.pool_size={args.cpus}", "actors.num_cpus=1",
              f"actors.batch_size={args.batch_size}", "progress_s=1e9"]

    def timed(run, cfg) -> dict:
        """Run one job under the memory sampler; add its start-up and steady-state figures."""
        t0 = time.time()
        with RssSampler() as sampler:
            out = run(cfg, log=lambda *_: None)
        fs, path = open_fs(out["manifest"], cfg.storage)
        rows = read_manifest(fs, path).filter(pc.equal(pc.field("job_id"), out["job_id"]))
        done = sorted(rows.column("finished_at").to_pylist())
        out.update(driver_peak=sampler.driver_peak, tree_peak=sampler.tree_peak,
                   first_result_s=done[0] - t0,
                   # images finished after the first one, over the time they took: the rate once all
                   # actors are up, free of Ray and actor start-up
                   steady_img_s=(len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 else None)
        return out

    def ingest(src: str, dst: str) -> dict:
        return timed(run_ingest, load_config(IngestConfig, None, [f"input={work / src}", f"output={work / dst}",
                                                                   *common]))

    ingest("warm", "warm_lr")  # Ray Data and worker imports warmed up once, outside the timings
    rss0 = rss(os.getpid())
    ing = ingest("in", "lr")
    rest = timed(run_restore, load_config(RestoreConfig, None, [f"input={work / 'lr'}", f"output={work / 'hr'}",
                                                                  *common]))
    rss1 = rss(os.getpid())
    ing2 = ingest("in2x", "lr2x")
    ray.shutdown()

    res = {
        "device": f"CPU ({platform.processor() or platform.machine()}), {args.cpus} cores for both sides; "
                  f"load average at end {os.getloadavg()[0]:.1f}",
        "model": source, "images": n, "size": args.size, "megapixels": round(mp, 3),
        "model_only": {"threads": args.cpus, "ingest_s": base["ingest_s"], "restore_s": base["restore_s"]},
        "pipeline": {"actors": args.cpus, "batch_size": args.batch_size, "ok": [ing["ok"], rest["ok"], ing2["ok"]]},
        "efficiency": {}, "steady_efficiency": {},
        "memory_mib": {
            "driver_peak_ingest_n": ing["driver_peak"] / 2**20, "driver_peak_ingest_2n": ing2["driver_peak"] / 2**20,
            "driver_growth_ingest_n": (ing["driver_peak"] - rss0) / 2**20,
            "driver_growth_ingest_2n": (ing2["driver_peak"] - rss1) / 2**20,
            "ray_tree_pss_peak_ingest": ing["tree_peak"] / 2**20,
            "ray_tree_pss_peak_restore": rest["tree_peak"] / 2**20},
    }
    for k, job in (("ingest", ing), ("restore", rest)):
        model_img_s = n / base[k + "_s"]
        res["model_only"].update({k + "_img_s": model_img_s, k + "_mp_s": mp / base[k + "_s"]})
        res["pipeline"].update({k + "_img_s": n / job["wall_s"], k + "_mp_s": mp / job["wall_s"],
                                k + "_wall_s": job["wall_s"], k + "_first_result_s": job["first_result_s"],
                                k + "_steady_img_s": job["steady_img_s"]})
        res["efficiency"][k] = (n / job["wall_s"]) / model_img_s
        res["steady_efficiency"][k] = job["steady_img_s"] / model_img_s if job["steady_img_s"] else None
    print("\n" + markdown(res))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    Path(args.out).with_suffix(".md").write_text(markdown(res))
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

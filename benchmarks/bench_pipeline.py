"""Pipeline benchmark: ingest/restore images/s and MP/s through Ray next to model-only throughput.

Model-only = the same per-image work (decode, network, PNG encode) in this process with torch using
``--cpus`` threads, no Ray and no storage. Pipeline = the Ray ingest/restore jobs on an embedded Ray with
``--cpus`` CPUs and one 1-CPU actor per CPU (Ray gives each actor 1 torch thread), timed end to end
(actor start-up included; Ray itself is started before timing). efficiency = pipeline MP/s / model MP/s;
the steady figures leave out the start-up (time to the first result). Driver memory: peak RSS of this process
during ingests of N and 2N images (flat = no per-image state kept); the local Ray's memory as the peak PSS
sum of its processes (RSS would count the shared object store once per worker). Prints a table, writes JSON.

Quality floor (``--target-psnr``): the same images ingested again with ``target_psnr`` on, in the same run,
right after the plain ingest; the floor's cost is the ratio of the two jobs' img/s (and the same ratio for
the in-process model-only work, which runs ``floor.choose_lr`` with the default candidates). ``--photos``
takes the images as crops of real photos instead of synthetic ones.

    .venv/bin/python benchmarks/bench_pipeline.py --images 64 --size 384
    .venv/bin/python benchmarks/bench_pipeline.py --images 32 --size 256 --photos ../shared/datasets/photos/train \
        --target-psnr 33 --out docs/results/bench_pipeline_floor.json
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

from irn_batch.model.checkpoint import checkpoint_bytes, checkpoint_from_bytes, default_weights_path  # noqa: E402
from irn_batch.io.container import encode  # noqa: E402
from irn_batch.quality_floor import DEFAULT_CANDIDATES, choose_lr, parse_candidate  # noqa: E402
from irn_batch.io.decode import decode_image  # noqa: E402
from irn_batch.model import IRN, IRNConfig  # noqa: E402
from irn_batch.rescale import content_seed, downscale_image, restore_image  # noqa: E402
from irn_batch.storage.manifest import read_manifest  # noqa: E402
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


def crop_photos(src: Path, folder: Path, n: int, size: int) -> int:
    """n size x size RGB PNG crops of the photos in ``src`` (centre first, then corners); returns total pixels."""
    from PIL import Image

    photos = sorted(p for p in src.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    if not photos:
        raise SystemExit(f"{src}: no photos")
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        im = Image.open(photos[i % len(photos)]).convert("RGB")
        w, h = im.size
        right, bottom = max(w - size, 0), max(h - size, 0)
        spots = [(right // 2, bottom // 2), (0, 0), (right, bottom), (0, bottom)]
        x, y = spots[(i // len(photos)) % len(spots)]
        im.crop((x, y, x + size, y + size)).save(folder / f"img{i:04d}.png")
    return n * size * size


def model_only_floor(ckpt_data: bytes, folder: Path, threads: int, target: float) -> dict:
    """The floor's per-image work in-process (decode, downscale, candidates, check restores): seconds and counts."""
    torch.set_num_threads(threads)
    ckpt = checkpoint_from_bytes(ckpt_data)
    cands = [parse_candidate(c) for c in DEFAULT_CANDIDATES]
    datas = [f.read_bytes() for f in sorted(folder.glob("*.png"))]
    from collections import Counter

    chosen, restores, kept = Counter(), [], 0
    t0 = time.perf_counter()
    for d in datas:
        stored = choose_lr(ckpt, decode_image(d), d, z_seed=content_seed(d), target_psnr=target, candidates=cands,
                           prior=chosen)
        chosen[stored.encoding] += 1
        restores.append(stored.restores)
        kept += stored.fell_back
    return {"floor_s": time.perf_counter() - t0, "restores": restores, "fell_back": kept}


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


def floor_result(target: float, n: int, plain: dict, floor: dict, rows: list[dict], base: dict,
                 base_floor: dict) -> dict:
    """The quality floor's cost (img/s with / without, same run) and what it stored."""
    from collections import Counter

    ok = [r for r in rows if r["status"] == "ok"]
    labels = Counter(r["lr_container"] + (f" {r['lr_subsampling']}" if r["lr_container"] in ("jpeg", "avif") else "")
                     + (f" q{r['lr_quality']}" if r["lr_quality"] is not None else "") for r in ok)
    psnrs = [r["restore_psnr"] for r in ok if r["restore_psnr"] is not None and r["restore_psnr"] != float("inf")]
    restores = [r["floor_restores"] for r in ok]
    return {
        "target_psnr": target, "candidates": list(DEFAULT_CANDIDATES),
        "plain_img_s": n / plain["wall_s"], "floor_img_s": n / floor["wall_s"],
        "throughput_ratio": plain["wall_s"] / floor["wall_s"],
        "steady_ratio": (floor["steady_img_s"] / plain["steady_img_s"]
                         if floor["steady_img_s"] and plain["steady_img_s"] else None),
        "model_only_ratio": base["ingest_s"] / base_floor["floor_s"] if base else None,
        "restores_mean": sum(restores) / max(len(restores), 1),
        "restores_hist": dict(sorted(Counter(restores).items())),
        "model_only_restores_mean": (sum(base_floor["restores"]) / max(len(base_floor["restores"]), 1)
                                     if base_floor else None),
        "ok": floor["ok"], "error": floor["error"], "fell_back": floor["fell_back"],
        "bytes_originals": floor["bytes_in"], "bytes_stored_floor": floor["bytes_out"],
        "bytes_stored_png": plain["bytes_out"],
        "stored_ratio_floor": floor["bytes_out"] / floor["bytes_in"],
        "stored_ratio_png": plain["bytes_out"] / plain["bytes_in"],
        "restore_psnr_min": min(psnrs) if psnrs else None,
        "restore_psnr_mean": sum(psnrs) / len(psnrs) if psnrs else None,
        "chosen": dict(labels.most_common()),
    }


def floor_markdown(f: dict) -> list[str]:
    return [
        f"## Quality floor: `target_psnr={f['target_psnr']:g}`", "",
        "Same run, same images, the floor's ingest right after the plain one.", "",
        "| | plain ingest (PNG LR) | ingest with the floor | floor / plain |", "|---|---|---|---|",
        f"| Ray job img/s | {f['plain_img_s']:.3f} | {f['floor_img_s']:.3f} | {f['throughput_ratio']:.2f} |",
        *([f"| model-only img/s ratio | | | {f['model_only_ratio']:.2f} |"] if f["model_only_ratio"] else []),
        f"| steady img/s ratio | | | {'n/a' if f['steady_ratio'] is None else format(f['steady_ratio'], '.2f')} |",
        f"| stored bytes | {f['bytes_stored_png']} | {f['bytes_stored_floor']} | "
        f"{f['bytes_stored_floor'] / max(f['bytes_stored_png'], 1):.2f} |",
        f"| stored / originals ({f['bytes_originals']} bytes of PNG crops) | {f['stored_ratio_png']:.3f} | "
        f"{f['stored_ratio_floor']:.3f} | |", "",
        f"Candidates {', '.join(f['candidates'])}. Check restores per image: mean {f['restores_mean']:.2f} "
        f"(histogram {f['restores_hist']}); fell back (source kept): {f['fell_back']} of {f['ok']}; errors "
        f"{f['error']}. Restore Y-PSNR of the stored LRs: min {f['restore_psnr_min'] or float('nan'):.2f} dB, "
        f"mean {f['restore_psnr_mean'] or float('nan'):.2f} dB. Chosen: {f['chosen']}.", "",
        "The originals here are lossless PNG crops; against camera JPEGs the ratios are higher "
        "(see docs/results/floor_candidates.md).", "",
    ]


def floor_only(args, n: int, mp: float, source: str, ingest, work: Path) -> int:
    """Plain ingest, floor ingest, plain ingest again (machine drift shows as the two plain runs' spread)."""
    import ray

    before = ingest("in", "lr")
    floor = ingest("in", "lr_floor", f"target_psnr={args.target_psnr}")
    after = ingest("in", "lr_after")
    fs, path = open_fs(floor["manifest"], None)
    rows = read_manifest(fs, path).filter(pc.equal(pc.field("job_id"), floor["job_id"])).to_pylist()
    ray.shutdown()
    plain = min(before, after, key=lambda job: job["wall_s"])  # the faster plain run: the less flattering ratio
    res = {"device": f"CPU ({platform.processor() or platform.machine()}), {args.cpus} cores; load average at end "
                     f"{os.getloadavg()[0]:.1f}",
           "model": source, "images": n, "size": args.size, "megapixels": round(mp, 3), "photos": args.photos,
           "floor": floor_result(args.target_psnr, n, plain, floor, rows, None, None)}
    res["floor"]["plain_wall_s_before_after"] = [before["wall_s"], after["wall_s"]]
    text = "\n".join([
        "# Quality floor benchmark (`benchmarks/bench_pipeline.py --floor-only`)", "",
        f"{res['device']}. Model: {source}. {n} images of {args.size}x{args.size} "
        f"({'crops of ' + str(args.photos) if args.photos else 'synthetic'}); {args.cpus} actors of 1 CPU. "
        f"Plain ingest before and after the floor's: {before['wall_s']:.1f} s and {after['wall_s']:.1f} s; "
        "the ratio uses the faster.", "", *floor_markdown(res["floor"])])
    print("\n" + text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    Path(args.out).with_suffix(".md").write_text(text)
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.md')}")
    return 0


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
    if "floor" in res:
        lines += floor_markdown(res["floor"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4, help="records per actor call")
    parser.add_argument("--model", default=None, help="checkpoint (default: package weights, else random 8x32)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "bench_pipeline.json"))
    parser.add_argument("--target-psnr", type=float, default=None,
                        help="also ingest with this quality floor (Y-PSNR dB) and report its cost")
    parser.add_argument("--photos", default=None, help="crop the images from the photos in this folder")
    parser.add_argument("--floor-only", action="store_true",
                        help="with --target-psnr: only plain ingest, floor ingest, plain ingest again (no model-only, "
                             "restore or memory runs); the floor is compared with the faster plain run")
    args = parser.parse_args(argv)
    if args.floor_only and args.target_psnr is None:
        parser.error("--floor-only needs --target-psnr")

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
    if args.photos:
        pixels = crop_photos(Path(args.photos), work / "in", n, args.size)
    else:
        pixels = make_images(work / "in", n, args.size)
    if not args.floor_only:
        make_images(work / "in2x", 2 * n, args.size, seed=1)
    make_images(work / "warm", 2, 64, seed=2)
    mp = pixels / 1e6

    if not args.floor_only:
        base = model_only(ckpt_data, work / "in", args.cpus)
        if args.target_psnr is not None:
            base_floor = model_only_floor(ckpt_data, work / "in", args.cpus, args.target_psnr)

    import ray

    from irn_batch.pipeline.config import IngestConfig, RestoreConfig
    from irn_batch.settings import load_config
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

    def ingest(src: str, dst: str, *extra: str) -> dict:
        return timed(run_ingest, load_config(IngestConfig, None, [f"input={work / src}", f"output={work / dst}",
                                                                   *common, *extra]))

    ingest("warm", "warm_lr")  # Ray Data and worker imports warmed up once, outside the timings
    if args.floor_only:
        return floor_only(args, n, mp, source, ingest, work)
    rss0 = rss(os.getpid())
    ing = ingest("in", "lr")
    if args.target_psnr is not None:  # right after the plain ingest, on the same images
        ing_floor = ingest("in", "lr_floor", f"target_psnr={args.target_psnr}")
        fs, path = open_fs(ing_floor["manifest"], None)
        floor_rows = read_manifest(fs, path).filter(pc.equal(pc.field("job_id"), ing_floor["job_id"])).to_pylist()
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
    if args.target_psnr is not None:
        res["floor"] = floor_result(args.target_psnr, n, ing, ing_floor, floor_rows, base, base_floor)
    print("\n" + markdown(res))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    Path(args.out).with_suffix(".md").write_text(markdown(res))
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

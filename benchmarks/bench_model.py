"""IRN model throughput and memory: downscale/upscale HR megapixels/s and peak RSS growth, x2 and x4,
fp32 and bf16, next to a straightforward port of the official module measured in the same run.

    python benchmarks/bench_model.py                 # full run (long on a 2-core CPU)
    python benchmarks/bench_model.py --quick         # 256^2 and 512^2, one repeat
    python benchmarks/bench_model.py --study         # + overlap/tile/precision-cost study
    python benchmarks/bench_model.py --study-only --out /tmp/study.json
    python benchmarks/bench_model.py --lossy-only --out docs/results/bench_model_lossy.json
                                                     # shipped plain vs compression-aware weights (restore)
Prints Markdown tables and writes docs/results/bench_model.json (``--out`` to change).
Sizes <= 1024 run whole; 4096^2 runs tiled (DEFAULT_TILE/DEFAULT_OVERLAP). Timings are medians of
``--repeats`` runs after one warm-up; this machine is shared, so read ratios rather than absolutes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from irn_batch.model import IRN, IRNConfig  # noqa: E402
from irn_batch.model.coupling import DenseBlock  # noqa: E402
from irn_batch.rescale.tiling import DEFAULT_OVERLAP, DEFAULT_TILE, downscale_tiled, upscale_tiled  # noqa: E402

# ---- baseline: the official module as one would port it (NCHW, torch.cat before every conv) ----


class _Dense(nn.Module):
    def __init__(self, cin: int, cout: int, gc: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(cin + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(cin + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(cin + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(cin + 4 * gc, cout, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x):
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        return self.conv5(torch.cat((x, x1, x2, x3, x4), 1))


class _InvBlock(nn.Module):
    def __init__(self, ch: int, split: int = 3):
        super().__init__()
        self.s1, self.s2 = split, ch - split
        self.F, self.G, self.H = _Dense(self.s2, self.s1), _Dense(self.s1, self.s2), _Dense(self.s1, self.s2)

    def forward(self, x, rev=False):
        x1, x2 = x.narrow(1, 0, self.s1), x.narrow(1, self.s1, self.s2)
        if not rev:
            y1 = x1 + self.F(x2)
            s = torch.sigmoid(self.H(y1)) * 2 - 1
            y2 = x2.mul(torch.exp(s)) + self.G(y1)
        else:
            s = torch.sigmoid(self.H(x1)) * 2 - 1
            y2 = (x2 - self.G(x1)).div(torch.exp(s))
            y1 = x1 - self.F(y2)
        return torch.cat((y1, y2), 1)


class _Haar(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        w = torch.ones(4, 1, 2, 2)
        w[1, 0, 0, 1] = w[1, 0, 1, 1] = -1
        w[2, 0, 1, 0] = w[2, 0, 1, 1] = -1
        w[3, 0, 1, 0] = w[3, 0, 0, 1] = -1
        self.c = c
        self.register_buffer("w", torch.cat([w] * c, 0), persistent=False)

    def forward(self, x, rev=False):
        b, c, h, w = x.shape
        if not rev:
            out = F.conv2d(x, self.w, stride=2, groups=self.c) / 4.0
            return out.reshape(b, self.c, 4, h // 2, w // 2).transpose(1, 2).reshape(b, 4 * self.c, h // 2, w // 2)
        out = x.reshape(b, 4, self.c, h, w).transpose(1, 2).reshape(b, 4 * self.c, h, w)
        return F.conv_transpose2d(out, self.w, stride=2, groups=self.c)


class Baseline(nn.Module):
    """Official IRN network, ported plainly; loads our state_dict (same key layout)."""

    def __init__(self, scale: int, blocks: int = 8):
        super().__init__()
        layers, c = [], 3
        for _ in range(scale.bit_length() - 1):
            layers.append(_Haar(c))
            c *= 4
            layers.extend(_InvBlock(c) for _ in range(blocks))
        self.layers = nn.ModuleList(layers)

    def forward(self, x, rev=False):
        for layer in reversed(self.layers) if rev else self.layers:
            x = layer(x, rev)
        return x


# ---- helpers ----


def perturbed(scale: int, seed: int = 0) -> IRN:
    """Random non-trivial weights: the zero-initialised conv5 layers get N(0, 0.02) weights."""
    torch.manual_seed(seed)
    model = IRN(IRNConfig(scale=scale)).eval()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, DenseBlock):
                mod.conv5.weight.normal_(0.0, 0.02)
    return model


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples this process's RSS every 5 ms: peak growth over the value at entry."""

    def __enter__(self):
        self.start = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_bytes())
        self.growth = self.peak - self.start


def timed(fn, repeats: int, device: torch.device) -> tuple[float, float]:
    """(median seconds, peak RSS growth in MiB) of ``fn`` after one warm-up call."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    fn(), sync()
    times, peak = [], 0
    for _ in range(repeats):
        with PeakRSS() as p:
            t0 = time.perf_counter()
            fn(), sync()
            times.append(time.perf_counter() - t0)
        peak = max(peak, p.growth)
    return sorted(times)[len(times) // 2], peak / 2**20


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def bench_case(scale: int, size: int, precision: str, device: torch.device, repeats: int, baseline: bool) -> dict:
    """One table row: ours (whole or tiled) and, for whole images in fp32, the baseline."""
    model = perturbed(scale).to(device)
    hr = torch.rand(1, 3, size, size)
    mp = size * size / 1e6
    tiled = size > 1024
    with torch.inference_mode():
        lr = torch.rand(1, 3, size // scale, size // scale).mul(255).round().div(255)
        z = torch.randn(1, 3 * scale * scale - 3, size // scale, size // scale)
        if tiled:
            down = lambda: downscale_tiled(model, hr, precision=precision)  # noqa: E731
            up = lambda: upscale_tiled(model, lr, z, precision=precision)  # noqa: E731
        else:
            hrd, lrd, zd = hr.to(device), lr.to(device), z.to(device)

            def down():
                with autocast(device, precision):
                    return model.downscale(hrd)

            def up():
                with autocast(device, precision):
                    return model.upscale(lrd, zd)

        row = {"scale": scale, "size": size, "precision": precision, "tiled": tiled, "device": device.type}
        t, m = timed(down, repeats, device)
        row.update(down_s=t, down_mps=mp / t, down_peak_mib=m)
        t, m = timed(up, repeats, device)
        row.update(up_s=t, up_mps=mp / t, up_peak_mib=m)
        if baseline and not tiled and precision == "fp32":
            base = Baseline(scale).to(device).eval()
            base.load_state_dict(model.state_dict())
            x, y = hr.to(device), torch.cat((lr, z), 1).to(device)
            row["base_down_s"], _ = timed(lambda: base(x), repeats, device)
            row["base_up_s"], _ = timed(lambda: base(y, rev=True), repeats, device)
            row["down_speedup"] = row["base_down_s"] / row["down_s"]
            row["up_speedup"] = row["base_up_s"] / row["up_s"]
    return row


MEMCHECK = r"""
import resource, sys, time, torch
sys.path.insert(0, {root!r}); sys.path.insert(0, {bench!r})
from bench_model import perturbed, rss_bytes
from irn_batch.rescale.tiling import downscale_tiled, upscale_tiled
m, s, h, w = perturbed(4), 4, {h}, {w}
if {mode!r} == "down":
    x = (torch.rand(1, 3, h, w),); fn, out_bytes = downscale_tiled, 3 * h * w // 16 * 4
else:
    x = (torch.rand(1, 3, h // s, w // s), torch.randn(1, 45, h // s, w // s)); fn, out_bytes = upscale_tiled, 3 * h * w * 4
base = rss_bytes()  # model and inputs resident
t0 = time.perf_counter(); fn(m, *x, precision={p!r}); t = time.perf_counter() - t0
print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, out_bytes, t)
"""


def memcheck(h: int, w: int, precision: str, mode: str) -> dict:
    """24-MP x4 tiled downscale or upscale in a fresh process: peak RSS (ru_maxrss) beyond inputs/output."""
    code = MEMCHECK.format(root=str(ROOT), bench=str(Path(__file__).parent), h=h, w=w, p=precision, mode=mode)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    base, peak, out_bytes, t = int(out[0]), int(out[1]), int(out[2]), float(out[3])
    return {"mode": mode, "height": h, "width": w, "precision": precision, "base_rss_mib": base / 2**20,
            "peak_rss_mib": peak / 2**20, "growth_mib": (peak - base - out_bytes) / 2**20, "seconds": t}


# ---- study: overlap vs seam PSNR gap, tile vs speed, precision cost ----


def photo(size: int) -> torch.Tensor:
    """A natural-image centre crop (1, 3, size, size): the shared photo set if present, else a bundled sample."""
    from PIL import Image  # noqa: PLC0415

    cands = sorted(Path("/work/shared/datasets/photos/val").glob("*.png")) or sorted((ROOT / "irn_batch/samples").glob("*.png"))
    best = max(cands[:4], key=lambda f: min(Image.open(f).size))
    img = Image.open(best).convert("RGB")
    w, h = img.size
    side = min(size, w, h) // 8 * 8
    img = img.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    return torch.from_numpy(__import__("numpy").array(img)).permute(2, 0, 1)[None].float() / 255


def models(scale: int) -> list[tuple[str, IRN]]:
    out = [("random", perturbed(scale))]
    path = ROOT / f"irn_batch/weights/irn_x{scale}.safetensors"
    if path.exists():
        from irn_batch.model.checkpoint import load_checkpoint  # noqa: PLC0415

        out.append((f"trained {path.name}", load_checkpoint(path).model.eval()))
    return out


def round_trip(model: IRN, hr: torch.Tensor, precision: str, tile: int | None, overlap: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(8-bit LR, restored HR) with a fixed z (seed 0); tiled when ``tile`` is given."""
    from irn_batch.model.transforms import quantize_8bit, sample_z  # noqa: PLC0415

    with torch.inference_mode():
        if tile:
            lr = quantize_8bit(downscale_tiled(model, hr, tile, overlap, precision))
        else:
            with autocast(torch.device("cpu"), precision):
                lr = model.downscale(hr)[0].float()
        z = sample_z(model.z_shape(lr), 1.0, seed=0)
        if tile:
            return lr, upscale_tiled(model, lr, z, tile, overlap, precision)
        with autocast(torch.device("cpu"), precision):
            return lr, model.upscale(lr, z).float()


def run_study(size: int = 256, tile: int = 128, overlaps=(0, 8, 16, 32, 48), scales=(2, 4), speed: bool = True) -> dict:
    """Seam gap vs overlap and bf16 cost (round-trip Y-PSNR vs the original), tile size vs speed."""
    from irn_batch.metrics import psnr_y  # noqa: PLC0415

    hwc = lambda t: t[0].permute(1, 2, 0).clamp(0, 1)  # noqa: E731
    hr = photo(size)
    res: dict = {"image_side": hr.shape[-1], "tile": tile, "overlap": [], "precision": [], "tile_speed": []}
    for scale in scales:
        for name, model in models(scale):
            lr_w, hr_w = round_trip(model, hr, "fp32", None, 0)
            p_w = psnr_y(hwc(hr_w), hwc(hr), scale)
            for ov in (o for o in overlaps if tile - 2 * o >= 8):
                lr_t, hr_t = round_trip(model, hr, "fp32", tile, ov)
                r = {"scale": scale, "weights": name, "overlap": ov, "psnr_whole": p_w,
                     "gap_db": p_w - psnr_y(hwc(hr_t), hwc(hr), scale),
                     "lr_max_steps": float((lr_t - lr_w).abs().max() * 255),
                     "hr_max_abs": float((hr_t - hr_w).abs().max())}
                res["overlap"].append(r)
                print("overlap", r, flush=True)
            lr_b, hr_b = round_trip(model, hr, "bf16", None, 0)
            r = {"scale": scale, "weights": name, "psnr_fp32": p_w, "psnr_bf16": psnr_y(hwc(hr_b), hwc(hr), scale),
                 "lr_psnr_bf16_vs_fp32": psnr_y(hwc(lr_b), hwc(lr_w), 0)}
            r["cost_db"] = r["psnr_fp32"] - r["psnr_bf16"]
            res["precision"].append(r)
            print("precision", r, flush=True)
    big = torch.rand(1, 3, 1024, 1024)
    model = perturbed(2)
    for t in (128, 256, 512, 1024) if speed else ():
        t0 = time.perf_counter()
        downscale_tiled(model, big, t, 32)
        r = {"scale": 2, "tile": t, "overlap": 32, "down_s_1024": time.perf_counter() - t0}
        res["tile_speed"].append(r)
        print("tile speed", r, flush=True)
    return res


# ---- compression-aware weights: restore speed against the plain ones, and the recovery module's share ----


def conv_macs(model: IRN, lr: torch.Tensor, z: torch.Tensor) -> tuple[int, int]:
    """(multiply-accumulates of all convolutions in one ``upscale``, of those inside ``model.recovery``)."""
    inside = {id(m) for m in model.recovery.modules()} if model.recovery is not None else set()
    counts = [0, 0]

    def hook(mod: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        macs = out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        counts[0] += macs
        counts[1] += macs if id(mod) in inside else 0

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.inference_mode():
            model.upscale(lr, z)
    finally:
        for h in handles:
            h.remove()
    return counts[0], counts[1]


def bench_lossy(scales, size: int, repeats: int) -> list[dict]:
    """Restore (upscale) of a size^2 HR with each scale's shipped plain and lossy weights, fp32, whole image.

    The two are timed alternately in one loop (medians; which goes first alternates too), so machine load
    hits both alike; the allowed slowdown is the recovery module's share of the convolution MACs (issue 9).
    """
    from irn_batch.model.checkpoint import default_weights_path, load_checkpoint  # noqa: PLC0415

    rows = []
    for scale in scales:
        plain_path, lossy_path = default_weights_path(scale), default_weights_path(scale, lossy=True)
        if lossy_path == plain_path:
            continue
        plain, lossy = (load_checkpoint(p).model.eval() for p in (plain_path, lossy_path))
        lr = torch.rand(1, 3, size // scale, size // scale).mul(255).round().div(255)
        z = torch.zeros(1, 3 * scale * scale - 3, size // scale, size // scale)
        times: dict[str, list[float]] = {"plain": [], "lossy": []}
        with torch.inference_mode():
            plain.upscale(lr, z), lossy.upscale(lr, z)  # warm-up
            for i in range(repeats):
                pair = (("plain", plain), ("lossy", lossy))
                for name, model in pair if i % 2 == 0 else pair[::-1]:  # alternate which runs first
                    t0 = time.perf_counter()
                    model.upscale(lr, z)
                    times[name].append(time.perf_counter() - t0)
        med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        total, rec = conv_macs(lossy, lr, z)
        rec_params = sum(p.numel() for p in lossy.recovery.parameters()) if lossy.recovery is not None else 0
        rows.append({
            "scale": scale, "size": size, "repeats": repeats, "plain": plain_path.name, "lossy": lossy_path.name,
            "plain_up_s": med["plain"], "lossy_up_s": med["lossy"],
            "plain_up_mps": size * size / 1e6 / med["plain"], "lossy_up_mps": size * size / 1e6 / med["lossy"],
            "slowdown": med["lossy"] / med["plain"] - 1, "recovery_mac_share": rec / total,
            "recovery_params": rec_params, "params": sum(p.numel() for p in lossy.parameters()),
        })
        print(lossy_table(rows[-1:]).splitlines()[-1], flush=True)
    return rows


def lossy_table(rows: list[dict]) -> str:
    lines = ["| scale | HR size | plain: restore MP/s | lossy: restore MP/s | slowdown | recovery share of MACs "
             "| recovery params / all |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| x{r['scale']} | {r['size']}^2 | {r['plain_up_mps']:.3f} | {r['lossy_up_mps']:.3f} "
                     f"| {100 * r['slowdown']:+.1f}% | {100 * r['recovery_mac_share']:.1f}% "
                     f"| {r['recovery_params']:,} / {r['params']:,} |")
    return "\n".join(lines)


def machine() -> dict:
    cpu = platform.processor()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    return {"cpu": cpu, "threads": torch.get_num_threads(), "avx512_bf16": "avx512_bf16" in flags,
            "amx": "amx_tile" in flags, "torch": torch.__version__, "cuda": torch.cuda.is_available(),
            "loadavg": os.getloadavg()}


def table(rows: list[dict]) -> str:
    head = ("| dev | scale | size | prec | down MP/s | up MP/s | down peak MiB | up peak MiB "
            "| baseline down/up s | speed-up down/up |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        base = f"{r['base_down_s']:.2f} / {r['base_up_s']:.2f}" if "base_down_s" in r else ""
        sp = f"{r['down_speedup']:.2f}x / {r['up_speedup']:.2f}x" if "down_speedup" in r else ""
        size = f"{r['size']}^2" + (" tiled" if r["tiled"] else "")
        lines.append(f"| {r['device']} | x{r['scale']} | {size} | {r['precision']} | {r['down_mps']:.3f} "
                     f"| {r['up_mps']:.3f} | {r['down_peak_mib']:.0f} | {r['up_peak_mib']:.0f} | {base} | {sp} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="256^2 and 512^2 (or --sizes), one repeat, no memory check")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="default 256 1024 4096")
    p.add_argument("--scales", type=int, nargs="+", default=[2, 4])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-memcheck", action="store_true")
    p.add_argument("--memcheck-precision", default="fp32")
    p.add_argument("--study", action="store_true", help="also run the overlap/tile/precision study")
    p.add_argument("--study-only", action="store_true")
    p.add_argument("--study-size", type=int, default=256, help="side of the photo crop for the study")
    p.add_argument("--study-tile", type=int, default=128, help="tile used in the overlap study")
    p.add_argument("--lossy", action="store_true", help="also time the shipped compression-aware weights' restore")
    p.add_argument("--lossy-only", action="store_true")
    p.add_argument("--lossy-size", type=int, default=512, help="HR side for --lossy")
    p.add_argument("--out", type=Path, default=ROOT / "docs/results/bench_model.json")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats, args.no_memcheck = args.sizes or [256, 512], 1, True
    args.sizes = args.sizes or [256, 1024, 4096]
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = []
    result = {"machine": machine(), "tile": DEFAULT_TILE, "overlap": DEFAULT_OVERLAP}
    if args.study or args.study_only:
        result["study"] = run_study(args.study_size, args.study_tile, speed=not args.quick)
    if args.study_only:
        args.sizes, args.no_memcheck = [], True
    if args.lossy or args.lossy_only:
        result["lossy"] = bench_lossy(args.scales, args.lossy_size, max(args.repeats, 5))
        print(lossy_table(result["lossy"]))
    if args.lossy_only:
        args.sizes, args.no_memcheck = [], True
    for dev in devices:
        for scale in args.scales:
            for size in args.sizes:
                for prec in args.precisions:
                    reps = 1 if size > 1024 else args.repeats
                    row = bench_case(scale, size, prec, dev, reps, baseline=True)
                    rows.append(row)
                    print(table([row]).splitlines()[-1], flush=True)
    result["rows"] = rows
    print(table(rows))
    if not args.no_memcheck:
        result["memcheck"] = [memcheck(6000, 4000, args.memcheck_precision, m) for m in ("down", "up")]
        for m in result["memcheck"]:
            print(f"24 MP x4 tiled {m['mode']} {m['precision']}: peak RSS growth {m['growth_mib']:.0f} MiB beyond "
                  f"model, inputs and output ({m['base_rss_mib']:.0f} MiB resident before), {m['seconds']:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

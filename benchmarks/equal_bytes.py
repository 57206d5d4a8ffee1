"""IRN with a lossy LR against the HR stored as JPEG 4:2:0, at equal bytes, on whole images.

    python benchmarks/equal_bytes.py --model today=irn_batch/weights/irn_x4.safetensors \\
        --model lossy=runs/x4_lossy/model.safetensors --data ../shared/datasets/photos/val \\
        --out docs/results/train_lossy_x4

For every image and model: the LR (``irn_batch.rescale.downscale_image``, the product's path) is stored as
JPEG 4:2:0 and WebP at each quality (Pillow, as ``training.codec.encode``) and as the product's lossless PNG;
each decoded LR is restored with ``irn_batch.rescale.restore_image``. Per point: bits per HR pixel (the LR
file's bytes * 8 / HR pixels; the lossy files carry no irn_batch metadata, which would add a few hundred
bytes), restore Y-PSNR (BT.601, ``scale`` border pixels cropped, ``irn_batch.metrics.psnr_y``) and the
decoded LR's Y-PSNR against the bicubic LR (``irn_batch.metrics.bicubic_lr``). The HR itself is stored as
JPEG 4:2:0 over a quality range; its Y-PSNR is interpolated (linearly in bpp, per image) at each IRN point's
bpp, so the comparison is at equal bytes. Writes NAME.json and NAME.md (``--reuse`` merges an earlier run's
models, so each model is measured once).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from irn_batch.model.checkpoint import load_checkpoint  # noqa: E402
from irn_batch.io.lr_file import write_lr
from irn_batch.io.decode import DecodedImage, decode_image  # noqa: E402
from irn_batch.metrics import bicubic_lr, psnr_y  # noqa: E402
from irn_batch.rescale import downscale_image, read_lr, restore_image  # noqa: E402
from training.codec import decode, encode  # noqa: E402
from training.data import list_images  # noqa: E402

HR_JPEG_QUALITIES = (1, 2, 4, 6, 8, 10, 12, 15, 20, 25, 30, 35, 40, 50, 60, 70, 80, 90, 95)


def hr_jpeg_curve(hr8: np.ndarray, scale: int) -> list[dict]:
    """The HR stored as JPEG 4:2:0 at each quality: bpp and Y-PSNR (same crop as the restores)."""
    pixels = hr8.shape[0] * hr8.shape[1]
    rows = []
    for q in HR_JPEG_QUALITIES:
        data = encode(hr8, "jpeg", q)
        rows.append({"quality": q, "bpp": len(data) * 8 / pixels, "psnr_y": psnr_y(decode(data), hr8, scale)})
    return rows


def at_bpp(curve: list[dict], bpp: float) -> float:
    """Y-PSNR of a codec curve at ``bpp`` (linear between its points); NaN outside the curve's range."""
    xs = np.array([r["bpp"] for r in curve])
    ys = np.array([r["psnr_y"] for r in curve])
    order = np.argsort(xs)
    xs, ys = xs[order], ys[order]
    if bpp < xs[0] or bpp > xs[-1]:
        return float("nan")
    return float(np.interp(bpp, xs, ys))


def irn_points(ckpt, hr8: np.ndarray, settings: list[tuple[str, int]]) -> list[dict]:
    """Restore Y-PSNR, bpp and LR-vs-bicubic Y-PSNR for the lossless LR and each (codec, quality)."""
    s = ckpt.model.scale
    h, w = hr8.shape[:2]
    img = DecodedImage(rgb=hr8.astype(np.float32) / 255, alpha=None, width=w, height=h, mode="RGB", format="PNG")
    lr_png, meta = downscale_image(ckpt, img, z_seed=0)
    lr8 = np.round(read_lr(lr_png)[1].rgb * 255).astype(np.uint8)
    bic = bicubic_lr(hr8, s)
    rows = []
    for codec, q in [("png", 0), *settings]:
        if codec == "png":
            data, dec = lr_png, lr8
        else:
            data = encode(lr8, codec, q)
            dec = decode(data)
        restored = restore_image(ckpt, write_lr(dec, meta), temperature=0.0)
        rows.append({
            "codec": codec, "quality": q, "bytes": len(data), "bpp": len(data) * 8 / (h * w),
            "psnr_y": psnr_y(restored, hr8, s), "lr_psnr_y": psnr_y(dec, bic, 0),
        })
    return rows


def measure_image(
    path: str, models: dict[str, str], settings: list[tuple[str, int]], scale: int, threads: int
) -> dict:
    """One image: the HR JPEG curve and every model's points (runs in a worker process)."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    t0 = time.time()
    hr8 = np.round(decode_image(Path(path).read_bytes()).rgb * 255).astype(np.uint8)
    row = {"image": Path(path).name, "pixels": hr8.shape[0] * hr8.shape[1], "hr_jpeg": hr_jpeg_curve(hr8, scale)}
    row["irn"] = {name: irn_points(load_checkpoint(p), hr8, settings) for name, p in models.items()}
    print(f"{row['image']}: {time.time() - t0:.0f} s", flush=True)
    return row


def _curve(rows: list[dict], codec: str) -> list[dict]:
    return [r for r in rows if r["codec"] == codec]


def summarise(per_image: list[dict], models: list[str], reference: str | None) -> list[dict]:
    """Mean over images per (model, codec, quality): the HR JPEG's Y-PSNR at each image's bpp, and the
    reference model's Y-PSNR with the same LR codec at that bpp (both NaN where out of the curve's range)."""
    out = []
    for name in models:
        keys = [(r["codec"], r["quality"]) for r in per_image[0]["irn"][name]]
        for codec, q in keys:
            pts = [(next(r for r in im["irn"][name] if (r["codec"], r["quality"]) == (codec, q)), im) for im in per_image]
            row = {
                "model": name, "codec": codec, "quality": q,
                "bpp": float(np.mean([r["bpp"] for r, _ in pts])),
                "psnr_y": float(np.mean([r["psnr_y"] for r, _ in pts])),
                "lr_psnr_y": float(np.mean([r["lr_psnr_y"] for r, _ in pts])),
            }
            against = {"hr_jpeg": lambda im: im["hr_jpeg"]}
            if reference and name != reference and codec != "png":
                against["reference"] = lambda im: _curve(im["irn"][reference], codec)
            for key, curve_of in against.items():
                at = [at_bpp(curve_of(im), r["bpp"]) for r, im in pts]
                gains = [r["psnr_y"] - a for (r, _), a in zip(pts, at) if np.isfinite(a)]
                row[f"{key}_psnr_y"] = float(np.mean([a for a in at if np.isfinite(a)])) if gains else float("nan")
                row[f"gain_vs_{key}_db"] = float(np.mean(gains)) if gains else float("nan")
                row[f"{key}_images"] = len(gains)
            out.append(row)
    return out


def _cell(r: dict, key: str, images: int) -> str:
    if not r.get(f"{key}_images"):
        return "-"
    n = "" if r[f"{key}_images"] == images else f" ({r[f'{key}_images']} img)"
    return f"{r[f'{key}_psnr_y']:.2f} / {r[f'gain_vs_{key}_db']:+.2f}{n}"


def markdown(summary: list[dict], hr_mean: list[dict], meta: dict) -> str:
    ref = meta.get("reference")
    lines = [
        f"# IRN x{meta['scale']} with a lossy LR vs the HR as JPEG 4:2:0, at equal bytes",
        "",
        f"{meta['images']} whole images from `{meta['data']}`. bpp = LR file bytes * 8 / HR pixels (lossy LR files "
        "without irn_batch metadata; the PNG row is the product's LR file). Y-PSNR: BT.601, "
        f"{meta['scale']} border pixels cropped, restore with z = 0. 'HR JPEG' is the HR stored as JPEG 4:2:0, its "
        "Y-PSNR interpolated per image at that image's IRN bpp (cell: its mean / the mean per-image gain of IRN); "
        "'-' where the point lies outside the curve (HR JPEG cannot go below its quality-1 size: "
        f"{hr_mean[0]['bpp']:.3f} bpp, {hr_mean[0]['psnr_y']:.2f} dB on average). "
        + (f"'{ref} at equal bytes': the `{ref}` model with the same LR codec, interpolated per image at the "
           "point's bpp. " if ref else "")
        + "'LR Y-PSNR' is the decoded LR against the bicubic LR.",
        "",
        "| model | LR | bpp | restore Y-PSNR (dB) | HR JPEG at equal bytes / gain (dB) |"
        + (f" {ref} at equal bytes / gain (dB) |" if ref else "") + " LR Y-PSNR (dB) |",
        "|---|---|---|---|---|" + ("---|" if ref else "") + "---|",
    ]
    for r in summary:
        lr = "PNG (lossless)" if r["codec"] == "png" else f"{r['codec'].upper()} q{r['quality']}"
        cells = [r["model"], lr, f"{r['bpp']:.3f}", f"{r['psnr_y']:.2f}", _cell(r, "hr_jpeg", meta["images"])]
        if ref:
            cells.append(_cell(r, "reference", meta["images"]))
        cells.append(f"{r['lr_psnr_y']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "HR as JPEG 4:2:0 (mean over the images):", "", "| quality | bpp | Y-PSNR (dB) |", "|---|---|---|"]
    lines += [f"| {r['quality']} | {r['bpp']:.3f} | {r['psnr_y']:.2f} |" for r in hr_mean]
    lines += ["", "Models: " + ", ".join(f"`{k}` = `{v}`" for k, v in meta["models"].items()),
              f"Wall time of the last run: {meta['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def plot(summary: list[dict], hr_mean: list[dict], path: Path, scale: int) -> None:
    """Mean bpp against mean restore Y-PSNR per model and LR codec, with the HR JPEG curve (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    hr = [r for r in hr_mean if r["bpp"] <= 0.6]
    ax.plot([r["bpp"] for r in hr], [r["psnr_y"] for r in hr], "k.-", label="HR as JPEG 4:2:0")
    for (model, codec), style in zip(
        sorted({(r["model"], r["codec"]) for r in summary if r["codec"] != "png"}), ["o-", "s-", "o--", "s--", "^-", "v-"]
    ):
        pts = sorted((r["bpp"], r["psnr_y"]) for r in summary if (r["model"], r["codec"]) == (model, codec))
        ax.plot(*zip(*pts), style, label=f"IRN x{scale} {model}, {codec.upper()} LR")
    ax.set_xlabel("bits per HR pixel (mean over images)")
    ax.set_ylabel("Y-PSNR (dB, mean)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", default=[], help="NAME=CHECKPOINT (repeatable)")
    p.add_argument("--reference", help="model NAME the others are compared with at equal bytes (same LR codec)")
    p.add_argument("--data", default="../shared/datasets/photos/val")
    p.add_argument("--jpeg", type=int, nargs="*", default=[50, 60, 70, 80, 90])
    p.add_argument("--webp", type=int, nargs="*", default=[50, 70, 90])
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--workers", type=int, default=1, help="processes, each measuring whole images")
    p.add_argument("--reuse", help="an earlier equal_bytes.json: its models' points are kept (same images)")
    p.add_argument("--out", default="docs/results/train_lossy_x4")
    p.add_argument("--name", default="equal_bytes", help="file name stem of the JSON and Markdown written")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    models = dict(m.split("=", 1) for m in a.model)
    ckpts = {k: load_checkpoint(v) for k, v in models.items()}
    old = json.loads(Path(a.reuse).read_text()) if a.reuse else None
    scales = {c.model.scale for c in ckpts.values()} | ({old["meta"]["scale"]} if old else set())
    if len(scales) != 1:
        raise SystemExit(f"models of different scales (or none): {sorted(scales)}")
    scale = scales.pop()
    settings = [("jpeg", q) for q in a.jpeg] + [("webp", q) for q in a.webp]
    measured = dict(models)  # measured in this run; --reuse adds the earlier run's others
    if old:
        models = {**{k: v for k, v in old["meta"]["models"].items() if k not in models}, **models}
    t0 = time.time()
    if old and not measured:
        a.data = old["meta"]["data"]
    paths = list_images(a.data) if measured else []
    job = [(path, measured, settings, scale, a.threads) for path in paths]
    if not measured:
        per_image = [dict(im, irn={}) for im in old["per_image"]]
    elif a.workers > 1:
        with multiprocessing.get_context("spawn").Pool(a.workers) as pool:
            per_image = pool.starmap(measure_image, job)
    else:
        per_image = [measure_image(*j) for j in job]
    if old:
        for row in per_image:
            earlier = next(im for im in old["per_image"] if im["image"] == row["image"])
            row["irn"] = {**{k: v for k, v in earlier["irn"].items() if k not in row["irn"]}, **row["irn"]}
    summary = summarise(per_image, list(models), a.reference)
    hr_mean = [{"quality": q, "bpp": float(np.mean([im["hr_jpeg"][i]["bpp"] for im in per_image])),
                "psnr_y": float(np.mean([im["hr_jpeg"][i]["psnr_y"] for im in per_image]))}
               for i, q in enumerate(HR_JPEG_QUALITIES)]
    meta = {"reference": a.reference, "scale": scale, "images": len(per_image), "data": a.data, "models": models, "seconds": time.time() - t0,
            "model_ids": {**(old["meta"]["model_ids"] if old else {}), **{k: c.model_id for k, c in ckpts.items()}}}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{a.name}.json").write_text(json.dumps(
        {"meta": meta, "summary": summary, "hr_jpeg": hr_mean, "per_image": per_image}, indent=1))
    (out / f"{a.name}.md").write_text(markdown(summary, hr_mean, meta) + f"\n![RD]({a.name}.png)\n")
    plot(summary, hr_mean, out / f"{a.name}.png", scale)
    print(markdown(summary, hr_mean, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

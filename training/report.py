"""Training metrics as files: CSV and JSON tables and a PNG curve drawn with Pillow (no matplotlib)."""
from __future__ import annotations

import csv
import io
import json
import math

from PIL import Image, ImageDraw

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]


def metrics_csv(rows: list[dict]) -> bytes:
    """Rows (dicts, possibly with different keys) -> CSV with the union of keys as columns."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue().encode()


def metrics_json(rows: list[dict], summary: dict) -> bytes:
    return json.dumps({"summary": summary, "history": rows}, indent=1, allow_nan=True).encode()


def _nice_range(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def curve_png(
    series: dict[str, list[tuple[float, float]]], title: str, xlabel: str = "iteration", size=(800, 480)
) -> bytes:
    """Line plot of named (x, y) series on shared axes, as PNG bytes."""
    series = {k: [(x, y) for x, y in v if math.isfinite(y)] for k, v in series.items()}
    series = {k: v for k, v in series.items() if v}
    W, H = size
    left, right, top, bottom = 70, 20, 40, 60
    im = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(im)
    d.text((left, 12), title, fill="black")
    if not series:
        d.text((W // 2 - 40, H // 2), "no data", fill="black")
        return _png(im)
    xs = [x for v in series.values() for x, _ in v]
    ys = [y for v in series.values() for _, y in v]
    x0, x1 = (min(xs), max(xs)) if max(xs) > min(xs) else (min(xs) - 1, max(xs) + 1)
    y0, y1 = _nice_range(ys)

    def px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (W - left - right), top + (y1 - y) / (y1 - y0) * (H - top - bottom))

    d.rectangle([left, top, W - right, H - bottom], outline="black")
    for i in range(6):  # ticks and grid
        yv = y0 + (y1 - y0) * i / 5
        _, yp = px(x0, yv)
        d.line([left, yp, W - right, yp], fill=(230, 230, 230))
        d.text((5, yp - 6), f"{yv:.2f}", fill="black")
        xv = x0 + (x1 - x0) * i / 5
        xp, _ = px(xv, y0)
        d.text((xp - 15, H - bottom + 5), f"{xv:.0f}", fill="black")
    d.text((W // 2 - 20, H - 25), xlabel, fill="black")
    for i, (name, pts) in enumerate(sorted(series.items())):
        colour = COLOURS[i % len(COLOURS)]
        coords = [px(x, y) for x, y in sorted(pts)]
        if len(coords) > 1:
            d.line(coords, fill=colour, width=2)
        for cx, cy in coords if len(coords) < 60 else []:
            d.ellipse([cx - 2, cy - 2, cx + 2, cy + 2], fill=colour)
        d.text((W - right - 180, top + 8 + 14 * i), name, fill=colour)
    return _png(im)


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def training_report(history: list[dict]) -> dict[str, bytes]:
    """File name -> bytes: metrics.csv, metrics.json, val_curve.png (Y-PSNR) and loss_curve.png."""
    val = [r for r in history if r.get("kind") == "val"]
    train = [r for r in history if r.get("kind") == "train"]
    summary: dict = {"iterations": max((r["iteration"] for r in history), default=0)}
    if val:  # best as training.local keeps it: the lossy restore when a codec is in the loop
        key = "lossy_psnr_y" if all("lossy_psnr_y" in r for r in val) else "psnr_y"
        best = max(val, key=lambda r: r[key])
        summary.update(best_iteration=best["iteration"], **{f"best_{key}": best[key]}, last=val[-1])
    vs = {
        "restore Y-PSNR": [(r["iteration"], r["psnr_y"]) for r in val],
        "bicubic Y-PSNR": [(r["iteration"], r["bicubic_psnr_y"]) for r in val],
    }
    lossy = [r for r in val if "lossy_psnr_y" in r]
    if lossy:  # runs with a codec in the loop (training/codec.py): the restore from a lossy LR too
        vs["restore Y-PSNR, lossy LR"] = [(r["iteration"], r["lossy_psnr_y"]) for r in lossy]
    ls = {"loss": [(r["iteration"], math.log10(r["loss"])) for r in train if r.get("loss", 0) > 0]}
    files = {
        "metrics.csv": metrics_csv(history),
        "metrics.json": metrics_json(history, summary),
        "val_curve.png": curve_png(vs, "validation: mean Y-PSNR (dB)"),
        "loss_curve.png": curve_png(ls, "training loss (log10)"),
    }
    if lossy:
        rate = {"lossy LR bits per HR pixel": [(r["iteration"], r["lossy_bpp"]) for r in lossy]}
        files["rate_curve.png"] = curve_png(rate, "validation: lossy LR file, bits per HR pixel")
    return files

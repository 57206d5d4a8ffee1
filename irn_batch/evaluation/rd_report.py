"""``irn-batch rd`` results: mean curves, Bjøntegaard deltas, and their JSON, Markdown and plots.

``summarise`` turns the per-image points of ``irn_batch.evaluation.rd`` into the result dict written as ``rd.json``:
per scale, each method's mean curve (mean over images at each quality setting of bpp and PSNR), the
BD-rate and BD-PSNR (``irn_batch.evaluation.bdrate``, VCEG-M33) of IRN with each lossy LR container against every
baseline, and the lossless LRs (one operating point each) placed on the baselines' curves.
"""
from __future__ import annotations

import io
import json

import numpy as np

from irn_batch.evaluation.bdrate import Curve, bd_psnr_db, bd_rate_pct, psnr_at_rate, rate_at_psnr, wins
from irn_batch.evaluation.rd_curves import HR_CODECS, LOSSLESS, LOSSY, THUMB_SCALE, label, mean_curves, method_key
from irn_batch.storage import StorageConfig, atomic_write, open_fs

PROTOCOL = {
    "bpp": "all stored bytes of the file (LR: metadata included; thumb+hr: thumbnail + HR file) * 8 / HR pixels",
    "psnr_y": "BT.601 Y-PSNR (dB) against the decoded original, `scale` border pixels cropped (IRN paper)",
    "psnr_rgb": "RGB PSNR (dB) against the decoded original, same crop",
    "lr_psnr_y": "Y-PSNR (dB) of the decoded LR against the bicubic LR (metrics.bicubic_lr, float), no crop",
    "aggregation": "per-image curves, then the mean over images at each quality setting (mean bpp, mean dB); "
                   "BD figures on these mean curves",
    "bd": "VCEG-M33 cubic fits (bjontegaard package, method='cubic') of each curve's points inside the overlap "
          "plus its nearest point beyond each end (at least 4); 'no overlap' instead of extrapolation",
    "encoders": "Pillow (libjpeg-turbo; libwebp method 4; libavif speed 6, Pillow's default)",
    "irn": "LR from the network run once per image and scale, restored with the weights' default temperature",
}


def _curve(points: list[dict]) -> Curve:
    return Curve(tuple(p["bpp"] for p in points), tuple(p["psnr_y"] for p in points), tuple(p["quality"] for p in points))


def _anchors(methods: dict, container: str) -> list[str]:
    keys = [method_key(f, c) for f in ("hr", "thumb+hr") for c in HR_CODECS]
    return [k for k in keys + [method_key("bicubic", container)] if k in methods]


def compare(methods: dict[str, list[dict]]) -> tuple[list[dict], list[dict]]:
    """(BD rows for IRN's lossy LRs, placements of IRN's lossless LRs) against every baseline's mean curve."""
    bd_rows, single = [], []
    for c in LOSSY:
        test = method_key("irn", c)
        if test not in methods:
            continue
        for anchor in _anchors(methods, c):
            a, t = _curve(methods[anchor]), _curve(methods[test])
            r, p = bd_rate_pct(a, t), bd_psnr_db(a, t)
            bd_rows.append({
                "test": test, "anchor": anchor,
                "bd_rate_pct": r.value, "bd_rate_overlap_db": r.overlap, "bd_rate_points": r.points,
                "bd_psnr_db": p.value, "bd_psnr_overlap_bpp": p.overlap, "bd_psnr_points": p.points,
                "note": r.note or p.note, "bd_rate_note": r.note, "bd_psnr_note": p.note,
                "test_ahead_bpp": wins(a, t),
            })
    for c in LOSSLESS:
        test = method_key("irn", c)
        if test not in methods:
            continue
        pt = methods[test][0]
        for anchor in _anchors(methods, c)[:-1]:  # the bicubic lossless LR is a single point too
            a = _curve(methods[anchor])
            need, reach = rate_at_psnr(a, pt["psnr_y"]), psnr_at_rate(a, pt["bpp"])
            single.append({
                "test": test, "anchor": anchor, "bpp": pt["bpp"], "psnr_y": pt["psnr_y"],
                "anchor_bpp_at_same_psnr": need,
                "rate_change_pct": None if need is None else 100 * (pt["bpp"] / need - 1),
                "anchor_psnr_at_same_bpp": reach,
                "psnr_change_db": None if reach is None else pt["psnr_y"] - reach,
            })
    return bd_rows, single


def summarise(per_scale: dict[int, list], images: list[dict], skipped: list[dict], model_ids: dict[int, dict],
              settings: dict, seconds: float) -> dict:
    """The result dict of a run (what ``rd.json`` holds). ``per_scale``: {scale: [per-image {method: points}]};
    ``model_ids``: {scale: {"lossless": id, "lossy": id}}; ``settings``: ``rd_curves.settings(plan)``."""
    scales = {}
    for s, per_image in sorted(per_scale.items()):
        methods = mean_curves(per_image)
        bd_rows, single = compare(methods) if methods else ([], [])
        scales[str(s)] = {
            "scale": s,
            "model_ids": model_ids[s],
            "methods": {k: {"label": label(k), "points": v} for k, v in methods.items()},
            "bd": bd_rows,
            "lossless_lr": single,
        }
    return {
        "protocol": PROTOCOL, **settings,
        "n_images": len(images), "seconds": round(seconds, 1), "skipped": skipped,
        "scales": scales, "images": images,
    }


SETTINGS = ("thumbnail", "crop", "lr_qualities", "hr_qualities")


def merge(results: list[dict]) -> dict:
    """One result from the rd.json of several runs (other scales, other images: ``--shard``).

    Raises ValueError when the runs measured different settings, used different weights for a scale, or
    both measured the same image at the same scale.
    """
    first = results[0]
    for r in results[1:]:
        for key in SETTINGS:
            if r.get(key) != first.get(key):
                raise ValueError(f"the runs differ in {key} ({first.get(key)} vs {r.get(key)})")
    images: dict[str, dict] = {}
    model_ids: dict[int, dict] = {}
    for r in results:
        for s, sc in r["scales"].items():
            if model_ids.setdefault(int(s), sc["model_ids"]) != sc["model_ids"]:
                raise ValueError(f"the runs used different weights for x{s}")
        for img in r["images"]:
            entry = images.setdefault(img["image"], {**{k: v for k, v in img.items() if k != "points"}, "points": {}})
            for s, points in img["points"].items():
                if s in entry["points"]:
                    raise ValueError(f"{img['image']} was measured at x{s} by two of the runs")
                entry["points"][s] = points
    ordered = [images[k] for k in sorted(images)]
    per_scale = {s: [img["points"][str(s)] for img in ordered if str(s) in img["points"]] for s in model_ids}
    skipped = list({r_["image"]: r_ for r in results for r_ in r["skipped"]}.values())
    return summarise(per_scale, ordered, skipped, model_ids, {k: first.get(k) for k in SETTINGS},
                     sum(r.get("seconds", 0) for r in results))


def _fmt(x, spec: str, suffix: str = "") -> str:
    return "–" if x is None else f"{x:{spec}}{suffix}"


def _bd_cell(row: dict) -> str:
    if row["bd_rate_pct"] is None and row["bd_psnr_db"] is None:
        return row["note"] or "–"
    rate = "no overlap" if row["bd_rate_pct"] is None else f"{row['bd_rate_pct']:+.1f}%"
    psnr = "no overlap" if row["bd_psnr_db"] is None else f"{row['bd_psnr_db']:+.2f} dB"
    return f"{rate} / {psnr}"


def _used(row: dict, kind: str) -> str:
    """'BD-rate over a–b dB (IRN q[..], baseline q[..])', or why there is no figure."""
    name, value, overlap, points = (("BD-rate", row["bd_rate_pct"], row["bd_rate_overlap_db"], row["bd_rate_points"])
                                    if kind == "rate" else
                                    ("BD-PSNR", row["bd_psnr_db"], row["bd_psnr_overlap_bpp"], row["bd_psnr_points"]))
    if value is None:
        return f"{name}: {row['bd_rate_note'] if kind == 'rate' else row['bd_psnr_note']}"
    unit, spec = (" dB", ".2f") if kind == "rate" else (" bpp", ".3f")
    qs = lambda v: ",".join(map(str, v))  # noqa: E731
    return (f"{name} over {overlap[0]:{spec}}–{overlap[1]:{spec}}{unit} "
            f"(IRN q{qs(points['test'])}, baseline q{qs(points['anchor'])})")


def _ahead(row: dict) -> str:
    if row["bd_psnr_overlap_bpp"] is None and row["bd_psnr_db"] is None:
        return "–"
    return ", ".join(f"{a:.3f}–{b:.3f}" for a, b in row["test_ahead_bpp"]) or "nowhere"


def _short(key: str) -> str:
    return label(key).replace(f"x{THUMB_SCALE} thumbnail", "thumb").replace("bicubic + ", "bicubic, ")


def markdown(result: dict) -> str:
    """The whole report: per scale, BD tables, lossless placements, where IRN is ahead, and all mean points."""
    out = [
        "# Rate–distortion: IRN LR files against standard codecs",
        "",
        f"{result['n_images']} images" + (f", centre crops of {result['crop']} px" if result["crop"] else ", whole images")
        + f"; {len(result['skipped'])} skipped. Thumbnail: {result['thumbnail']}.",
        "",
    ]
    out += [f"- **{k}**: {v}" for k, v in result["protocol"].items()]
    for s, sc in result["scales"].items():
        out += ["", f"## x{s}", "", f"Weights: lossless LRs `{sc['model_ids']['lossless']}`, lossy LRs "
                f"`{sc['model_ids']['lossy']}`.", ""]
        anchors = list(dict.fromkeys(r["anchor"] for r in sc["bd"]))
        generic = [a for a in anchors if not a.startswith("bicubic")]
        if sc["bd"]:
            out += ["BD-rate / BD-PSNR of IRN (rows) against each baseline (columns), mean curves. Negative BD-rate "
                    "and positive BD-PSNR: IRN is better.", ""]
            out.append("| IRN LR | " + " | ".join(_short(a) for a in generic) + " | bicubic, same LR container |")
            out.append("|---" * (len(generic) + 2) + "|")
            for test in dict.fromkeys(r["test"] for r in sc["bd"]):
                rows = {r["anchor"]: r for r in sc["bd"] if r["test"] == test}
                bic = next((r for a, r in rows.items() if a.startswith("bicubic")), None)
                out.append(f"| {_short(test)} | " + " | ".join(_bd_cell(rows[a]) for a in generic)
                           + f" | {_bd_cell(bic) if bic else '–'} |")
            hr = [a for a in anchors if a.startswith("hr")]
            ahead = hr + [a for a in anchors if a.startswith("bicubic")]
            out += ["", "Where IRN's curve is above the baseline's: bpp intervals inside the rate overlap (local cubic "
                    "fits; 'nowhere' = below it all along the overlap, '–' = no overlap).", "",
                    "| IRN LR | " + " | ".join(_short(a) for a in hr) + " | bicubic, same LR container |",
                    "|---" * (len(hr) + 2) + "|"]
            for test in dict.fromkeys(r["test"] for r in sc["bd"]):
                rows = [r for r in sc["bd"] if r["test"] == test and r["anchor"] in ahead]
                out.append(f"| {_short(test)} | " + " | ".join(_ahead(r) for r in rows) + " |")
        if sc["lossless_lr"]:
            out += ["", "Lossless LRs (one point each): what the baseline needs for the same Y-PSNR, and reaches at the "
                    "same bpp (– : outside the baseline's measured range).", "",
                    "| IRN LR | bpp | Y-PSNR | baseline | baseline bpp at same Y-PSNR | IRN rate change | "
                    "baseline Y-PSNR at same bpp |", "|---|---|---|---|---|---|---|"]
            for r in sc["lossless_lr"]:
                out.append(f"| {_short(r['test'])} | {r['bpp']:.3f} | {r['psnr_y']:.2f} | {_short(r['anchor'])} | "
                           f"{_fmt(r['anchor_bpp_at_same_psnr'], '.3f')} | {_fmt(r['rate_change_pct'], '+.0f', '%')} | "
                           f"{_fmt(r['anchor_psnr_at_same_bpp'], '.2f', ' dB')} |")
        out += ["", f"Mean operating points (x{s}):", "",
                "| method | quality | bpp | Y-PSNR (dB) | RGB PSNR (dB) | LR vs bicubic LR, Y-PSNR (dB) |",
                "|---|---|---|---|---|---|"]
        for key, m in sc["methods"].items():
            for p in m["points"]:
                out.append(f"| {m['label']} | {p['quality']} | {p['bpp']:.3f} | {p['psnr_y']:.2f} | {p['psnr_rgb']:.2f} | "
                           f"{_fmt(p.get('lr_psnr_y'), '.2f')} |")
        if sc["bd"]:
            out += ["", "Points (quality settings) each BD figure was fitted with, and the overlap it is averaged over:", ""]
            for r in sc["bd"]:
                out.append(f"- {_short(r['test'])} vs {_short(r['anchor'])}: {_used(r, 'rate')}; {_used(r, 'psnr')}")
    if result["skipped"]:
        out += ["", "Skipped:", ""] + [f"- {r['image']}: {r['error']}" for r in result["skipped"]]
    return "\n".join(out) + "\n"


_COLOURS = {"png": "black", "webp-lossless": "grey", "webp": "tab:green", "jpeg420": "tab:blue",
            "jpeg444": "tab:purple", "avif": "tab:red", "avif444": "tab:orange"}
_STYLE = {"irn": ("-", "o"), "hr": ("--", "s"), "thumb+hr": (":", "^"), "bicubic": ("-.", "x")}


def plot_png(sc: dict) -> bytes:
    """bpp (x, log) against Y-PSNR (y), one curve per method: left IRN vs HR codecs (and thumbnail + HR),
    right IRN vs the bicubic upscaler with the same LR containers. PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, axes = plt.subplots(1, 2, figsize=(15, 6.5), sharey=True)
    panels = (("irn", "hr", "thumb+hr"), ("irn", "bicubic"))
    for ax, families in zip(axes, panels):
        for key, m in sc["methods"].items():
            family, container = key.split(" ", 1)
            if family not in families:
                continue
            ls, marker = _STYLE[family]
            xs, ys = [p["bpp"] for p in m["points"]], [p["psnr_y"] for p in m["points"]]
            ax.plot(xs, ys, linestyle=ls if len(xs) > 1 else "none", marker=marker, color=_COLOURS[container],
                    label=m["label"], markersize=5 if family == "irn" else 4, linewidth=1.8 if family == "irn" else 1.1)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: f"{x:g}" if f"{x:.0e}"[0] in "25" else ""))
        ax.set_xlabel("bits per HR pixel (all stored bytes)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    # The HR codecs climb far above IRN's range; show IRN's range and a margin above it.
    ours = [p["psnr_y"] for k, m in sc["methods"].items() if k.split(" ")[0] in ("irn", "bicubic") for p in m["points"]]
    axes[0].set_ylim(min(ours) - 2, max(ours) + 6)
    axes[0].set_ylabel(f"Y-PSNR (dB), crop {sc['scale']}")
    axes[0].set_title(f"x{sc['scale']}: IRN LR files vs the HR stored by a codec")
    axes[1].set_title(f"x{sc['scale']}: IRN vs bicubic down/up, same LR containers")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def short_table(result: dict) -> str:
    """A few lines for the terminal: BD-rate of IRN vs HR JPEG 4:2:0, WebP and AVIF per scale."""
    lines = []
    for s, sc in result["scales"].items():
        anchors = [a for a in (method_key("hr", c) for c in ("jpeg420", "webp", "avif"))
                   if any(r["anchor"] == a for r in sc["bd"])]
        lines.append(f"x{s}  BD-rate / BD-PSNR of IRN vs " + ", ".join(_short(a) for a in anchors))
        for test in dict.fromkeys(r["test"] for r in sc["bd"]):
            rows = {r["anchor"]: r for r in sc["bd"] if r["test"] == test}
            lines.append(f"  {_short(test):24s}" + "".join(f"{_bd_cell(rows[a]):>26s}" for a in anchors))
        for r in sc["lossless_lr"]:
            if r["anchor"] == method_key("hr", "jpeg420"):
                lines.append(f"  {_short(r['test']):24s} {r['bpp']:.3f} bpp {r['psnr_y']:.2f} dB; HR JPEG 4:2:0 needs "
                             f"{_fmt(r['anchor_bpp_at_same_psnr'], '.3f')} bpp")
    return "\n".join(lines)


def write(result: dict, out: str, storage: StorageConfig | None = None) -> list[str]:
    """Write rd.json, rd.md and rd_x{scale}.png under ``out`` (a folder or URL); the paths written."""
    fs, root = open_fs(out, storage)
    fs.makedirs(root, exist_ok=True)
    files = {"rd.json": json.dumps(result, indent=1, default=_json_default).encode(), "rd.md": markdown(result).encode()}
    for s, sc in result["scales"].items():
        if sc["methods"]:
            files[f"rd_x{s}.png"] = plot_png(sc)
    for name, data in files.items():
        atomic_write(fs, f"{root}/{name}", data)
    return [f"{out.rstrip('/')}/{name}" for name in files]


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")

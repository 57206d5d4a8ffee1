"""Restore Y-PSNR against the z temperature (issue 16): how much the latent's sampling costs a set of weights.

    python benchmarks/temperature.py --data ../shared/datasets/photos/val --out docs/results/temperature
    python benchmarks/temperature.py --model runs/campaign_x4/model.safetensors --scale 4 --data ... --out ...

IRN (Xiao et al., ECCV 2020) restores with z ~ N(0, I); temperature t scales that draw (z = t * eps). Each
whole image is downscaled once to its 8-bit PNG LR (the CLI's path), then restored at every temperature:
t = 0 once, every other t with ``--draws`` z seeds (mean reported). Y-PSNR is the paper's protocol
(Y channel, ``scale`` border pixels cropped). Prints a Markdown table and writes ``temperature.json`` and
``temperature.md`` under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from irn_batch.model.checkpoint import resolve_model  # noqa: E402
from irn_batch.io.decode import decode_image  # noqa: E402
from irn_batch.metrics import psnr_y  # noqa: E402
from irn_batch.rescale import downscale_image, restore_image  # noqa: E402

TEMPERATURES = (0.0, 0.25, 0.5, 1.0)


def image_row(ckpt, data: bytes, temperatures, draws: int) -> dict[str, float]:
    """{temperature: mean Y-PSNR (dB)} for one image's restore from its 8-bit PNG LR."""
    img = decode_image(data)
    hr = img.rgb
    lr_png, _ = downscale_image(ckpt, img, z_seed=0)
    s = ckpt.model.scale
    out = {}
    for t in temperatures:
        seeds = [0] if t == 0 else list(range(draws))
        out[f"{t:g}"] = float(np.mean([psnr_y(restore_image(ckpt, lr_png, temperature=t, z_seed=k), hr, s)
                                       for k in seeds]))
    return out


def run(models: list[tuple[str | None, int]], data: Path, temperatures, draws: int, limit: int | None) -> dict:
    files = sorted(p for p in data.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))[:limit]
    result = {"data": str(data), "images": [p.name for p in files], "draws": draws, "models": []}
    for model, scale in models:
        ckpt = resolve_model(model, scale)
        rows = [image_row(ckpt, p.read_bytes(), temperatures, draws) for p in files]
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        result["models"].append({"model": model or f"shipped x{scale}", "model_id": ckpt.model_id,
                                 "default_temperature": ckpt.default_temperature, "per_image": rows, "mean": mean})
    return result


def markdown(result: dict) -> str:
    temps = list(result["models"][0]["mean"])
    lines = [f"Restore Y-PSNR (dB, paper protocol) of {len(result['images'])} whole images from "
             f"`{result['data']}`; t > 0 is the mean of {result['draws']} z draws.", "",
             "| model | model id | " + " | ".join(f"t = {t}" for t in temps) + " | t = 1 vs t = 0 |",
             "|" + " --- |" * (len(temps) + 3)]
    for m in result["models"]:
        cells = " | ".join(f"{m['mean'][t]:.2f}" for t in temps)
        lines.append(f"| {m['model']} | `{m['model_id']}` | {cells} | {m['mean']['1'] - m['mean']['0']:+.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--model", action="append", default=None,
                   help="checkpoint path/URL (repeatable; default: the shipped x2 and x4 weights)")
    p.add_argument("--scale", type=int, default=2, help="scale of --model (ignored for the shipped pair)")
    p.add_argument("--draws", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="first N images only")
    p.add_argument("--out", type=Path, default=Path("docs/results/temperature"))
    args = p.parse_args(argv)
    models = [(m, args.scale) for m in args.model] if args.model else [(None, 2), (None, 4)]
    result = run(models, args.data, TEMPERATURES, args.draws, args.limit)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "temperature.json").write_text(json.dumps(result, indent=1))
    table = markdown(result)
    (args.out / "temperature.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""LR containers for the quality floor: per photo, each candidate's LR bytes and its restore's Y-PSNR.

For each photo (centre crop of at most ``--crop`` pixels, stored as PNG, z seed from its bytes): downscale
once with the weights, store the LR in every candidate (``irn_batch.io.container``), read it back and restore
it through ``rescale.restore_pixels`` at the checkpoint's default temperature, Y-PSNR with the paper's crop
(``metrics.psnr_y``). Also the bf16 check's cost: the same restore in bf16 against fp32 for ``--bf16``
candidates. Writes one JSON (records per photo) and a Markdown table of the means (bits per HR pixel,
all LR bytes, metadata included).

    .venv/bin/python benchmarks/bench_floor_candidates.py --scale 2 --photos ../shared/datasets/photos/val
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from irn_batch.model.checkpoint import load_default  # noqa: E402
from irn_batch.io.container import Encoding, encode
from irn_batch.io.lr_file import read_lr, write_lr
from irn_batch.quality_floor import DEFAULT_CANDIDATES, parse_candidate  # noqa: E402
from irn_batch.io.decode import decode_image  # noqa: E402
from irn_batch.metrics import psnr_y  # noqa: E402
from irn_batch.rescale import content_seed, downscale_pixels, restore_pixels  # noqa: E402

OTHERS = ("png", "webp:80", "webp:95", "jpeg:95", "jpeg:80:4:4:4", "jpeg:90:4:4:4", "jpeg:95:4:4:4", "jpeg:98:4:4:4",
          "avif:90")


def measure(photo: Path, ckpt, cands: list[Encoding], bf16: list[Encoding], crop: int) -> dict:
    """One photo's record: candidate label -> [LR bytes, restore Y-PSNR dB]; bf16 label -> [bf16 dB, fp32 dB]."""
    full = decode_image(photo.read_bytes())
    c = min(crop, full.height, full.width)
    y0, x0 = (full.height - c) // 2, (full.width - c) // 2
    source = encode((full.rgb[y0:y0 + c, x0:x0 + c] * 255).round().astype(np.uint8), Encoding("png"))
    img, scale = decode_image(source), ckpt.model.scale
    pixels, meta = downscale_pixels(ckpt, img, z_seed=content_seed(source))
    rec = {"image": photo.name, "size": c, "source_png_bytes": len(source), "cands": {}, "bf16": {}}
    for enc in cands:
        lr_meta, lr = read_lr(data := write_lr(pixels, meta, enc))
        psnr = psnr_y(restore_pixels(ckpt, lr_meta, lr)[..., :3], img.rgb, crop=scale)
        rec["cands"][enc.label] = [len(data), psnr]
        if enc in bf16:
            half = psnr_y(restore_pixels(ckpt, lr_meta, lr, precision="bf16")[..., :3], img.rgb, crop=scale)
            rec["bf16"][enc.label] = [half, psnr]
    return rec


def summary(records: list[dict], scale: int) -> str:
    """Markdown: mean bpp and Y-PSNR per candidate (sorted by bpp), the default list, and the bf16 cost."""
    agg: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for r in records:
        for label, (size, psnr) in r["cands"].items():
            a = agg[label]
            a[0] += size * 8 / r["size"] ** 2
            a[1] += psnr
            a[2] += 1
    defaults = {parse_candidate(c).label for c in DEFAULT_CANDIDATES}
    lines = [f"### x{scale}: {len(records)} photos", "",
             "| LR container | bpp (LR bytes per HR pixel) | restore Y-PSNR dB | photos | default candidate |",
             "|---|---|---|---|---|"]
    for label, (bpp, psnr, n) in sorted(agg.items(), key=lambda kv: kv[1][0] / kv[1][2]):
        lines.append(f"| {label} | {bpp / n:.3f} | {psnr / n:.2f} | {n} | {'yes' if label in defaults else ''} |")
    diffs = [half - full for r in records for half, full in r.get("bf16", {}).values()]
    if diffs:
        lines += ["", f"bf16 check against fp32 ({len(diffs)} restores): {min(diffs):+.4f} to {max(diffs):+.4f} dB "
                  f"(largest magnitude {max(abs(d) for d in diffs):.4f} dB)."]
    ordered = monotone = 0
    for r in records:
        pts = [(r["cands"][lb][0], r["cands"][lb][1], lb) for lb in
               (parse_candidate(c).label for c in DEFAULT_CANDIDATES) if lb in r["cands"]]
        by_bytes = sorted(pts)
        ordered += [p[2] for p in by_bytes] == [p[2] for p in pts]
        monotone += all(a[1] <= b[1] for a, b in zip(by_bytes, by_bytes[1:]))
    lines += ["", f"Default candidates measured here: bytes rise in the list's order on {ordered} of {len(records)} "
              f"photos, restore PSNR rises with bytes on {monotone} of {len(records)}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--photos", default=str(ROOT.parent / "shared" / "datasets" / "photos" / "val"))
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--candidates", nargs="*", default=[*DEFAULT_CANDIDATES, *OTHERS])
    parser.add_argument("--bf16", nargs="*", default=["png", "avif:85:4:4:4"])
    parser.add_argument("--out", default=None, help="JSON path (default docs/results/floor_candidates_x<scale>.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    ckpt = load_default(args.scale)
    cands = list(dict.fromkeys(parse_candidate(c) for c in args.candidates))
    bf16 = [parse_candidate(c) for c in args.bf16]
    records = []
    for photo in sorted(Path(args.photos).glob("*.png")):
        records.append(measure(photo, ckpt, cands, bf16, args.crop))
        print(json.dumps(records[-1]), flush=True)
    out = Path(args.out or ROOT / "docs" / "results" / f"floor_candidates_x{args.scale}.json")
    out.write_text(json.dumps(records, indent=1) + "\n")
    out.with_suffix(".md").write_text(summary(records, args.scale))
    print(summary(records, args.scale))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`make demo`: ingest the bundled samples through the Ray pipeline with a quality floor, restore them, and
compare the stored bytes with what the same quality costs in JPEG and AVIF.

The ingest stores each image's cheapest LR candidate whose restore reaches ``--target-psnr`` (Y-PSNR, dB).
The table gives, per image: how it was stored and its bytes, the restore's Y-PSNR and bicubic down+up's,
and the bytes of the HR itself stored as JPEG 4:2:0 and as AVIF at the smallest quality that reaches the
same Y-PSNR (``rd.smallest_reaching``). It writes ``side_by_side.png`` (original | LR | restored | bicubic).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

from irn_batch.model.checkpoint import default_weights_path
from irn_batch.io.container import avif_available, encode
from irn_batch.io.lr_file import read_lr
from irn_batch.io.colour import to_uint8
from irn_batch.io.decode import decode_image
from irn_batch.metrics import bicubic_lr, bicubic_resize, psnr_y
from irn_batch.storage import write_object


def _row(images: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """(H, W, 3) uint8 images side by side on a white strip, top-aligned."""
    h = max(i.shape[0] for i in images)
    w = sum(i.shape[1] for i in images) + gap * (len(images) - 1)
    out = np.full((h, w, 3), 255, np.uint8)
    x = 0
    for im in images:
        out[: im.shape[0], x : x + im.shape[1]] = im[..., :3]
        x += im.shape[1] + gap
    return out


def _stack(rows: list[np.ndarray], gap: int = 4) -> np.ndarray:
    w = max(r.shape[1] for r in rows)
    out = np.full((sum(r.shape[0] for r in rows) + gap * (len(rows) - 1), w, 3), 255, np.uint8)
    y = 0
    for r in rows:
        out[y : y + r.shape[0], : r.shape[1]] = r
        y += r.shape[0] + gap
    return out


def _kb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1000:.1f} kB"


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns 0, or 2 when the default weights are not there yet."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default: a fresh temporary folder)")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--model", default=None, help="checkpoint (default: the package's weights)")
    parser.add_argument("--target-psnr", type=float, default=35.0,
                        help="quality floor: each restore's Y-PSNR in dB (default 35)")
    args = parser.parse_args(argv)
    if args.model is None and not default_weights_path(args.scale).is_file():
        print(f"demo: the default weights {default_weights_path(args.scale)} are missing (they are still being "
              "trained); rerun when they are there, or pass --model PATH", file=sys.stderr)
        return 2

    from irn_batch.storage.manifest import read_manifest
    from irn_batch.pipeline.config import IngestConfig, RestoreConfig
    from irn_batch.settings import load_config
    from irn_batch.pipeline.ingest import run_ingest
    from irn_batch.pipeline.restore import run_restore
    from irn_batch.evaluation.rd import smallest_reaching
    from irn_batch.storage import open_fs

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="irn_demo_"))
    samples = sorted(Path(str(resources.files("irn_batch") / "samples")).glob("*.png"))
    src = out / "input"
    for folder in ("lr", "restored"):
        shutil.rmtree(out / folder, ignore_errors=True)
    src.mkdir(parents=True, exist_ok=True)
    for p in samples:
        shutil.copyfile(p, src / p.name)
    common = [f"scale={args.scale}", "ray.num_cpus=2", "actors.pool_size=2", "actors.batch_size=1", "progress_s=5"]
    if args.model:
        common.append(f"model={args.model}")
    floor = [f"target_psnr={args.target_psnr}"]
    if not avif_available():  # the default candidates are AVIF
        floor.append("lr.candidates=[webp:70,webp:85,webp:95,webp:100]")
    run_ingest(load_config(IngestConfig, None, [f"input={src}", f"output={out / 'lr'}", *common, *floor]))
    restored = run_restore(load_config(RestoreConfig, None, [f"input={out / 'lr'}", f"output={out / 'restored'}",
                                                             *common]))

    s = args.scale
    rows = {r["key"]: r for r in read_manifest(*open_fs(str(out / "lr" / "_manifest"))).to_pylist()
            if r["status"] == "ok"}
    outputs = {r["key"]: r["out_uri"] for r in read_manifest(*open_fs(restored["manifest"])).to_pylist()
               if r["status"] == "ok"}
    print(f"\nquality floor: Y-PSNR >= {args.target_psnr:g} dB, x{s}; bytes of the HR itself at the same Y-PSNR:")
    print(f"{'image':<10}{'size':>9}  {'stored as':<18}{'stored':>10}{'IRN dB':>8}{'bicubic':>9}"
          f"{'JPEG 4:2:0':>12}{'AVIF':>11}{'original':>11}")
    pictures, totals = [], {"stored": 0, "jpeg": 0, "avif": 0}
    for p in samples:
        row = rows[p.name]
        orig = to_uint8(decode_image((src / p.name).read_bytes()).rgb)
        stored = Path(row["lr_uri"]).read_bytes()
        kept = row["fell_back"]
        lr = orig if kept else to_uint8(read_lr(stored)[1].rgb)
        rest = to_uint8(decode_image(Path(outputs[p.name]).read_bytes()).rgb)
        bic = to_uint8(bicubic_resize(bicubic_lr(orig, s), orig.shape[:2]))
        p_irn, p_bic = psnr_y(rest, orig, crop=s), psnr_y(bic, orig, crop=s)
        target = min(p_irn, 99.0)  # a source kept unchanged restores exactly (inf dB)
        jpeg = smallest_reaching(orig, "jpeg420", target, s)
        avif = smallest_reaching(orig, "avif", target, s) if avif_available() else None
        sub = f" {row['lr_subsampling']}" if row["lr_container"] in ("jpeg", "avif") else ""
        how = "original (kept)" if kept else f"{row['lr_container']}{sub} q{row['lr_quality']}"
        print(f"{p.stem:<10}{orig.shape[1]:>4}x{orig.shape[0]:<4}  {how:<18}{_kb(len(stored)):>10}{p_irn:>8.2f}"
              f"{p_bic:>9.2f}{_kb(jpeg and jpeg['bytes']):>12}{_kb(avif and avif['bytes']):>11}"
              f"{_kb(p.stat().st_size):>11}")
        totals["stored"] += len(stored)
        totals["jpeg"] += jpeg["bytes"] if jpeg else 0
        totals["avif"] += avif["bytes"] if avif else 0
        pictures.append(_row([orig, lr, rest, bic]))
    ratio = {k: totals["stored"] / v for k, v in totals.items() if v and k != "stored"}
    print(f"stored {totals['stored']} bytes; the same Y-PSNR costs {totals['jpeg']} bytes as JPEG 4:2:0 "
          f"(IRN/JPEG {ratio.get('jpeg', float('nan')):.2f}) and {totals['avif']} bytes as AVIF "
          f"(IRN/AVIF {ratio.get('avif', float('nan')):.2f}); docs/results/rd/ has the full comparison")
    picture = out / "side_by_side.png"
    write_object(str(picture), encode(_stack(pictures)))
    print(f"side-by-side (original | LR | restored | bicubic): {picture}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

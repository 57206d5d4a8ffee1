"""``irn-batch evaluate``: the IRN paper's table (Y-PSNR / Y-SSIM against Bicubic & Bicubic) for any weights
on a folder of HR images; the scoring is ``irn_batch.evaluation.paper_table``.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from irn_batch.cli.args import UserError, images_at
from irn_batch.evaluation.paper_table import evaluate, markdown
from irn_batch.model.checkpoint import CheckpointError, resolve_model
from irn_batch.rescale.settings import PRECISIONS
from irn_batch.storage import StorageConfig, atomic_write, open_fs


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``irn-batch evaluate``."""
    p.add_argument("--model", help="checkpoint path or URL (default: the bundled weights for --scale)")
    p.add_argument("--scale", type=int, choices=(2, 4, 8), default=None, help="default 2 (or the model's)")
    p.add_argument("--data", required=True, help="folder, prefix URL (s3://...) or single HR image")
    p.add_argument("--out", default=None, help="folder for eval.md, eval.json and grid.png (default: print only)")
    p.add_argument("--draws", type=int, default=5, help="z ~ N(0, I) draws to average (default 5)")
    p.add_argument("--grid", type=int, default=4, help="images in grid.png (default 4)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--tile", type=int, default=None, help="tile size in HR pixels (default: whole image)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--endpoint-url", default=None, help="S3 endpoint for s3:// URLs (default: AWS_ENDPOINT_URL)")


def run(args: argparse.Namespace) -> int:
    """Run the evaluation; 0 when at least one image was scored, 2 on a user error."""
    try:
        ckpt = resolve_model(args.model, args.scale or 2)
    except CheckpointError as e:
        raise UserError(None, str(e)) from None
    if args.scale and args.scale != ckpt.model.scale:
        raise UserError(args.model, f"model is x{ckpt.model.scale} but --scale {args.scale} was given")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device.replace("auto", "cpu")
    ckpt.model.to(device).eval()
    storage = StorageConfig(endpoint_url=args.endpoint_url)
    uris = images_at(args.data, storage)[: args.limit]
    if not uris:
        raise UserError(args.data, "no images found")
    result, grid = evaluate(
        ckpt, uris, max(0, args.draws), args.grid, args.tile or 1 << 30, args.precision, storage=storage
    )
    table = markdown(result)
    print(table)
    if args.out:
        fs, root = open_fs(args.out, storage)
        fs.makedirs(root, exist_ok=True)
        atomic_write(fs, f"{root}/eval.md", table.encode())
        atomic_write(fs, f"{root}/eval.json", json.dumps(result, indent=1).encode())
        if grid:
            atomic_write(fs, f"{root}/grid.png", grid)
        print(f"wrote {args.out}/eval.md, eval.json" + (", grid.png" if grid else ""), file=sys.stderr)
    return 0 if result["n_images"] else 2

"""``irn-batch serve PREFIX``: the on-demand restore service (``irn_batch.serve``) on an embedded local Ray,
the one-command way to try it. Prints the base URL on one line once it answers; Ctrl-C stops it. On a
cluster, use ``serve run``/``serve deploy`` with ``configs/serve.yaml`` instead (README, "On-demand restore").
"""
from __future__ import annotations

import argparse
import sys
import time

from irn_batch.cli.args import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="an ingest output (or LR prefix): path or URL")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--config", default=None, help="a serve YAML (configs/serve.yaml); its input is replaced")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting of configs/serve.yaml, repeatable (e.g. --set num_cpus=2 --set model=M)")


def run(args: argparse.Namespace) -> int:
    from irn_batch.cluster import RayConfig, init_ray
    from irn_batch.serve.app import ServeConfig, run_app
    from irn_batch.settings import load_config

    try:
        cfg = load_config(ServeConfig, args.config, [*args.overrides, f"input={args.input}"],
                          require_file=args.config is not None)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(args.config, str(e).splitlines()[0]) from None
    from irn_batch.serve.auth import TOKENS_ENV, tokens_from_env

    if not tokens_from_env():
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            raise UserError("--host", f"{args.host} would open the archive to other machines without tokens; set "
                                      f"{TOKENS_ENV} (comma-separated bearer tokens) or keep 127.0.0.1")
        print(f"no {TOKENS_ENV} set: open to this machine only ({args.host})", file=sys.stderr)
    init_ray(RayConfig())
    from ray import serve

    try:
        print(run_app(cfg, args.host, args.port), flush=True)
    except Exception as e:  # the replica's own error (no such prefix, bad weights) is the useful line
        serve.shutdown()
        raise UserError(args.input, str(e).strip().splitlines()[-1]) from None
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
        serve.shutdown()
    return 0

"""The ``irn-batch`` parser and entry point: the single-image commands (``cli.images``) and, imported only
when chosen, the batch ``verify`` (``pipeline.verify``) and the ``evaluate`` and ``rd`` commands.

Files may be local paths or fsspec URLs (s3://..., file://...). A user mistake (missing file, corrupt
image or checkpoint, wrong model) prints one line, ``irn-batch: error: <file>: <reason>``, and exits with
status 2. Only torch-free modules load before a command runs, so ``--help``, ``info`` and argument errors
answer in a fraction of a second.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from irn_batch.cli.args import EXIT_USER, Parser, UserError, error_line
from irn_batch.cli.images import add_commands

# Subcommands implemented in modules that pull in torch or Ray: (name, module with add_arguments/run, help).
LAZY_COMMANDS = (
    ("verify", "irn_batch.pipeline.verify", "check a batch of LR outputs against their manifest"),
    ("evaluate", "irn_batch.cli.evaluate", "PSNR/SSIM evaluation against bicubic"),
    ("rd", "irn_batch.cli.rd", "rate-distortion of IRN LR containers against standard codecs"),
    ("serve", "irn_batch.cli.serve", "restore on demand over HTTP (Ray Serve) from an ingest output"),
)


def _wire(parser: argparse.ArgumentParser, module: str) -> None:
    """Import ``module`` (it is the chosen command) and let it add its options and its ``run``."""
    try:
        mod = importlib.import_module(module)
    except ImportError:
        parser.set_defaults(func=lambda a: _missing(module))
        return
    mod.add_arguments(parser)
    parser.set_defaults(func=mod.run)


def _missing(module: str) -> int:
    raise UserError(None, f"this subcommand needs {module}, which is not available in this installation")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The full parser for ``argv`` (only the chosen lazy subcommand is imported, so ``downscale`` never
    loads Ray)."""
    parser = Parser(prog="irn-batch", description="Invertible image rescaling (IRN), one image or many.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    add_commands(sub)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, module, text in LAZY_COMMANDS:
        p = sub.add_parser(name, help=text)
        if chosen == name:
            _wire(p, module)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser(argv).parse_args(argv)
        return int(args.func(args) or 0)
    except UserError as e:
        print(error_line(e), file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `irn-batch info x | head`: the reader left; no traceback, as other CLI tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's documented recipe
        return 141

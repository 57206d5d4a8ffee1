"""``irn-batch``, the command line: ``args`` (the one-line user error, argument types, file helpers) at the
bottom, the single-image commands (``images``), the ``evaluate`` and ``rd`` commands, and the parser with
the entry point (``main``) on top. Nothing outside ``cli/`` imports from here.
"""
from irn_batch.cli.main import main

__all__ = ["main"]

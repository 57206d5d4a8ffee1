"""How the project words a failure for a user: one line of bounded length.

Every layer reports errors as one line (the CLI's ``irn-batch: error: <file>: <reason>``, a manifest row's
``error`` field, a job's summary, an HTTP body): library messages (torch's state-dict errors, botocore's,
Pillow's) can span many lines or kilobytes, and a manifest cell or a log line must stay readable. This is
the one formatter they all use; it sits below io/ and storage/ so both can.
"""
from __future__ import annotations


def one_line(error: BaseException | str, limit: int = 500, *, typed: bool = False) -> str:
    """``error`` as one line of at most ``limit`` characters (whitespace runs become one space; a cut
    ends in '...'). An exception with no message reads as its type name; ``typed`` prefixes 'Type: '
    (for exceptions from libraries, whose messages alone are often unclear: 'KeyError: 3')."""
    if isinstance(error, str):
        msg = " ".join(error.split())
    else:
        msg = " ".join(str(error).split())
        if typed and msg:
            msg = f"{type(error).__name__}: {msg}"
        msg = msg or type(error).__name__
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."

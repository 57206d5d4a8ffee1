"""The metadata header of a checkpoint file, read without the tensors and without torch.

A safetensors file opens with an 8-byte little-endian header length and a JSON header whose
``__metadata__`` holds string pairs (https://github.com/huggingface/safetensors, "Format"). irn_batch
checkpoints keep their config, model id and default temperature there (``irn_batch/model/checkpoint.py``), so
``irn-batch info``, the shipped-weights lookup by model id and the CLI's argument checks read it here,
before anything imports torch.
"""
from __future__ import annotations

import json

FORMAT = "irn_batch/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, corrupt, or of another layout."""


def read_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of safetensors bytes (a prefix holding the whole header is enough).

    Raises CheckpointError when the bytes do not start with a safetensors header.
    """
    try:
        n = int.from_bytes(data[:8], "little")
        if n <= 0 or n > len(data) - 8:
            raise ValueError
        header = json.loads(data[8 : 8 + n])
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError("not a safetensors file (bad header)") from e
    return dict(header.get("__metadata__") or {})

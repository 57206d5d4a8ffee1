"""The service's index: key -> the restore work item of that key's LR (lr_uri, sha256, model id, kept
original, the original's container...), planned exactly as a restore job plans it
(:func:`irn_batch.pipeline.restore_plan.plan_items` with ``format: source``), so a served image is the
restore job's image, byte for byte, for the same settings and device.

Keys are the ingest manifest's keys (the latest ``ok`` attempt of each input): opaque strings, looked up
exactly; nothing outside the manifest can be read through the service. The items stay one Arrow table
(``ITEM_SCHEMA``); a dict maps each key to its row. An LR prefix without a manifest is indexed by its LR files
(no checksums: those LRs are restored as they are, like the restore job's bare-prefix mode).
"""
from __future__ import annotations

import bisect
import tempfile
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from irn_batch.pipeline.config import RestoreConfig
from irn_batch.pipeline.restore_plan import ITEM_SCHEMA, items_for, manifest_path, plan_items
from irn_batch.storage import open_fs


class ImageIndex:
    """The restorable keys under an ingest output (or LR prefix) ``cfg.input``; :meth:`item` gives a key's
    work item as a dict (``ITEM_SCHEMA`` columns), :meth:`keys` pages through the keys in order.

    Raises ``RestoreError`` (one line) when ``cfg.input`` is missing or cannot be planned.
    """

    def __init__(self, cfg: RestoreConfig):
        self.version = manifest_version(cfg)
        with tempfile.TemporaryDirectory(prefix="irn_batch_serve_") as nowhere:  # a restore that writes nothing
            plan = plan_items(replace(cfg, output=nowhere, manifest=None, format="source", keys=None), None)
        items = items_for(plan.items, None, "", "")
        ok = pc.is_null(items["pre_error"])
        self.items: pa.Table = items.filter(ok).select(ITEM_SCHEMA.names)
        self.skipped = items.num_rows - self.items.num_rows  # keys that cannot be restored (unsafe, clashing)
        self.bare = plan.bare
        keys = self.items["key"].to_pylist()
        self.sorted_keys = keys  # plan_items sorts by key
        self._row = {k: i for i, k in enumerate(keys)}

    def __len__(self) -> int:
        return self.items.num_rows

    def item(self, key: str) -> dict[str, Any] | None:
        """The work item of ``key``, or None when the index has no such key."""
        i = self._row.get(key)
        return None if i is None else self.items.slice(i, 1).to_pylist()[0]

    def keys(self, prefix: str = "", after: str | None = None, limit: int = 100) -> list[str]:
        """Up to ``limit`` keys that start with ``prefix`` and sort after ``after``, in key order."""
        start = 0 if after is None else bisect.bisect_right(self.sorted_keys, after)
        if prefix:
            start = max(start, bisect.bisect_left(self.sorted_keys, prefix))
        out = []
        for key in self.sorted_keys[start:]:
            if len(out) >= limit or not key.startswith(prefix):
                break
            out.append(key)
        return out


def manifest_version(cfg: RestoreConfig) -> tuple[str, ...] | None:
    """The names and sizes of the ingest manifest's parts under ``cfg.input`` (None for an LR prefix
    without a manifest): a new part (a later ingest into the same output) changes it."""
    fs, path = open_fs(cfg.input, cfg.storage)
    mpath = manifest_path(fs, path)
    if mpath is None:
        return None
    if fs.isfile(mpath):
        return (f"{mpath}:{fs.size(mpath)}",)
    return tuple(sorted(f"{p['name']}:{p.get('size')}" for p in fs.ls(mpath, detail=True)))

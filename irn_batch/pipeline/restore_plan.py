"""A restore's plan: which LRs, where each goes, which model restores it, what this output already holds.

Decided here, before any object is written: a restore refuses an output (or ``manifest=``) over its own
inputs (the input, the ingest output and its ``_manifest``, the source prefixes the manifest names: see
:func:`plan_items`); it may write over an object only where this output's restore manifest last recorded
exactly that object's bytes (``own_sha``: its own earlier restore); LRs are located where the archive is
now (:mod:`irn_batch.pipeline.locate`); and each LR is grouped with the model it records
(:func:`model_groups`). Built in Arrow columns: no per-row Python objects survive planning.
"""
from __future__ import annotations

import fnmatch
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from irn_batch.io.container import LR_SUFFIXES, Encoding, source_container_of_key, source_encoding
from irn_batch.storage.manifest import INGEST_SCHEMA, MANIFEST_DIR, RESTORE_SCHEMA, latest_table, part_paths, read_manifest
from irn_batch.io.photo_metadata import SIDECAR_SUFFIX
from irn_batch.pipeline import locate
from irn_batch.pipeline.stream import all_true
from irn_batch.pipeline.config import RestoreConfig
from irn_batch.storage import StorageError, derived_key, join_key, list_keys, open_fs, output_key, to_uri

ITEM_SCHEMA = pa.schema([("key", pa.string()), ("lr_uri", pa.string()), ("out_uri", pa.string()),
                         ("lr_sha256", pa.string()), ("model_id", pa.string()), ("z_seed", pa.int64()),
                         ("width", pa.int64()), ("height", pa.int64()), ("check_uri", pa.string()),
                         ("check_sha", pa.string()), ("pre_error", pa.string()), ("fell_back", pa.bool_()),
                         ("out_container", pa.string()), ("out_quality", pa.int64()),
                         ("out_subsampling", pa.string()), ("grey", pa.bool_()),
                         ("bit_depth", pa.int64()), ("colour", pa.string()), ("source_bytes", pa.int64()),
                         ("source_lossless", pa.bool_()), ("own_sha", pa.string()),
                         ("lr_pixels_sha256", pa.string()), ("metadata_uri", pa.string()),
                         ("metadata_sha256", pa.string())])


# from the ingest manifest (the last eleven are null in manifests written before issue 13)
PLAN_COLUMNS = ["key", "lr_uri", "lr_sha256", "model_id", "z_seed", "width", "height", "fell_back",
                "source_container", "source_quality", "source_lossless", "grey", "bit_depth", "colour",
                "source_bytes", "source_subsampling", "lr_pixels_sha256", "metadata_uri", "metadata_sha256"]
SOURCE = "source"
# from this output's own (restore) manifest, to find work already done
DONE_COLUMNS = ["key", "out_uri", "out_sha256", "lr_sha256", "model_id", "settings", "status", "finished_at"]


class RestoreError(ValueError):
    """A restore request that cannot run at all (no such input, wrong model)."""



def manifest_path(fs, path: str) -> str | None:
    """The manifest behind ``path``: a Parquet file, a folder of parts, or an ingest output's _manifest."""
    if fs.isfile(path):
        return path if path.endswith(".parquet") else None
    sub = f"{path.rstrip('/')}/{MANIFEST_DIR}"
    if fs.isdir(sub) and part_paths(fs, sub):
        return sub
    if fs.isdir(path) and any(p.endswith(".parquet") for p in fs.ls(path, detail=False)):
        return path
    return None


class Plan(NamedTuple):
    """What a restore will do: ``items`` (ITEM_SCHEMA less check_uri/check_sha, with each LR's recorded
    ``model_id``), the manifest folder, the earlier restores of this output, and whether ``items`` came
    from a bare LR prefix (no model ids recorded)."""

    items: pa.Table
    manifest_dir: str
    done: pa.Table | None
    bare: bool


def plan_items(cfg: RestoreConfig, fixed: Encoding | None) -> Plan:
    """The work of a restore, before any is done: the latest ok row per input of an ingest manifest
    (filtered), or every LR file (any LR container suffix) under an LR prefix, with output URIs and
    containers: ``fixed`` for all, or (None: ``format=source``) each original's own (a bare LR prefix: PNG).
    Where two inputs would restore to one output key, the input whose key already is that output key keeps
    it, else the first in key order; the other gets its whole key plus the output suffix (a.jpg -> a.jpg.png).

    Raises RestoreError (one line) when the input is missing, or when the output or the manifest folder
    is, is inside or contains the input, its LR prefix, its ``_manifest``, a source prefix its manifest
    names, or another job's ingest manifest: a restore never writes where its inputs are. Built in Arrow
    columns, like the ingest plan: no per-row Python objects survive planning.
    """
    fs_in, in_path = open_fs(cfg.input, cfg.storage)
    fs_out, out_path = open_fs(cfg.output, cfg.storage)
    if not fs_in.exists(in_path):
        raise RestoreError(f"{cfg.input}: no such manifest or prefix")
    manifest_dir = cfg.manifest or to_uri(fs_out, f"{out_path.rstrip('/')}/{MANIFEST_DIR}")
    mpath = manifest_path(fs_in, in_path)
    protected = [("the input", to_uri(fs_in, in_path))]
    if mpath is not None:
        table = read_manifest(fs_in, mpath, columns=["source_uri", "status", "finished_at", "lr_key", *PLAN_COLUMNS])
        protected.append(("the ingest manifest", to_uri(fs_in, mpath)))
        protected += [("the source location", r) for r in sorted(locate.source_roots(table["source_uri"],
                                                                                   table["key"]))]
        table = latest_table(table, "source_uri")
        table = table.filter(pc.fill_null(pc.equal(table["status"], "ok"), False))
        root = locate.manifest_root(fs_in, mpath)  # the archive where it is now, not where it was written
        uris, errs = locate.relocate(table["lr_uri"].to_pylist(), table["key"].to_pylist(),
                                     table["lr_key"].to_pylist(), root)
        table = table.set_column(table.column_names.index("lr_uri"), "lr_uri", pa.array(uris, pa.string()))
        # a sidecar sits next to its LR: it moves with it (the recorded URI names where it was written)
        sidecars = [None if m is None or u is None else u + SIDECAR_SUFFIX
                    for m, u in zip(table["metadata_uri"].to_pylist(), uris)]
        table = table.set_column(table.column_names.index("metadata_uri"), "metadata_uri",
                                 pa.array(sidecars, pa.string()))
        table = table.append_column("loc_error", pa.array(errs, pa.string())).select([*PLAN_COLUMNS, "loc_error"])
        if root is not None:
            protected.append(("the ingest output", root))
        else:  # LRs named by absolute URIs: each one's output prefix
            protected += [("the LR prefix", r) for r in sorted(locate.prefixes(uris, table["key"].to_pylist()))]
    else:
        keys = list_keys(fs_in, in_path, [f"*{suffix}" for suffix in LR_SUFFIXES])
        n = len(keys)
        table = pa.table({"key": pa.array(keys, pa.string()),
                          "lr_uri": pa.array([to_uri(fs_in, join_key(in_path, k)) for k in keys], pa.string()),
                          **{c: pa.nulls(n, ITEM_SCHEMA.field(c).type if c in ITEM_SCHEMA.names else
                                         INGEST_SCHEMA.field(c).type) for c in PLAN_COLUMNS[2:]},
                          "loc_error": pa.nulls(n, pa.string())})
        del keys
    try:
        locate.refuse_overlaps({"output": to_uri(fs_out, out_path), "manifest": manifest_dir}, protected)
    except StorageError as e:
        raise RestoreError(str(e)) from None
    _refuse_foreign_manifest(manifest_dir, cfg)
    table = table.sort_by("key")
    if cfg.keys is not None:
        table = table.filter(pc.is_in(table["key"], value_set=pa.array(list(cfg.keys), pa.string())))
    if cfg.glob:
        table = table.filter(pa.array([fnmatch.fnmatchcase(k, cfg.glob) for k in table["key"].to_pylist()],
                                      pa.bool_()))
    if cfg.limit is not None:
        table = table.slice(0, max(cfg.limit, 0))
    n = table.num_rows
    outs, errors, owners = [None] * n, [None] * n, {}
    containers, qualities, subsamplings, wanted = [None] * n, [None] * n, [None] * n, []
    cols = [table[c].to_pylist() for c in ("key", "fell_back", "source_container", "source_quality",
                                             "source_lossless", "source_subsampling", "loc_error")]
    for i, (key, kept, container, quality, lossless, subsampling, loc_err) in enumerate(zip(*cols)):
        try:
            if loc_err:
                raise StorageError(loc_err.removeprefix("key: "))
            safe = output_key(key)
            if kept:  # a source kept by ingest goes out unchanged, so under its own (made safe) key and suffix
                wanted.append((0, i, safe, None))
                continue
            enc = fixed
            if enc is None:  # format source: the original's container (a bare LR prefix: PNG)
                enc = source_encoding(container or (source_container_of_key(key) if mpath is not None else None),
                                      quality, lossless, subsampling)
            containers[i], qualities[i], subsamplings[i] = enc.container, enc.quality, enc.subsampling
            # format source keeps a key that names its container (a.jpeg, b.mpo); else the suffix is replaced
            keep = fixed is None and source_container_of_key(safe) == enc.container
            natural = safe if keep else derived_key(safe, enc.suffix)
            wanted.append((0 if natural == safe else 1, i, natural, safe + enc.suffix))
        except StorageError as e:
            errors[i] = f"key: {e}"
    # an input whose key already is its output key claims it first; then key order
    for _rank, i, out_key, alternative in sorted(wanted):
        key = cols[0][i]
        try:
            out = to_uri(fs_out, join_key(out_path, out_key))
            if out in owners and alternative is not None:
                out = to_uri(fs_out, join_key(out_path, alternative))
            if out in owners:
                raise StorageError(f"output key already used by {owners[out]!r}")
            owners[out] = key
            outs[i] = out
        except StorageError as e:
            errors[i] = f"key: {e}"
    del owners, wanted, cols
    table = table.drop_columns(["loc_error"])
    table = table.append_column("out_container", pa.array(containers, pa.string()))
    table = table.append_column("out_quality", pa.array(qualities, pa.int64()))
    table = table.append_column("out_subsampling", pa.array(subsamplings, pa.string()))
    table = table.append_column("out_uri", pa.array(outs, pa.string()))
    table = table.append_column("pre_error", pa.array(errors, pa.string()))
    done, claims = _earlier_restores(manifest_dir, cfg, to_uri(fs_out, out_path))
    return Plan(_own_claims(table, claims), manifest_dir, None if cfg.redo else done, mpath is None)


def refuse_other_models(items: pa.Table, model_id: str) -> None:
    """RestoreError when ``items`` record LRs of another model than ``model_id`` (the one given)."""
    others = sorted(m for m in pc.unique(pc.drop_null(items["model_id"])).to_pylist() if m != model_id)
    if others:
        raise RestoreError(f"model mismatch: the LRs were made by {', '.join(others)} but the loaded model is "
                           f"{model_id}; pass model=<the matching checkpoint>")


def items_for(items: pa.Table, done: pa.Table | None, model_id: str, settings: str) -> pa.Table:
    """The work items (ITEM_SCHEMA) of ``items`` restored by ``model_id`` with ``settings``: those whose
    earlier restore there is intact get check_uri/check_sha (a receipt, not redone)."""
    return _mark_done(items, done, model_id, settings).select(ITEM_SCHEMA.names).cast(ITEM_SCHEMA)


def _refuse_foreign_manifest(manifest_dir: str, cfg: RestoreConfig) -> None:
    """RestoreError when this job's manifest folder holds parts of another kind (an ingest's manifest)."""
    fs, path = open_fs(manifest_dir, cfg.storage)
    parts = part_paths(fs, path)
    if parts:
        import pyarrow.parquet as pq

        with fs.open(parts[0], "rb") as f:
            if "out_uri" not in pq.read_schema(f).names:
                raise RestoreError(f"manifest={manifest_dir} holds an ingest manifest; a restore never writes "
                                   "there (choose another output)")


def _earlier_restores(manifest_dir: str, cfg: RestoreConfig, out_root: str) -> tuple[pa.Table, pa.Table]:
    """(the latest attempt per key, the latest ok claim per URI) in this output's restore manifest (empty
    when there is none); URIs resolved under the output where it is now (``out_root``)."""
    fs, path = open_fs(manifest_dir, cfg.storage)
    table = read_manifest(fs, path, RESTORE_SCHEMA, columns=[*DONE_COLUMNS, "out_key"])
    uris, _errs = locate.relocate(table["out_uri"].to_pylist(), table["key"].to_pylist(),
                                  table["out_key"].to_pylist(), out_root)
    table = table.set_column(table.column_names.index("out_uri"), "out_uri", pa.array(uris, pa.string()))
    ok = table.filter(all_true(pc.equal(table["status"], "ok"), pc.is_valid(table["out_uri"])))
    claims = latest_table(ok, "out_uri").select(["out_uri", "out_sha256"]).rename_columns(["out_uri", "own_sha"])
    done = latest_table(table.drop_columns(["out_key"]), "key")
    done = done.drop_columns(["finished_at"]).rename_columns(["key", *(f"done_{c}" for c in DONE_COLUMNS[1:-1])])
    return done, claims


def _own_claims(items: pa.Table, claims: pa.Table) -> pa.Table:
    """Add ``own_sha``: the sha256 this output's restore manifest last recorded (ok) at each item's URI; a
    restore may write over exactly those bytes (its own earlier restore), never over anything else."""
    n = items.num_rows
    if claims.num_rows == 0:
        return items.append_column("own_sha", pa.nulls(n, pa.string()))
    items = items.append_column("i", pa.array(np.arange(n, dtype=np.int64)))
    return items.join(claims, "out_uri", join_type="left outer").sort_by("i").drop_columns(["i"])


def _mark_done(items: pa.Table, done: pa.Table | None, model_id: str, settings: str) -> pa.Table:
    """Add check_uri/check_sha: set where an ok restore of the same LR bytes, model and settings exists."""
    n = items.num_rows
    if done is None or done.num_rows == 0:
        return items.append_column("check_uri", pa.nulls(n, pa.string())).append_column(
            "check_sha", pa.nulls(n, pa.string()))
    items = items.append_column("i", pa.array(np.arange(n, dtype=np.int64)))
    t = items.join(done, "key", join_type="left outer").sort_by("i")
    # an LR without a recorded checksum (bare prefix) compares as null: always redone
    intact = all_true(pc.is_null(t["pre_error"]), pc.equal(t["done_status"], "ok"),
                      pc.equal(t["done_out_uri"], t["out_uri"]), pc.equal(t["done_lr_sha256"], t["lr_sha256"]),
                      pc.equal(t["done_model_id"], model_id), pc.equal(t["done_settings"], settings),
                      pc.is_valid(t["done_out_sha256"]))
    none = pa.scalar(None, pa.string())
    t = t.append_column("check_uri", pc.if_else(intact, t["out_uri"], none))
    return t.append_column("check_sha", pc.if_else(intact, t["done_out_sha256"], none))


def model_groups(cfg: RestoreConfig, p: Plan) -> list[tuple[str | None, pa.Table]]:
    """The items by the model that restores them: (model id or None for the default weights, items).

    With ``model`` set, one group (its checkpoint decides; RestoreError when the manifest records others).
    Else each LR goes to the shipped weights of the model id it records: in the ingest manifest, or (a
    bare LR prefix) in the LR file's own header, read from its first bytes (:func:`locate.lr_model_ids`).
    """
    items = p.items
    if p.bare and cfg.model is None and items.num_rows:
        todo = pc.is_null(items["pre_error"])
        uris = items["lr_uri"].to_pylist()
        ids = locate.lr_model_ids([u for u, t in zip(uris, todo.to_pylist()) if t], cfg.storage,
                                  cfg.max_input_bytes)[::-1]
        ids = [ids.pop() if t else None for t in todo.to_pylist()]
        items = items.set_column(items.column_names.index("model_id"), "model_id", pa.array(ids, pa.string()))
    if cfg.model is not None:
        return [(None, items)]
    groups = [(m, items.filter(pc.fill_null(pc.equal(items["model_id"], m), False)))
              for m in sorted(pc.unique(pc.drop_null(items["model_id"])).to_pylist())]
    unknown = items.filter(pc.is_null(items["model_id"]))
    return ([(None, unknown)] if unknown.num_rows or not groups else []) + groups



"""On-demand restore: LR files (any LR container; from a manifest or an LR prefix) -> HR images at their original size.

An ingest row that kept its source bytes (``fell_back``: the quality floor was not met) is restored by
copying those bytes unchanged to the output under the source's own key (a.jpg -> <output>/a.jpg): the
restore returns the original byte for byte, whatever ``format`` says.

Same stream shape as ingest: items -> read stage (LR bytes) -> model actors (checksum, model id, restore
with the recorded z seed, encode, atomic write) -> restore-manifest rows written by the driver.

Like ingest, a rerun into the same output is resumable: an input whose earlier restore there is ``ok``,
from the same LR bytes, model and output settings, and whose object still has the recorded sha256, gets a
``skipped`` receipt instead of being restored again (``redo=true`` restores everything).
"""
from __future__ import annotations

import fnmatch
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from irn_batch import tiling
from irn_batch.container import LR_SUFFIXES, ContainerError, Encoding
from irn_batch.manifest import MANIFEST_DIR, RESTORE_SCHEMA, ManifestWriter, empty_row, latest_table, new_job_id
from irn_batch.manifest import part_paths, read_manifest, to_table
from irn_batch.pipeline.common import Summary, load_model_bytes
from irn_batch.pipeline.common import actor_model, all_true, check_outputs, finish_job, record_stream, stream_rows
from irn_batch.pipeline.config import RestoreConfig
from irn_batch.pipeline.read import one_line
from irn_batch.storage import StorageError, atomic_write, derived_key, join_key, list_keys, open_fs, output_key
from irn_batch.storage import sha256_hex, to_uri

ITEM_SCHEMA = pa.schema([("key", pa.string()), ("lr_uri", pa.string()), ("out_uri", pa.string()),
                         ("lr_sha256", pa.string()), ("model_id", pa.string()), ("z_seed", pa.int64()),
                         ("width", pa.int64()), ("height", pa.int64()), ("check_uri", pa.string()),
                         ("check_sha", pa.string()), ("pre_error", pa.string()), ("fell_back", pa.bool_())])


# from the ingest manifest
PLAN_COLUMNS = ["key", "lr_uri", "lr_sha256", "model_id", "z_seed", "width", "height", "fell_back"]
# from this output's own (restore) manifest, to find work already done
DONE_COLUMNS = ["key", "out_uri", "out_sha256", "lr_sha256", "model_id", "settings", "status", "finished_at"]


class RestoreError(ValueError):
    """A restore request that cannot run at all (no such input, wrong model)."""


def output_encoding(cfg: RestoreConfig) -> Encoding:
    """The container of the restored images; RestoreError for an unknown one."""
    try:
        return Encoding(cfg.format, cfg.quality, cfg.subsampling)
    except ContainerError as e:
        raise RestoreError(f"format: {e}") from None


def output_settings(cfg: RestoreConfig, default_temperature: float) -> str:
    """The options besides model and LR that shape a restore's bytes, as one comparable string."""
    enc = output_encoding(cfg)
    temperature = default_temperature if cfg.temperature is None else float(cfg.temperature)
    codec = f"format={enc.container}"
    if not enc.lossless:  # quality and subsampling have no effect on a lossless container
        codec += f" quality={enc.quality}" + (f" subsampling={enc.subsampling}" if enc.container != "webp" else "")
    return (f"{codec} temperature={temperature:g} precision={cfg.actors.precision} "
            f"tile={cfg.actors.tile or tiling.DEFAULT_TILE}")


class RestoreActor:
    """Holds one IRN; LR bytes -> HR image object + a restore-manifest row."""

    def __init__(self, ckpt_bytes: bytes, cfg: RestoreConfig, job_id: str):
        self.ckpt = actor_model(ckpt_bytes, cfg.actors)
        self.cfg, self.job_id = cfg, job_id
        self.settings = output_settings(cfg, self.ckpt.default_temperature)
        self.encoding = output_encoding(cfg)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return to_table([self.one(r) for r in batch.to_pylist()], RESTORE_SCHEMA)

    def one(self, rec: dict[str, Any]) -> dict[str, Any]:
        from irn_batch.container import encode
        from irn_batch.rescale import restore_image

        cfg = self.cfg
        row = empty_row(RESTORE_SCHEMA, job_id=self.job_id, key=rec["key"], lr_uri=rec["lr_uri"],
                        lr_sha256=rec["lr_sha256"], out_uri=rec["out_uri"], format=cfg.format,
                        settings=self.settings, model_id=self.ckpt.model_id, z_seed=rec["z_seed"],
                        read_s=rec["read_s"])
        t0 = time.perf_counter()
        if rec["skip"]:  # a receipt: the earlier restore of this LR with these settings is intact
            row.update(status="skipped", out_sha256=rec["check_sha"], total_s=rec["read_s"], finished_at=time.time())
            return row
        data, stage = rec["data"], "restore"
        try:
            if rec["pre_error"] is not None or data is None:
                raise StorageError(rec["pre_error"] or "read: no data")
            got = sha256_hex(data)
            if rec["lr_sha256"] and got != rec["lr_sha256"]:
                raise StorageError(f"LR checksum mismatch: manifest has {rec['lr_sha256'][:16]}..., "
                                   f"object has {got[:16]}... (modified or corrupt)")
            row.update(lr_sha256=got, lr_bytes=len(data))
            if rec["fell_back"]:  # the source bytes, kept by ingest: returned unchanged
                stage, t1 = "write", time.perf_counter()
                fs, path = open_fs(rec["out_uri"], cfg.storage)
                atomic_write(fs, path, data)
                row.update(width=rec["width"], height=rec["height"], format="original", out_bytes=len(data),
                           out_sha256=got, write_s=time.perf_counter() - t1, status="ok",
                           total_s=(rec["read_s"] or 0.0) + time.perf_counter() - t0, finished_at=time.time())
                return row
            pixels = restore_image(self.ckpt, data, temperature=cfg.temperature, z_seed=rec["z_seed"],
                                   tile=cfg.actors.tile, precision=cfg.actors.precision)
            h, w = pixels.shape[:2]
            if rec["width"] is not None and (w, h) != (rec["width"], rec["height"]):
                raise StorageError(f"restored {w}x{h}, manifest says {rec['width']}x{rec['height']}")
            row.update(width=w, height=h, model_s=time.perf_counter() - t0)
            stage, t1 = "write", time.perf_counter()
            out = encode(pixels, self.encoding)
            fs, path = open_fs(rec["out_uri"], cfg.storage)
            atomic_write(fs, path, out)
            row.update(out_bytes=len(out), out_sha256=sha256_hex(out), write_s=time.perf_counter() - t1,
                       status="ok")
        except Exception as e:  # one bad LR becomes its own error row
            msg = one_line(e)
            row.update(status="error", out_uri=None, error=msg if msg.startswith("read:") else f"{stage}: {msg}")
        row.update(total_s=(rec["read_s"] or 0.0) + time.perf_counter() - t0, finished_at=time.time())
        return row


def _manifest_path(fs, path: str) -> str | None:
    """The manifest behind ``path``: a Parquet file, a folder of parts, or an ingest output's _manifest."""
    if fs.isfile(path):
        return path if path.endswith(".parquet") else None
    sub = f"{path.rstrip('/')}/{MANIFEST_DIR}"
    if fs.isdir(sub) and part_paths(fs, sub):
        return sub
    if fs.isdir(path) and any(p.endswith(".parquet") for p in fs.ls(path, detail=False)):
        return path
    return None


def plan(cfg: RestoreConfig, model_id: str, settings: str) -> tuple[pa.Table, str]:
    """(work items, this job's manifest dir): the latest ok row per input of an ingest manifest (filtered),
    or every LR file (any LR container suffix) under an LR prefix; items already restored intact are marked to be checked, not redone.

    Built in Arrow columns, like the ingest plan: no per-row Python objects survive planning.
    """
    fs_in, in_path = open_fs(cfg.input, cfg.storage)
    fs_out, out_path = open_fs(cfg.output, cfg.storage)
    if not fs_in.exists(in_path):
        raise RestoreError(f"{cfg.input}: no such manifest or prefix")
    ext = output_encoding(cfg).suffix
    mpath = _manifest_path(fs_in, in_path)
    if mpath is not None:
        table = read_manifest(fs_in, mpath, columns=["source_uri", "status", "finished_at", *PLAN_COLUMNS])
        table = latest_table(table, "source_uri")
        table = table.filter(pc.fill_null(pc.equal(table["status"], "ok"), False)).select(PLAN_COLUMNS)
    else:
        keys = list_keys(fs_in, in_path, [f"*{suffix}" for suffix in LR_SUFFIXES])
        n = len(keys)
        table = pa.table({"key": pa.array(keys, pa.string()),
                          "lr_uri": pa.array([to_uri(fs_in, join_key(in_path, k)) for k in keys], pa.string()),
                          "lr_sha256": pa.nulls(n, pa.string()), "model_id": pa.nulls(n, pa.string()),
                          "z_seed": pa.nulls(n, pa.int64()), "width": pa.nulls(n, pa.int64()),
                          "height": pa.nulls(n, pa.int64()), "fell_back": pa.nulls(n, pa.bool_())})
        del keys
    table = table.sort_by("key")
    if cfg.keys is not None:
        table = table.filter(pc.is_in(table["key"], value_set=pa.array(list(cfg.keys), pa.string())))
    if cfg.glob:
        table = table.filter(pa.array([fnmatch.fnmatchcase(k, cfg.glob) for k in table["key"].to_pylist()],
                                      pa.bool_()))
    if cfg.limit is not None:
        table = table.slice(0, max(cfg.limit, 0))
    recorded = pc.unique(pc.drop_null(table["model_id"])).to_pylist()
    others = sorted(m for m in recorded if m != model_id)
    if others:
        raise RestoreError(f"model mismatch: the LRs were made by {', '.join(others)} but the loaded model is "
                           f"{model_id}; pass model=<the matching checkpoint>")
    outs, errors, owners = [], [], {}
    for key, kept in zip(table["key"].to_pylist(), table["fell_back"].to_pylist()):
        out = err = None
        try:
            # a source kept by ingest goes out unchanged, so under its own (made safe) key and suffix
            out = to_uri(fs_out, join_key(out_path, output_key(key) if kept else derived_key(output_key(key), ext)))
            if out in owners:
                raise StorageError(f"output key already used by {owners[out]!r}")
            owners[out] = key
        except StorageError as e:
            out, err = None, f"key: {e}"
        outs.append(out)
        errors.append(err)
    del owners
    table = table.append_column("out_uri", pa.array(outs, pa.string()))
    table = table.append_column("pre_error", pa.array(errors, pa.string()))
    manifest_dir = cfg.manifest or to_uri(fs_out, f"{out_path.rstrip('/')}/{MANIFEST_DIR}")
    done = None if cfg.redo else _earlier_restores(manifest_dir, cfg)
    return _mark_done(table, done, model_id, settings).select(ITEM_SCHEMA.names).cast(ITEM_SCHEMA), manifest_dir


def _earlier_restores(manifest_dir: str, cfg: RestoreConfig) -> pa.Table:
    """The latest attempt per key in this output's restore manifest (empty when there is none)."""
    fs, path = open_fs(manifest_dir, cfg.storage)
    done = latest_table(read_manifest(fs, path, RESTORE_SCHEMA, columns=DONE_COLUMNS), "key")
    return done.drop_columns(["finished_at"]).rename_columns(["key", *(f"done_{c}" for c in DONE_COLUMNS[1:-1])])


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


def recorded_model(cfg: RestoreConfig) -> str | None:
    """The one model id an ingest manifest behind ``cfg.input`` records for its ok rows (None when there is
    no manifest or it records none); RestoreError when it records several (pass model=...)."""
    fs_in, in_path = open_fs(cfg.input, cfg.storage)
    mpath = _manifest_path(fs_in, in_path) if fs_in.exists(in_path) else None
    if mpath is None:
        return None
    table = read_manifest(fs_in, mpath, columns=["model_id", "status"])
    ids = pc.unique(pc.drop_null(table.filter(pc.fill_null(pc.equal(table["status"], "ok"), False))["model_id"]))
    ids = sorted(ids.to_pylist())
    if len(ids) > 1:
        raise RestoreError(f"{cfg.input}: the manifest records LRs of several models ({', '.join(ids)}); "
                           "restore them one model at a time with model=<checkpoint>")
    return ids[0] if ids else None


def run_restore(cfg: RestoreConfig, log=print) -> dict[str, Any]:
    """Run one restore job; returns the summary dict (also printed).

    Without ``model`` the job uses the shipped weights whose id the ingest manifest records (the
    compression-aware ones for lossy LRs, say), else the shipped weights for ``scale``.
    """
    model_id = recorded_model(cfg) if cfg.model is None else None
    ckpt_bytes, ckpt = load_model_bytes(cfg.model, cfg.scale, cfg.storage, model_id=model_id)
    model_id, settings = ckpt.model_id, output_settings(cfg, ckpt.default_temperature)
    check_outputs(cfg)  # fail before working: the output and manifest folder take a probe object
    items, manifest_dir = plan(cfg, model_id, settings)
    job_id = cfg.job_id or new_job_id("restore")
    earlier = items.num_rows - items["check_sha"].null_count
    log(f"restore {job_id}: {items.num_rows} LR images, model {model_id}, {settings}; {earlier} restored "
        "before with these settings (checked by sha256, not redone; redo=true to restore them again)")
    summary = Summary("restore", total=items.num_rows)
    fs_m, m_path = open_fs(manifest_dir, cfg.storage)
    writer = ManifestWriter(fs_m, m_path, job_id, RESTORE_SCHEMA, cfg.rows_per_part, seconds=cfg.progress_s,
                           spill_dir=cfg.storage.spill_dir)
    if items.num_rows:
        def lost(item: dict[str, Any], reason: str) -> dict[str, Any]:
            return empty_row(RESTORE_SCHEMA, job_id=job_id, key=item["key"], lr_uri=item["lr_uri"],
                             lr_sha256=item["lr_sha256"], format=cfg.format, settings=settings, model_id=model_id,
                             z_seed=item["z_seed"], status="error", error=reason, finished_at=time.time())

        batches = stream_rows(items, RestoreActor, "lr_uri", cfg, ckpt_bytes, job_id, lost)
        record_stream(batches, summary, writer, ("lr_bytes", "out_bytes"), cfg.progress_s, log)
    writer.flush()
    return finish_job(summary, writer, job_id=job_id, manifest=manifest_dir, model_id=model_id)

"""Bulk ingest: HR images under a prefix -> 8-bit LR files mirroring their keys + a Parquet manifest.

Each LR is stored in ``lr.format`` (PNG by default; the key's suffix follows the container: a.jpg -> a.webp)
or, with ``target_psnr``, as the cheapest of ``lr.candidates`` whose restore reaches it
(``irn_batch.floor``); an image no candidate serves keeps its source bytes under its own key
(``lr_container`` "original", ``fell_back``) or becomes an error row (``fallback=error``).

Stream: (key, uri) items -> read stage (bytes, per record) -> pool of model actors (decode, downscale,
atomic write of the LR; only raw bytes travel through the object store) -> small manifest rows that the
driver writes in parts as they arrive.
"""
from __future__ import annotations

import posixpath
import time
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from irn_batch.floor import FloorError, StoragePolicy, make_policy
from irn_batch.manifest import INGEST_SCHEMA, MANIFEST_DIR, ManifestWriter, empty_row, latest_table, new_job_id
from irn_batch.manifest import read_manifest, to_table
from irn_batch.pipeline.common import Summary, load_model_bytes
from irn_batch.pipeline.common import actor_model, all_true, finish_job, record_stream, stream_rows
from irn_batch.pipeline.config import IngestConfig
from irn_batch.pipeline.read import one_line
from irn_batch.storage import IMAGE_SUFFIXES, StorageError, derived_key, join_key, list_keys, open_fs, safe_key
from irn_batch.storage import sha256_hex, to_uri


ITEM_SCHEMA = pa.schema([(n, pa.string()) for n in
                         ("key", "source_uri", "lr_uri", "check_uri", "check_sha", "pre_error")])


PLAN_COLUMNS = ["source_uri", "lr_uri", "lr_sha256", "model_id", "status", "error", "key", "finished_at",
                "lr_settings"]
# An earlier ingest without lr_settings stored PNG LRs: the settings string of that behaviour.
LEGACY_SETTINGS = StoragePolicy().settings
# The suffix an object under the output prefix has beyond its LR stem: the LR container's, or the source
# key's own for a source kept unchanged (see lr_stem).
_STORED_SUFFIX = r"(?i)\.(png|webp|jpg|jpeg|avif|tif|tiff|bmp|gif)$"


def storage_policy(cfg: IngestConfig) -> StoragePolicy:
    """The validated ``lr.*``, ``target_psnr`` and ``fallback`` settings; FloorConfigError (one line) if bad."""
    return make_policy(cfg.lr.format, cfg.lr.quality, cfg.lr.subsampling, list(cfg.lr.candidates),
                       cfg.target_psnr, cfg.fallback, cfg.floor_precision or cfg.actors.precision)


def lr_stem(key: str) -> str:
    """A key without its image suffix ('a/b.jpg' -> 'a/b'): the LR object is the stem plus its container's
    suffix, a source kept unchanged is the stem plus its own suffix (i.e. the source key)."""
    return derived_key(key, "")


def source_suffix(key: str) -> str:
    """The suffix ``lr_stem`` removed from ``key`` ('' when none)."""
    suffix = posixpath.splitext(key)[1]
    return suffix if suffix.lower() in IMAGE_SUFFIXES else ""


class IngestActor:
    """Holds one IRN on its device; turns (key, bytes) records into LR objects and manifest rows."""

    def __init__(self, ckpt_bytes: bytes, cfg: IngestConfig, job_id: str):
        self.ckpt = actor_model(ckpt_bytes, cfg.actors)
        self.cfg, self.job_id = cfg, job_id
        self.policy = storage_policy(cfg)
        self.chosen: Counter = Counter()  # the floor's choices so far: the likeliest for the next image

    def __call__(self, batch: pa.Table) -> pa.Table:
        return to_table([self.one(r) for r in batch.to_pylist()], INGEST_SCHEMA)

    def one(self, rec: dict[str, Any]) -> dict[str, Any]:
        from irn_batch.floor import choose_lr
        from irn_batch.imageio import decode_image
        from irn_batch.rescale import content_seed, downscale_image

        row = empty_row(INGEST_SCHEMA, job_id=self.job_id, key=rec["key"], source_uri=rec["source_uri"],
                        lr_uri=rec["lr_uri"], scale=self.ckpt.model.scale, model_id=self.ckpt.model_id,
                        read_s=rec["read_s"])
        t0 = time.perf_counter()
        if rec["skip"]:  # a receipt: this job found the earlier ok LR intact (same object, same sha256)
            row.update(status="skipped", lr_uri=rec["check_uri"], lr_sha256=rec["check_sha"], total_s=rec["read_s"],
                       finished_at=time.time())
            return row
        data = rec["data"]
        if rec["pre_error"] is not None or data is None:
            return self._error(row, rec["pre_error"] or "read: no data", t0)
        row.update(source_bytes=len(data), source_sha256=sha256_hex(data))
        stage = "decode"
        try:
            img = decode_image(data, max_pixels=self.cfg.max_pixels)
            row.update(width=img.width, height=img.height, mode=img.mode, decode_s=time.perf_counter() - t0)
            stage, t1 = "downscale", time.perf_counter()
            seed, policy, ac = content_seed(data), self.policy, self.cfg.actors
            if policy.target_psnr is None:
                enc = policy.fixed.for_alpha(img.alpha is not None)
                lr, _meta = downscale_image(self.ckpt, img, z_seed=seed, tile=ac.tile, precision=ac.precision,
                                            encoding=enc)
                suffix = enc.suffix
                row.update(lr_container=enc.container, lr_quality=enc.quality, lr_subsampling=enc.subsampling,
                           fell_back=False)
            else:
                stage = "floor"
                stored = choose_lr(self.ckpt, img, data, z_seed=seed, target_psnr=policy.target_psnr,
                                   candidates=policy.candidates, fallback=policy.fallback, tile=ac.tile,
                                   precision=ac.precision, check_precision=policy.check_precision, prior=self.chosen)
                lr, enc = stored.data, stored.encoding
                self.chosen[enc] += 1
                suffix = source_suffix(rec["key"]) if enc is None else enc.suffix
                row.update(lr_container=stored.container, lr_quality=None if enc is None else enc.quality,
                           lr_subsampling=None if enc is None else enc.subsampling, restore_psnr=stored.restore_psnr,
                           fell_back=stored.fell_back, floor_restores=stored.restores)
            row.update(z_seed=seed, lr_settings=policy.settings, model_s=time.perf_counter() - t1)
            stage, t2 = "write", time.perf_counter()
            lr_uri = rec["lr_uri"] + suffix  # the plan's LR stem + the stored container's suffix
            fs, path = open_fs(lr_uri, self.cfg.storage)
            from irn_batch.storage import atomic_write

            atomic_write(fs, path, lr)
            row.update(lr_uri=lr_uri, lr_bytes=len(lr), lr_sha256=sha256_hex(lr), write_s=time.perf_counter() - t2)
        except FloorError as e:  # no candidate reaches target_psnr and fallback=error
            return self._error(row, f"floor: {e}", t0)
        except Exception as e:  # any failure on one image becomes that image's error row
            return self._error(row, f"{stage}: {one_line(e)}", t0)
        row.update(status="ok", total_s=(rec["read_s"] or 0.0) + time.perf_counter() - t0, finished_at=time.time())
        return row

    @staticmethod
    def _error(row: dict[str, Any], msg: str, t0: float) -> dict[str, Any]:
        row.update(status="error", error=msg, lr_uri=None, total_s=time.perf_counter() - t0,
                   finished_at=time.time())
        return row


def plan(cfg: IngestConfig, model_id: str, settings: str = LEGACY_SETTINGS) -> tuple[pa.Table, pa.Table, str, str]:
    """(work items, earlier errors left alone, manifest dir, job id) for this run.

    An item's ``lr_uri`` is its LR stem (the actor adds the stored container's suffix); an earlier ok LR of
    the same stem, model and storage ``settings`` is marked to be checked (``check_uri``) instead of redone.

    Built column by column in Arrow: the driver keeps a few hundred bytes per input, not a dict per input
    (``benchmarks/bench_plan.py`` measures the peak).
    """
    fs_in, in_path = open_fs(cfg.input, cfg.storage)
    fs_out, out_path = open_fs(cfg.output, cfg.storage)
    manifest_dir = cfg.manifest or to_uri(fs_out, f"{out_path.rstrip('/')}/{MANIFEST_DIR}")
    fs_m, m_path = open_fs(manifest_dir, cfg.storage)
    try:
        keys = list(cfg.keys) if cfg.keys is not None else list_keys(fs_in, in_path, cfg.include, cfg.exclude)
    except OSError as e:  # a mistyped prefix must not look like an empty job
        raise StorageError(f"{cfg.input}: cannot list the input prefix ({one_line(e)})") from e
    sources, lrs, errors, owners = [], [], [], {}
    for key in keys:
        src = lr = err = None
        try:
            k = safe_key(key)
            src = to_uri(fs_in, join_key(in_path, k))
            lr_key = lr_stem(k)
            if MANIFEST_DIR in (derived_key(k, ".png").split("/", 1)[0], k):
                raise StorageError(f"key {key!r} would write into the manifest folder")
            lr = to_uri(fs_out, join_key(out_path, lr_key))
            # two inputs with one LR stem (a.jpg, a.png): the first in listing order keeps it
            if lr in owners:
                raise StorageError(f"its LR object {lr} is already used by input {owners[lr]!r}")
            owners[lr] = key
        except StorageError as e:
            src, lr, err = src or f"{cfg.input.rstrip('/')}/{key}", None, f"key: {e}"
        sources.append(src)
        lrs.append(lr)
        errors.append(err)
    n = len(keys)
    t = pa.table({"key": pa.array(keys, pa.string()), "source_uri": pa.array(sources, pa.string()),
                  "lr_uri": pa.array(lrs, pa.string()), "pre_error": pa.array(errors, pa.string()),
                  "i": pa.array(np.arange(n, dtype=np.int64))})
    del keys, sources, lrs, errors, owners
    previous = latest_table(read_manifest(fs_m, m_path, columns=PLAN_COLUMNS), "source_uri")
    previous = previous.select(["source_uri", "lr_uri", "lr_sha256", "model_id", "status", "error", "lr_settings"])
    previous = previous.rename_columns(["source_uri", "prev_lr_uri", "prev_sha", "prev_model", "prev_status",
                                        "prev_error", "prev_settings"])
    t = t.join(previous, "source_uri", join_type="left outer").sort_by("i")
    fresh = pc.is_null(t["pre_error"])
    prev_stem = pc.replace_substring_regex(t["prev_lr_uri"], _STORED_SUFFIX, "")
    intact = all_true(fresh, pc.equal(t["prev_status"], "ok"), pc.equal(prev_stem, t["lr_uri"]),
                      pc.equal(t["prev_model"], model_id),
                      pc.equal(pc.fill_null(t["prev_settings"], LEGACY_SETTINGS), settings))
    left_alone = all_true(fresh, pc.equal(t["prev_status"], "error"), pa.scalar(not cfg.retry_errors))
    t = t.append_column("check_uri", pc.if_else(intact, t["prev_lr_uri"], pa.scalar(None, pa.string())))
    t = t.append_column("check_sha", pc.if_else(intact, t["prev_sha"], pa.scalar(None, pa.string())))
    left = t.filter(left_alone).select(["key", "source_uri", "prev_error"])
    items = t.filter(pc.invert(left_alone)).select(ITEM_SCHEMA.names).cast(ITEM_SCHEMA)
    return items, left, manifest_dir, cfg.job_id or new_job_id("ingest")


def run_ingest(cfg: IngestConfig, log=print) -> dict[str, Any]:
    """Run one ingest job; returns the summary dict (also printed), including ``job_id`` and ``manifest``."""
    policy = storage_policy(cfg)  # a bad setting fails here, in one line, before any work
    ckpt_bytes, ckpt = load_model_bytes(cfg.model, cfg.scale, cfg.storage)
    model_id, scale = ckpt.model_id, ckpt.model.scale
    items, left, manifest_dir, job_id = plan(cfg, model_id, policy.settings)
    log(f"ingest {job_id}: {items.num_rows} inputs to check/process, model {model_id} (x{scale}), "
        f"{policy.settings}; "
        f"{left.num_rows} earlier errors not retried (retry_errors=true to retry)")
    summary = Summary("ingest", total=items.num_rows + left.num_rows)
    fs_m, m_path = open_fs(manifest_dir, cfg.storage)
    writer = ManifestWriter(fs_m, m_path, job_id, INGEST_SCHEMA, cfg.rows_per_part, seconds=cfg.progress_s)
    # inputs left alone still get a row in this job's manifest, saying why
    for batch in left.to_batches(max(1, cfg.rows_per_part)):
        receipts = [empty_row(INGEST_SCHEMA, job_id=job_id, key=p["key"], source_uri=p["source_uri"], scale=scale,
                              model_id=model_id, status="skipped", finished_at=time.time(),
                              error=f"not retried (retry_errors=true to retry): {p['prev_error']}")
                    for p in batch.to_pylist()]
        for r in receipts:
            summary.add(r, None, None)
        writer.add(receipts)
    if items.num_rows:
        def lost(item: dict[str, Any], reason: str) -> dict[str, Any]:
            return empty_row(INGEST_SCHEMA, job_id=job_id, key=item["key"], source_uri=item["source_uri"],
                             scale=scale, model_id=model_id, status="error", error=reason, finished_at=time.time())

        batches = stream_rows(items, IngestActor, "source_uri", cfg, ckpt_bytes, job_id, lost)
        record_stream(batches, summary, writer, ("source_bytes", "lr_bytes"), cfg.progress_s, log)
    writer.flush()
    return finish_job(summary, writer, job_id=job_id, manifest=manifest_dir, model_id=model_id)

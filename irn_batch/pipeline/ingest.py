"""Bulk ingest: HR images under a prefix -> 8-bit LR PNGs mirroring their keys + a Parquet manifest.

Stream: (key, uri) items -> read stage (bytes, per record) -> pool of model actors (decode, downscale,
atomic write of the LR; only raw bytes travel through the object store) -> small manifest rows that the
driver writes in parts as they arrive.
"""
from __future__ import annotations

import time
from typing import Any

import pyarrow as pa

from irn_batch.manifest import INGEST_SCHEMA, MANIFEST_DIR, ManifestWriter, empty_row, latest_rows, new_job_id
from irn_batch.manifest import read_manifest, to_table
from irn_batch.pipeline.common import Summary, load_model_bytes
from irn_batch.pipeline.common import actor_model, finish_job, record_stream, stream_rows
from irn_batch.pipeline.config import IngestConfig
from irn_batch.pipeline.read import one_line
from irn_batch.storage import StorageError, derived_key, join_key, list_keys, open_fs, safe_key, sha256_hex
from irn_batch.storage import to_uri


ITEM_SCHEMA = pa.schema([(n, pa.string()) for n in
                         ("key", "source_uri", "lr_uri", "check_uri", "check_sha", "pre_error")])


PLAN_COLUMNS = ["source_uri", "lr_uri", "lr_sha256", "model_id", "status", "error", "key", "finished_at"]


class IngestActor:
    """Holds one IRN on its device; turns (key, bytes) records into LR objects and manifest rows."""

    def __init__(self, ckpt_bytes: bytes, cfg: IngestConfig, job_id: str):
        self.ckpt = actor_model(ckpt_bytes, cfg.actors)
        self.cfg, self.job_id = cfg, job_id

    def __call__(self, batch: pa.Table) -> pa.Table:
        return to_table([self.one(r) for r in batch.to_pylist()], INGEST_SCHEMA)

    def one(self, rec: dict[str, Any]) -> dict[str, Any]:
        from irn_batch.imageio import decode_image
        from irn_batch.rescale import content_seed, downscale_image

        row = empty_row(INGEST_SCHEMA, job_id=self.job_id, key=rec["key"], source_uri=rec["source_uri"],
                        lr_uri=rec["lr_uri"], scale=self.ckpt.model.scale, model_id=self.ckpt.model_id,
                        read_s=rec["read_s"])
        t0 = time.perf_counter()
        if rec["skip"]:  # a receipt: this job found the earlier ok LR intact (same object, same sha256)
            row.update(status="skipped", lr_sha256=rec["check_sha"], total_s=rec["read_s"], finished_at=time.time())
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
            seed = content_seed(data)
            png, _meta = downscale_image(self.ckpt, img, z_seed=seed, tile=self.cfg.actors.tile,
                                         precision=self.cfg.actors.precision)
            row.update(z_seed=seed, model_s=time.perf_counter() - t1)
            stage, t2 = "write", time.perf_counter()
            fs, path = open_fs(rec["lr_uri"], self.cfg.storage)
            from irn_batch.storage import atomic_write

            atomic_write(fs, path, png)
            row.update(lr_bytes=len(png), lr_sha256=sha256_hex(png), write_s=time.perf_counter() - t2)
        except Exception as e:  # any failure on one image becomes that image's error row
            return self._error(row, f"{stage}: {one_line(e)}", t0)
        row.update(status="ok", total_s=(rec["read_s"] or 0.0) + time.perf_counter() - t0, finished_at=time.time())
        return row

    @staticmethod
    def _error(row: dict[str, Any], msg: str, t0: float) -> dict[str, Any]:
        row.update(status="error", error=msg, lr_uri=None, total_s=time.perf_counter() - t0,
                   finished_at=time.time())
        return row


def plan(cfg: IngestConfig, model_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str, str]:
    """(work items, previous error rows left alone, manifest dir, job id) for this run."""
    fs_in, in_path = open_fs(cfg.input, cfg.storage)
    fs_out, out_path = open_fs(cfg.output, cfg.storage)
    manifest_dir = cfg.manifest or to_uri(fs_out, f"{out_path.rstrip('/')}/{MANIFEST_DIR}")
    fs_m, m_path = open_fs(manifest_dir, cfg.storage)
    # only the columns planning needs: the driver holds one entry per earlier input
    previous = latest_rows(read_manifest(fs_m, m_path, columns=PLAN_COLUMNS), "source_uri")
    keys = list(cfg.keys) if cfg.keys is not None else list_keys(fs_in, in_path, cfg.include, cfg.exclude)
    items, owners, left = [], {}, []
    for key in keys:
        item = {"key": key, "source_uri": None, "lr_uri": None, "check_uri": None, "check_sha": None,
                "pre_error": None}
        try:
            k = safe_key(key)
            item["source_uri"] = to_uri(fs_in, join_key(in_path, k))
            lr_key = derived_key(k, ".png")
            if lr_key.split("/", 1)[0] == MANIFEST_DIR:
                raise StorageError(f"key {key!r} would write into the manifest folder")
            item["lr_uri"] = to_uri(fs_out, join_key(out_path, lr_key))
        except StorageError as e:
            item["source_uri"] = item["source_uri"] or f"{cfg.input.rstrip('/')}/{key}"
            item["pre_error"] = f"key: {e}"
            items.append(item)
            continue
        if item["lr_uri"] in owners:
            item["pre_error"] = f"key: its LR key {lr_key!r} is already used by input {owners[item['lr_uri']]!r}"
            items.append(item)
            continue
        owners[item["lr_uri"]] = key
        prev = previous.get(item["source_uri"])
        if prev is not None and prev["status"] == "ok" and prev["lr_uri"] == item["lr_uri"] \
                and prev["model_id"] == model_id:
            item["check_uri"], item["check_sha"] = prev["lr_uri"], prev["lr_sha256"]
        elif prev is not None and prev["status"] == "error" and not cfg.retry_errors:
            left.append(prev)
            continue
        items.append(item)
    return items, left, manifest_dir, cfg.job_id or new_job_id("ingest")


def run_ingest(cfg: IngestConfig, log=print) -> dict[str, Any]:
    """Run one ingest job; returns the summary dict (also printed), including ``job_id`` and ``manifest``."""
    ckpt_bytes, model_id, scale = load_model_bytes(cfg.model, cfg.scale, cfg.storage)
    items, left, manifest_dir, job_id = plan(cfg, model_id)
    log(f"ingest {job_id}: {len(items)} inputs to check/process, model {model_id} (x{scale}); "
        f"{len(left)} earlier errors not retried (retry_errors=true to retry)")
    summary = Summary("ingest", total=len(items) + len(left))
    fs_m, m_path = open_fs(manifest_dir, cfg.storage)
    writer = ManifestWriter(fs_m, m_path, job_id, INGEST_SCHEMA, cfg.rows_per_part, seconds=cfg.progress_s)
    # inputs left alone still get a row in this job's manifest, saying why
    receipts = [empty_row(INGEST_SCHEMA, job_id=job_id, key=p["key"], source_uri=p["source_uri"], scale=scale,
                          model_id=model_id, status="skipped", finished_at=time.time(),
                          error=f"not retried (retry_errors=true to retry): {p['error']}") for p in left]
    for r in receipts:
        summary.add(r, None, None)
    writer.add(receipts)
    if items:
        batches = stream_rows(items, ITEM_SCHEMA, IngestActor, "source_uri", cfg, ckpt_bytes, job_id)
        record_stream(batches, summary, writer, ("source_bytes", "lr_bytes"), cfg.progress_s, log)
    writer.flush()
    return finish_job(summary, writer, job_id=job_id, manifest=manifest_dir, model_id=model_id)

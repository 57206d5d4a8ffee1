"""On-demand restore: LR files (any LR container; from a manifest or an LR prefix) -> HR images at their original size.

``format: source`` (the default) writes each restore in its original's container, under the source's
own (made safe) key: a.jpg -> <output>/a.jpg as a JPEG at the quality estimated at ingest, a.png as a PNG,
a.heic as HEIC (``irn_batch.io.container.source_encoding``; GIF, BMP, PPM and TGA originals become PNG under
the key with a .png suffix). Without an ingest manifest (a bare LR prefix) nothing is known of the
originals and ``source`` writes PNG. Any format writes a gray source gray, a 16-bit one at 16 bits where
the container holds it (``irn_batch.io.container.restore_array``), and tags a restore whose original's ICC
profile was converted at ingest as sRGB. Each row records the original's bytes, the output's depth, whether
a deeper source became 8-bit and whether a lossless original came back as an IRN approximation.

Where two inputs would restore to one output key (a.jpg and a.png with ``format: png``), the input whose
key already is that output key keeps it, else the first in key order; the other gets its whole key plus
the output suffix (a.jpg -> a.jpg.png).

An ingest row that kept its source bytes (``fell_back``: the quality floor was not met) is restored by
copying those bytes unchanged to the output under the source's own key (a.jpg -> <output>/a.jpg): the
restore returns the original byte for byte, whatever ``format`` says.

Same stream shape as ingest: items -> read stage (LR bytes) -> model actors (checksum, model id, restore
with the recorded z seed, encode, no-clobber write: :func:`write_output`) -> restore-manifest rows written by
the driver. What a restore may write, and where it finds each LR and model, is decided by its plan
(:mod:`irn_batch.pipeline.restore_plan`).

Like ingest, a rerun into the same output is resumable: an input whose earlier restore there is ``ok``,
from the same LR bytes, model and output settings, and whose object still has the recorded sha256, gets a
``skipped`` receipt instead of being restored again (``redo=true`` restores everything).
"""
from __future__ import annotations

import time
from typing import Any

import pyarrow as pa

from irn_batch.rescale import tiling
from irn_batch.model.checkpoint import CheckpointError
from irn_batch.io.container import ContainerError, Encoding
from irn_batch.storage.manifest import RESTORE_SCHEMA, ManifestWriter, empty_row, new_job_id, to_table
from irn_batch.pipeline import locate
from irn_batch.cluster import actor_model
from irn_batch.model.checkpoint import load_model_bytes
from irn_batch.pipeline.job import Summary, check_outputs, finish_job, record_stream
from irn_batch.pipeline.stream import stream_rows
from irn_batch.pipeline.config import RestoreConfig
from irn_batch.pipeline.hr_output import RestoreOptions, StageError, restore_lr
from irn_batch.pipeline.read import error_text
from irn_batch.pipeline.restore_plan import ITEM_SCHEMA, SOURCE, RestoreError, items_for, model_groups, plan_items
from irn_batch.pipeline.restore_plan import refuse_other_models
from irn_batch.storage import REPLACE_ANY, ObjectExists, StorageError, open_fs, to_uri
from irn_batch.storage import write_guarded

__all__ = ["ITEM_SCHEMA", "NOT_OURS", "RestoreActor", "RestoreError", "output_encoding", "output_settings", "plan",
           "run_restore", "write_output"]
NOT_OURS = "and is not an earlier restore of this job's output; overwrite=true to replace"

def output_encoding(cfg: RestoreConfig) -> Encoding | None:
    """The container of the restored images (None for ``source``: per image); RestoreError for an unknown one."""
    if str(cfg.format).lower() == SOURCE:
        return None
    try:
        return Encoding(cfg.format, cfg.quality, cfg.subsampling)
    except ContainerError as e:
        raise RestoreError(f"format: {e}") from None


def output_settings(cfg: RestoreConfig, default_temperature: float) -> str:
    """The options besides model and LR that shape a restore's bytes, as one comparable string."""
    enc = output_encoding(cfg)
    temperature = default_temperature if cfg.temperature is None else float(cfg.temperature)
    codec = f"format={SOURCE}" if enc is None else f"format={enc.container}"
    if enc is not None and not enc.lossless:  # quality and subsampling have no effect on a lossless container
        codec += f" quality={enc.quality}" + (f" subsampling={enc.subsampling}" if enc.container != "webp" else "")
    return (f"{codec} temperature={temperature:g} precision={cfg.actors.precision} "
            f"tile={cfg.actors.tile or tiling.DEFAULT_TILE}")


def write_output(fs, path: str, data: bytes, rec: dict[str, Any], cfg: RestoreConfig) -> None:
    """Write one restored object where nothing is, or over this output's own earlier restore of that path
    (``rec["own_sha"]``: the sha256 its restore manifest last recorded there), or anywhere with
    ``overwrite``; StorageError naming the object otherwise (it is left as it was)."""
    try:
        write_guarded(fs, path, data, REPLACE_ANY if cfg.overwrite else rec.get("own_sha"))
    except ObjectExists as e:
        msg = str(e)
        raise StorageError(f"{msg} {NOT_OURS}" if msg.endswith(" exists") else f"{msg}; not written") from None


class RestoreActor:
    """Holds one IRN; LR bytes -> HR image object + a restore-manifest row."""

    def __init__(self, ckpt_bytes: bytes, cfg: RestoreConfig, job_id: str):
        self.ckpt = actor_model(ckpt_bytes, cfg.actors)
        self.cfg, self.job_id = cfg, job_id
        self.settings = output_settings(cfg, self.ckpt.default_temperature)
        self.options = RestoreOptions(output_encoding(cfg), cfg.temperature, cfg.actors.tile, cfg.actors.precision,
                                      cfg.storage)
        fs_out, out_path = open_fs(cfg.output, cfg.storage)
        self.out_root = to_uri(fs_out, out_path)  # out_key: out_uri relative to it

    def __call__(self, batch: pa.Table) -> pa.Table:
        return to_table([self.one(r) for r in batch.to_pylist()], RESTORE_SCHEMA)

    def one(self, rec: dict[str, Any]) -> dict[str, Any]:
        cfg = self.cfg
        row = empty_row(RESTORE_SCHEMA, job_id=self.job_id, key=rec["key"], lr_uri=rec["lr_uri"],
                        lr_sha256=rec["lr_sha256"], out_uri=rec["out_uri"], format=cfg.format,
                        settings=self.settings, model_id=self.ckpt.model_id, z_seed=rec["z_seed"],
                        read_s=rec["read_s"], source_bytes=rec["source_bytes"],
                        out_key=locate.relative_to(self.out_root, rec["out_uri"]))
        t0 = time.perf_counter()
        if rec["skip"]:  # a receipt: the earlier restore of this LR with these settings is intact
            row.update(status="skipped", out_sha256=rec["check_sha"], total_s=rec["read_s"], finished_at=time.time())
            return row
        try:
            if rec["pre_error"] is not None or rec["data"] is None:
                raise StorageError(rec["pre_error"] or "read: no data")
            out = restore_lr(self.ckpt, rec, rec["data"], self.options)
            t1 = time.perf_counter()
            try:
                fs, path = open_fs(rec["out_uri"], cfg.storage)
                write_output(fs, path, out.data, rec, cfg)
            except Exception as e:
                raise StageError("write", e) from e
            encode_s = out.fields.pop("encode_s")
            row.update(out.fields, status="ok", write_s=encode_s + time.perf_counter() - t1)
        except Exception as e:  # one bad LR becomes its own error row
            stage, cause = (e.stage, e.error) if isinstance(e, StageError) else ("restore", e)
            msg = error_text(cause)
            row.update(status="error", out_uri=None, out_key=None,
                       error=msg if msg.startswith("read:") else f"{stage}: {msg}")
        row.update(total_s=(rec["read_s"] or 0.0) + time.perf_counter() - t0, finished_at=time.time())
        return row


def plan(cfg: RestoreConfig, model_id: str, settings: str) -> tuple[pa.Table, str]:
    """(work items, this job's manifest dir) for one model: :func:`plan_items`, with the items already
    restored intact (same LR bytes, model, settings) marked to be checked, not redone.

    RestoreError when the manifest records LRs of another model than ``model_id``.
    """
    p = plan_items(cfg, output_encoding(cfg))
    refuse_other_models(p.items, model_id)
    return items_for(p.items, p.done, model_id, settings), p.manifest_dir


def run_restore(cfg: RestoreConfig, log=print) -> dict[str, Any]:
    """Run one restore job; returns the summary dict (also printed).

    Without ``model`` each LR is restored by the shipped weights whose id it records (ingest manifest or
    LR header; the compression-aware ones for lossy LRs, say), one actor pool per model; LRs that record
    none get the shipped weights for ``scale``. A model id with no shipped weights makes error rows of its
    LRs (RestoreError when no LR has a model to restore it).
    """
    p = plan_items(cfg, output_encoding(cfg))  # refuses an output over its inputs: before any write
    check_outputs(cfg, p.manifest_dir)  # fail before working: the output and manifest folder take a probe
    job_id = cfg.job_id or new_job_id("restore")
    groups, loaded, failed = model_groups(cfg, p), [], []
    for model_id, items in groups:
        try:
            loaded.append((load_model_bytes(cfg.model, cfg.scale, cfg.storage, model_id=model_id), items))
        except CheckpointError as e:
            if cfg.model is not None or len(groups) == 1:
                raise
            failed.append((model_id, items, f"model: {error_text(e)}"))
    if not loaded:
        raise RestoreError(failed[0][2])
    if cfg.model is not None:  # one checkpoint for all: the LRs must be its own
        refuse_other_models(loaded[0][1], loaded[0][0][1].model_id)
    total = p.items.num_rows
    summary = Summary("restore", total=total)
    fs_m, m_path = open_fs(p.manifest_dir, cfg.storage)
    writer = ManifestWriter(fs_m, m_path, job_id, RESTORE_SCHEMA, cfg.rows_per_part, seconds=cfg.progress_s,
                           spill_dir=cfg.storage.spill_dir)

    def lost_row(item: dict[str, Any], reason: str, model_id: str | None, settings: str | None) -> dict[str, Any]:
        return empty_row(RESTORE_SCHEMA, job_id=job_id, key=item["key"], lr_uri=item["lr_uri"],
                         lr_sha256=item["lr_sha256"], format=cfg.format, settings=settings, model_id=model_id,
                         z_seed=item["z_seed"], status="error", error=reason, finished_at=time.time())

    for model_id, items, reason in failed:  # LRs of a model that is not shipped: error rows, nothing lost
        for batch in items.to_batches(1000):
            rows = [lost_row(r, reason, model_id, None) for r in batch.to_pylist()]
            for r in rows:
                summary.add(r, None, None)
            writer.add(rows)
    ids = []
    for (ckpt_bytes, ckpt), items in loaded:
        model_id, settings = ckpt.model_id, output_settings(cfg, ckpt.default_temperature)
        ids.append(model_id)
        items = items_for(items, p.done, model_id, settings)
        earlier = items.num_rows - items["check_sha"].null_count
        log(f"restore {job_id}: {items.num_rows} LR images, model {model_id}, {settings}; {earlier} restored "
            "before with these settings (checked by sha256, not redone; redo=true to restore them again)")
        if items.num_rows:
            batches = stream_rows(items, RestoreActor, "lr_uri", cfg, ckpt_bytes, job_id,
                                  lambda item, reason, m=model_id, st=settings: lost_row(item, reason, m, st))
            record_stream(batches, summary, writer, ("lr_bytes", "out_bytes"), cfg.progress_s, log)
    writer.flush()
    return finish_job(summary, writer, job_id=job_id, manifest=p.manifest_dir, model_id=", ".join(ids))

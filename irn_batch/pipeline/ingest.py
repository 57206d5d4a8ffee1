"""Bulk ingest: HR images under a prefix -> 8-bit LR files mirroring their keys + a Parquet manifest.

Each LR is stored in ``lr.format`` (PNG by default; the key's suffix follows the container: a.jpg -> a.webp;
of a.jpg and a.png side by side, the second gets a.png.png: ``irn_batch.pipeline.ingest_plan``)
or, with ``target_psnr``, as the cheapest of ``lr.candidates`` whose restore reaches it
(``irn_batch.quality_floor``); an image no candidate serves keeps its source bytes under its own key
(``lr_container`` "original", ``fell_back``) or becomes an error row (``fallback=error``).

Stream: (key, uri) items -> read stage (bytes, per record) -> pool of model actors (decode, downscale,
atomic write of the LR; only raw bytes travel through the object store) -> small manifest rows that the
driver writes in parts as they arrive.
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pyarrow as pa

from irn_batch.quality_floor import FloorError, StoragePolicy, make_policy
from irn_batch.storage.manifest import INGEST_SCHEMA, ManifestWriter, empty_row
from irn_batch.storage.manifest import to_table
from irn_batch.cluster import actor_model
from irn_batch.model.checkpoint import load_model_bytes
from irn_batch.pipeline.job import Summary, check_outputs, finish_job, record_stream
from irn_batch.pipeline.stream import stream_rows
from irn_batch.pipeline.config import IngestConfig
from irn_batch.pipeline.ingest_plan import left_out_counts, plan, print_plan, source_suffix
from irn_batch.pipeline.read import INPUT, TRANSIENT, error_text
from irn_batch.storage import open_fs
from irn_batch.storage import open_uri, sha256_hex, to_uri



def storage_policy(cfg: IngestConfig) -> StoragePolicy:
    """The validated ``lr.*``, ``target_psnr`` and ``fallback`` settings; FloorConfigError (one line) if bad."""
    return make_policy(cfg.lr.format, cfg.lr.quality, cfg.lr.subsampling, list(cfg.lr.candidates),
                       cfg.target_psnr, cfg.fallback, cfg.floor_precision or cfg.actors.precision)


def lr_settings(cfg: IngestConfig, policy: StoragePolicy) -> str:
    """The ``lr_settings`` string: the storage policy's, plus the metadata setting where not ``keep``."""
    from irn_batch.io.photo_metadata import check_setting

    check_setting(cfg.metadata)
    return policy.settings + ("" if cfg.metadata == "keep" else f" metadata={cfg.metadata}")


def _kinds(kinds) -> str:
    return ",".join(kinds)


class IngestActor:
    """Holds one IRN on its device; turns (key, bytes) records into LR objects and manifest rows."""

    def __init__(self, ckpt_bytes: bytes, cfg: IngestConfig, job_id: str):
        self.ckpt = actor_model(ckpt_bytes, cfg.actors)
        self.cfg, self.job_id = cfg, job_id
        self.policy = storage_policy(cfg)
        self.settings = lr_settings(cfg, self.policy)
        self.chosen: Counter = Counter()  # the floor's choices so far: the likeliest for the next image
        fs_out, out_path = open_fs(cfg.output, cfg.storage)
        self.out_root = to_uri(fs_out, out_path.rstrip("/")) + "/"  # lr_key: lr_uri relative to it

    def __call__(self, batch: pa.Table) -> pa.Table:
        return to_table([self.one(r) for r in batch.to_pylist()], INGEST_SCHEMA)

    def one(self, rec: dict[str, Any]) -> dict[str, Any]:
        from irn_batch.quality_floor import choose_lr
        from irn_batch.io.decode import decode_image
        from irn_batch.io.photo_metadata import for_lr
        from irn_batch.rescale import content_seed, downscale_image

        row = empty_row(INGEST_SCHEMA, job_id=self.job_id, key=rec["key"], source_uri=rec["source_uri"],
                        lr_uri=rec["lr_uri"], scale=self.ckpt.model.scale, model_id=self.ckpt.model_id,
                        read_s=rec["read_s"], source_version=rec.get("source_version"))
        t0 = time.perf_counter()
        if rec["skip"]:  # a receipt: this job found the earlier ok LR intact (same object, same sha256)
            row.update(status="skipped", lr_uri=rec["check_uri"], lr_sha256=rec["check_sha"], total_s=rec["read_s"],
                       finished_at=time.time())
            return row
        data = rec["data"]
        if rec["pre_error"] is not None or data is None:
            return self._error(row, rec["pre_error"] or "read: no data", t0, rec.get("error_kind") or TRANSIENT)
        row.update(source_bytes=len(data), source_sha256=sha256_hex(data))
        stage = "decode"
        try:
            img = decode_image(data, max_pixels=self.cfg.max_pixels)
            row.update(width=img.width, height=img.height, mode=img.mode, colour=img.colour,
                       decode_s=time.perf_counter() - t0, bit_depth=img.bit_depth, grey=img.grey,
                       gamut_clipped=img.gamut_clipped, source_container=img.container,
                       source_quality=img.quality, source_lossless=img.lossless, extra_frames=img.pages - 1,
                       source_subsampling=img.subsampling)
            stage, t1 = "downscale", time.perf_counter()
            seed, policy, ac = content_seed(data), self.policy, self.cfg.actors
            photo = for_lr(data, img.colour, self.cfg.metadata)
            if policy.target_psnr is None:
                enc = policy.fixed.for_alpha(img.alpha is not None)
                lr, _meta = downscale_image(self.ckpt, img, z_seed=seed, tile=ac.tile, precision=ac.precision,
                                            encoding=enc, photo=photo)
                suffix = enc.suffix
                row.update(lr_container=enc.container, lr_quality=enc.quality, lr_subsampling=enc.subsampling,
                           fell_back=False)
            else:
                stage = "floor"
                stored = choose_lr(self.ckpt, img, data, z_seed=seed, target_psnr=policy.target_psnr,
                                   candidates=policy.candidates, fallback=policy.fallback, tile=ac.tile,
                                   precision=ac.precision, check_precision=policy.check_precision, prior=self.chosen,
                                   photo=photo)
                lr, enc = stored.data, stored.encoding
                self.chosen[enc] += 1
                suffix = source_suffix(rec["key"]) if enc is None else enc.suffix
                row.update(lr_container=stored.container, lr_quality=None if enc is None else enc.quality,
                           lr_subsampling=None if enc is None else enc.subsampling, restore_psnr=stored.restore_psnr,
                           fell_back=stored.fell_back, floor_restores=stored.restores)
            row.update(z_seed=seed, lr_settings=self.settings, model_s=time.perf_counter() - t1,
                       lossy_from_lossless=img.lossless and enc is not None and not enc.lossless)
            stage = "metadata"
            sidecar = self._metadata(row, data, img, lr, enc, photo)
            stage, t2 = "write", time.perf_counter()
            lr_uri = rec["lr_uri"] + suffix  # the plan's LR stem + the stored container's suffix
            fs, path = open_uri(lr_uri, self.cfg.storage)
            from irn_batch.storage import atomic_write

            from irn_batch.io.photo_metadata import SIDECAR_SUFFIX

            if sidecar is not None:  # first, so that an LR in the output always has its sidecar
                atomic_write(fs, path + SIDECAR_SUFFIX, sidecar)
                row.update(metadata_uri=lr_uri + SIDECAR_SUFFIX, metadata_sha256=sha256_hex(sidecar))
            elif self.cfg.metadata != "keep" and enc is not None:
                # drop_gps/strip: an earlier run's sidecar for this LR must not bring the metadata back
                # (a restore from the bare LR prefix reads <lr>.meta.json); one request, no listing
                try:
                    fs.rm_file(path + SIDECAR_SUFFIX)
                except FileNotFoundError:
                    pass
            atomic_write(fs, path, lr)
            row.update(lr_uri=lr_uri, lr_bytes=len(lr), lr_sha256=sha256_hex(lr), write_s=time.perf_counter() - t2,
                       lr_key=lr_uri[len(self.out_root):] if lr_uri.startswith(self.out_root) else None)
        except FloorError as e:  # no candidate reaches target_psnr and fallback=error
            return self._error(row, f"floor: {e}", t0, INPUT)
        except Exception as e:  # any failure on one image becomes that image's error row
            # the file's own fault unless storage (the write) or the machine (memory) failed
            kind = TRANSIENT if stage == "write" or isinstance(e, MemoryError) else INPUT
            return self._error(row, f"{stage}: {error_text(e)}", t0, kind)
        row.update(status="ok", total_s=(rec["read_s"] or 0.0) + time.perf_counter() - t0, finished_at=time.time())
        return row

    @staticmethod
    def _metadata(row: dict[str, Any], data: bytes, img, lr: bytes, enc, photo) -> bytes | None:
        """Record the metadata columns and the LR's pixel hash; the sidecar bytes to write (None: none).

        ``enc`` None: the source bytes are stored unchanged, with all their metadata inside."""
        from irn_batch.io import photo_metadata as pm
        from irn_batch.io.lr_file import pixels_sha256
        from irn_batch.io.decode import decode_image

        if enc is None:
            row.update(lr_pixels_sha256=pixels_sha256(img), metadata_kept=_kinds(pm.extract(data).kinds()),
                       metadata_dropped="")
            return None
        row.update(lr_pixels_sha256=pixels_sha256(decode_image(lr)), metadata_kept=_kinds(photo.kinds()),
                   metadata_dropped=_kinds(photo.dropped))
        outside = photo.split(enc.container)[1]
        return outside.to_json() if outside.kinds() else None

    @staticmethod
    def _error(row: dict[str, Any], msg: str, t0: float, kind: str) -> dict[str, Any]:
        row.update(status="error", error=msg, error_kind=kind, lr_uri=None, total_s=time.perf_counter() - t0,
                   finished_at=time.time())
        return row


def run_ingest(cfg: IngestConfig, log=print) -> dict[str, Any]:
    """Run one ingest job; returns the summary dict (also printed), including ``job_id`` and ``manifest``.

    With ``dry_run`` only the plan is printed (:func:`print_plan`); nothing is read, written or started.
    """
    policy = storage_policy(cfg)  # a bad setting fails here, in one line, before any work
    settings = lr_settings(cfg, policy)  # (a bad metadata setting too)
    # a fixed lossy container gets the compression-aware weights where they are shipped, as in the CLI; the
    # floor's candidates (AVIF 4:4:4 by default) were measured with the plain ones
    lossy = policy.target_psnr is None and not policy.fixed.lossless
    ckpt_bytes, ckpt = load_model_bytes(cfg.model, cfg.scale, cfg.storage, lossy=lossy)
    model_id, scale = ckpt.model_id, ckpt.model.scale
    p = plan(cfg, model_id, settings)
    items, left, manifest_dir, job_id = p.items, p.left, p.manifest_dir, p.job_id
    if cfg.dry_run:
        return print_plan(p, cfg, log)
    check_outputs(cfg)  # fail before working: the output and manifest folder take a probe object
    log(f"ingest {job_id}: {items.num_rows} inputs to check/process, model {model_id} (x{scale}), "
        f"{policy.settings}; {left.num_rows} earlier input errors not retried (retry_errors=true to retry); "
        f"{len(p.listing.left_out)} objects left out by include/exclude"
        f"{' (' + left_out_counts(p.listing.left_out) + '; dry_run=true lists them)' if p.listing.left_out else ''}")
    summary = Summary("ingest", total=items.num_rows + left.num_rows, left_out=len(p.listing.left_out))
    fs_m, m_path = open_fs(manifest_dir, cfg.storage)
    writer = ManifestWriter(fs_m, m_path, job_id, INGEST_SCHEMA, cfg.rows_per_part, seconds=cfg.progress_s,
                           spill_dir=cfg.storage.spill_dir)
    # inputs left alone still get a row in this job's manifest, saying why
    for batch in left.to_batches(max(1, cfg.rows_per_part)):
        receipts = [empty_row(INGEST_SCHEMA, job_id=job_id, key=r["key"], source_uri=r["source_uri"], scale=scale,
                              model_id=model_id, status="skipped", finished_at=time.time(),
                              error=f"not retried (retry_errors=true to retry): {r['prev_error']}",
                              error_kind=r["prev_kind"], source_version=r["source_version"])
                    for r in batch.to_pylist()]
        for r in receipts:
            summary.add(r, None, None)
        writer.add(receipts)
    if items.num_rows:
        def lost(item: dict[str, Any], reason: str) -> dict[str, Any]:
            return empty_row(INGEST_SCHEMA, job_id=job_id, key=item["key"], source_uri=item["source_uri"],
                             scale=scale, model_id=model_id, status="error", error=reason, error_kind=TRANSIENT,
                             source_version=item["source_version"], finished_at=time.time())

        batches = stream_rows(items, IngestActor, "source_uri", cfg, ckpt_bytes, job_id, lost)
        record_stream(batches, summary, writer, ("source_bytes", "lr_bytes"), cfg.progress_s, log)
    writer.flush()
    # every input now has an intact LR, except this run's errors and the input errors left alone
    summary.no_output = summary.error + left.num_rows
    return finish_job(summary, writer, job_id=job_id, manifest=manifest_dir, model_id=model_id)

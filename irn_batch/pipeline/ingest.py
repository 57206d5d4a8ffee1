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
import re
import time
from collections import Counter
from typing import Any, Callable, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from irn_batch.floor import FloorError, StoragePolicy, make_policy
from irn_batch.manifest import INGEST_SCHEMA, MANIFEST_DIR, ManifestWriter, empty_row, latest_table, new_job_id
from irn_batch.manifest import read_manifest, to_table
from irn_batch.pipeline.common import Summary, load_model_bytes
from irn_batch.pipeline.common import actor_model, all_true, check_outputs, finish_job, record_stream, stream_rows
from irn_batch.pipeline.config import IngestConfig
from irn_batch.pipeline.read import INPUT, TRANSIENT, one_line
from irn_batch.storage import IMAGE_SUFFIXES, Listing, StorageError, derived_key, join_key, list_objects, open_fs
from irn_batch.storage import StorageUnavailable, open_uri, output_key, sha256_hex, stat_objects, to_uri
from irn_batch.storage import with_retry


ITEM_SCHEMA = pa.schema([(n, pa.string()) for n in
                         ("key", "source_uri", "lr_uri", "check_uri", "check_sha", "pre_error", "source_version")])


PLAN_COLUMNS = ["source_uri", "lr_uri", "lr_sha256", "model_id", "status", "error", "key", "finished_at",
                "source_bytes", "source_version", "error_kind", "lr_settings"]

# error messages of manifests written before error_kind existed that a plain rerun retries
_OLD_TRANSIENT = ("read:", "write:", "worker:")
# An earlier ingest without lr_settings stored PNG LRs: the settings string of that behaviour.
LEGACY_SETTINGS = StoragePolicy().settings
# The suffix an object under the output prefix has beyond its LR stem: the LR container's, or the source
# key's own for a source kept unchanged (see lr_stem).
_STORED_SUFFIX = "(?i)(" + "|".join(re.escape(sfx) for sfx in IMAGE_SUFFIXES) + ")$"


class IngestPlan(NamedTuple):
    """What an ingest run will do: ``items`` to read (and maybe skip), ``left`` earlier input errors left
    alone, the manifest folder, the job id, and the input's ``listing`` (its ``left_out`` keys and counts;
    its per-object lists are emptied once planned)."""

    items: pa.Table
    left: pa.Table
    manifest_dir: str
    job_id: str
    listing: Listing


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
                       decode_s=time.perf_counter() - t0)
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
            fs, path = open_uri(lr_uri, self.cfg.storage)
            from irn_batch.storage import atomic_write

            atomic_write(fs, path, lr)
            row.update(lr_uri=lr_uri, lr_bytes=len(lr), lr_sha256=sha256_hex(lr), write_s=time.perf_counter() - t2)
        except FloorError as e:  # no candidate reaches target_psnr and fallback=error
            return self._error(row, f"floor: {e}", t0, INPUT)
        except Exception as e:  # any failure on one image becomes that image's error row
            # the file's own fault unless storage (the write) or the machine (memory) failed
            kind = TRANSIENT if stage == "write" or isinstance(e, MemoryError) else INPUT
            return self._error(row, f"{stage}: {one_line(e)}", t0, kind)
        row.update(status="ok", total_s=(rec["read_s"] or 0.0) + time.perf_counter() - t0, finished_at=time.time())
        return row

    @staticmethod
    def _error(row: dict[str, Any], msg: str, t0: float, kind: str) -> dict[str, Any]:
        row.update(status="error", error=msg, error_kind=kind, lr_uri=None, total_s=time.perf_counter() - t0,
                   finished_at=time.time())
        return row


def list_input(cfg: IngestConfig, fs_in, in_path: str) -> Listing:
    """The input's objects: the ``keys`` given (stat'ed for their version), else a listing of the prefix.

    Raises StorageError (exit 2) for a prefix that cannot be listed, one holding no objects, one whose
    objects the patterns all leave out, and a single-object input that the patterns do not take.
    """
    if cfg.keys is not None:  # keys are taken as given; the patterns do not apply
        listing = Listing(root=in_path.rstrip("/"), keys=list(cfg.keys))
        # a key that planning refuses ('..') is never touched, not even by a stat
        safe = [_has_output_key(k) for k in listing.keys]
        stats = stat_objects(fs_in, [listing.path(k) for k, ok in zip(listing.keys, safe) if ok])[::-1]
        stats = [stats.pop() if ok else (None, None) for ok in safe]
        listing.sizes, listing.versions = [st[0] for st in stats], [st[1] for st in stats]
        return listing
    try:  # retried through an outage like every read; a store that stays down ends the job here
        listing = with_retry(fs_in, "listing the input",
                             lambda: list_objects(fs_in, in_path, cfg.include, cfg.exclude, cfg.match_case))
    except StorageUnavailable as e:
        raise StorageUnavailable(f"{cfg.input}: {e}") from None
    except OSError as e:  # a mistyped prefix must not look like an empty job
        raise StorageError(f"{cfg.input}: cannot list the input prefix ({one_line(e)})") from e
    if not listing.keys:
        pats = f"include={list(cfg.include) if cfg.include is not None else 'default image suffixes'}" + (
            f" exclude={list(cfg.exclude)}" if cfg.exclude else "") + ("" if cfg.match_case else " (any case)")
        if listing.single:
            raise StorageError(f"{cfg.input}: the input is one object and {pats} does not take its name")
        if listing.left_out:
            raise StorageError(f"{cfg.input}: {pats} takes none of its {len(listing.left_out)} objects "
                               f"({left_out_counts(listing.left_out)}); dry_run=true lists them")
        raise StorageError(f"{cfg.input}: the input prefix holds no objects")
    return listing


def left_out_counts(keys: list[str]) -> str:
    """'12 .txt, 3 .raw, 1 without a suffix': left-out keys counted by their (lower-case) suffix."""
    counts = Counter((k.rsplit("/", 1)[-1].rpartition(".")[2].lower() if "." in k.rsplit("/", 1)[-1] else "")
                     for k in keys)
    return ", ".join(f"{n} {'.' + s if s else 'without a suffix'}" for s, n in counts.most_common())


def plan(cfg: IngestConfig, model_id: str, settings: str = LEGACY_SETTINGS) -> IngestPlan:
    """What this run does: the work items, the earlier input errors left alone, and what was left out.

    Source keys are opaque: each is read at its listed path (``source_uri``, read with ``open_uri``), and
    only its LR key is made safe (:func:`irn_batch.storage.output_key`); two inputs whose LR keys clash
    leave the LR to the first in key order and the other gets an error row. An input is checked (skipped
    when its LR is intact) only when its latest attempt was ``ok`` with this model, and its source has the
    listed size and version that attempt recorded; an input whose latest attempt was an error of the input
    itself is left alone unless ``retry_errors`` (or its source changed); transient errors are redone.

    An item's ``lr_uri`` is its LR stem (the actor adds the stored container's suffix); an earlier ok LR of
    the same stem, model and storage ``settings`` is marked to be checked (``check_uri``) instead of redone.

    Built column by column in Arrow: the driver keeps a few hundred bytes per input, not a dict per input
    (``benchmarks/bench_plan.py`` measures the peak).
    """
    fs_in, in_path = open_fs(cfg.input, cfg.storage)
    fs_out, out_path = open_fs(cfg.output, cfg.storage)
    manifest_dir = cfg.manifest or to_uri(fs_out, f"{out_path.rstrip('/')}/{MANIFEST_DIR}")
    fs_m, m_path = open_fs(manifest_dir, cfg.storage)
    listing = list_input(cfg, fs_in, in_path)
    keys, sources, lrs, errors, owners = [], [], [], [], {}
    for key in listing.keys:
        src = to_uri(fs_in, listing.path(key))
        lr = err = None
        try:
            if not _utf8(key):  # a local name that is not UTF-8: Arrow and object stores need UTF-8
                key, src = _shown(key), _shown(src)
                raise StorageError("the name is not valid UTF-8 (shown with \\x escapes); rename the file")
            k = output_key(key)
            lr_key = output_key(lr_stem(k))  # the stem too must be safe on its own ("C:.png" -> "C_")
            if MANIFEST_DIR in (k.split("/", 1)[0], lr_key):
                raise StorageError(f"key {key!r} would write into the manifest folder")
            lr = to_uri(fs_out, join_key(out_path, lr_key))
            # two inputs with one LR stem (a.jpg, a.png; NFC and NFD forms of one name): the first keeps it
            if lr in owners:
                raise StorageError(f"its LR object {lr} is already used by input {owners[lr]!r}")
            owners[lr] = key
        except StorageError as e:
            lr, err = None, f"key: {e}"
        keys.append(key)
        sources.append(src)
        lrs.append(lr)
        errors.append(err)
    n = len(keys)
    t = pa.table({"key": pa.array(keys, pa.string()), "source_uri": pa.array(sources, pa.string()),
                  "lr_uri": pa.array(lrs, pa.string()), "pre_error": pa.array(errors, pa.string()),
                  "size": pa.array(listing.sizes, pa.int64()),
                  "source_version": pa.array(listing.versions, pa.string()),
                  "i": pa.array(np.arange(n, dtype=np.int64))})
    del keys, sources, lrs, errors, owners
    listing.keys, listing.sizes, listing.versions = [], [], []
    previous = latest_table(read_manifest(fs_m, m_path, columns=PLAN_COLUMNS), "source_uri")
    previous = previous.select(["source_uri", "lr_uri", "lr_sha256", "model_id", "status", "error", "source_bytes",
                                "source_version", "error_kind", "lr_settings"])
    previous = previous.rename_columns(["source_uri", "prev_lr_uri", "prev_sha", "prev_model", "prev_status",
                                        "prev_error", "prev_bytes", "prev_version", "prev_kind", "prev_settings"])
    t = t.join(previous, "source_uri", join_type="left outer").sort_by("i")
    fresh = pc.is_null(t["pre_error"])
    # the source changed since that attempt: another listed version or size than it recorded
    changed = pc.or_(all_true(pc.not_equal(t["prev_version"], t["source_version"])),
                     all_true(pc.not_equal(t["prev_bytes"], t["size"])))
    prev_stem = pc.replace_substring_regex(t["prev_lr_uri"], _STORED_SUFFIX, "")
    intact = all_true(fresh, pc.equal(t["prev_status"], "ok"), pc.equal(prev_stem, t["lr_uri"]),
                      pc.equal(t["prev_model"], model_id),
                      pc.equal(pc.fill_null(t["prev_settings"], LEGACY_SETTINGS), settings), pc.invert(changed))
    # rows written before error_kind existed: storage and lost-worker errors count as transient
    old_transient = pc.fill_null(_any_prefix(t["prev_error"], _OLD_TRANSIENT), False)
    kind = pc.coalesce(t["prev_kind"], pc.if_else(old_transient, pa.scalar(TRANSIENT), pa.scalar(INPUT)))
    t = t.set_column(t.column_names.index("prev_kind"), "prev_kind", kind)
    left_alone = all_true(fresh, pc.equal(t["prev_status"], "error"), pc.equal(kind, INPUT), pc.invert(changed),
                          pa.scalar(not cfg.retry_errors))
    t = t.append_column("check_uri", pc.if_else(intact, t["prev_lr_uri"], pa.scalar(None, pa.string())))
    t = t.append_column("check_sha", pc.if_else(intact, t["prev_sha"], pa.scalar(None, pa.string())))
    left = t.filter(left_alone).select(["key", "source_uri", "prev_error", "prev_kind", "source_version"])
    items = t.filter(pc.invert(left_alone)).select(ITEM_SCHEMA.names).cast(ITEM_SCHEMA)
    return IngestPlan(items, left, manifest_dir, cfg.job_id or new_job_id("ingest"), listing)


def _any_prefix(col: pa.ChunkedArray, prefixes: tuple[str, ...]) -> pa.ChunkedArray:
    out = pc.starts_with(col, prefixes[0])
    for p in prefixes[1:]:
        out = pc.or_(out, pc.starts_with(col, p))
    return out


def _has_output_key(key: str) -> bool:
    try:
        output_key(key)
    except StorageError:
        return False
    return True


def _utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(s: str) -> str:
    """A name with undecodable bytes (surrogate escapes from os.scandir) as text with \\x escapes."""
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def print_plan(p: IngestPlan, cfg: IngestConfig, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """The plan report of ``dry_run=true``: one line per input and per left-out key, then the counts."""
    items, left, listing = p.items, p.left, p.listing
    counts = Counter()
    for batch in items.to_batches(1000):
        for r in batch.to_pylist():
            action = "error" if r["pre_error"] else "check" if r["check_sha"] else "ingest"
            counts[action] += 1
            log(f"  {action:<8} {r['key']}  ->  {r['pre_error'] or r['lr_uri']}")
    for r in left.to_pylist():
        counts["kept error"] += 1
        log(f"  {'kept':<8} {r['key']}  ->  earlier error not retried (retry_errors=true): {r['prev_error']}")
    for key in listing.left_out:
        log(f"  {'left out':<8} {key}")
    log(f"plan {p.job_id}: {items.num_rows + left.num_rows} inputs under {cfg.input} "
        f"({counts['ingest']} to ingest, {counts['check']} to check for an intact earlier LR, {counts['error']} with "
        f"a key error, {counts['kept error']} earlier input errors kept); {len(listing.left_out)} objects left out "
        f"by include/exclude{' (' + left_out_counts(listing.left_out) + ')' if listing.left_out else ''}; "
        f"{listing.internal} of this project's own objects skipped (manifests, temp objects, folder markers)")
    return {"kind": "ingest", "dry_run": True, "total": items.num_rows + left.num_rows, "ok": 0, "error": 0,
            "skipped": 0, "left_out": len(listing.left_out), "job_id": p.job_id, "manifest": p.manifest_dir,
            "parts": 0, **{k.replace(" ", "_"): v for k, v in counts.items()}}


def run_ingest(cfg: IngestConfig, log=print) -> dict[str, Any]:
    """Run one ingest job; returns the summary dict (also printed), including ``job_id`` and ``manifest``.

    With ``dry_run`` only the plan is printed (:func:`print_plan`); nothing is read, written or started.
    """
    policy = storage_policy(cfg)  # a bad setting fails here, in one line, before any work
    # a fixed lossy container gets the compression-aware weights where they are shipped, as in the CLI; the
    # floor's candidates (AVIF 4:4:4 by default) were measured with the plain ones
    lossy = policy.target_psnr is None and not policy.fixed.lossless
    ckpt_bytes, ckpt = load_model_bytes(cfg.model, cfg.scale, cfg.storage, lossy=lossy)
    model_id, scale = ckpt.model_id, ckpt.model.scale
    p = plan(cfg, model_id, policy.settings)
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

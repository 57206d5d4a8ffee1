"""Planning an ingest: which inputs there are, what LR key each gets, what an earlier run already did.

Listing the input (or stat'ing the given ``keys``), one LR stem per input (two inputs of one stem, a.jpg and
a.png, are settled so that each keeps a key of its own), and the join with the manifest's latest attempt per
input that decides what is ingested, checked for an intact earlier LR, or left alone. ``dry_run`` prints it.
"""
from __future__ import annotations

import posixpath
import re
from collections import Counter
from typing import Any, Callable, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from irn_batch.quality_floor import StoragePolicy
from irn_batch.storage.manifest import MANIFEST_DIR, latest_table, new_job_id
from irn_batch.storage.manifest import read_manifest
from irn_batch.pipeline.stream import all_true
from irn_batch.pipeline.config import IngestConfig
from irn_batch.pipeline.read import INPUT, TRANSIENT, error_text
from irn_batch.storage import IMAGE_SUFFIXES, Listing, StorageError, derived_key, join_key, list_objects, open_fs
from irn_batch.storage import StorageUnavailable, output_key, stat_objects, to_uri
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


def lr_stem(key: str) -> str:
    """A key without its image suffix ('a/b.jpg' -> 'a/b'): the LR object is the stem plus its container's
    suffix, a source kept unchanged is the stem plus its own suffix (i.e. the source key)."""
    return derived_key(key, "")


def source_suffix(key: str) -> str:
    """The suffix ``lr_stem`` removed from ``key`` ('' when none)."""
    suffix = posixpath.splitext(key)[1]
    return suffix if suffix.lower() in IMAGE_SUFFIXES else ""


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
        raise StorageError(f"{cfg.input}: cannot list the input prefix ({error_text(e)})") from e
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
    only its LR key is made safe (:func:`irn_batch.storage.output_key`); two inputs whose LR stems clash
    (a.jpg, a.png) are settled by :func:`_settle`: one keeps the stem, the other keeps its suffix in it.
    An input is checked (skipped when its LR is intact) only when its latest attempt was ``ok`` with this
    model, and its source has the listed size and version that attempt recorded; an input whose latest
    attempt was an error of the input itself is left alone unless ``retry_errors`` (or its source changed);
    transient errors are redone.

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
    contested: dict[str, list[int]] = {}  # LR stem -> the inputs claiming it, in listing order
    alternatives: dict[int, str] = {}  # input -> its LR stem with its own suffix kept (a.jpg -> a.jpg)
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
            # two inputs with one LR stem (a.jpg, a.png): settled below, once every claim is known; two
            # names for one safe key (NFC and NFD forms of one name): the first keeps it, the other is an error
            if lr in owners and output_key(keys[owners[lr]]) == k:
                raise StorageError(f"its LR object {lr} is already used by input {keys[owners[lr]]!r}")
            if lr in owners:
                contested.setdefault(lr, [owners[lr]]).append(len(keys))
                alternatives[len(keys)] = lr + source_suffix(k)
            else:
                owners[lr] = len(keys)
        except StorageError as e:
            lr, err = None, f"key: {e}"
        keys.append(key)
        sources.append(src)
        lrs.append(lr)
        errors.append(err)
    previous = latest_table(read_manifest(fs_m, m_path, columns=[*PLAN_COLUMNS, "lr_key"]), "source_uri")
    previous = _relocated(previous, None if cfg.manifest else to_uri(fs_out, out_path))
    if contested:
        _settle(contested, alternatives, owners, keys, sources, lrs, errors, previous)
    n = len(keys)
    t = pa.table({"key": pa.array(keys, pa.string()), "source_uri": pa.array(sources, pa.string()),
                  "lr_uri": pa.array(lrs, pa.string()), "pre_error": pa.array(errors, pa.string()),
                  "size": pa.array(listing.sizes, pa.int64()),
                  "source_version": pa.array(listing.versions, pa.string()),
                  "i": pa.array(np.arange(n, dtype=np.int64))})
    del keys, sources, lrs, errors, owners, contested, alternatives
    listing.keys, listing.sizes, listing.versions = [], [], []
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


def _settle(contested: dict[str, list[int]], alternatives: dict[int, str], owners: dict[str, int], keys: list,
            sources: list, lrs: list, errors: list, previous: pa.Table) -> None:
    """Give each input of a shared LR stem (a.jpg and a.png both -> a) an LR stem of its own, in place.

    The input whose latest recorded LR has that stem keeps it (an archive made before its sibling arrived
    keeps its LR key), else the first in listing (key) order; every other one gets its key with the source
    suffix kept as its stem (a.png -> LR a.png.png, a.jpg -> a.jpg.webp), recorded in its ``lr_uri``. An input
    whose alternative is taken as well gets an error row.
    """
    wanted = pa.array([sources[i] for group in contested.values() for i in group], pa.string())
    prev = previous.filter(pc.is_in(previous["source_uri"], value_set=wanted))
    prev_stem = dict(zip(prev["source_uri"].to_pylist(),
                         pc.replace_substring_regex(prev["lr_uri"], _STORED_SUFFIX, "").to_pylist()))
    for stem, group in contested.items():
        holder = next((i for i in group if prev_stem.get(sources[i]) == stem), group[0])
        owners[stem] = holder
        for i in group:
            if i == holder:
                continue
            alt = alternatives.get(i)
            if alt is None:  # the first claimant lost to an earlier archive's holder
                alt = stem + source_suffix(output_key(keys[i]))
            if alt in owners:
                lrs[i], errors[i] = None, f"key: its LR object {alt} is already used by input {keys[owners[alt]]!r}"
                continue
            owners[alt], lrs[i] = i, alt


def _relocated(previous: pa.Table, out_root: str | None) -> pa.Table:
    """Earlier rows with ``lr_uri`` where the output is now (a moved or copied output is checked there, never
    at the old place; :func:`irn_batch.pipeline.locate.relocate`); as recorded when ``out_root`` is None."""
    from irn_batch.pipeline.locate import relocate

    if out_root is None or previous.num_rows == 0:
        return previous
    uris, _errs = relocate(previous["lr_uri"].to_pylist(), previous["key"].to_pylist(),
                           previous["lr_key"].to_pylist(), out_root)
    return previous.set_column(previous.column_names.index("lr_uri"), "lr_uri", pa.array(uris, pa.string()))


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

"""The end of a job: the output probe before work, counting rows into the manifest with progress lines,
the summary a job prints and returns, and the one line that ends a job on a storage fault."""
from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from irn_batch.pipeline.stream import is_outage_row
from irn_batch.storage import StorageError, StorageUnavailable, check_writable, to_uri
from irn_batch.storage.manifest import MANIFEST_DIR, ManifestWriter


def check_outputs(cfg: Any, manifest_dir: str | None = None) -> None:
    """Fail before working: write and remove a probe object under the output prefix and the manifest folder.

    Raises StorageError (StorageUnavailable after ``storage.outage_s`` when the store does not answer)
    naming the URL, so that a missing bucket or a read-only prefix stops the job before any image is read.
    """
    manifest_dir = manifest_dir or cfg.manifest or f"{cfg.output.rstrip('/')}/{MANIFEST_DIR}"
    for url in dict.fromkeys((cfg.output, manifest_dir)):
        check_writable(url, cfg.storage)


def record_stream(batches: Iterable[list[dict[str, Any]]], summary: "Summary", writer: ManifestWriter,
                  bytes_cols: tuple[str, str], progress_s: float, log: Callable[[str], Any]) -> None:
    """Count each result row, add it to the manifest, and log a progress line every ``progress_s`` seconds.

    Raises StorageUnavailable (after writing what was done, and printing the summary) when a row says that
    the store stayed unreachable: the job ends there, with exit code 2 from the job entry.
    """
    last, outage = time.monotonic(), None
    try:
        for rows in batches:
            for r in rows:
                summary.add(r, r[bytes_cols[0]], r[bytes_cols[1]])
                if outage is None and is_outage_row(r):
                    outage = r["error"]
                    log(f"{summary.kind}: {outage[:300]}; collecting the rows of work done, then stopping")
            writer.add(rows)
            if time.monotonic() - last > progress_s:
                log(summary.progress_line())
                last = time.monotonic()
    finally:  # on any error here, stop the stream now: a live Ray Data executor would keep the driver alive
        close = getattr(batches, "close", None)
        if close is not None:
            close()
    if outage is not None:
        writer.flush()
        summary.finish()
        summary.print()
        raise StorageUnavailable(f"the job stopped: {outage[:300]}; {_done_line(summary, writer)}")


def finish_job(summary: "Summary", writer: ManifestWriter, **extra: Any) -> dict[str, Any]:
    """Print the job's summary; return it as a dict with ``extra`` and the number of manifest parts.

    Raises StorageError, after the summary, when manifest parts had to be spilled to the local disk.
    """
    writer.flush()
    out = summary.finish()
    summary.print()
    if writer.fault is not None:
        raise StorageError(f"the job finished but its {writer.fault}; {_done_line(summary, writer)}")
    out.update(extra, parts=len(writer.parts))
    return out


def _done_line(summary: "Summary", writer: ManifestWriter) -> str:
    """What is recorded where, for the one-line message that ends a job on a storage fault."""
    where = f"{len(writer.parts)} manifest part(s) in {to_uri(writer.fs, writer.dir)}"
    if writer.spilled:
        where += (f", {len(writer.spilled)} spilled to {writer.spill_dir}/{writer.job_id}-part-*.parquet (copy "
                  f"them into {to_uri(writer.fs, writer.dir)} once the store is back)")
    return (f"ok {summary.ok}, error {summary.error}, skipped {summary.skipped} of {summary.total} inputs; "
            f"{where}; rerun the same job to finish it")


@dataclass
class Summary:
    """Counters a job prints at the end (and periodically as progress)."""

    kind: str
    total: int
    ok: int = 0
    error: int = 0
    skipped: int = 0
    pixels: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    fell_back: int = 0  # ingest: images whose source bytes were kept (quality floor not met by any candidate)
    started: float = field(default_factory=time.monotonic)
    wall_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    left_out: int | None = None  # objects under the input that the include/exclude patterns did not take
    no_output: int | None = None  # inputs of this run still without a good output (errors, errors kept)
    # issue 13: what became of the originals (ok rows of this job)
    lossy_from_lossless: int = 0  # a lossless original stored as a lossy LR (ingest) / restored by IRN (restore)
    extra_frames: int = 0  # ingest: inputs with further pictures (MPO, HEIF, TIFF pages) that were not kept
    depth_reduced: int = 0  # restore: sources deeper than 8 bits written at 8 bits
    source_bytes: int = 0  # restore: bytes of the originals of the restores whose ingest row records them
    source_out_bytes: int = 0  # restore: the restores' bytes for those same rows
    # ok rows per photo-metadata kind not carried (ingest: by the setting; restore: the container lacks it)
    metadata_dropped: Counter = field(default_factory=Counter)
    warnings: int = 0  # ok rows with a warning (a restore from an LR whose metadata was edited)

    def add(self, row: dict[str, Any], bytes_in: int | None, bytes_out: int | None) -> None:
        if row["status"] == "ok":
            self.ok += 1
            self.pixels += int(row.get("width") or 0) * int(row.get("height") or 0)
            self.bytes_in += int(bytes_in or 0)
            self.bytes_out += int(bytes_out or 0)
            self.fell_back += bool(row.get("fell_back"))
            self.lossy_from_lossless += bool(row.get("lossy_from_lossless"))
            self.extra_frames += bool(row.get("extra_frames"))
            self.depth_reduced += bool(row.get("depth_reduced"))
            if row.get("source_bytes") is not None and self.kind == "restore":
                self.source_bytes += int(row["source_bytes"])
                self.source_out_bytes += int(row.get("out_bytes") or 0)
            self.metadata_dropped.update(k for k in (row.get("metadata_dropped") or "").split(",") if k)
            self.warnings += bool(row.get("warning"))
        elif row["status"] == "skipped":
            self.skipped += 1
        else:
            self.error += 1
            if len(self.errors) < 1000:
                self.errors.append(f"{row.get('source_uri') or row.get('lr_uri')}: {row.get('error')}")

    @property
    def done(self) -> int:
        return self.ok + self.error + self.skipped

    def progress_line(self) -> str:
        el = max(time.monotonic() - self.started, 1e-9)
        return (f"{self.kind}: {self.done}/{self.total} done (ok {self.ok}, error {self.error}, "
                f"skipped {self.skipped}), {self.pixels / 1e6 / el:.2f} MP/s, {el:.0f} s")

    def finish(self) -> dict[str, Any]:
        self.wall_s = time.monotonic() - self.started
        return self.as_dict()

    def as_dict(self) -> dict[str, Any]:
        mp = self.pixels / 1e6
        return {
            "kind": self.kind, "total": self.total, "ok": self.ok, "error": self.error, "skipped": self.skipped,
            "megapixels": round(mp, 4), "mp_per_s": round(mp / self.wall_s, 4) if self.wall_s else None,
            "images_per_s": round(self.ok / self.wall_s, 4) if self.wall_s else None,
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
            # ingest: bytes stored over the bytes of the originals, as measured (no claim beyond it);
            # a restore's "out" is the rebuilt HR
            "stored_ratio": round(self.bytes_out / self.bytes_in, 4) if self.bytes_in and self.kind == "ingest"
            else None,
            "fell_back": self.fell_back if self.kind == "ingest" else None,
            "lossy_from_lossless": self.lossy_from_lossless,
            **({"extra_frames": self.extra_frames} if self.kind == "ingest" else {
                "depth_reduced": self.depth_reduced, "source_bytes": self.source_bytes,
                "restored_vs_source": round(self.source_out_bytes / self.source_bytes, 4) if self.source_bytes
                else None}),
            "wall_s": round(self.wall_s, 3),
            "metadata_dropped": dict(sorted(self.metadata_dropped.items())),
            **({"warnings": self.warnings} if self.kind == "restore" else {}),
            **{k: v for k, v in (("left_out", self.left_out), ("no_output", self.no_output)) if v is not None},
        }

    def print(self, file=None) -> None:
        file = file or sys.stdout  # looked up at call time, so redirected output is honoured
        d = self.as_dict()
        print(f"== {self.kind} summary ==", file=file)
        for k in ("total", "ok", "error", "skipped", "megapixels", "mp_per_s", "images_per_s", "bytes_in",
                  "bytes_out", "wall_s", "left_out", "no_output"):
            if k in d:
                print(f"  {k:<14} {d[k]}", file=file)
        if self.kind == "ingest":
            ratio = "n/a" if d["stored_ratio"] is None else f"{d['stored_ratio']:.3f}"
            print(f"  {'stored':<14} {self.bytes_out} bytes for {self.bytes_in} bytes of originals (ratio {ratio}; "
                  "ok images of this job)", file=file)
            print(f"  {'fell_back':<14} {self.fell_back} (source bytes kept: no LR candidate met target_psnr)",
                  file=file)
            print(f"  {'lossy':<14} {self.lossy_from_lossless} lossless originals stored as lossy LRs; "
                  f"{self.extra_frames} inputs with further pictures not kept (extra_frames in the manifest)",
                  file=file)
        else:
            ratio = "n/a" if not self.source_bytes else f"{self.source_out_bytes / self.source_bytes:.3f}"
            print(f"  {'vs originals':<14} {self.source_out_bytes} bytes restored for {self.source_bytes} bytes of "
                  f"originals (ratio {ratio}); {self.lossy_from_lossless} lossless originals came back as IRN "
                  f"approximations; {self.depth_reduced} sources deeper than 8 bits written at 8 bits", file=file)
        if self.metadata_dropped:
            counts = ", ".join(f"{k} {n}" for k, n in sorted(self.metadata_dropped.items()))
            where = "not kept (metadata setting, converted ICC, unreadable)" if self.kind == "ingest" else \
                "not in the outputs (their container cannot hold it)"
            print(f"  {'metadata':<14} images per kind {where}: {counts}", file=file)
        if self.kind == "restore" and self.warnings:
            print(f"  {'warnings':<14} {self.warnings} (see the manifest's warning column)", file=file)
        for line in self.errors[:50]:
            print(f"  error  {line}", file=file)
        if len(self.errors) > 50:
            print(f"  ... and {len(self.errors) - 50} more errors (see the manifest)", file=file)
        file.flush()

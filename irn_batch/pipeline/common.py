"""Pieces shared by ingest and restore: Ray start-up, the model bytes, the Ray Data stream, summaries."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import ray

from irn_batch.checkpoint import Checkpoint, CheckpointError, checkpoint_from_bytes, default_weights_path
from irn_batch.checkpoint import packaged_path_for
from irn_batch.manifest import MANIFEST_DIR, ManifestWriter
from irn_batch.pipeline.config import ActorConfig, RayConfig
from irn_batch.pipeline.read import read_stage
from irn_batch.storage import OUTAGE_MARK, StorageConfig, StorageError, StorageUnavailable, check_writable, open_fs
from irn_batch.storage import to_uri


def init_ray(rc: RayConfig) -> None:
    """Connect to ``rc.address`` / RAY_ADDRESS (set by ``ray job submit``), else start an embedded Ray.

    ``address="local"`` matters: a bare ``ray.init()`` would attach to any cluster that happens to run on
    this machine.
    """
    if not ray.is_initialized():
        address = rc.address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address)
        else:
            ray.init(address="local", num_cpus=rc.num_cpus, include_dashboard=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the drivers print their own progress lines
    ctx.print_on_execution_start = False
    # Our stages turn every per-record problem into a row and never raise, so a failed block means its
    # worker died; stream_rows finds the records of such blocks and redoes them rather than aborting the job.
    ctx.max_errored_blocks = -1


def load_model_bytes(model: str | None, scale: int, storage: StorageConfig, *, lossy: bool = False,
                     model_id: str | None = None) -> tuple[bytes, Checkpoint]:
    """(checkpoint bytes, the checkpoint): read and verified once by the driver, the bytes shipped to every actor.

    ``model`` None: the shipped weights whose id is ``model_id`` when one is given (CheckpointError naming it
    when none is), else the shipped weights for ``scale`` (for lossy LR containers with ``lossy``).
    """
    if model is None:
        path = packaged_path_for(model_id) if model_id else default_weights_path(scale, lossy)
        if not path.is_file():
            raise CheckpointError(
                f"default weights {path} are missing (they are still being trained); pass model=PATH_OR_URL"
            )
        data, name = path.read_bytes(), str(path)
    else:
        fs, p = open_fs(model, storage)
        try:
            data = fs.cat_file(p)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{model}: cannot read checkpoint ({e})") from e
        name = model
    return data, checkpoint_from_bytes(data, name)


def pool_size(ac: ActorConfig, n_items: int) -> int:
    """Actors to start: configured, else as many as the cluster's CPUs (or GPUs) allow; at most ``n_items``."""
    if ac.pool_size:
        return max(1, min(ac.pool_size, max(n_items, 1)))
    res = ray.cluster_resources()
    if ac.num_gpus > 0:
        n = int(res.get("GPU", 0) // ac.num_gpus)
        if n == 0:  # Ray would keep the actors pending for ever
            raise ValueError(f"actors.num_gpus={ac.num_gpus} but the cluster has {res.get('GPU', 0):g} GPUs "
                             "(set actors.num_gpus=0, or actors.pool_size for an autoscaling cluster)")
    else:
        n = int(res.get("CPU", 1) // max(ac.num_cpus, 1e-3))
    return max(1, min(n, max(n_items, 1)))


def actor_model(ckpt_bytes: bytes, ac: ActorConfig) -> Checkpoint:
    """The checkpoint an actor holds, on its device, with torch set up for the resources Ray gave it."""
    import torch

    torch.set_num_threads(max(1, int(ac.num_cpus)))  # Ray only sets OMP_NUM_THREADS
    ckpt = checkpoint_from_bytes(ckpt_bytes)
    if ac.num_gpus > 0:
        if not torch.cuda.is_available():
            raise RuntimeError(f"actors.num_gpus={ac.num_gpus} but this actor sees no CUDA device")
        # fixed kernel choice: a restore must give the same bytes on every run on the same device
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        ckpt.model.to("cuda")
    return ckpt


# Ray Data keeps about 50 KB of driver memory per block of a run (measured with Ray 2.60), so a job's
# driver memory would grow with its number of images; past this many blocks, blocks grow instead.
MAX_BLOCKS = 4000


def items_dataset(items: pa.Table, n_blocks: int) -> "ray.data.Dataset":
    """Work items as a dataset of ``n_blocks`` Arrow blocks."""
    step = -(-items.num_rows // n_blocks)
    return ray.data.from_arrow([items.slice(i, step) for i in range(0, items.num_rows, step)])


def stream_rows(items: pa.Table, actor_cls: type, uri_col: str, cfg: Any, ckpt_bytes: bytes, job_id: str,
                lost_row: Callable[[dict[str, Any], str], dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """The job's Ray Data stream: work items -> byte reads (per record) -> model actor pool -> result rows.

    A record's problems become its own error row inside the actor, so a block is only lost when its worker
    process dies on every try (a crash in a decoder, an out-of-memory kill). Those records are run again one
    per block, so that an image which kills its worker takes no neighbour with it; any record still lost
    gets ``lost_row(item, reason)``. Every item thus yields exactly one row and the job never hangs on it.

    A storage outage: once a row says that the store stayed unreachable for ``storage.outage_s``
    (:data:`OUTAGE_MARK`), the stream is drained for at most another ``outage_s`` (the other workers give up
    on the store too, and rows of work done before the outage still arrive), then stopped; items without a
    row get a ``lost_row`` saying that they were not attempted. The caller ends the job (:func:`record_stream`).
    ``cfg`` is an IngestConfig or RestoreConfig; both carry ray, actors, storage and max_input_bytes.
    """
    init_ray(cfg.ray)
    watch = OutageWatch(cfg.storage.outage_s)

    def one_pass(todo: pa.Table, batch_size: int, isolate: bool = False):
        """Yield the pass's result rows; return the items that got none."""
        done = []
        stream = _run_stream(todo, actor_cls, uri_col, cfg, ckpt_bytes, job_id, batch_size, isolate)
        try:
            for batch in stream:
                # a copy: a view would keep the whole result block (mapped from the object store) alive
                done.append(pa.array(batch[uri_col].to_pylist(), pa.string()))
                rows = batch.to_pylist()
                watch.see(rows)
                yield rows
                if watch.expired():
                    break
        finally:
            stream.close()  # stops Ray Data's executor (and its actors) when we leave early
        if not done:
            return todo
        return todo.filter(pc.invert(pc.is_in(todo[uri_col], value_set=pa.concat_arrays(done))))

    lost = yield from one_pass(items, cfg.actors.batch_size)
    if lost.num_rows and watch.outage is None:
        # one record per call and one call per actor at a time: a dying actor takes only its own record
        lost = yield from one_pass(lost, 1, isolate=True)
    if watch.outage is not None:
        reason = f"{OUTAGE_MARK}: not attempted, the job stopped on a storage outage ({watch.outage})"
    else:
        tries = 2 * (1 + cfg.actors.retries)
        reason = (f"worker: the process handling this image died on each of {tries} tries (a crash or an "
                  "out-of-memory kill); the images processed beside it were not affected")
    for batch in lost.to_batches(1000):
        yield [lost_row(item, reason) for item in batch.to_pylist()]


def is_outage_row(row: dict[str, Any]) -> bool:
    """Whether a result row says that the store stayed unreachable for ``storage.outage_s``."""
    return OUTAGE_MARK in (row.get("error") or "")


class OutageWatch:
    """Notices the first outage row of a stream and when the drain that follows it is over."""

    def __init__(self, outage_s: float):
        self.drain_s = float(outage_s)
        self.outage: str | None = None
        self.since: float | None = None

    def see(self, rows: list[dict[str, Any]]) -> None:
        if self.outage is None:
            self.outage = next((r["error"][:300] for r in rows if is_outage_row(r)), None)
            self.since = None if self.outage is None else time.monotonic()

    def expired(self) -> bool:
        return self.since is not None and time.monotonic() - self.since > self.drain_s


def all_true(*conditions: Any) -> pa.ChunkedArray:
    """Element-wise AND of boolean columns (or scalars), with null counting as false."""
    out = conditions[0]
    for cond in conditions[1:]:
        out = pc.and_kleene(out, cond)
    return pc.fill_null(out, False)


def _run_stream(items: pa.Table, actor_cls: type, uri_col: str, cfg: Any, ckpt_bytes: bytes, job_id: str,
                batch_size: int, isolate: bool = False) -> Iterator[pa.Table]:
    """One pass of the stream over ``items``: the result batches as they arrive.

    Blocks hold ``batch_size`` items, or more once a job would exceed MAX_BLOCKS blocks; the read stage
    still reads ``batch_size`` records at a time, so a big block never holds more than a batch of images.
    """
    rows_per_block = max(batch_size, -(-items.num_rows // MAX_BLOCKS))
    n_blocks = max(1, -(-items.num_rows // rows_per_block))
    ds = items_dataset(items, n_blocks)
    # num_cpus=0: the reads are I/O bound and must not wait for CPUs the model actors hold; a fixed
    # number of read tasks (one per actor), or Ray would start a new worker process per pending block
    n_actors = pool_size(cfg.actors, n_blocks)  # an actor without a block would only cost start-up
    ds = ds.map_batches(read_stage, batch_format="pyarrow", batch_size=batch_size, num_cpus=0,
                        compute=ray.data.TaskPoolStrategy(size=n_actors),
                        fn_kwargs={"storage": cfg.storage, "max_bytes": cfg.max_input_bytes, "uri_col": uri_col})
    # Ray Data retries an actor's batch for ever by default: an image that kills its worker would hang the
    # job. A bounded number of tries, and blocks that still fail are dropped here and redone by the caller.
    ds = ds.map_batches(actor_cls, batch_format="pyarrow", batch_size=batch_size,
                        compute=ray.data.ActorPoolStrategy(size=n_actors,
                                                           max_tasks_in_flight_per_actor=1 if isolate else None),
                        num_cpus=cfg.actors.num_cpus, num_gpus=cfg.actors.num_gpus,
                        max_task_retries=cfg.actors.retries,  # a remote arg: Ray 2.60 has no named parameter
                        fn_constructor_kwargs={"ckpt_bytes": ckpt_bytes, "cfg": cfg, "job_id": job_id})
    yield from ds.iter_batches(batch_size=None, batch_format="pyarrow")


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

    def add(self, row: dict[str, Any], bytes_in: int | None, bytes_out: int | None) -> None:
        if row["status"] == "ok":
            self.ok += 1
            self.pixels += int(row.get("width") or 0) * int(row.get("height") or 0)
            self.bytes_in += int(bytes_in or 0)
            self.bytes_out += int(bytes_out or 0)
            self.fell_back += bool(row.get("fell_back"))
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
            "wall_s": round(self.wall_s, 3),
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
        for line in self.errors[:50]:
            print(f"  error  {line}", file=file)
        if len(self.errors) > 50:
            print(f"  ... and {len(self.errors) - 50} more errors (see the manifest)", file=file)
        file.flush()

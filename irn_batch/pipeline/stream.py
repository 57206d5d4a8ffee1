"""The job's Ray Data stream: work items -> byte reads -> the model-actor pool -> one result row per item,
with worker crashes isolated and redone, and a storage outage drained and stopped (shared by ingest and
restore)."""
from __future__ import annotations

import time
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import ray

from irn_batch.cluster import init_ray, pool_size
from irn_batch.pipeline.read import read_stage
from irn_batch.storage import OUTAGE_MARK


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

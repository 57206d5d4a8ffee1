"""An image whose worker process dies (a decoder crash, an out-of-memory kill) ends as its own error row.

Ray Data would retry such a batch for ever; the job must neither hang nor lose the images processed beside
the poison one. The crash is real: the actor process exits in the middle of the poison record.
"""
from __future__ import annotations

import collections
import os
import sys

import ray.cloudpickle

from irn_batch.storage.manifest import read_manifest
from irn_batch.pipeline import ingest as ingest_mod
from irn_batch.pipeline.config import IngestConfig
from irn_batch.settings import load_config
from irn_batch.pipeline.ingest import IngestActor
from irn_batch.storage import open_fs

pytest_plugins = ["pipeline_fixtures"]
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module


class CrashingIngestActor(IngestActor):
    """The real actor, except that its process dies outright on any key that starts with 'poison'."""

    def one(self, rec):
        if rec["key"].startswith("poison"):
            os._exit(1)
        return super().one(rec)


def test_a_record_that_kills_its_worker_fails_alone_and_the_job_finishes(ray_session, tmp_path, tiny_ckpt_path,
                                                                         monkeypatch):
    from pipeline_fixtures import write_images

    sizes = write_images(tmp_path / "in", n=5)
    (tmp_path / "in" / "poison.png").write_bytes((tmp_path / "in" / "img00.png").read_bytes())
    monkeypatch.setattr(ingest_mod, "IngestActor", CrashingIngestActor)
    cfg = load_config(IngestConfig, None, [f"input={tmp_path / 'in'}", f"output={tmp_path / 'lr'}",
                                           f"model={tiny_ckpt_path}", "actors.pool_size=1", "actors.batch_size=3",
                                           "actors.retries=0"])
    summary = ingest_mod.run_ingest(cfg)
    assert (summary["ok"], summary["error"], summary["total"]) == (5, 1, 6)
    fs, path = open_fs(summary["manifest"])
    rows = [r for r in read_manifest(fs, path).to_pylist() if r["job_id"] == summary["job_id"]]
    assert collections.Counter(r["key"] for r in rows) == collections.Counter([*sizes, "poison.png"])
    poison = next(r for r in rows if r["key"] == "poison.png")
    assert poison["status"] == "error" and "died on each of 2 tries" in poison["error"]
    assert poison["error_kind"] == "transient"  # a plain rerun tries it again
    assert all(r["status"] == "ok" for r in rows if r["key"] != "poison.png")
    assert sorted(p.name for p in (tmp_path / "lr").rglob("*.png")) == sorted(k.split("/")[-1] for k in sizes)

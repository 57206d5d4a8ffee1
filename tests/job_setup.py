"""One ingest of given source files on the local disk or the loopback S3 server, for the issue-13 tests
(test_grey_depth, test_source_format, test_camera_files): sources in, LRs out, restores on request."""
from __future__ import annotations

from irn_batch.storage.manifest import read_manifest
from irn_batch.pipeline.config import IngestConfig, RestoreConfig
from irn_batch.settings import load_config
from irn_batch.pipeline.ingest import run_ingest
from irn_batch.pipeline.restore import run_restore
from irn_batch.storage import open_fs


class Job:
    """Sources written under ``<root>/in``; ``ingest()`` to ``<root>/lr``; ``restore(out)`` to ``<root>/out``."""

    def __init__(self, request, tmp_path_factory, name: str, sources: dict[str, bytes], ckpt_path, *extra: str):
        assert request.getfixturevalue("ray_session").is_initialized()
        self.common = [f"model={ckpt_path}", "actors.pool_size=1", "actors.batch_size=3"]
        if request.param == "s3":
            from pipeline_fixtures import make_bucket

            endpoint = request.getfixturevalue("s3_endpoint")
            make_bucket(endpoint, name)
            self.root = f"s3://{name}"
            self.common.append(f"storage.endpoint_url={endpoint}")
        else:
            self.root = str(tmp_path_factory.mktemp(name))
        self.extra = list(extra)
        cfg = load_config(IngestConfig, None, ["input=x", "output=y", *self.common])
        self.fs, base = open_fs(self.root, cfg.storage)
        self.base = base.rstrip("/")
        self.src = dict(sources)
        self.put(sources)

    def put(self, sources: dict[str, bytes]) -> None:
        self.fs.makedirs(f"{self.base}/in", exist_ok=True)
        for key, data in sources.items():
            self.fs.pipe_file(f"{self.base}/in/{key}", data)
        self.src.update(sources)

    def ingest(self, *extra: str) -> dict:
        return run_ingest(load_config(IngestConfig, None, [f"input={self.root}/in", f"output={self.root}/lr",
                                                           *self.common, *self.extra, *extra]))

    def restore(self, out: str, *extra: str) -> dict:
        return run_restore(load_config(RestoreConfig, None, [f"input={self.root}/lr", f"output={self.root}/{out}",
                                                             *self.common, *extra]))

    def rows(self, folder: str, job_id: str | None = None) -> dict[str, dict]:
        """The latest manifest row per key under ``<root>/<folder>/_manifest`` (of one job, if given)."""
        self.fs.invalidate_cache()
        rows = sorted(read_manifest(self.fs, f"{self.base}/{folder}/_manifest").to_pylist(),
                      key=lambda r: r["finished_at"] or 0.0)
        return {r["key"]: r for r in rows if job_id is None or r["job_id"] == job_id}

    def cat(self, path: str) -> bytes:
        self.fs.invalidate_cache()
        return self.fs.cat_file(f"{self.base}/{path}")

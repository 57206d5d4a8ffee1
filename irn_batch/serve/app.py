"""On-demand restore over HTTP: a Ray Serve deployment over one ingest output, and its app builder.

Routes (errors are JSON ``{"error": "..."}``):

- ``GET /v1/images/{key}``: the restored HR at its original size, made by
  :func:`irn_batch.pipeline.hr_output.restore_lr` from the item the restore job would plan, so the bytes
  equal ``jobs/restore.py``'s for the same settings and device. ``format=source|png|webp|jpeg|avif`` (default:
  the original's container, as the restore job), else the ``Accept`` header when it rules out the original's
  container (``Vary: Accept``); ``quality=1..100``. A kept original (the floor's fallback) is returned byte
  for byte.
- ``GET /v1/thumbnails/{key}``: the stored LR file as it is (a standard image).
- ``GET /v1/images/{key}/info``: the item and the LR metadata as JSON (no storage settings).
- ``GET /v1/images?prefix=&after=&limit=``: keys in order, paginated (``next``: the ``after`` of the next page).
- ``GET /healthz``: 200 once the index is loaded.

Responses fixed by the LR's sha256 and the settings carry a strong ``ETag`` and ``Cache-Control: public,
max-age=31536000, immutable``; ``If-None-Match`` gives 304; ``HEAD`` gives the headers alone. Statuses:
404 unknown key or route, 400 bad parameter, 409 an LR of another model than ``model``, 500 an LR whose
bytes no longer match the manifest (never restored), 502 a storage fault.

Run it with ``irn-batch serve PREFIX`` (embedded Ray), ``serve run configs/serve.yaml`` or ``serve deploy``;
not through ``ray job submit``, whose end would take the app down with it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from ray import serve

from irn_batch.cluster import ActorConfig
from irn_batch.io.container import container_of
from irn_batch.pipeline.config import RestoreConfig
from irn_batch.serve import http
from irn_batch.serve.http import CONTENT_TYPE, HTTPError
from irn_batch.storage import StorageConfig, StorageError

log = logging.getLogger("ray.serve")


@dataclass
class ServeConfig:
    """``configs/serve.yaml``: what is served (``input``, an ingest output or LR prefix), with which weights
    and settings, by how many replicas of what size, and the request limits."""

    input: str = "???"
    model: Optional[str] = None  # None: each LR's own shipped weights, by the model id it records
    temperature: Optional[float] = None
    tile: Optional[int] = None
    precision: str = "fp32"
    num_replicas: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_ongoing_requests: int = 4
    max_queued_requests: int = 32
    max_page: int = 1000  # keys per /v1/images page
    cache_bytes: int = 256 * 1024 * 1024  # per replica, in memory (0: none)
    cache_prefix: Optional[str] = None  # a shared cache on any fsspec store, kept across restarts
    max_input_bytes: int = 64 * 1024 * 1024  # an LR file
    max_restore_pixels: int = 100_000_000  # an HR image restored for a request (400 above)
    refresh_s: float = 30.0  # how often a replica looks for new manifest parts (0: never)
    storage: StorageConfig = field(default_factory=StorageConfig)

    def restore_config(self, fmt: str = "source", quality: int | None = None) -> RestoreConfig:
        """The restore job's config that gives the same bytes as a request for ``fmt`` and ``quality``."""
        return RestoreConfig(input=self.input, output="", model=self.model, format=fmt, quality=quality,
                             temperature=self.temperature, max_input_bytes=self.max_input_bytes,
                             storage=self.storage, actors=ActorConfig(num_cpus=self.num_cpus, num_gpus=self.num_gpus,
                                                                      tile=self.tile, precision=self.precision))


class Metrics:
    """The replica's Ray metrics (exported with Ray's own, for Prometheus): requests by status class,
    latency (s), restores (the network ran) and cache hits."""

    LATENCY_BOUNDS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

    def __init__(self):
        from ray.util import metrics

        self.requests = metrics.Counter("irn_batch_serve_requests", "HTTP requests answered, by status class",
                                        tag_keys=("status",))
        self.latency = metrics.Histogram("irn_batch_serve_latency_s", "time to answer a request (s)",
                                         boundaries=self.LATENCY_BOUNDS_S)
        self.restores = metrics.Counter("irn_batch_serve_restores", "requests that ran the network")
        self.cache_hits = metrics.Counter("irn_batch_serve_cache_hits", "answers from the cache")

    def request(self, status: int, seconds: float) -> None:
        self.requests.inc(tags={"status": f"{status // 100}xx"})
        self.latency.observe(seconds)


class RestoreService:
    """One replica: the index of ``cfg.input`` and the models, loaded once; a request restores one image."""

    def __init__(self, cfg: ServeConfig):
        from irn_batch.serve.auth import tokens_from_env
        from irn_batch.serve.cache import MemoryCache, PrefixCache
        from irn_batch.serve.index import ImageIndex

        self.cfg = cfg
        self.index = ImageIndex(cfg.restore_config())
        self.models: dict[str | None, Any] = {}
        self.restores = 0
        self.cache = MemoryCache(cfg.cache_bytes)
        if cfg.cache_prefix is not None:
            _refuse_cache_in_archive(cfg)
        self.shared = None if cfg.cache_prefix is None else PrefixCache(cfg.cache_prefix, cfg.storage)
        self.tokens = tokens_from_env()
        self.metrics = Metrics()
        if cfg.refresh_s > 0 and self.index.version is not None:
            threading.Thread(target=self._refresh, name="irn_batch_index_refresh", daemon=True).start()
        log.info("irn_batch serve: %d keys from %s", len(self.index), cfg.input)

    def _refresh(self) -> None:
        """Rebuild the index when the ingest manifest gains parts; requests use the old one until the new
        one is complete (one reference swap), so none is dropped."""
        from irn_batch.serve.index import ImageIndex, manifest_version

        while True:
            time.sleep(self.cfg.refresh_s)
            try:
                if manifest_version(self.cfg.restore_config()) != self.index.version:
                    self.index = ImageIndex(self.cfg.restore_config())
                    log.info("irn_batch serve: index refreshed, %d keys", len(self.index))
            except Exception as e:  # a store fault: keep serving the index we have, try again later
                log.warning("irn_batch serve: index refresh failed (%s)", type(e).__name__)

    # --- models and bytes ---------------------------------------------------------------------------------
    def _model(self, item: dict[str, Any]):
        from irn_batch.cluster import actor_model
        from irn_batch.model.checkpoint import CheckpointError, load_model_bytes

        want = None if self.cfg.model is not None else item["model_id"]
        if want not in self.models:
            try:
                data, _ = load_model_bytes(self.cfg.model, 2, self.cfg.storage, model_id=want)
            except CheckpointError as e:
                raise HTTPError(409, str(e)) from None
            self.models[want] = actor_model(data, self.cfg.restore_config().actors)
        ckpt = self.models[want]
        if item["model_id"] and item["model_id"] != ckpt.model_id:
            raise HTTPError(409, f"{item['key']}: the LR was made by model {item['model_id']}, but this service "
                                 f"restores with {ckpt.model_id}")
        return ckpt

    def lr_bytes(self, item: dict[str, Any]) -> bytes:
        """The stored LR of ``item`` (at most ``max_input_bytes``): 500 when it is gone, 502 on a store fault."""
        from irn_batch.storage import open_uri, read_limited

        try:
            fs, path = open_uri(item["lr_uri"], self.cfg.storage)
            return read_limited(fs, path, self.cfg.max_input_bytes)
        except FileNotFoundError:
            raise HTTPError(500, f"{item['key']}: its LR object is missing from the archive") from None
        except (StorageError, OSError) as e:
            raise HTTPError(502, f"{item['key']}: reading its LR failed ({e})") from None

    def restore(self, item: dict[str, Any], fmt: str, quality: int | None) -> tuple[bytes, str]:
        """The restored object's bytes and container for ``item`` (the restore job's path and settings)."""
        from irn_batch.pipeline.hr_output import RestoreOptions, StageError, restore_lr
        from irn_batch.pipeline.restore import output_encoding

        if item["width"] and item["width"] * item["height"] > self.cfg.max_restore_pixels:
            raise HTTPError(400, f"{item['key']}: {item['width']}x{item['height']} is over the service's limit of "
                                 f"{self.cfg.max_restore_pixels} restored pixels (max_restore_pixels)")
        rc = self.cfg.restore_config(fmt, quality)
        opts = RestoreOptions(output_encoding(rc), rc.temperature, rc.actors.tile, rc.actors.precision, rc.storage)
        data = self.lr_bytes(item)
        try:
            out = restore_lr(self._model(item), item, data, opts)
        except StorageError as e:  # the LR's bytes and pixels no longer match the manifest: never restored
            log.error("irn_batch serve: %s: %s", item["key"], e)
            raise HTTPError(500, f"{item['key']}: {e}") from None
        except StageError as e:
            raise HTTPError(500, f"{item['key']}: {e}") from None
        self.restores += 1
        self.metrics.restores.inc()
        container = out.fields.get("format")
        return out.data, container if container in CONTENT_TYPE else (container_of(out.data) or "png")

    def etag(self, item: dict[str, Any], fmt: str, quality: int | None) -> str:
        """A strong ETag: the LR's sha256, the model id and the restore settings ("" without a checksum)."""
        from irn_batch.pipeline.restore import output_settings

        if not item["lr_sha256"]:
            return ""
        # temperature None is the weights' own default: fixed by the model id, so "nan" stands for it
        settings = output_settings(self.cfg.restore_config(fmt, quality), float("nan"))
        digest = hashlib.sha256(f"{item['lr_sha256']}|{self.cfg.model or item['model_id']}|{settings}".encode())
        return f'"{digest.hexdigest()[:40]}"'

    # --- HTTP ---------------------------------------------------------------------------------------------
    async def __call__(self, request):
        from starlette.responses import Response

        t0 = time.perf_counter()
        try:
            response = self.route(request)
        except HTTPError as e:
            response = Response(json.dumps({"error": str(e)}), status_code=e.status, media_type="application/json",
                                headers=e.headers)
        self.metrics.request(response.status_code, time.perf_counter() - t0)
        return response

    def route(self, request):
        from irn_batch.serve.auth import check

        path = http.relative_path(request)
        denied = check(self.tokens, path, request.headers, list(request.query_params.multi_items()))
        if denied is not None:
            raise HTTPError(*denied, headers={"WWW-Authenticate": "Bearer"} if denied[0] == 401 else None)
        if request.method not in ("GET", "HEAD"):
            raise HTTPError(405, f"{request.method} is not supported (GET or HEAD)")
        if path == "/healthz":
            return http.json_response({"status": "ok", "keys": len(self.index), "restores": self.restores,
                                       "cache_hits": self.cache.hits, "cache_bytes": self.cache.size,
                                       "auth": bool(self.tokens)})
        if path == "/v1/images":
            return http.list_page(self, request)
        for route, handler in (("/v1/thumbnails/", http.thumbnail), ("/v1/images/", http.image)):
            if path.startswith(route):
                return handler(self, request, path[len(route):])
        raise HTTPError(404, f"{path}: no such route")

    def cached(self, etag: str) -> tuple[bytes, str] | None:
        """A response kept under ``etag``: this replica's memory, else the shared prefix (then kept in memory)."""
        if not etag:
            return None
        hit = self.cache.get(etag)
        if hit is None and self.shared is not None:
            hit = self.shared.get(etag)
            if hit is not None:
                self.cache.put(etag, *hit)
        if hit is not None:
            self.metrics.cache_hits.inc()
        return hit

    def keep(self, etag: str, data: bytes, media_type: str) -> None:
        if etag:
            self.cache.put(etag, data, media_type)
            if self.shared is not None:
                self.shared.put(etag, data, media_type)

    def lookup(self, key: str) -> dict[str, Any]:
        item = self.index.item(key)
        if item is None:
            raise HTTPError(404, f"{key}: no such image in {self.cfg.input}")
        return item


def _refuse_cache_in_archive(cfg: ServeConfig) -> None:
    """ValueError when the shared cache prefix is, is inside or contains the archive it serves."""
    from irn_batch.pipeline import locate
    from irn_batch.storage import open_fs, to_uri

    (fs_c, cache), (fs_a, archive) = open_fs(cfg.cache_prefix, cfg.storage), open_fs(cfg.input, cfg.storage)
    where = locate.overlap(to_uri(fs_c, cache), to_uri(fs_a, archive))
    if where is not None:
        raise ValueError(f"cache_prefix {cfg.cache_prefix} {where} the archive it serves ({cfg.input}); "
                         "choose a prefix outside it")


def deployment(cfg: ServeConfig):
    """``RestoreService`` as a Serve deployment sized by ``cfg`` (replicas, CPUs/GPUs, request limits)."""
    return serve.deployment(RestoreService, name="irn_batch_restore", num_replicas=cfg.num_replicas,
                            max_ongoing_requests=cfg.max_ongoing_requests,
                            max_queued_requests=cfg.max_queued_requests,
                            ray_actor_options={"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus})


def build_app(args: dict[str, Any]):
    """The app builder of ``serve run irn_batch.serve.app:build_app input=... [key=value ...]`` and of a
    Serve config file's ``import_path`` (``configs/serve.yaml``): its ``args`` (nested mappings allowed:
    ``storage: {endpoint_url: ...}``) are ``ServeConfig`` settings, typed and checked, credentials refused."""
    from irn_batch.settings import load_config

    return deployment(cfg := load_config(ServeConfig, None, _dotlist(args or {}))).bind(cfg)


def _dotlist(args: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in args.items():
        if isinstance(value, dict):
            out += _dotlist(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={'null' if value is None else value}")
    return out


def run_app(cfg: ServeConfig, host: str = "127.0.0.1", port: int = 8000, *, name: str = "irn_batch",
            route_prefix: str = "/") -> str:
    """Start (or join) Serve on the connected Ray with its HTTP proxy on ``host:port``, deploy the app for
    ``cfg`` and wait until it answers; the base URL. Raises the deployment's error when it cannot start."""
    import urllib.request

    serve.start(http_options={"host": host, "port": port})
    serve.run(deployment(cfg).bind(cfg), name=name, route_prefix=route_prefix, blocking=False)
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}{route_prefix.rstrip('/')}"
    with urllib.request.urlopen(f"{base}/healthz", timeout=60) as r:
        r.read()
    return base

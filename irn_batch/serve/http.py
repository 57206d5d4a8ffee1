"""The HTTP side of the service's routes: paths and parameters read and checked, the format a client asks
for (``format=`` or ``Accept``), conditional requests (``ETag`` / ``If-None-Match`` -> 304, ``HEAD``), and the
responses. What a route serves comes from :class:`irn_batch.serve.app.RestoreService`.
"""
from __future__ import annotations

import json
from typing import Any

from irn_batch.io.container import LR_CONTAINERS, ContainerError, Encoding, container_of
from irn_batch.io.lr_file import read_lr_meta

CONTENT_TYPE = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg", "avif": "image/avif",
                "tiff": "image/tiff", "heif": "image/heic"}
FORMATS = ("source", *LR_CONTAINERS)
IMMUTABLE = "public, max-age=31536000, immutable"

MAX_QUALITY_PARAM = 100
MAX_SIDE_PARAM = 16384  # width= / height=
# item columns shown by /info: what the image is, never where storage lives or how it is reached
INFO_COLUMNS = ("key", "lr_sha256", "model_id", "width", "height", "fell_back", "out_container", "grey",
                "bit_depth", "colour", "source_bytes", "source_lossless", "lr_pixels_sha256")


class HTTPError(Exception):
    """A request that ends with ``status`` and the JSON body ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers


def container_for(fmt: str) -> str:
    """A ``format=`` value checked (400 otherwise); suffix names (jpg) are accepted."""
    if fmt == "source":
        return fmt
    try:
        name = Encoding(fmt).container
    except ContainerError:
        name = None
    if name not in LR_CONTAINERS:
        raise HTTPError(400, f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return name


def relative_path(request) -> str:
    """The request's path below the app's route prefix, percent-decoded (keys are any Unicode)."""
    path = request.scope.get("path", "/")
    root = request.scope.get("root_path", "") or ""
    if root and path.startswith(root):
        path = path[len(root):]
    return path or "/"


def json_response(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None):
    from starlette.responses import Response

    return Response(json.dumps(body, sort_keys=True), status_code=status, media_type="application/json",
                    headers=headers)


def _int_param(request, name: str, low: int, high: int) -> int | None:
    text = request.query_params.get(name)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise HTTPError(400, f"{name} must be an integer, got {text!r}") from None
    if not low <= value <= high:
        raise HTTPError(400, f"{name} must be within {low}..{high}, got {value}")
    return value


def list_page(service, request):
    """``GET /v1/images?prefix=&after=&limit=``: keys in order; ``next`` is the ``after`` of the next page."""
    limit = _int_param(request, "limit", 1, service.cfg.max_page) or 100
    prefix = request.query_params.get("prefix", "")
    keys = service.index.keys(prefix, request.query_params.get("after"), limit)
    return json_response({"keys": keys, "next": keys[-1] if len(keys) == limit else None})


def _not_modified(request, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (a response without an ETag is never "not modified")."""
    return bool(etag) and etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]


def _body(request, data: bytes, media_type: str, etag: str, vary: bool = False):
    """The response for ``data``, or 304 when ``If-None-Match`` names ``etag``; no body for ``HEAD``."""
    from starlette.responses import Response

    headers = {"Cache-Control": IMMUTABLE} if etag else {"Cache-Control": "no-cache"}
    if etag:
        headers["ETag"] = etag
    if vary:
        headers["Vary"] = "Accept"
    if _not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(data))
        return Response(status_code=200, headers=headers, media_type=media_type)
    return Response(data, media_type=media_type, headers=headers)


def thumbnail(service, request, key: str):
    """``GET /v1/thumbnails/{key}``: the stored LR file, byte for byte, with its own content type."""
    item = service.lookup(key)
    data = service.lr_bytes(item)
    container = container_of(data) or "png"
    return _body(request, data, CONTENT_TYPE.get(container, "application/octet-stream"),
                 f'"{item["lr_sha256"][:40]}"' if item["lr_sha256"] else "")


def _requested_format(request, item: dict[str, Any]) -> str:
    """``format=`` when given; else the original's container (the restore job's default) unless the
    ``Accept`` header rules it out, then the first of AVIF, WebP, PNG, JPEG that it accepts."""
    fmt = request.query_params.get("format")
    if fmt is not None:
        return container_for(fmt.lower())
    accept = request.headers.get("accept", "")
    if not accept or "*/*" in accept or "image/*" in accept:
        return "source"
    own = CONTENT_TYPE.get(item["out_container"] or "png")
    if own in accept:
        return "source"
    for container in ("avif", "webp", "png", "jpeg"):
        if CONTENT_TYPE[container] in accept:
            return container
    raise HTTPError(406, f"none of {', '.join(FORMATS)} is acceptable to 'Accept: {accept}'")


def image(service, request, rest: str):
    """``GET /v1/images/{key}`` and ``GET /v1/images/{key}/info``."""
    if service.index.item(rest) is None and rest.endswith("/info"):
        return info(service, service.lookup(rest[: -len("/info")]))
    item = service.lookup(rest)
    fmt = _requested_format(request, item)
    quality = _int_param(request, "quality", 1, MAX_QUALITY_PARAM)
    etag = service.etag(item, fmt, quality)
    vary = "format" not in request.query_params
    box = (_int_param(request, "width", 1, MAX_SIDE_PARAM), _int_param(request, "height", 1, MAX_SIDE_PARAM))
    if any(box):
        view = _view(service, request, item, fmt, quality, box, etag, vary)
        if view is not None:
            return view
    if _not_modified(request, etag):
        return _body(request, b"", "", etag, vary)
    hit = service.cached(etag)
    if hit is not None:
        return _body(request, hit[0], hit[1], etag, vary)
    data, container = service.restore(item, fmt, quality)
    media_type = CONTENT_TYPE.get(container, "application/octet-stream")
    service.keep(etag, data, media_type)
    return _body(request, data, media_type, etag, vary)


def _view(service, request, item: dict[str, Any], fmt: str, quality: int | None, box, etag: str, vary: bool):
    """A resized view (``width=``/``height=``), or None when the box does not shrink the image (then the
    full image answers): from the LR when no larger than it, else from the full restore."""
    import hashlib

    from irn_batch.io.container import ContainerError, Encoding
    from irn_batch.serve.resize import fit_within, resized

    lr = None
    if item["width"] is None:  # a bare LR prefix: the LR records the size
        lr = service.lr_bytes(item)
        meta = read_lr_meta(lr)
        item = {**item, "width": meta.width, "height": meta.height}
    size = fit_within(item["width"], item["height"], *box)
    if size == (item["width"], item["height"]):
        return None
    etag = f'"{hashlib.sha256(f"{etag}|{size[0]}x{size[1]}".encode()).hexdigest()[:40]}"' if etag else ""
    if _not_modified(request, etag):
        return _body(request, b"", "", etag, vary)
    hit = service.cached(etag)
    if hit is not None:
        return _body(request, hit[0], hit[1], etag, vary)
    lr = lr if lr is not None else service.lr_bytes(item)  # read only when the view must be made
    own = item["out_container"] or container_of(lr) or "png"
    try:
        enc = Encoding(own if fmt == "source" else fmt, quality)
    except ContainerError as e:
        raise HTTPError(400, str(e)) from None
    scale = 1 if item["fell_back"] else read_lr_meta(lr).scale
    from_lr = item["fell_back"] or (size[0] <= -(-item["width"] // scale) and size[1] <= -(-item["height"] // scale))
    source = lr if from_lr else service.restore(item, "png", None)[0]
    try:
        data = resized(source, size, enc, bool(item["grey"]))
    except ContainerError as e:
        raise HTTPError(400, f"{item['key']}: {e}") from None
    media_type = CONTENT_TYPE[enc.container]
    service.keep(etag, data, media_type)
    return _body(request, data, media_type, etag, vary)


def info(service, item: dict[str, Any]):
    """``GET /v1/images/{key}/info``: what the image is (manifest columns) and what its LR records."""
    body = {c: item[c] for c in INFO_COLUMNS}
    try:
        body["lr"] = vars(read_lr_meta(service.lr_bytes(item)))
    except ValueError as e:  # an LR a tool stripped: the manifest's record still answers
        body["lr"] = {"error": str(e)}
    return json_response(body)

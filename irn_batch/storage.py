"""One way to name data: fsspec URLs (local path, file://, s3://, ...), safe keys and atomic writes.

Credentials come from :class:`StorageConfig` or the standard environment (AWS_* variables, profiles);
they are passed to fsspec only and never appear in URIs, logs or manifests.
"""
from __future__ import annotations

import fnmatch
import hashlib
import os
import posixpath
import re
import time
import unicodedata
import uuid
from dataclasses import dataclass
from typing import Any, Iterable

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem


class StorageError(ValueError):
    """A URL or key that cannot be used safely (escapes its prefix, unreadable, ...)."""


@dataclass
class StorageConfig:
    """Connection settings for remote stores; empty fields fall back to the standard environment."""

    endpoint_url: str | None = None
    region: str | None = None
    anon: bool = False
    key: str | None = None
    secret: str | None = None

    def options(self, url: str) -> dict[str, Any]:
        """fsspec storage options for ``url`` (only S3-like URLs get any)."""
        if not url.startswith(("s3://", "s3a://")):
            return {}
        opts: dict[str, Any] = {"anon": bool(self.anon)}
        if self.key:
            opts["key"] = self.key
        if self.secret:
            opts["secret"] = self.secret
        endpoint = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        client: dict[str, Any] = {}
        if endpoint:
            client["endpoint_url"] = endpoint
        if self.region:
            client["region_name"] = self.region
        if client:
            opts["client_kwargs"] = client
        return opts

    def __repr__(self) -> str:  # never print the secret, even in a traceback of a config object
        return f"StorageConfig(endpoint_url={self.endpoint_url!r}, region={self.region!r}, anon={self.anon})"


def open_fs(url: str, storage: StorageConfig | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it) for a URL or a plain local path."""
    opts = (storage or StorageConfig()).options(url)
    fs, path = url_to_fs(url, **opts)
    if isinstance(fs, LocalFileSystem):
        path = os.path.abspath(path)
    return fs, path


def to_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A URI for ``path`` on ``fs`` without any credentials (protocol + path only)."""
    if isinstance(fs, LocalFileSystem):
        return path
    proto = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    return f"{proto}://{path}"


def safe_key(key: str) -> str:
    """Normalise a relative key (NFC, '/' separators) and reject anything that could leave its prefix."""
    if not isinstance(key, str) or not key:
        raise StorageError("empty key")
    norm = unicodedata.normalize("NFC", key).replace("\\", "/")
    for ch in norm:
        cat = unicodedata.category(ch)
        # control, format (bidi overrides, zero-width), surrogates, private use and unassigned characters
        if cat in ("Cc", "Cf", "Cs", "Co", "Cn"):
            raise StorageError(f"key {key!r} contains a disallowed character U+{ord(ch):04X}")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":") or "://" in norm:
        raise StorageError(f"key {key!r} is absolute")
    parts = norm.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"key {key!r} has an empty, '.' or '..' component")
    # NFKC folding catches look-alikes such as the one-dot leader or fullwidth dots that become '..'
    if any(unicodedata.normalize("NFKC", p) in (".", "..") or "/" in unicodedata.normalize("NFKC", p) for p in parts):
        raise StorageError(f"key {key!r} has a component that folds to a path separator or dot")
    return norm


def join_key(prefix_path: str, key: str) -> str:
    """``prefix_path`` + '/' + a checked relative key; the result always stays under the prefix."""
    rel = safe_key(key)
    base = prefix_path.rstrip("/")
    out = posixpath.normpath(f"{base}/{rel}")
    if not out.startswith(base + "/"):
        raise StorageError(f"key {key!r} escapes the prefix")
    return out


def relative_key(prefix_path: str, path: str) -> str:
    """``path`` relative to ``prefix_path`` (both on the same filesystem)."""
    base = prefix_path.rstrip("/") + "/"
    if not path.startswith(base):
        raise StorageError(f"{path} is not under {prefix_path}")
    return path[len(base):]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


TEMP_SUFFIX = ".tmp"  # atomic_write's temp names: '.<name>.<uuid hex>.tmp' (local), '<name>.<uuid hex>.tmp'
_TEMP_NAME = re.compile(r".*\.[0-9a-f]{32}\.tmp")


def atomic_write(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see either nothing/the old object or the whole new one.

    Local: temp file in the same directory, fsync, ``os.replace``. S3-like stores: a single PUT (or a
    multipart upload) only becomes visible when complete, so the object is written directly. Anything
    else: temp key then move.
    """
    if isinstance(fs, LocalFileSystem):
        d = os.path.dirname(path)
        os.makedirs(d, exist_ok=True)
        tmp = os.path.join(d, f".{os.path.basename(path)}.{uuid.uuid4().hex}{TEMP_SUFFIX}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return
    protos = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    if any(p in ("s3", "s3a", "gs", "gcs", "az", "abfs", "memory") for p in protos):
        fs.pipe_file(path, data)
        return
    tmp = f"{path}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
    fs.pipe_file(tmp, data)
    fs.mv(tmp, path)


def read_limited(fs: fsspec.AbstractFileSystem, path: str, max_bytes: int) -> bytes:
    """Read a whole object, refusing ones larger than ``max_bytes`` before reading them."""
    size = fs.size(path)
    if size is not None and size > max_bytes:
        raise StorageError(f"file is {size} bytes, over the {max_bytes}-byte input limit")
    with fs.open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise StorageError(f"file is over the {max_bytes}-byte input limit")
    return data


def _matches(key: str, patterns: Iterable[str]) -> bool:
    name = key.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(key, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def list_keys(
    fs: fsspec.AbstractFileSystem,
    prefix_path: str,
    include: Iterable[str] = ("*",),
    exclude: Iterable[str] = (),
    skip_dirs: Iterable[str] = ("_manifest",),
) -> list[str]:
    """Sorted relative keys under a prefix matching ``include`` and not ``exclude``.

    Patterns match the whole relative key or its file name. Hidden temp files ('.*.tmp') and the
    top-level ``skip_dirs`` (our own manifests) are never listed. The tree is walked one folder at a time
    and only the matching keys are kept (``find`` would hold an info dict per object: ~1 KB each), and a
    folder that cannot be listed is an error rather than silently missing inputs.
    """
    include, exclude, skip = list(include), list(exclude), set(skip_dirs)
    base = prefix_path.rstrip("/")
    out = []
    if fs.isfile(base):
        return out
    for root, dirs, files in fs.walk(base, on_error="raise"):
        root = root.rstrip("/")
        if root == base:
            dirs[:] = [d for d in dirs if d not in skip]
            rel = ""
        else:
            rel = relative_key(base, root) + "/"
        for name in files:
            if name and not name.endswith(TEMP_SUFFIX):
                key = rel + name
                if _matches(key, include) and not _matches(key, exclude):
                    out.append(key)
        fs.invalidate_cache(root)  # s3fs would otherwise keep every folder's listing for the job's life
    return sorted(out)


def leftover_temps(fs: fsspec.AbstractFileSystem, prefix_path: str, older_than_s: float = 0.0) -> list[str]:
    """Temp objects of ``atomic_write`` under a prefix, left by a writer killed mid-write, older than given.

    They never sit under a final key and listings skip them; this finds them so they can be removed.
    """
    base, out, now = prefix_path.rstrip("/"), [], time.time()
    for root, _dirs, files in fs.walk(base, detail=True):
        for name, info in files.items():
            if _TEMP_NAME.fullmatch(name) and now - _mtime(info) >= older_than_s:
                out.append(f"{root.rstrip('/')}/{name}")
    return sorted(out)


def _mtime(info: dict[str, Any]) -> float:
    """Modification time of a listing entry in epoch seconds (local: mtime; S3-like: LastModified)."""
    t = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    if hasattr(t, "timestamp"):
        return t.timestamp()
    return float(t) if t is not None else 0.0


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif")


def derived_key(key: str, ext: str) -> str:
    """``key`` with its image suffix replaced by ``ext`` ('a/b.jpg' -> 'a/b.png'); other names get it appended."""
    root, suffix = posixpath.splitext(key)
    if suffix.lower() == ext.lower():
        return key
    if suffix.lower() in IMAGE_SUFFIXES:
        return root + ext
    return key + ext

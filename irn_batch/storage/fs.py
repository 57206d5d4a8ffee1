"""Filesystems and objects: opening a URL or a URI (:func:`open_fs`, :func:`open_uri`, :func:`to_uri`),
the one atomic write (:func:`atomic_write`; :func:`write_object` for a whole URL) and the no-clobber one
(:func:`write_guarded`, :class:`ObjectExists`, :data:`REPLACE_ANY`), whole and bounded reads
(:func:`read_object`, :func:`read_limited`), :func:`check_writable`, :func:`sha256_hex`, the size and
version of objects (:func:`stat_object`, :func:`stat_objects`) and temp objects of killed writers
(:func:`leftover_temps`). Remote calls are retried through an outage (:mod:`irn_batch.storage.retry`).
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import stat
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from irn_batch.storage.config import StorageConfig, StorageError, StorageUnavailable
from irn_batch.errors import one_line
from irn_batch.storage.retry import with_retry


def open_fs(url: str, storage: StorageConfig | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it) for a URL or a plain local path."""
    storage = storage or StorageConfig()
    fs, path = url_to_fs(url, **storage.options(url))
    if isinstance(fs, LocalFileSystem):
        path = os.path.abspath(path)
    else:  # fsspec shares one instance per set of options; the last config opened with it sets the budget
        fs.irn_outage_s = float(storage.outage_s)
    return fs, path


def to_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A URI for ``path`` on ``fs`` without any credentials (protocol + path only)."""
    if isinstance(fs, LocalFileSystem):
        return path
    proto = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    return f"{proto}://{path}"


def open_uri(uri: str, storage: StorageConfig | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path) for a URI made by :func:`to_uri`, the path taken exactly as written.

    Unlike :func:`open_fs`, nothing in the path is parsed: ``::`` (fsspec's URL chaining), ``#``, ``?`` and
    ``%`` are characters of the key. The protocol before ``://`` picks the filesystem; an absolute path is
    local. Raises StorageError for anything else (a URI that ``to_uri`` cannot have made).
    """
    if uri.startswith("/"):
        return fsspec.filesystem("file"), uri
    proto, sep, path = uri.partition("://")
    if not sep or not proto or "/" in proto or ":" in proto:
        raise StorageError(f"{uri!r} is not an absolute path or a protocol://path URI")
    return fsspec.filesystem(proto, **(storage or StorageConfig()).options(uri)), path


def check_writable(url: str, storage: StorageConfig | None = None) -> None:
    """Write a small probe object under the prefix ``url`` and remove it; :class:`StorageError` if that fails.

    Run before a job's work starts, so a missing bucket, a read-only prefix or an unreachable store is
    found before any image is processed (an unreachable one after ``storage.outage_s`` seconds).
    """
    try:
        fs, path = open_fs(url, storage)
        probe = f"{path.rstrip('/')}/.irn-batch-probe-{uuid.uuid4().hex}"
        atomic_write(fs, probe, b"probe")  # retried through an outage like every write
        with_retry(fs, "removing the probe object", lambda: fs.rm_file(probe))
    except StorageUnavailable as e:
        raise StorageUnavailable(f"{url}: {e}") from None  # (the message holds OUTAGE_MARK)
    except StorageError:
        raise
    except Exception as e:  # missing bucket, access denied, read-only file system, ...
        raise StorageError(f"{url}: cannot write there ({one_line(e, 300, typed=True)})") from None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


TEMP_SUFFIX = ".tmp"  # atomic_write's temp names: '.<name>.<uuid hex>.tmp' (local), '<name>.<uuid hex>.tmp'
_TEMP_NAME = re.compile(r".*\.[0-9a-f]{32}\.tmp")


def atomic_write(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see either nothing/the old object or the whole new one.

    Local: temp file in the same directory, fsync, ``os.replace``. S3-like stores: a single PUT (or a
    multipart upload) only becomes visible when complete, so the object is written directly. Anything
    else: temp key then move. Remote writes are retried through an outage (:func:`with_retry`).
    """
    if isinstance(fs, LocalFileSystem):
        tmp = _durable_temp(path, data)
        try:
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return
    protos = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    if any(p in ("s3", "s3a", "gs", "gcs", "az", "abfs", "memory") for p in protos):
        with_retry(fs, "write", lambda: fs.pipe_file(path, data))
        return
    tmp = f"{path}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
    with_retry(fs, "write", lambda: fs.pipe_file(tmp, data))
    with_retry(fs, "write", lambda: fs.mv(tmp, path))


class ObjectExists(StorageError):
    """A no-clobber write found an object at its path that it may not replace (see :func:`write_guarded`)."""


REPLACE_ANY = "*"  # write_guarded: replace whatever object is there (still not one written meanwhile)
_SINGLE_PUT_MAX = 5 * 2**30 - 1  # S3's limit for one PUT: a conditional write is never a multipart upload


def write_guarded(fs: fsspec.AbstractFileSystem, path: str, data: bytes, replace: str | None = None) -> str:
    """Write ``data`` to ``path`` only where that is allowed; returns "created" or "replaced".

    ``replace`` None: only where nothing is. A sha256 hex digest: also over an object holding exactly
    those bytes (a job's own earlier output). :data:`REPLACE_ANY`: over any object. Anything else at the
    path raises :class:`ObjectExists`, and the object is left as it was.

    The check and the write are one step, so two writers racing for one path never both succeed and a
    writer never replaces bytes that another wrote after its check: S3-like stores get a conditional PUT
    (``If-None-Match: *`` to create; ``If-Match: <ETag>`` of the object just checked to replace, so an
    object changed meanwhile fails the PUT); the local disk gets a hard link of a complete temp file (fails
    when the name exists) and, to replace, a check and a rename while the writer holds an advisory lock on the
    folder, so guarded writers on one machine (or one lock-honouring shared filesystem) take turns. Other
    filesystems: a check then :func:`atomic_write` (not safe against a concurrent writer). Remote calls
    are retried through an outage (:func:`with_retry`).
    """
    if isinstance(fs, LocalFileSystem):
        return _write_guarded_local(path, data, replace)
    if _is_s3(fs):
        return _write_guarded_s3(fs, path, data, replace)
    if with_retry(fs, "stat", lambda: fs.exists(path)):
        if replace != REPLACE_ANY and (replace is None or sha256_hex(fs.cat_file(path)) != replace):
            raise ObjectExists(f"{to_uri(fs, path)} exists")
        atomic_write(fs, path, data)
        return "replaced"
    atomic_write(fs, path, data)
    return "created"


def _write_guarded_s3(fs: fsspec.AbstractFileSystem, path: str, data: bytes, replace: str | None) -> str:
    def exists_error(e: OSError) -> bool:  # s3fs: FileExistsError for If-None-Match, EINVAL for If-Match
        return isinstance(e, FileExistsError) or "precondition" in str(e).lower() or getattr(e, "errno", 0) == 22

    def put(**cond) -> None:
        with_retry(fs, "write", lambda: fs.pipe_file(path, data, chunksize=_SINGLE_PUT_MAX, **cond))

    try:
        put(mode="create")
        return "created"
    except OSError as e:
        if not exists_error(e):
            raise
        if replace is None:
            raise ObjectExists(f"{to_uri(fs, path)} exists") from None
    from fsspec.asyn import sync

    bucket, key, _ = fs.split_path(path)

    async def current() -> tuple[str, bytes | None]:
        if replace == REPLACE_ANY:
            head = await fs._call_s3("head_object", Bucket=bucket, Key=key)
            return head["ETag"], None
        got = await fs._call_s3("get_object", Bucket=bucket, Key=key)
        async with got["Body"] as body:
            return got["ETag"], await body.read()

    try:
        etag, old = with_retry(fs, "read", lambda: sync(fs.loop, current))
    except FileNotFoundError:  # removed since: create it (and still never over a newcomer)
        return _write_guarded_s3(fs, path, data, None)
    if old is not None and sha256_hex(old) != replace:
        raise ObjectExists(f"{to_uri(fs, path)} exists")
    try:
        put(IfMatch=etag)
    except OSError as e:
        if exists_error(e) or isinstance(e, FileNotFoundError):
            raise ObjectExists(f"{to_uri(fs, path)} was changed by another writer while this one wrote") from None
        raise
    return "replaced"


def _durable_temp(path: str, data: bytes) -> str:
    """Write ``data`` to a new temp file beside local ``path`` (folders created), flushed to disk; its path."""
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(path)}.{uuid.uuid4().hex}{TEMP_SUFFIX}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return tmp


def _write_guarded_local(path: str, data: bytes, replace: str | None) -> str:
    tmp = _durable_temp(path, data)
    try:
        folder = os.open(os.path.dirname(path), os.O_RDONLY)
        try:
            # guarded writers into one folder take turns (an advisory lock on the folder, released by the
            # kernel if the process dies), so the check and the write below are one step for all of them
            fcntl.flock(folder, fcntl.LOCK_EX)
            try:
                os.link(tmp, path)  # fails when the name exists: never over anything
                return "created"
            except FileExistsError:
                if replace is None:
                    raise ObjectExists(f"{path} exists") from None
            if replace != REPLACE_ANY:
                with open(path, "rb") as f:
                    if sha256_hex(f.read()) != replace:
                        raise ObjectExists(f"{path} exists")
            os.replace(tmp, path)
            return "replaced"
        finally:
            os.close(folder)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def read_limited(fs: fsspec.AbstractFileSystem, path: str, max_bytes: int) -> bytes:
    """Read a whole object, refusing ones larger than ``max_bytes`` before reading them.

    Retried through an outage (:func:`with_retry`).
    """
    def read() -> bytes:
        size = fs.size(path)
        if size is not None and size > max_bytes:
            raise StorageError(f"file is {size} bytes, over the {max_bytes}-byte input limit")
        with fs.open(path, "rb") as f:
            return f.read(max_bytes + 1)

    data = with_retry(fs, "read", read)
    if len(data) > max_bytes:
        raise StorageError(f"file is over the {max_bytes}-byte input limit")
    return data


def _is_s3(fs: fsspec.AbstractFileSystem) -> bool:
    protos = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return "s3" in protos and hasattr(fs, "_call_s3")


def _version(info: dict[str, Any]) -> str | None:
    """What identifies an object's version in an fsspec info dict: its ETag, else its modification time."""
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return str(etag)
    t = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    return None if t is None else f"mtime:{_mtime(info)!r}"


def stat_object(fs: fsspec.AbstractFileSystem, path: str) -> tuple[int | None, str | None]:
    """(size, version) of one object as :func:`list_objects` records them; (None, None) when it is missing."""
    try:
        if isinstance(fs, LocalFileSystem):
            st = os.stat(path)
            return (st.st_size, f"mtime_ns:{st.st_mtime_ns}") if stat.S_ISREG(st.st_mode) else (None, None)
        info = fs.info(path)
    except (OSError, ValueError):
        return None, None
    return info.get("size"), _version(info)


def stat_objects(fs: fsspec.AbstractFileSystem, paths: list[str], threads: int = 16) -> list[tuple]:
    """:func:`stat_object` for many paths, ``threads`` at a time (object stores answer in tens of ms)."""
    with ThreadPoolExecutor(max(1, min(threads, len(paths) or 1))) as pool:
        return list(pool.map(lambda p: stat_object(fs, p), paths))


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


def write_object(url: str, data: bytes, storage: StorageConfig | None = None) -> None:
    """:func:`atomic_write` of ``data`` to a URL or local path (local folders created as needed).

    A plain path or a ``file://`` URL is taken literally (no fsspec URL chaining at ``::``).
    """
    if url.startswith("file://") or "://" not in url:
        fs, path = fsspec.filesystem("file"), os.path.abspath(url.removeprefix("file://"))
    else:
        fs, path = open_fs(url, storage)
    atomic_write(fs, path, data)


def read_object(url: str, storage: StorageConfig | None = None) -> bytes:
    """The whole object at a URL or local path; retried through an outage (:func:`with_retry`)."""
    fs, path = open_fs(url, storage)
    return with_retry(fs, "read", lambda: fs.cat_file(path))

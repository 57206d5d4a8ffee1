"""One way to name data: fsspec URLs (local path, file://, s3://, ...), listings, safe keys, atomic writes,
and retries of storage calls through an outage.

Input keys are opaque: :func:`list_objects` returns them as stored and they are read at exactly that
path (:func:`open_uri`); only output keys are made safe (:func:`output_key`, :func:`join_key`).

Credentials never pass through this package: s3fs/botocore find them in the standard places (AWS_*
environment variables, an AWS profile, an instance or pod role) on each machine that touches the store,
so they never appear in a config, a command line, a URI, a log line or a manifest.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import posixpath
import re
import socket
import stat
import tempfile
import time
import unicodedata
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, TypeVar

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

T = TypeVar("T")


class StorageError(ValueError):
    """A URL or key that cannot be used safely (escapes its prefix, unreadable, ...)."""


# Every message of StorageUnavailable contains this; the driver finds outage rows by it.
OUTAGE_MARK = "storage unreachable"


class StorageUnavailable(StorageError):
    """The store stayed unreachable (connections refused, cut or timed out) for ``outage_s`` seconds."""


@dataclass
class StorageConfig:
    """Connection and fault settings for remote stores; credentials are deliberately not among them.

    Credentials come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN),
    an AWS profile (``profile`` or AWS_PROFILE) or a role, on every machine that touches the store.

    Faults: each S3 request is tried ``max_attempts`` times by botocore (``retry_mode`` 'standard' or
    'adaptive', exponential backoff with jitter; this covers throttling and 5xx answers), with
    ``connect_timeout_s`` / ``read_timeout_s`` per attempt. On top of that, a read or write whose store is
    unreachable (connection refused, cut or timed out) is retried with backoff for up to ``outage_s``
    seconds from its first failure, then fails with :class:`StorageUnavailable`, which ends the job.
    Manifest rows that cannot be written then go to ``spill_dir`` (None: ~/.cache/irn_batch/spill).
    """

    endpoint_url: Optional[str] = None
    region: Optional[str] = None
    anon: bool = False
    profile: Optional[str] = None  # an AWS profile name (its keys stay in ~/.aws on each machine)
    retry_mode: str = "standard"
    max_attempts: int = 3
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    outage_s: float = 60.0
    spill_dir: Optional[str] = None

    def options(self, url: str) -> dict[str, Any]:
        """fsspec storage options for ``url`` (only S3-like URLs get any)."""
        if not url.startswith(("s3://", "s3a://")):
            return {}
        if self.retry_mode not in ("standard", "adaptive", "legacy"):
            raise StorageError(f"storage.retry_mode={self.retry_mode!r}: use standard, adaptive or legacy")
        opts: dict[str, Any] = {"anon": bool(self.anon)}
        if self.profile:
            opts["profile"] = self.profile
        endpoint = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        client: dict[str, Any] = {}
        if endpoint:
            client["endpoint_url"] = endpoint
        if self.region:
            client["region_name"] = self.region
        if client:
            opts["client_kwargs"] = client
        opts["config_kwargs"] = {
            "connect_timeout": float(self.connect_timeout_s), "read_timeout": float(self.read_timeout_s),
            "retries": {"max_attempts": max(1, int(self.max_attempts)), "mode": self.retry_mode},
        }
        return opts


# A setting whose name looks like one of these is refused: Ray records a job's entrypoint (and so its
# command line) and runtime_env, and shows both in `ray job list` and the dashboard.
_SECRET_NAMES = re.compile(r"(^|_)(key|secret|token|password|passwd|credentials?|access_key_id|"
                           r"secret_access_key|session_token)$", re.IGNORECASE)
_URL_USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@]*:[^/@]*@")
SECRET_HELP = ("secrets are not accepted as settings (Ray shows a job's command line in `ray job list` and "
               "its logs); give credentials to every machine instead: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
               "(/ AWS_SESSION_TOKEN) in the environment of the driver and of each Ray node, an AWS profile "
               "(AWS_PROFILE or storage.profile=NAME), or an instance/pod role")


def secret_setting(settings: Iterable[str | tuple[str, Any]]) -> str | None:
    """The name of the first setting that carries a secret, or None.

    ``settings`` are dotlist entries ('storage.secret=...') or (dotted name, value) pairs. A setting
    carries a secret when its last name part looks like a credential (key, secret, token, password, ...)
    or its value is a URL with a password in it ('s3://user:pass@host'); empty values are ignored. Values
    are never returned.
    """
    for item in settings:
        name, value = (item.split("=", 1) + [""])[:2] if isinstance(item, str) else item
        last = str(name).strip().rsplit(".", 1)[-1]
        if value is None or value == "":  # 'key: null' in a YAML file holds nothing
            continue
        if _SECRET_NAMES.search(last) or (isinstance(value, str) and _URL_USERINFO.match(value.strip())):
            return str(name).strip()
    return None


def open_fs(url: str, storage: StorageConfig | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it) for a URL or a plain local path."""
    storage = storage or StorageConfig()
    fs, path = url_to_fs(url, **storage.options(url))
    if isinstance(fs, LocalFileSystem):
        path = os.path.abspath(path)
    else:  # fsspec shares one instance per set of options; the last config opened with it sets the budget
        fs.irn_outage_s = float(storage.outage_s)
    return fs, path


# Exceptions that mean "the store did not answer" rather than "the store said no", matched by class name
# along the exception's cause chain (botocore's and aiohttp's classes, and the builtin ones).
_UNREACHABLE = ("ConnectionError", "EndpointConnectionError", "ConnectionClosedError", "ConnectTimeoutError",
                "ReadTimeoutError", "ClientConnectionError", "ClientConnectorError", "ServerDisconnectedError",
                "ClientOSError", "ServerTimeoutError", "FSTimeoutError", "TimeoutError", "IncompleteRead",
                "ProxyConnectionError")
_BACKOFF_FIRST_S, _BACKOFF_MAX_S = 0.25, 5.0
_down_since: dict[str, float] = {}  # stores this process has given up on, by _store_id


def is_unreachable(e: BaseException) -> bool:
    """Whether ``e`` (or an exception it came from) says that the store could not be reached."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, (ConnectionError, TimeoutError, socket.timeout)):
            return True
        if any(c.__name__ in _UNREACHABLE for c in type(e).__mro__):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


def with_retry(fs: fsspec.AbstractFileSystem, what: str, call: Callable[[], T]) -> T:
    """``call()``, retried with exponential backoff (0.25 s doubling to 5 s) while the store is unreachable.

    Only unreachable-store errors (:func:`is_unreachable`) are retried; any other error (not found, access
    denied, ...) is raised at once. After ``fs.irn_outage_s`` seconds (``storage.outage_s``, set by
    :func:`open_fs`) of failures it raises :class:`StorageUnavailable`. Then, for the next ``outage_s``
    seconds, this process fails calls on that store at once without trying, and other processes on this
    machine (told by a flag file) try once without waiting; so a job facing a permanent outage ends soon
    after its first worker gives up. ``what`` names the call in the message. Local files are called directly.
    """
    if isinstance(fs, LocalFileSystem):
        return call()
    budget = float(getattr(fs, "irn_outage_s", StorageConfig.outage_s))
    store = _store_id(fs)
    gave_up = _down_since.get(store)
    if gave_up is not None:
        if time.monotonic() - gave_up < budget:
            raise StorageUnavailable(f"{OUTAGE_MARK} ({what} not tried: this worker gave up on the store "
                                     f"{time.monotonic() - gave_up:.0f} s ago, storage.outage_s={budget:g})")
        _down_since.pop(store, None)
    first, delay = None, _BACKOFF_FIRST_S
    while True:
        try:
            out = call()
            if first is not None:
                _clear_flag(store)
            return out
        except Exception as e:
            if not is_unreachable(e):
                raise
            now = time.monotonic()
            first = now if first is None else first
            waited = now - first
            elsewhere = _flag_age(store, budget)
            if waited >= budget or elsewhere is not None:
                _down_since[store] = now
                if elsewhere is None:
                    _set_flag(store)
                why = (f"gave up after storage.outage_s={budget:g} s" if elsewhere is None else
                       f"tried once: a worker on this machine gave up on the store {elsewhere:.0f} s ago")
                raise StorageUnavailable(f"{OUTAGE_MARK} ({what} {why}): {_brief(e)}") from e
            time.sleep(min(delay, budget - waited))
            delay = min(delay * 2, _BACKOFF_MAX_S)


def _store_id(fs: fsspec.AbstractFileSystem) -> str:
    """The same string in every process for one store (fsspec's own token differs per process)."""
    so = getattr(fs, "storage_options", {}) or {}
    client = so.get("client_kwargs") or {}
    where = {"endpoint": so.get("endpoint_url") or client.get("endpoint_url"), "region": client.get("region_name"),
             "profile": so.get("profile"), "anon": so.get("anon")}  # (botocore rewrites config_kwargs in place)
    return f"{type(fs).__name__}:{json.dumps(where, sort_keys=True, default=str)}"


def _flag_file(store: str) -> str:
    """A per-machine file whose mtime says when some process here gave up on ``store``."""
    digest = hashlib.sha256(store.encode()).hexdigest()[:24]
    return os.path.join(tempfile.gettempdir(), f"irn_batch-outage-{os.getuid()}-{digest}")


def _set_flag(store: str) -> None:
    try:
        with open(_flag_file(store), "wb"):
            pass
    except OSError:  # only an optimisation: each process would give up by itself
        pass


def _clear_flag(store: str) -> None:
    try:
        os.unlink(_flag_file(store))
    except OSError:
        pass


def _flag_age(store: str, budget: float) -> float | None:
    """Seconds since a process on this machine gave up on ``store``, if less than ``budget``."""
    try:
        age = time.time() - os.stat(_flag_file(store)).st_mtime
    except OSError:
        return None
    return age if 0 <= age < budget else None


def _brief(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"[:300]


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
        raise StorageError(f"{url}: cannot write there ({_brief(e)})") from None


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


_DRIVE = re.compile(r"[A-Za-z]:(/|$)")  # 'C:/x.png', 'C:' (a Windows drive)
_BAD_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn")


def safe_key(key: str) -> str:
    """Normalise a relative key (NFC, '/' separators) and reject anything that could leave its prefix."""
    if not isinstance(key, str) or not key:
        raise StorageError("empty key")
    norm = unicodedata.normalize("NFC", key).replace("\\", "/")
    plain = norm.isascii() and norm.isprintable()  # no character look-ups or folding needed
    for ch in "" if plain else norm:
        cat = unicodedata.category(ch)
        # control, format (bidi overrides, zero-width), surrogates, private use and unassigned characters
        if cat in _BAD_CATEGORIES:
            raise StorageError(f"key {key!r} contains a disallowed character U+{ord(ch):04X}")
    if norm.startswith("/") or _DRIVE.match(norm) or "://" in norm:
        raise StorageError(f"key {key!r} is absolute")
    parts = norm.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"key {key!r} has an empty, '.' or '..' component")
    # NFKC folding catches look-alikes such as the one-dot leader or fullwidth dots that become '..'
    if not plain and any(unicodedata.normalize("NFKC", p) in (".", "..") or "/" in unicodedata.normalize("NFKC", p)
                         for p in parts):
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


# what output_key changes or refuses in a printable ASCII key: empty, '.' or '..' segments, '::', a drive
_NEEDS_WORK = re.compile(r"(^|/)\.{0,2}(/|$)|::|\?versionId=|^[A-Za-z]:(/|$)")


def output_key(key: str) -> str:
    """The relative key an output of input ``key`` is written under: ``key`` made safe, or StorageError.

    Input keys are opaque (read exactly as listed); only output keys are sanitised, so that they stay
    under their prefix and name the same object when a URI of them is parsed again by fsspec:
    NFC form; ``\\`` -> ``/``; empty and ``.`` components dropped (``a//b`` -> ``a/b``); control, format
    (bidi, zero-width), surrogate, private-use and unassigned characters, and look-alikes of ``/`` or ``\\``
    -> ``_``; ``::`` (fsspec URL chaining) -> ``:_:``; ``?versionId=`` (s3fs) -> ``_versionId=``; a leading
    drive (``C:``) -> ``C_``. Rejected, as no safe name exists: a ``..`` component (also its NFKC
    look-alikes such as U+2025) and a key with no component left.
    """
    if not isinstance(key, str):
        raise StorageError("key is not a string")
    norm = unicodedata.normalize("NFC", key).replace("\\", "/")
    plain = norm.isascii() and norm.isprintable()  # printable ASCII needs no look-up per character
    if plain and not _NEEDS_WORK.search(norm):  # the common case: nothing to change
        return safe_key(norm)
    if not plain:
        norm = "".join("_" if unicodedata.category(ch) in _BAD_CATEGORIES
                       or (ch != "/" and any(c in "/\\" for c in unicodedata.normalize("NFKC", ch))) else ch
                       for ch in norm)
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if not parts:
        raise StorageError(f"key {key!r} names no file")
    for p in parts:
        if unicodedata.normalize("NFKC", p) in (".", ".."):
            raise StorageError(f"key {key!r} has a '..' component (or a look-alike of one)")
    parts = [re.sub(r":(?=:)", ":_", p).replace("?versionId=", "_versionId=") for p in parts]
    if _DRIVE.match(parts[0]):
        parts[0] = parts[0][0] + "_" + parts[0][2:]
    return safe_key("/".join(parts))


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
    else: temp key then move. Remote writes are retried through an outage (:func:`with_retry`).
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
        with_retry(fs, "write", lambda: fs.pipe_file(path, data))
        return
    tmp = f"{path}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
    with_retry(fs, "write", lambda: fs.pipe_file(tmp, data))
    with_retry(fs, "write", lambda: fs.mv(tmp, path))


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


# Every suffix Pillow registers for the formats irn_batch.imageio decodes (PNG, JPEG with MPO, WebP, TIFF,
# BMP, GIF, PPM/PGM/PBM/PNM/PFM, TGA, AVIF); tests/test_listing.py checks it against Pillow. Kept here, not
# taken from imageio, so that listing never imports the decoders.
IMAGE_SUFFIXES = (".png", ".apng", ".jpg", ".jpeg", ".jpe", ".jfif", ".mpo", ".webp", ".tif", ".tiff", ".bmp",
                  ".gif", ".ppm", ".pgm", ".pbm", ".pnm", ".pfm", ".tga", ".icb", ".vda", ".vst", ".avif", ".avifs")
DEFAULT_INCLUDE = tuple(f"*{s}" for s in IMAGE_SUFFIXES)


def key_matcher(include: Iterable[str] | None, exclude: Iterable[str] = (),
                match_case: bool = False) -> Callable[[str], bool]:
    """A test for relative keys: True when ``key`` or its file name matches an ``include`` glob
    (None: :data:`DEFAULT_INCLUDE`) and neither matches an ``exclude`` glob. Case-insensitive unless
    ``match_case``; ``*`` also matches ``/``.
    """
    flags = 0 if match_case else re.IGNORECASE

    def compile_all(patterns: Iterable[str]) -> re.Pattern | None:
        patterns = list(patterns)
        return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns), flags) if patterns else None

    inc = compile_all(DEFAULT_INCLUDE if include is None else include)
    exc = compile_all(exclude)

    def hit(rx: re.Pattern | None, key: str) -> bool:
        return rx is not None and (rx.match(key) is not None or rx.match(key.rsplit("/", 1)[-1]) is not None)

    return lambda key: hit(inc, key) and not hit(exc, key)


@dataclass
class Listing:
    """What the listing of an input found: every object the store returned is in exactly one of
    ``keys`` (taken), ``left_out`` (not taken by the patterns; or not a regular file, or a name s3fs cannot
    read: a trailing '/' or '?versionId=') or ``internal``
    (this project's own objects: a top-level manifest folder, temp objects of killed writers, folder
    markers). ``sizes``/``versions`` run beside ``keys``: bytes and what identifies the object's version
    (S3: the ETag; local: ``mtime_ns:<st_mtime_ns>``), None where unknown.
    """

    root: str
    single: bool = False  # the input named one object: its key is its file name and its path is ``root``
    keys: list[str] = field(default_factory=list)
    sizes: list[int | None] = field(default_factory=list)
    versions: list[str | None] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    internal: int = 0

    def path(self, key: str) -> str:
        """The raw path of a listed key on the listed filesystem (no normalisation)."""
        return self.root if self.single else f"{self.root}/{key}"


def list_objects(fs: fsspec.AbstractFileSystem, prefix_path: str, include: Iterable[str] | None = None,
                 exclude: Iterable[str] = (), match_case: bool = False, skip_dirs: Iterable[str] = ("_manifest",),
                 single: bool = True) -> Listing:
    """Every object under ``prefix_path``, sorted by key and sorted into taken / left out / internal.

    Keys are the stored names relative to the prefix, exactly as listed (no Unicode normalisation, ``//``
    and backslashes kept). S3 is listed flat (no delimiter), so keys with empty segments are not lost as in
    a folder walk; local folders are scanned with ``os.scandir`` (symlinks followed, each folder once). Only
    a few Python objects per object are kept (``find`` would hold a ~1 KB info dict each). With ``single``,
    a prefix holding no objects that is itself an object is listed as that one object. A prefix that
    cannot be listed raises OSError (FileNotFoundError for a missing bucket or folder).
    """
    base = prefix_path.rstrip("/") or prefix_path
    taken = key_matcher(include, exclude, match_case)
    skip = set(skip_dirs)
    out = Listing(root=base)
    rows: list[tuple[str, int | None, str | None]] = []
    left: list[str] = []

    def emit(key: str, size: int | None, version: str | None) -> None:
        if key.split("/", 1)[0] in skip and "/" in key or _TEMP_NAME.fullmatch(key.rsplit("/", 1)[-1]):
            out.internal += 1
        elif size is not None and taken(key):
            rows.append((key, size, version))
        else:
            left.append(key)

    if isinstance(fs, LocalFileSystem) and os.path.isfile(base):
        pass
    elif isinstance(fs, LocalFileSystem):
        _scan_local(base, emit, out)
    elif _is_s3(fs):
        _scan_s3(fs, base, emit, out)
    else:
        for path, info in fs.find(base, withdirs=False, detail=True).items():
            emit(relative_key(base, path), info.get("size"), _version(info))
    if single and not rows and not left and not out.internal and fs.isfile(base):
        out.single = True
        size, version = stat_object(fs, base)
        emit(base.rsplit("/", 1)[-1], size, version)
    rows.sort()
    out.keys = [r[0] for r in rows]
    out.sizes = [r[1] for r in rows]
    out.versions = [r[2] for r in rows]
    out.left_out = sorted(left)
    return out


def list_keys(fs: fsspec.AbstractFileSystem, prefix_path: str, include: Iterable[str] | None = ("*",),
              exclude: Iterable[str] = (), skip_dirs: Iterable[str] = ("_manifest",),
              match_case: bool = False) -> list[str]:
    """Sorted relative keys under a prefix that the patterns take (see :func:`list_objects`)."""
    return list_objects(fs, prefix_path, include, exclude, match_case, skip_dirs, single=False).keys


def _scan_local(base: str, emit: Callable, out: Listing) -> None:
    """Regular files under a local folder (folder symlinks followed once each); others get size None."""
    seen, todo = set(), [(base, "")]
    while todo:
        folder, rel = todo.pop()
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:  # a symlink back up the tree
            continue
        seen.add((st.st_dev, st.st_ino))
        with os.scandir(folder) as entries:
            for e in entries:
                key = rel + e.name
                try:
                    if e.is_dir():
                        todo.append((e.path, key + "/"))
                        continue
                    st = e.stat()
                except OSError:  # a broken symlink: listed, never read
                    emit(key, None, None)
                    continue
                if stat.S_ISREG(st.st_mode):
                    emit(key, st.st_size, f"mtime_ns:{st.st_mtime_ns}")
                else:  # a FIFO or device would block or never end a read
                    emit(key, None, None)


def _is_s3(fs: fsspec.AbstractFileSystem) -> bool:
    protos = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return "s3" in protos and hasattr(fs, "_call_s3")


def _scan_s3(fs: fsspec.AbstractFileSystem, base: str, emit: Callable, out: Listing) -> None:
    """Every object under the prefix, one ListObjectsV2 page (1,000 keys) at a time, without a delimiter."""
    from fsspec.asyn import sync

    bucket, key, _ = fs.split_path(base)
    prefix = f"{key}/" if key else ""

    async def pages() -> None:
        kw: dict[str, Any] = {}
        while True:
            page = await fs._call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix, **kw, **fs.req_kw)
            for c in page.get("Contents", []):
                rel = c["Key"][len(prefix):]
                if rel.endswith("/") and not c.get("Size"):  # a folder marker made by a console
                    out.internal += 1
                elif rel.endswith("/") or "?versionId=" in rel:  # names s3fs cannot read: left out, listed
                    emit(rel, None, c.get("ETag"))
                else:
                    emit(rel, int(c["Size"]), c.get("ETag"))
            if not page.get("IsTruncated"):
                return
            kw = {"ContinuationToken": page["NextContinuationToken"]}

    sync(fs.loop, pages)


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


def derived_key(key: str, ext: str) -> str:
    """``key`` with its image suffix replaced by ``ext`` ('a/b.jpg' -> 'a/b.png'); other names get it appended."""
    root, suffix = posixpath.splitext(key)
    if suffix.lower() == ext.lower():
        return key
    if suffix.lower() in IMAGE_SUFFIXES:
        return root + ext
    return key + ext

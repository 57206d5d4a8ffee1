"""Outages: telling "the store did not answer" from "the store said no" (:func:`is_unreachable`) and
retrying storage calls through an outage (:func:`with_retry`), with a per-machine flag file so that the
other processes on a machine give up soon after the first one does.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import time
from typing import Callable, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

from irn_batch.errors import one_line
from irn_batch.storage.config import OUTAGE_MARK, StorageConfig, StorageUnavailable

T = TypeVar("T")


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
                raise StorageUnavailable(f"{OUTAGE_MARK} ({what} {why}): {one_line(e, 300, typed=True)}") from e
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


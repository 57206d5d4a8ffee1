"""The service's response cache, keyed by a response's strong ETag (LR sha256 + model + settings), so a cached
answer is the same bytes a fresh restore gives:

- :class:`MemoryCache`: per replica, least recently used out first, bounded in bytes (``cache_bytes``);
- :class:`PrefixCache`: optional, a prefix on any fsspec store (``cache_prefix``) shared by the replicas and
  kept across restarts; objects are ``<prefix>/<etag>`` written atomically, and a read checks the sha256
  recorded in the object's name, so a damaged object is a miss, never a wrong answer.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

from irn_batch.storage import StorageConfig, StorageError, atomic_write, open_fs, to_uri


class MemoryCache:
    """``etag -> (bytes, media type)`` within ``max_bytes`` in all (0 turns it off); thread-safe."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max(0, int(max_bytes))
        self._items: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, etag: str) -> tuple[bytes, str] | None:
        with self._lock:
            item = self._items.get(etag)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(etag)
            self.hits += 1
            return item

    def put(self, etag: str, data: bytes, media_type: str) -> None:
        if len(data) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(etag, None)
            self._size -= len(old[0]) if old else 0
            self._items[etag] = (data, media_type)
            self._size += len(data)
            while self._size > self.max_bytes:
                _, (dropped, _) = self._items.popitem(last=False)
                self._size -= len(dropped)

    @property
    def size(self) -> int:
        return self._size


class PrefixCache:
    """Responses under ``prefix``: ``<etag hex>.<sha256 of the bytes>.<media type, '/' as '_'>``."""

    def __init__(self, prefix: str, storage: StorageConfig):
        self.fs, self.root = open_fs(prefix, storage)
        self.uri = to_uri(self.fs, self.root)
        self.fs.makedirs(self.root, exist_ok=True)

    def _find(self, tag: str) -> str | None:
        try:
            names = self.fs.glob(f"{self.root.rstrip('/')}/{tag}.*")
        except (OSError, StorageError):
            return None
        return names[0] if names else None

    def get(self, etag: str) -> tuple[bytes, str] | None:
        path = self._find(etag.strip('"'))
        if path is None:
            return None
        try:
            data = self.fs.cat_file(path)
        except (OSError, StorageError):
            return None
        _, digest, media = path.rsplit("/", 1)[-1].split(".", 2)
        if hashlib.sha256(data).hexdigest() != digest:
            return None
        return data, media.replace("_", "/")

    def put(self, etag: str, data: bytes, media_type: str) -> None:
        name = f"{etag.strip(chr(34))}.{hashlib.sha256(data).hexdigest()}.{media_type.replace('/', '_')}"
        try:
            atomic_write(self.fs, f"{self.root.rstrip('/')}/{name}", data)
        except (OSError, StorageError):  # a cache that cannot be written costs speed, not the answer
            pass

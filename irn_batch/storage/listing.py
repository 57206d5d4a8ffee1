"""Listings: every object under a prefix sorted into taken / left out / internal (:class:`Listing`,
:func:`list_objects`, :func:`list_keys`; local folders by ``os.scandir``, S3 flat by ListObjectsV2), and
the image files directly under a URL (:func:`list_images`).
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import fsspec
from fsspec.implementations.local import LocalFileSystem

from irn_batch.storage.config import StorageConfig, StorageError
from irn_batch.storage.fs import _TEMP_NAME, _is_s3, _version, open_fs, stat_object, to_uri
from irn_batch.storage.keys import IMAGE_SUFFIXES, key_matcher, relative_key


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


class NoSuchFolder(StorageError, FileNotFoundError):
    """:func:`list_images` found nothing at its URL (a :class:`StorageError` and a FileNotFoundError)."""


def list_images(url: str, storage: StorageConfig | None = None, *, single: bool = True,
                suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[str]:
    """Sorted URIs (:func:`to_uri`: no credentials; plain paths on the local disk) of the files directly
    under the folder or prefix ``url`` (not below it) whose names end in one of ``suffixes``, any case.

    With ``single``, a ``url`` that names one file lists as that file, whatever its name. A ``url`` that
    is no folder (nor, with ``single``, a file) raises :class:`NoSuchFolder`.
    """
    fs, root = open_fs(url, storage)
    if single and fs.isfile(root):
        return [to_uri(fs, root)]
    if not fs.isdir(root):
        raise NoSuchFolder(f"{url}: no such file or folder" if single else f"{url}: no such folder or prefix")
    return [to_uri(fs, p) for p in sorted(fs.ls(root, detail=False)) if p.lower().endswith(tuple(suffixes))]

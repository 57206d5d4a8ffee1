"""Where a job's objects are: relocatable archive paths, the places a restore must never write, LR headers.

Relocation. A manifest kept in its output's own ``_manifest`` folder names each object by its key
relative to that output (``lr_key`` in ingest rows, ``out_key`` in restore rows), so an output copied or
moved with its manifest is read where it now is, never at the place it was written. Rows written before
those columns existed hold only an absolute URI; their key relative to the old output is the URI's last
components, as many as the row's ``key`` has (an output key keeps the depth of its input key), and it is
rebased onto the manifest's present output the same way. A manifest elsewhere (``manifest=`` set to a
folder not named ``_manifest``) has no output of its own: its URIs are read as recorded. A relative key
that would leave its output is refused (StorageError), never followed.

Overlaps. Two locations overlap when one is the other or lies inside it (local paths compared after
resolving symlinks; different stores never overlap).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

import pyarrow as pa

from irn_batch.storage.manifest import MANIFEST_DIR
from irn_batch.storage import StorageConfig, StorageError, join_key, open_uri, output_key, read_limited, to_uri
from irn_batch.storage import with_retry

HEADER_BYTES = 64 * 1024  # the first read of an LR for its model id; PNG text and JPEG/AVIF metadata fit
HEADER_THREADS = 16


def manifest_root(fs, mpath: str) -> str | None:
    """The URI of the output whose own manifest ``mpath`` is (a ``_manifest`` folder or a part inside one),
    else None."""
    p = mpath.rstrip("/")
    if p.endswith(".parquet") and fs.isfile(p):
        p = p.rsplit("/", 1)[0]
    if p.rsplit("/", 1)[-1] != MANIFEST_DIR or "/" not in p:
        return None
    return to_uri(fs, p.rsplit("/", 1)[0])


def _tail(uri: str, key: str | None) -> str | None:
    """The last components of ``uri``, as many as the output key of ``key`` has; None when unknown."""
    if not uri or not key:
        return None
    try:
        depth = len(output_key(key).split("/"))
    except StorageError:
        return None
    parts = uri.split("/")
    if len(parts) <= depth + 1:
        return None
    return "/".join(parts[-depth:])


def relocate(uris: list[str | None], keys: list[str | None], rel_keys: list[str | None],
             root: str | None) -> tuple[list[str | None], list[str | None]]:
    """(URIs resolved under ``root``, per-row errors): each row's object where its output ``root`` now is.

    ``uris`` are the recorded absolute URIs, ``rel_keys`` the recorded keys relative to the output (None
    in older rows: taken from the URI's tail, see the module docstring), ``keys`` the rows' input keys.
    With ``root`` None every URI is kept as recorded. A relative key that leaves ``root`` gets None and an
    error ("key: ...").
    """
    if root is None:
        return list(uris), [None] * len(uris)
    proto, sep, root_path = root.partition("://") if "://" in root else ("", "", root)
    out, errors = [], []
    for uri, key, rel in zip(uris, keys, rel_keys):
        rel = rel or _tail(uri, key)
        if rel is None:
            out.append(uri)
            errors.append(None)
            continue
        try:
            out.append(f"{proto}{sep}{join_key(root_path, rel)}")
            errors.append(None)
        except StorageError as e:
            out.append(None)
            errors.append(f"key: recorded location {rel!r}: {e}")
    return out, errors


def prefixes(uris: list[str | None], keys: list[str | None]) -> set[str]:
    """The output prefixes absolute ``uris`` were written under: each URI without its key's depth of tail."""
    out = set()
    for uri, key in zip(uris, keys):
        tail = _tail(uri, key)
        if tail is not None:
            out.add(uri[:-len(tail) - 1])
    return out


def relative_to(root_uri: str, uri: str | None) -> str | None:
    """``uri`` as a key under ``root_uri`` (None when it is not under it)."""
    base = root_uri.rstrip("/") + "/"
    return uri[len(base):] if uri and uri.startswith(base) else None


def source_roots(source_uris: pa.ChunkedArray, keys: pa.ChunkedArray) -> set[str]:
    """The input prefixes an ingest manifest names: each ``source_uri`` without its ``key``."""
    roots: set[str] = set()
    for batch_u, batch_k in zip(source_uris.chunks, keys.chunks):
        for uri, key in zip(batch_u.to_pylist(), batch_k.to_pylist()):
            if uri and key and uri.endswith("/" + key) and len(uri) > len(key) + 1:
                roots.add(uri[:-len(key) - 1])
            elif uri:
                roots.add(uri)
    return roots


def _normal(uri: str) -> tuple[str, str] | None:
    """(store, path) to compare locations by; None for a URI that names no place we can compare."""
    uri = uri.strip()
    if "://" in uri:
        proto, _, path = uri.partition("://")
        proto = {"s3a": "s3", "file": "local"}.get(proto, proto)
        if proto == "local":
            return "local", os.path.realpath(path)
        return proto, "/" + path.strip("/")
    if not os.path.isabs(uri):
        return None
    return "local", os.path.realpath(uri)


def overlap(a: str, b: str) -> str | None:
    """How location ``a`` relates to ``b``: 'is', 'is inside' or 'contains'; None when they are apart."""
    na, nb = _normal(a), _normal(b)
    if na is None or nb is None or na[0] != nb[0]:
        return None
    pa_, pb = na[1].rstrip("/") or "/", nb[1].rstrip("/") or "/"
    if pa_ == pb:
        return "is"
    if pa_.startswith(pb.rstrip("/") + "/"):
        return "is inside"
    if pb.startswith(pa_.rstrip("/") + "/"):
        return "contains"
    return None


def refuse_overlaps(targets: dict[str, str], protected: Iterable[tuple[str, str]]) -> None:
    """StorageError (one line) when a target location overlaps a protected one.

    ``targets``: setting name -> location a job will write (its output, its manifest folder);
    ``protected``: (what it is, location) pairs it must never write into or over.
    """
    for what, loc in protected:
        for name, target in targets.items():
            rel = overlap(target, loc)
            if rel is not None:
                raise StorageError(f"{name}={target} {rel} {what} {loc}; a restore never writes there "
                                   "(choose another output)")


def lr_model_ids(uris: list[str], storage: StorageConfig, max_bytes: int) -> list[str | None]:
    """The model id each LR file records, read from its first HEADER_BYTES (the whole file, up to
    ``max_bytes``, only when its metadata lies further in); None for an object that is not a readable LR."""
    from irn_batch.io.lr_file import read_lr_meta

    def one(uri: str) -> str | None:
        try:
            fs, p = open_uri(uri, storage)
            head = with_retry(fs, "read", lambda: fs.cat_file(p, start=0, end=HEADER_BYTES))
            try:
                return read_lr_meta(head).model_id
            except Exception:
                if len(head) < HEADER_BYTES:
                    return None
            return read_lr_meta(read_limited(fs, p, max_bytes)).model_id
        except Exception:  # unreadable or not an LR: the restore itself reports it on the row
            return None

    if not uris:
        return []
    with ThreadPoolExecutor(min(HEADER_THREADS, len(uris))) as pool:
        return list(pool.map(one, uris))

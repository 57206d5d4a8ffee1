"""Keys: input keys are opaque (read exactly as listed); output keys are made safe (:func:`output_key`,
:func:`safe_key`, :func:`join_key`) so they stay under their prefix; :func:`relative_key` and
:func:`derived_key`; which keys are images (:data:`IMAGE_SUFFIXES`, :data:`DEFAULT_INCLUDE`) and the
include/exclude globs of a listing (:func:`key_matcher`).
"""
from __future__ import annotations

import fnmatch
import posixpath
import re
import unicodedata
from typing import Callable, Iterable

from irn_batch.storage.config import StorageError


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


def derived_key(key: str, ext: str) -> str:
    """``key`` with its image suffix replaced by ``ext`` ('a/b.jpg' -> 'a/b.png'); other names get it appended."""
    root, suffix = posixpath.splitext(key)
    if suffix.lower() == ext.lower():
        return key
    if suffix.lower() in IMAGE_SUFFIXES:
        return root + ext
    return key + ext


# Every suffix Pillow registers for the formats irn_batch.io.decode decodes (PNG, JPEG with MPO, WebP, TIFF,
# BMP, GIF, PPM/PGM/PBM/PNM/PFM, TGA, AVIF, and HEIF through pillow-heif); tests/test_listing.py checks it
# against Pillow. Kept here, not taken from io.decode, so that listing never imports the decoders.
IMAGE_SUFFIXES = (".png", ".apng", ".jpg", ".jpeg", ".jpe", ".jfif", ".mpo", ".webp", ".tif", ".tiff", ".bmp",
                  ".gif", ".ppm", ".pgm", ".pbm", ".pnm", ".pfm", ".tga", ".icb", ".vda", ".vst", ".avif", ".avifs",
                  ".heic", ".heics", ".heif", ".heifs", ".hif")
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

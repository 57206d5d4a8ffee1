"""One way to name data: fsspec URLs (local path, file://, s3://, ...), listings, safe keys, atomic writes,
and retries of storage calls through an outage. This file is the package's face; each concern has a module:

- :mod:`~irn_batch.storage.config`: :class:`StorageConfig`, the errors, the refusal of secrets as settings;
- :mod:`~irn_batch.storage.fs`: opening URLs and URIs, the atomic and the no-clobber write, reads, stats;
- :mod:`~irn_batch.storage.retry`: outage detection and retries (:func:`with_retry`);
- :mod:`~irn_batch.storage.keys`: safe output keys, image suffixes, include/exclude globs;
- :mod:`~irn_batch.storage.listing`: listings of a prefix (:func:`list_objects`) and :func:`list_images`;
- :mod:`~irn_batch.storage.manifest`: the Parquet manifests (imported by name: it loads pyarrow).

Input keys are opaque: :func:`list_objects` returns them as stored and they are read at exactly that
path (:func:`open_uri`); only output keys are made safe (:func:`output_key`, :func:`join_key`).

Credentials never pass through this package: s3fs/botocore find them in the standard places (AWS_*
environment variables, an AWS profile, an instance or pod role) on each machine that touches the store,
so they never appear in a config, a command line, a URI, a log line or a manifest.
"""
from __future__ import annotations

from irn_batch.storage.config import (OUTAGE_MARK, SECRET_HELP, StorageConfig, StorageError, StorageUnavailable,
                                      secret_setting)
from irn_batch.storage.fs import (REPLACE_ANY, TEMP_SUFFIX, ObjectExists, atomic_write, check_writable,
                                  leftover_temps, open_fs, open_uri, read_limited, read_object, sha256_hex,
                                  stat_object, stat_objects, to_uri, write_guarded, write_object)
from irn_batch.storage.keys import (DEFAULT_INCLUDE, IMAGE_SUFFIXES, derived_key, join_key, key_matcher,
                                    output_key, relative_key, safe_key)
from irn_batch.storage.listing import Listing, NoSuchFolder, list_images, list_keys, list_objects
from irn_batch.storage.retry import is_unreachable, with_retry

__all__ = [
    "OUTAGE_MARK", "SECRET_HELP", "StorageConfig", "StorageError", "StorageUnavailable", "secret_setting",
    "REPLACE_ANY", "TEMP_SUFFIX", "ObjectExists", "atomic_write", "check_writable", "leftover_temps", "open_fs",
    "open_uri", "read_limited", "read_object", "sha256_hex", "stat_object", "stat_objects", "to_uri",
    "write_guarded", "write_object",
    "DEFAULT_INCLUDE", "IMAGE_SUFFIXES", "derived_key", "join_key", "key_matcher", "output_key", "relative_key",
    "safe_key",
    "Listing", "NoSuchFolder", "list_images", "list_keys", "list_objects",
    "is_unreachable", "with_retry",
]

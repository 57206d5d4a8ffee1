"""Storage settings and errors: :class:`StorageConfig` (connection and fault settings, never credentials),
:class:`StorageError` / :class:`StorageUnavailable` with :data:`OUTAGE_MARK`, and the check that refuses
secrets given as settings (:func:`secret_setting`, :data:`SECRET_HELP`).

Credentials never pass through this package: s3fs/botocore find them in the standard places (AWS_*
environment variables, an AWS profile, an instance or pod role) on each machine that touches the store,
so they never appear in a config, a command line, a URI, a log line or a manifest.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Iterable, Optional


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

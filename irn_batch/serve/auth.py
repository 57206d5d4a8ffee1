"""Who may ask the service: bearer tokens and signed URLs.

Tokens come from the environment variable ``IRN_BATCH_TOKENS`` (comma-separated, so an old and a new token
can both be valid while clients rotate), never from a config file or a command line. With tokens set, every
route but ``/healthz`` needs either ``Authorization: Bearer <token>`` (compared in constant time; 401 with
``WWW-Authenticate: Bearer`` otherwise) or a signed URL, for pages whose ``<img>`` tags cannot send a header:
``?expires=<unix seconds>&sig=<hex>``, where ``sig`` is HMAC-SHA256 (RFC 2104) with a token as key over the
path, the other query parameters in order, and ``expires``. A forged or expired signature gets 403. Neither a
token nor a signature is ever logged. Without tokens, ``irn-batch serve`` binds loopback only.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import time
from urllib.parse import quote, urlencode

TOKENS_ENV = "IRN_BATCH_TOKENS"


def tokens_from_env(name: str = TOKENS_ENV) -> list[str]:
    """The configured tokens (empty strings dropped); [] means the service is open (loopback only)."""
    return [t.strip() for t in os.environ.get(name, "").split(",") if t.strip()]


def _message(path: str, params: list[tuple[str, str]], expires: int) -> bytes:
    query = urlencode(sorted((k, v) for k, v in params if k not in ("sig", "expires")))
    return f"{path}\n{query}\n{expires}".encode()


def sign(path: str, params: dict[str, str] | None, token: str, ttl_s: int = 3600, now: float | None = None) -> str:
    """A signed URL path for ``path`` (not percent-encoded: the key as the service sees it) with ``params``,
    valid for ``ttl_s`` seconds: ``/v1/images/a.png?format=webp&expires=...&sig=...``."""
    expires = int((time.time() if now is None else now) + ttl_s)
    items = sorted((params or {}).items())
    sig = hmac.new(token.encode(), _message(path, items, expires), hashlib.sha256).hexdigest()
    return f"{quote(path)}?{urlencode([*items, ('expires', str(expires)), ('sig', sig)])}"


def check(tokens: list[str], path: str, headers, params: list[tuple[str, str]], now: float | None = None
          ) -> tuple[int, str] | None:
    """None when the request may proceed; else (401 or 403, the reason) naming neither token nor signature."""
    if not tokens or path == "/healthz":
        return None
    given = headers.get("authorization", "")
    if given.lower().startswith("bearer "):
        presented = given[7:].strip().encode()
        if any(hmac.compare_digest(presented, t.encode()) for t in tokens):
            return None
        return 401, "the bearer token is not valid"
    query = dict(params)
    if "sig" not in query:
        return 401, "authentication required: a bearer token or a signed URL"
    try:
        expires = int(query.get("expires", ""))
    except ValueError:
        return 403, "the signed URL has no valid expiry"
    if expires < (time.time() if now is None else now):
        return 403, "the signed URL has expired"
    message = _message(path, params, expires)
    for token in tokens:
        want = hmac.new(token.encode(), message, hashlib.sha256).hexdigest()
        if hmac.compare_digest(want.encode(), query["sig"].encode()):
            return None
    return 403, "the URL's signature is not valid"

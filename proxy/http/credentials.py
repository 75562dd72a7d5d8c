"""Credentials are known to the gateway only as a short keyed hash of the bearer token.

The hash names Redis keys, metric labels and log fields, so the token itself is never stored
or printed anywhere (invariant 8).
"""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

from proxy.errors import BadRequest

ANONYMOUS = "anonymous"
HASHED_MAX = 1024
_hashed: dict[tuple[bytes, str], str] = {}


def bearer_token(request: web.BaseRequest) -> str | None:
    """The bearer token, or None; 400 for one that is not ASCII, which no HubSpot token is."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    if not token.isascii():
        raise BadRequest("The Authorization header must be ASCII")
    return token.strip()


def credential_id(token: str | None, key: bytes) -> str:
    """A 16-hex-digit HMAC-SHA256 of the token; `anonymous` when there is none. Kept per
    (key, token): a backend sends the same few tokens on every call."""
    if token is None:
        return ANONYMOUS
    found = _hashed.get((key, token))
    if found is None:
        if len(_hashed) >= HASHED_MAX:
            _hashed.clear()  # bounded: made-up tokens must not grow memory
        digest = hmac.new(key, token.encode(), hashlib.sha256).hexdigest()
        found = _hashed[(key, token)] = digest[:16]
    return found

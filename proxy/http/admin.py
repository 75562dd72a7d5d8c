"""The admin API's one gate: endpoints under /proxy/v1/ that operators, not clients, call."""

from __future__ import annotations

import hmac

from aiohttp import web

from proxy.errors import NotFound, Unauthorized
from proxy.http.credentials import bearer_token


def require_admin(request: web.Request, admin_token: str | None) -> None:
    """Admin endpoints exist only when a token is configured, and need exactly that token."""
    if not admin_token:
        raise NotFound("Admin endpoints are disabled: set HUBSPOT_PROXY_ADMIN_TOKEN")
    given = bearer_token(request) or ""
    if not hmac.compare_digest(given.encode(), admin_token.encode()):
        raise Unauthorized("Admin endpoints need the admin bearer token")

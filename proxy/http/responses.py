"""Building the gateway's own HTTP answers, always in HubSpot's shapes."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy.errors import GatewayError
from proxy.hubspot import protocol as hubspot

PROXY_ERROR_HEADER = "X-HubSpot-Proxy-Error"


def json_response(
    body: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=hubspot.dumps(body),
        status=status,
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def error_response(exc: GatewayError, *, correlation_id: str | None = None) -> web.Response:
    body = hubspot.error_body(exc.message, exc.category, correlation_id=correlation_id)
    body.update(exc.body_extra())
    headers = {PROXY_ERROR_HEADER: exc.proxy_error, **exc.headers}
    return json_response(body, status=exc.status, headers=headers)

"""The outermost middleware: a request id for every answer, and the one place that turns the
gateway's errors into HubSpot-shaped answers."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.errors import GatewayError, MethodNotAllowed, NotFound, PayloadTooLarge
from proxy.http.responses import error_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID = web.RequestKey("request_id", str)


def _request_id(request: web.Request) -> str:
    incoming = request.headers.get("X-Request-Id", "").strip()
    if incoming and len(incoming) <= 200 and incoming.isprintable():
        return incoming
    return str(uuid.uuid4())


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = _request_id(request)
    request[REQUEST_ID] = request_id
    try:
        if request.method == "CONNECT":
            raise MethodNotAllowed("CONNECT is not supported: this is not a forward proxy")
        response = await handler(request)
    except GatewayError as exc:
        response = error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        response = error_response(PayloadTooLarge("Request body is larger than the gateway allows"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(_from_http_exception(exc))
    if not response.prepared:
        response.headers["X-Request-Id"] = request_id
    return response


def _from_http_exception(exc: web.HTTPException) -> GatewayError:
    if exc.status == 404:
        return NotFound(exc.reason)
    if exc.status == 405:
        return MethodNotAllowed(exc.reason)
    error = GatewayError(exc.reason)
    error.status = exc.status
    return error

"""The outermost middleware: a request id for every answer, and the one place that turns the
gateway's errors into HubSpot-shaped answers."""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web
from redis.exceptions import RedisError

from proxy.errors import (
    GatewayError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
)
from proxy.http.responses import error_response

# The app's name: operators' alerts and the tests read the fault lines under it.
log = logging.getLogger("proxy.app")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID = web.RequestKey("request_id", str)


# Ids made here have a UUID's shape: this process's random first 20 hex digits, then a counter
# in the last 12. Unique across replicas and restarts as uuid4s were, at a fraction of the cost.
_PROCESS = str(uuid.uuid4())[:24]
_made = itertools.count(1)


def _request_id(request: web.Request) -> str:
    incoming = request.headers.get("X-Request-Id", "").strip()
    if incoming and len(incoming) <= 200 and incoming.isprintable():
        return incoming
    return f"{_PROCESS}{next(_made):012x}"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = _request_id(request)
    request[REQUEST_ID] = request_id
    try:
        if request.method == "CONNECT":
            raise MethodNotAllowed("CONNECT is not supported: this is not a forward proxy")
        response = await handler(request)
    except ConnectionError:
        raise  # the client, or an answer already under way, is gone: nothing can be sent
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(_from_http_exception(exc))
    except Exception as exc:  # every fault gets a HubSpot-shaped answer, never a traceback
        response = error_response(_gateway_error(exc, request_id))
    if not response.prepared:
        response.headers["X-Request-Id"] = request_id
    return response


def _gateway_error(exc: Exception, request_id: str) -> GatewayError:
    if isinstance(exc, GatewayError):
        _log_refusal(exc, request_id)
        return exc
    fault = {"request_id": request_id, "fault": type(exc).__name__}
    if isinstance(exc, RedisError):
        log.warning("Redis unavailable for a gateway endpoint", extra=fault)
        return ServiceUnavailable(
            "The gateway's store is unavailable; try again shortly", headers={"Retry-After": "1"}
        )
    log.error("request failed", extra=fault)
    log.debug("request failure detail", exc_info=exc)
    return GatewayError("The gateway failed to handle this request")


def _log_refusal(exc: GatewayError, request_id: str) -> None:
    """One line per answer the gateway makes up for a fault; 429s are counted, not logged, since
    a burst makes thousands of them on purpose."""
    if exc.status == 429:
        return
    level = logging.WARNING if exc.status >= 500 else logging.INFO
    extra = {"request_id": request_id, "status": exc.status, "proxy_error": exc.proxy_error}
    log.log(level, exc.message, extra=extra)


def _from_http_exception(exc: web.HTTPException) -> GatewayError:
    if exc.status == 413:
        return PayloadTooLarge("Request body is larger than the gateway allows")
    if exc.status == 404:
        return NotFound(exc.reason)
    if exc.status == 405:
        return MethodNotAllowed(exc.reason)
    error = GatewayError(exc.reason)
    error.status = exc.status
    return error

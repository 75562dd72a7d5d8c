"""The aiohttp application: routes, middlewares, and the lifecycle of shared resources."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from proxy.config import Settings
from proxy.context import RequestContext
from proxy.credentials import bearer_token, credential_id
from proxy.errors import GatewayError, MethodNotAllowed, NotFound, PayloadTooLarge
from proxy.forward import forward_plain
from proxy.metrics import Metrics
from proxy.responses import error_response, json_response
from proxy.upstream import Upstream, safe_path_qs

log = logging.getLogger("proxy.app")

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
UPSTREAM = web.AppKey("upstream", Upstream)
REQUEST_ID = web.RequestKey("request_id", str)

GATEWAY_PREFIX = "/proxy/"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _request_id(request: web.Request) -> str:
    incoming = request.headers.get("X-Request-Id", "").strip()
    if incoming and len(incoming) <= 200 and incoming.isprintable():
        return incoming
    return str(uuid.uuid4())


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place that turns the gateway's errors into HubSpot-shaped answers."""
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


async def read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"Request body of {request.content_length} bytes exceeds {limit}")
    body = await request.read()
    if len(body) > limit:
        raise PayloadTooLarge(f"Request body exceeds {limit} bytes")
    return body


async def build_context(request: web.Request, settings: Settings) -> RequestContext:
    path_qs = safe_path_qs(request.raw_path)
    if path_qs.startswith(GATEWAY_PREFIX):
        raise NotFound(f"No gateway endpoint at {path_qs.partition('?')[0]}")
    token = bearer_token(request)
    return RequestContext(
        request_id=request[REQUEST_ID],
        method=request.method,
        path_qs=path_qs,
        path=path_qs.partition("?")[0],
        headers=CIMultiDict(request.headers),
        body=await read_body(request, settings.max_body_bytes),
        credential=credential_id(token, settings.credential_key.encode()),
        has_token=token is not None,
    )


async def proxy_handler(request: web.Request) -> web.StreamResponse:
    app = request.app
    started = time.monotonic()
    ctx = await build_context(request, app[SETTINGS])
    metrics = app[METRICS]
    try:
        response = await forward_plain(request, ctx, app[UPSTREAM])
    except GatewayError as exc:
        ctx.outcome = exc.proxy_error
        raise
    finally:
        metrics.requests.labels(ctx.route, ctx.method, ctx.outcome).inc()
        metrics.request_duration.labels(ctx.route).observe(time.monotonic() - started)
    return response


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "checks": {}})


async def metrics_handler(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    upstream = app[UPSTREAM]
    await upstream.start()
    yield
    await upstream.close()


def create_app(settings: Settings, *, metrics: Metrics | None = None) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware], client_max_size=settings.max_body_bytes + 1
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics or Metrics()
    app[UPSTREAM] = Upstream(settings)
    app.cleanup_ctx.append(_upstream_ctx)
    app.router.add_get("/healthz", healthz, allow_head=True)
    app.router.add_get("/readyz", readyz, allow_head=True)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_route("*", "/{tail:.*}", proxy_handler)
    return app

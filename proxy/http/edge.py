"""The HTTP server below the app: connections and requests the app never sees.

aiohttp's `RequestHandler` answers a request it cannot parse itself, in `text/plain` with the
offending bytes echoed back, and logs it with a traceback that carries those bytes (a bearer
token, say). `EdgeRequestHandler` answers in HubSpot's error shape instead and logs one line
naming only the kind of fault. It also bounds how long a request head may take to arrive (a
client dripping a header every few seconds holds no connection for long) and refuses
connections past a cap, so slow or many clients cannot exhaust the process.

The server and runner subclasses exist only to build that handler; aiohttp has no hook to pick
the protocol class, so `EdgeRunner` rebuilds the server `AppRunner` made with the same options.
It also gives the app's catch-all route its requests without the router (`Shortcut`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_urldispatcher import UrlMappingMatchInfo

from proxy.config import Settings
from proxy.errors import BadRequest, GatewayError, ServiceUnavailable, UpstreamTimeout
from proxy.http.responses import PROXY_ERROR_HEADER, error_response
from proxy.hubspot import protocol as hubspot

log = logging.getLogger("proxy.edge")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ServerHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

# aiohttp's own default for web.run_app: an idle keep-alive connection is closed after this.
KEEPALIVE_TIMEOUT_S = 75.0
# After an answer given before the whole body arrived (413, 408), aiohttp reads and drops the
# rest for this long so the client can read the answer; aiohttp's 10 s would let a slow client
# hold the connection long after the body timeout.
LINGERING_TIME_S = 2.0


@dataclass(frozen=True)
class EdgeLimits:
    header_timeout_s: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> EdgeLimits:
        return cls(settings.header_timeout_s, settings.max_connections)


def edge_error(status: int, exc: BaseException | None) -> GatewayError:
    """The gateway's answer for a request aiohttp refused; it names the fault, never the bytes."""
    if isinstance(exc, HttpProcessingError) or status == 400:
        kind = type(exc).__name__ if exc is not None else "BadRequest"
        return BadRequest(f"The request is not valid HTTP/1.1 ({kind})")
    if status == 504:
        return UpstreamTimeout("The request took too long to handle")
    error = GatewayError("The gateway failed to handle this request")
    error.status = status if status >= 500 else 500
    return error


def refusal_bytes() -> bytes:
    """A whole HTTP answer for a connection past the cap: written before any request is read."""
    error = ServiceUnavailable("The gateway is at its connection limit; retry shortly")
    body = hubspot.dumps(hubspot.error_body(error.message, error.category))
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json;charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Retry-After: 1\r\n"
        f"{PROXY_ERROR_HEADER}: connection-limit\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


@dataclass(frozen=True)
class Shortcut:
    """The app's catch-all resource (by name) and the path prefixes every other route of the
    app lives under: a request outside them can only be the catch-all's, so it is handed to
    that route through the app's middlewares without the router (`shortcut_handler`)."""

    resource: str
    own_prefixes: tuple[str, ...]


SHORTCUT = web.AppKey("shortcut", Shortcut)


def shortcut_handler(app: web.Application, plain: ServerHandler) -> ServerHandler:
    """`plain` (the app's `_handle`: route resolution, match info, middlewares) for a request
    under the app's own prefixes or one that expects 100-continue; for every other request the
    catch-all's handler inside the app's middlewares, with one match info made here, once.

    What that skips per request is the router's walk of the path's prefixes, a match info, and
    the layer aiohttp adds around each middleware to set `current_app` (always this app: it has
    no sub-apps). `plain` itself when the app has no `SHORTCUT`, an old-style middleware, or a
    route outside the prefixes it names (that route's requests could otherwise miss it)."""
    shortcut = app.get(SHORTCUT)
    if shortcut is None or app._subapps:
        return plain
    resource = app.router.named_resources()[shortcut.resource]
    for other in app.router.resources():
        if other is not resource and not other.canonical.startswith(shortcut.own_prefixes):
            return plain
    (route,) = resource
    handler: Handler = route.handler
    for middleware in reversed(app.middlewares):
        if getattr(middleware, "__middleware_version__", None) != 1:
            return plain
        handler = partial(middleware, handler=handler)
    match_info = UrlMappingMatchInfo({}, route)
    match_info.add_app(app)
    match_info.freeze()  # shared by every request it is given to, never changed
    own = shortcut.own_prefixes

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path.startswith(own) or hdrs.EXPECT in request.headers:
            return await plain(request)
        request._match_info = match_info  # what `Application._handle` sets after resolving
        return await handler(request)

    return cast(ServerHandler, handle)  # the app's request factory makes `web.Request`s


class EdgeRequestHandler(web.RequestHandler):
    """One client connection (aiohttp's protocol), with the gateway's edge rules."""

    def __init__(self, manager: EdgeServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._edge = manager
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if len(self._edge.connections) > self._edge.limits.max_connections:
            log.warning("connection refused: at the connection limit")
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(refusal_bytes())
            self.force_close()
            return
        # The first request head must arrive within the header timeout too.
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._messages:
            self._cancel_head_timer()
        elif data and self._waiter is not None and self._head_timer is None:
            # Bytes of a new request head on an idle keep-alive connection: the clock starts.
            self._arm_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        loop = asyncio.get_running_loop()
        self._head_timer = loop.call_later(self._edge.limits.header_timeout_s, self._head_overdue)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_overdue(self) -> None:
        self._head_timer = None
        waiting_for_head = self._waiter is not None and not self._waiter.done()
        if waiting_for_head and not self._messages:
            log.info("connection closed: request head not complete within the header timeout")
            self.force_close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # Part of an answer is out already: the only honest signal left is to cut it.
            raise ConnectionError("the answer was already under way")
        error = edge_error(status, exc)
        fault = type(exc).__name__ if exc is not None else None
        if error.status >= 500:
            log.error("request failed", extra={"status": error.status, "fault": fault})
            log.debug("request failure detail", exc_info=exc)
        else:
            log.info("request refused", extra={"status": error.status, "fault": fault})
        response = error_response(error)
        response.force_close()
        return response


class EdgeServer(web.Server):
    def __init__(self, handler: Any, *, limits: EdgeLimits, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.limits = limits

    def __call__(self) -> EdgeRequestHandler:
        return EdgeRequestHandler(self, loop=self._loop, **self._kwargs)


class EdgeRunner(web.AppRunner):
    """`web.AppRunner` serving with `EdgeRequestHandler`; the gateway's only way to serve."""

    def __init__(self, app: web.Application, settings: Settings, **kwargs: Any) -> None:
        # The app decodes request bodies itself, bounded (proxy.http.incoming); aiohttp's
        # parser would inflate them before the app could refuse.
        kwargs.setdefault("auto_decompress", False)
        kwargs.setdefault("keepalive_timeout", KEEPALIVE_TIMEOUT_S)
        kwargs.setdefault("lingering_time", LINGERING_TIME_S)
        super().__init__(app, **kwargs)
        self._limits = EdgeLimits.from_settings(settings)

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        return EdgeServer(
            shortcut_handler(self.app, plain.request_handler),
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            limits=self._limits,
            **plain._kwargs,
        )

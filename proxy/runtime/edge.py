"""The catch-all route: read one client request into a `ClientRequest`, dispatch it, log it.

The request is read, its token parsed, classified and planned here, once; every action gets
the one object.
"""

from __future__ import annotations

import logging
import time
from functools import partial

from aiohttp import web
from yarl import URL

from proxy.budget.overload import Overload
from proxy.budget.plans import MAX_WAIT_HEADER, plan_for
from proxy.config import Settings
from proxy.errors import GatewayError, MethodNotAllowed, NotFound
from proxy.http.context import ClientRequest
from proxy.http.credentials import bearer_token, credential_id
from proxy.http.incoming import checked_headers, kernel_wait_s, read_body
from proxy.http.middleware import REQUEST_ID
from proxy.metrics import Metrics
from proxy.rules.holder import RulesHolder
from proxy.runtime.actions import Actions
from proxy.upstream.transport import safe_path_qs

log = logging.getLogger("proxy.app")

GATEWAY_PREFIX = "/proxy/"
FORWARD_ROUTE = "forward"
# Where the gateway's own routes live (create_app): never forwarded, whatever the method.
OWN_PATHS = ("/healthz", "/readyz", "/metrics", GATEWAY_PREFIX)


class EveryPath(web.Resource):
    """The forwarding route's resource: it matches every path, without a pattern.

    `add_route("*", "/{tail:.*}", ...)` ran a regex over each path and unquoted what it
    captured, for a match the handler never reads. Indexed under "/", as that route was: the
    gateway's own routes (indexed under their own paths) are still found first."""

    @property
    def canonical(self) -> str:
        return "/"

    def _match(self, path: str) -> dict[str, str]:
        return {}

    def raw_match(self, path: str) -> bool:
        return False  # never reused by `add_resource`

    def get_info(self) -> dict[str, str]:  # type: ignore[override]
        return {"path": "/"}

    def url_for(self) -> URL:  # type: ignore[override]
        return URL("/")

    def add_prefix(self, prefix: str) -> None:
        raise NotImplementedError("the gateway's catch-all route is never mounted under a prefix")


def add_forward_route(router: web.UrlDispatcher, handler: ProxyHandler) -> None:
    """Every path and method not taken by the gateway's own routes goes to `handler`."""
    resource = EveryPath(name=FORWARD_ROUTE)
    router.register_resource(resource)
    resource.add_route("*", handler.handle)


async def refuse_other_methods(request: web.Request) -> None:
    """405 when the path is one of the gateway's own (health, metrics, admin) under another
    method: those paths are never forwarded, whatever the method."""
    if not request.path.startswith(OWN_PATHS):
        return  # the common case: a HubSpot path, checked without walking the routes
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource.name != FORWARD_ROUTE:
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        raise MethodNotAllowed(
            f"{request.method} is not allowed here",
            headers={"Allow": ", ".join(sorted(allowed))},
        )


async def read_request(
    request: web.Request, settings: Settings, rules: RulesHolder
) -> ClientRequest:
    path_qs = safe_path_qs(request.raw_path)
    if path_qs.startswith(GATEWAY_PREFIX):
        raise NotFound(f"No gateway endpoint at {path_qs.partition('?')[0]}")
    path = path_qs.partition("?")[0]
    token = bearer_token(request)
    credential = credential_id(token, settings.credential_key.encode())
    headers = checked_headers(request)
    body = await read_body(
        request, headers, limit=settings.max_body_bytes, timeout_s=settings.body_timeout_s
    )
    current = rules.current
    classification = current.classify(request.method, path)
    planned = partial(
        plan_for,
        current,
        credential,
        request.method,
        path,
        max_wait_header=request.headers.get(MAX_WAIT_HEADER),
        request_id=request[REQUEST_ID],
        classification=classification,
        now=time.monotonic(),
    )
    return ClientRequest(
        web=request,
        request_id=request[REQUEST_ID],
        method=request.method,
        path_qs=path_qs,
        path=path,
        headers=headers,
        body=body,
        token=token,
        credential=credential,
        classification=classification,
        planned=planned,
        route=classification.route.name if classification.route else "default",
    )


class ProxyHandler:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        rules: RulesHolder,
        actions: Actions,
        overload: Overload,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._rules = rules
        self._actions = actions
        self._overload = overload

    async def handle(self, request: web.Request) -> web.StreamResponse:
        queued = kernel_wait_s(request)
        if queued is not None:
            self._metrics.request_queued.observe(queued)
        await refuse_other_methods(request)
        started = time.monotonic()
        req = await read_request(request, self._settings, self._rules)
        status = 500
        try:
            response = await self._actions.handle(req)
            status = response.status
            return response
        except GatewayError as exc:
            req.outcome, status = exc.proxy_error, exc.status
            raise
        finally:
            elapsed = time.monotonic() - started
            if req.upstream_status is None and status < 300:
                # Answered here (cache, index, respond, accepted write): the process's own time.
                self._overload.answered_locally(elapsed - req.waited_s)
            self._metrics.requests.labels(req.route, req.method, req.outcome).inc()
            self._metrics.request_duration.labels(req.route).observe(elapsed)
            if self._settings.access_log:
                log_request(req, status, elapsed)


def log_request(req: ClientRequest, status: int, elapsed_s: float) -> None:
    """One line per request; the path without its query string, which may carry secrets."""
    log.info(
        "request",
        extra={
            "request_id": req.request_id,
            "method": req.method,
            "path": req.path,
            "route": req.route,
            "credential": req.credential,
            "outcome": req.outcome,
            "status": status,
            "upstream_status": req.upstream_status,
            "wait_s": round(req.waited_s, 4),
            "cache": req.cache,
            "duration_s": round(elapsed_s, 4),
        },
    )

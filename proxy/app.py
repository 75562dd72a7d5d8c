"""The aiohttp application: routes, middlewares, and the lifecycle of shared resources."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from yarl import URL

from proxy.budget.limiter import REDIS_TROUBLE, Limiter
from proxy.budget.model import Priority
from proxy.budget.plans import MAX_WAIT_HEADER, CallPlan, plan_for
from proxy.budget.usage import refresh_budget_gauges
from proxy.config import Settings, SettingsError, credential_key_status
from proxy.errors import (
    GatewayError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
)
from proxy.http.context import RequestContext
from proxy.http.credentials import bearer_token, credential_id
from proxy.http.incoming import checked_headers, read_body
from proxy.http.responses import error_response, json_response
from proxy.jobs.runner import JobEndpoints, JobRunner
from proxy.jobs.specs import build_jobs
from proxy.metrics import Metrics
from proxy.rules.holder import RulesHolder
from proxy.rules.loader import Rules, WriteBehindRule, load_rules
from proxy.runtime.actions import Actions
from proxy.runtime.counter_endpoints import CounterEndpoints
from proxy.runtime.write_behind import WriteEndpoints, accept_write
from proxy.store.client import redis_client
from proxy.store.credentials import KnownCredentials
from proxy.store.rule_store import RuleRedis
from proxy.store.vault import TokenVault
from proxy.upstream.admitted import AdmittedCaller
from proxy.upstream.rate_headers import RateLimitRecorder
from proxy.upstream.transport import Upstream, safe_path_qs
from proxy.writes.model import WriteConfig
from proxy.writes.service import WriteBehind

log = logging.getLogger("proxy.app")

GATEWAY_PREFIX = "/proxy/"
FORWARD_ROUTE = "forward"
# Where the gateway's own routes live (create_app): never forwarded, whatever the method.
OWN_PATHS = ("/healthz", "/readyz", "/metrics", GATEWAY_PREFIX)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Services:
    """Everything a request handler may use; one per process."""

    settings: Settings
    metrics: Metrics
    rules: RulesHolder
    upstream: Upstream
    redis: aioredis.Redis | None
    limiter: Limiter
    caller: AdmittedCaller
    actions: Actions
    credentials: KnownCredentials
    writes: WriteBehind | None = None
    jobs: JobRunner | None = None


SERVICES = web.AppKey("services", Services)
REQUEST_ID = web.RequestKey("request_id", str)


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


async def build_context(request: web.Request, settings: Settings) -> RequestContext:
    path_qs = safe_path_qs(request.raw_path)
    if path_qs.startswith(GATEWAY_PREFIX):
        raise NotFound(f"No gateway endpoint at {path_qs.partition('?')[0]}")
    token = bearer_token(request)
    headers = checked_headers(request)
    body = await read_body(
        request, headers, limit=settings.max_body_bytes, timeout_s=settings.body_timeout_s
    )
    return RequestContext(
        request_id=request[REQUEST_ID],
        method=request.method,
        path_qs=path_qs,
        path=path_qs.partition("?")[0],
        headers=headers,
        body=body,
        credential=credential_id(token, settings.credential_key.encode()),
        has_token=token is not None,
    )


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


async def dispatch(
    request: web.Request, ctx: RequestContext, services: Services
) -> web.StreamResponse:
    rules = services.rules.current
    cls = rules.classify(ctx.method, ctx.path)
    ctx.route = cls.route.name if cls.route else "default"
    plan = plan_for(
        rules,
        ctx.credential,
        ctx.method,
        ctx.path,
        max_wait_header=ctx.headers.get(MAX_WAIT_HEADER),
        request_id=ctx.request_id,
        classification=cls,
    )
    action = cls.action
    if (
        action is not None
        and isinstance(action.rule, WriteBehindRule)
        and services.writes is not None
    ):
        accepted = await accept_write(
            request, ctx, cls, plan, action.rule, services.writes, services.actions
        )
        if accepted is not None:
            return accepted
    return await services.actions.handle(request, ctx, cls, plan)


async def proxy_handler(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    await refuse_other_methods(request)
    started = time.monotonic()
    ctx = await build_context(request, services.settings)
    status = 500
    try:
        response = await dispatch(request, ctx, services)
        status = response.status
        return response
    except GatewayError as exc:
        ctx.outcome, status = exc.proxy_error, exc.status
        raise
    finally:
        elapsed = time.monotonic() - started
        services.metrics.requests.labels(ctx.route, ctx.method, ctx.outcome).inc()
        services.metrics.request_duration.labels(ctx.route).observe(elapsed)
        if services.settings.access_log:
            log_request(ctx, status, elapsed)


def log_request(ctx: RequestContext, status: int, elapsed_s: float) -> None:
    """One line per request; the path without its query string, which may carry secrets."""
    log.info(
        "request",
        extra={
            "request_id": ctx.request_id,
            "method": ctx.method,
            "path": ctx.path,
            "route": ctx.route,
            "credential": ctx.credential,
            "outcome": ctx.outcome,
            "status": status,
            "upstream_status": ctx.upstream_status,
            "wait_s": round(ctx.waited_s, 4),
            "cache": ctx.cache,
            "duration_s": round(elapsed_s, 4),
        },
    )


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when rules are loaded and budget can be kept: by Redis, or by the fallback.

    An unreachable Redis does not make a replica unready: taking every replica out of the
    load balancer would turn a Redis outage into a full outage, while the in-process fallback
    keeps each replica within its share of the budget (invariant 7).
    """
    services = request.app[SERVICES]
    redis_state = "absent"
    if services.redis is not None:
        try:
            await asyncio.wait_for(services.redis.ping(), services.settings.redis_timeout_s * 4)
            redis_state = "ok"
        except Exception:  # any failure means "not reachable now"; the detail is in the logs
            redis_state = "fallback"
    checks = {"rules": services.rules.path, "redis": redis_state}
    return json_response({"status": "ok", "checks": checks})


async def metrics_handler(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    metrics = services.metrics
    metrics.redis_fallback.set(1 if services.limiter.fallback_active else 0)
    metrics.queue_waiters.clear()
    for (bucket, priority), count in services.limiter.waiters().items():
        metrics.queue_waiters.labels(bucket, priority).set(count)
    if services.redis is not None and not services.limiter.fallback_active:
        limiter = services.limiter
        await refresh_budget_gauges(
            services.redis, limiter.keys, limiter.known_buckets(), metrics, services.credentials
        )
    body = generate_latest(metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _resources(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    await services.upstream.start()
    watcher = asyncio.create_task(services.rules.watch())
    if services.writes is not None:
        await services.writes.start()
    if services.jobs is not None:
        services.jobs.start()
    yield
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    # In-flight calls are done by now (the runner drained them); stop the background work
    # before the connections it uses close. Unfinished writes stay pending in the stream.
    if services.jobs is not None:
        await services.jobs.stop()
    if services.writes is not None:
        await services.writes.stop(grace_s=services.settings.shutdown_timeout_s / 2)
        await _report_queued_writes(services)
    await services.upstream.close()
    await services.limiter.aclose()
    if services.redis is not None:
        await services.redis.aclose()


async def _report_queued_writes(services: Services) -> None:
    """Say at shutdown how many accepted writes wait, and where: they are sent after restart."""
    assert services.writes is not None
    try:
        backlog = await services.writes.store.backlog()
    except REDIS_TROUBLE:
        log.warning("shutting down; queued writes could not be counted (Redis unreachable)")
        return
    queued = backlog.pending + backlog.undelivered
    if queued == 0 and backlog.dead == 0:
        return
    url = URL(services.settings.redis_url or "")
    where = (
        "the embedded Valkey in the data directory (--data-dir)"
        if services.settings.data_dir
        else f"Redis at {url.host}:{url.port}"
    )
    log.warning(
        "shutting down with %d writes queued and %d dead letters in %s, stream %s",
        queued,
        backlog.dead,
        where,
        services.writes.store.keys.stream,
        extra={"queued": queued, "dead_letters": backlog.dead},
    )


def _fallback_transition(metrics: Metrics) -> Callable[[bool], None]:
    def record(active: bool) -> None:
        metrics.redis_fallback.set(1 if active else 0)
        metrics.redis_fallback_transitions.labels("fallback" if active else "redis").inc()

    return record


def build_services(settings: Settings, metrics: Metrics, rules: Rules) -> Services:
    redis = redis_client(settings)
    limiter = Limiter(
        redis,
        redis_timeout_s=settings.redis_timeout_s,
        expected_replicas=rules.limits.expected_replicas,
        on_transition=_fallback_transition(metrics),
    )
    upstream = Upstream(settings)
    store = RuleRedis(redis, timeout_s=settings.redis_timeout_s, metrics=metrics)
    credentials = KnownCredentials(store, label_max=settings.credential_labels)
    recorder = RateLimitRecorder(redis, metrics, credentials=credentials)
    holder = RulesHolder(settings.rules_path, rules, metrics)
    caller = AdmittedCaller(limiter, upstream, recorder, metrics)
    vault = TokenVault(redis, settings.credential_key) if redis is not None else None
    actions = Actions(
        rules=holder,
        caller=caller,
        store=store,
        vault=vault,
        metrics=metrics,
        credentials=credentials,
        credential_key=settings.credential_key.encode(),
    )
    services = Services(
        settings=settings,
        metrics=metrics,
        rules=holder,
        upstream=upstream,
        redis=redis,
        limiter=limiter,
        caller=caller,
        actions=actions,
        credentials=credentials,
    )
    if redis is not None and vault is not None:
        services.writes = WriteBehind(
            redis,
            vault,
            config=WriteConfig(
                claim_idle_s=settings.write_claim_idle_s,
                wait_replicas=settings.redis_wait_replicas,
                wait_timeout_ms=round(settings.redis_timeout_s * 1000),
                lookup_delay_s=settings.write_lookup_delay_s,
            ),
            metrics=metrics,
            send=caller.send,
            plan_for=_background_plan(holder),
        )
        services.jobs = JobRunner(
            redis,
            build_jobs(
                redis,
                services.rules,
                services.caller,
                services.actions,
                services.writes.queued_links,
            ),
            metrics,
        )
    return services


def _background_plan(holder: RulesHolder) -> Callable[[str, str, str], CallPlan]:
    """The budget plan of a write-behind batch call, by the rules in force."""

    def plan(credential: str, method: str, path: str) -> CallPlan:
        return plan_for(holder.current, credential, method, path, priority=Priority.BACKGROUND)

    return plan


def create_app(
    settings: Settings, *, metrics: Metrics | None = None, rules: Rules | None = None
) -> web.Application:
    """The gateway. Raises RulesError when the rules file is unusable."""
    app = web.Application(
        middlewares=[error_middleware], client_max_size=settings.max_body_bytes + 1
    )
    rules = rules or load_rules(settings.rules_path)
    if not settings.credential_key:
        # No built-in key: with one, every token stored in the vault is readable by anyone.
        why = credential_key_status(settings)[1] if settings.redis_url else "unset"
        raise SettingsError(f"credential_key: {why}")
    services = build_services(settings, metrics or Metrics(), rules)
    app[SERVICES] = services
    app.cleanup_ctx.append(_resources)
    app.router.add_get("/healthz", healthz, allow_head=True)
    app.router.add_get("/readyz", readyz, allow_head=True)
    app.router.add_get("/metrics", metrics_handler)
    CounterEndpoints(
        services.actions,
        services.credentials,
        settings.credential_key,
        body_timeout_s=settings.body_timeout_s,
    ).register(app.router)
    if services.writes is not None:
        WriteEndpoints(services.writes, settings.admin_token, settings.credential_key).register(
            app.router
        )
    if services.jobs is not None:
        JobEndpoints(services.jobs, settings.admin_token).register(app.router)
    app.on_cleanup.insert(0, lambda _: services.actions.aclose())  # before Redis closes
    app.router.add_route("*", "/{tail:.*}", proxy_handler, name=FORWARD_ROUTE)
    return app

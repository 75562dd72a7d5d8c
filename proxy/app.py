"""The composition root: every long-lived part is built here, once, and each resource has its
own `cleanup_ctx`, torn down in reverse order of start even when one of them fails."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web
from yarl import URL

from proxy.budget.limiter import Limiter
from proxy.budget.overload import Overload
from proxy.budget.plans import CallPlan, plan_for
from proxy.config import Settings, SettingsError, credential_key_status
from proxy.http.edge import SHORTCUT, Shortcut
from proxy.http.middleware import error_middleware
from proxy.jobs.runner import JobEndpoints, JobRunner
from proxy.jobs.specs import build_jobs
from proxy.metrics import Metrics
from proxy.reads.counter_rules import CounterRuntime
from proxy.reads.counters import Counters
from proxy.reads.index_learning import IndexLearner
from proxy.reads.index_loader import IndexLoader
from proxy.reads.object_cache import ObjectCache
from proxy.reads.search_index import SearchIndex
from proxy.rules.holder import RulesHolder
from proxy.rules.loader import Rules, load_rules
from proxy.runtime.actions import Actions
from proxy.runtime.counter_endpoints import CounterEndpoints
from proxy.runtime.edge import FORWARD_ROUTE, OWN_PATHS, ProxyHandler, add_forward_route
from proxy.runtime.learning import RuleLearning
from proxy.runtime.own_calls import OwnCalls
from proxy.runtime.portals import Portals
from proxy.runtime.probes import Probes
from proxy.runtime.write_behind import WriteBehindAction, WriteEndpoints
from proxy.store.client import redis_client
from proxy.store.credentials import KnownCredentials
from proxy.store.health import REDIS_TROUBLE, RedisHealth
from proxy.store.rule_store import RuleRedis
from proxy.store.vault import TokenVault
from proxy.upstream.admitted import AdmittedCaller
from proxy.upstream.background import BackgroundClient, PlanFor
from proxy.upstream.coalesce.gatherer import Coalescer
from proxy.upstream.rate_headers import RateLimitRecorder
from proxy.upstream.singleflight import Singleflight
from proxy.upstream.transport import Upstream
from proxy.writes.model import WriteConfig
from proxy.writes.service import WriteBehind


@dataclass
class Services:
    """Everything a request handler may use; one per process."""

    settings: Settings
    metrics: Metrics
    rules: RulesHolder
    upstream: Upstream
    redis: aioredis.Redis | None
    limiter: Limiter
    recorder: RateLimitRecorder
    caller: AdmittedCaller
    actions: Actions
    credentials: KnownCredentials
    overload: Overload
    writes: WriteBehind | None = None
    jobs: JobRunner | None = None
    # The request path's client, on the same server: no socket timeout of its own, since the
    # limiter and the rules' store bound every call (`store.client.redis_client`).
    hot_redis: aioredis.Redis | None = None


SERVICES = web.AppKey("services", Services)
log = logging.getLogger("proxy.app")


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


def _rules_plan(holder: RulesHolder) -> PlanFor:
    """The budget plan of one of the gateway's own calls, by the rules in force."""

    def plan(credential: str, method: str, path: str) -> CallPlan:
        return plan_for(holder.current, credential, method, path)

    return plan


def _build_actions(
    holder: RulesHolder,
    overload: Overload,
    caller: AdmittedCaller,
    store: RuleRedis,
    own: OwnCalls,
    metrics: Metrics,
    writes: WriteBehind | None,
    credentials: KnownCredentials,
) -> Actions:
    index = SearchIndex(store)
    learner = IndexLearner(index)
    counters = CounterRuntime(Counters(store))
    cache = ObjectCache(store)
    portals = Portals(own, store)
    learning = RuleLearning(index, learner, counters, cache, own, portals, metrics)
    write_behind = None
    if writes is not None:
        write_behind = WriteBehindAction(writes, learning, rules_store=store.client is not None)
    return Actions(
        rules=holder,
        caller=caller,
        store=store,
        metrics=metrics,
        own=own,
        index=index,
        loader=IndexLoader(index, learner, own.search),
        counters=counters,
        cache=cache,
        learning=learning,
        write_behind=write_behind,
        coalescer=Coalescer(caller, metrics),
        credentials=credentials,
        portals=portals,
        flights=Singleflight(metrics),
        overload=overload,
    )


def _build_write_behind(
    settings: Settings,
    metrics: Metrics,
    redis: aioredis.Redis,
    vault: TokenVault,
    client: BackgroundClient,
    health: RedisHealth,
) -> WriteBehind:
    config = WriteConfig(
        claim_idle_s=settings.write_claim_idle_s,
        accept_probe_timeout_s=settings.redis_timeout_s,
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout_ms=round(settings.redis_timeout_s * 1000),
        lookup_delay_s=settings.write_lookup_delay_s,
        flush_interval_s=settings.write_flush_interval_s,
    )
    return WriteBehind(redis, vault, config=config, metrics=metrics, client=client, health=health)


def build_services(settings: Settings, metrics: Metrics, rules: Rules) -> Services:
    redis = redis_client(settings)
    hot = redis_client(settings, own_timeouts=True)
    # The one breaker of the one Redis server: the limiter, the rules' store and write accepts.
    health = RedisHealth(available=redis is not None, on_transition=_fallback_transition(metrics))
    overload = Overload(on_change=metrics.gateway_delay.set)
    limiter = Limiter(
        hot,
        redis_timeout_s=settings.redis_timeout_s,
        expected_replicas=rules.limits.expected_replicas,
        health=health,
        behind=overload.behind_s,
    )
    upstream = Upstream(settings)
    store = RuleRedis(hot, timeout_s=settings.redis_timeout_s, metrics=metrics, health=health)
    credentials = KnownCredentials(store, label_max=settings.credential_labels)
    recorder = RateLimitRecorder(redis, metrics, credentials=credentials)
    holder = RulesHolder(settings.rules_path, rules, metrics)
    caller = AdmittedCaller(limiter, upstream, recorder, metrics)
    client = BackgroundClient(caller, _rules_plan(holder))
    vault = TokenVault(redis, settings.credential_key) if redis is not None else None
    writes = None
    if redis is not None and vault is not None:
        writes = _build_write_behind(settings, metrics, redis, vault, client, health)
    own = OwnCalls(client, vault, store, settings.credential_key.encode())
    actions = _build_actions(holder, overload, caller, store, own, metrics, writes, credentials)
    services = Services(
        settings=settings,
        metrics=metrics,
        rules=holder,
        upstream=upstream,
        redis=redis,
        hot_redis=hot,
        limiter=limiter,
        recorder=recorder,
        caller=caller,
        actions=actions,
        writes=writes,
        credentials=credentials,
        overload=overload,
    )
    if redis is not None:
        queued_links = writes.queued_links if writes is not None else None
        services.jobs = JobRunner(
            redis, build_jobs(redis, holder, client, actions, queued_links), metrics
        )
    return services


# -- lifecycle: one context per resource, in order of start --------------------------------------


async def _redis(app: web.Application) -> AsyncIterator[None]:
    yield
    services = app[SERVICES]
    try:
        if services.hot_redis is not None:
            await services.hot_redis.aclose()
    finally:
        if services.redis is not None:
            await services.redis.aclose()


async def _upstream(app: web.Application) -> AsyncIterator[None]:
    upstream = app[SERVICES].upstream
    await upstream.start()
    yield
    await upstream.close()


async def _limiter(app: web.Application) -> AsyncIterator[None]:
    overload = app[SERVICES].overload
    overload.start()
    yield
    overload.stop()
    await app[SERVICES].limiter.aclose()


async def _rate_limit_record(app: web.Application) -> AsyncIterator[None]:
    recorder = app[SERVICES].recorder
    recorder.start()
    yield
    await recorder.stop()


async def _actions(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[SERVICES].actions.aclose()


async def _rules_watcher(app: web.Application) -> AsyncIterator[None]:
    watcher = asyncio.create_task(app[SERVICES].rules.watch())
    yield
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher


async def _write_behind(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    if services.writes is not None:
        await services.writes.start()
    yield
    # Unfinished writes stay pending in the stream for another replica (or the next start).
    if services.writes is not None:
        await services.writes.stop(grace_s=services.settings.shutdown_timeout_s / 2)
        await _report_queued_writes(services)


async def _jobs(app: web.Application) -> AsyncIterator[None]:
    jobs = app[SERVICES].jobs
    if jobs is not None:
        jobs.start()
    yield
    if jobs is not None:
        await jobs.stop()


RESOURCES = (
    _redis,
    _upstream,
    _limiter,
    _rate_limit_record,
    _actions,
    _rules_watcher,
    _write_behind,
    _jobs,
)


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
    app.cleanup_ctx.extend(RESOURCES)
    Probes(
        settings,
        services.metrics,
        services.rules,
        services.redis,
        services.limiter,
        services.credentials,
    ).register(app.router)
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
    handler = ProxyHandler(
        settings, services.metrics, services.rules, services.actions, services.overload
    )
    add_forward_route(app.router, handler)
    app[SHORTCUT] = Shortcut(FORWARD_ROUTE, OWN_PATHS)  # the catch-all without the router
    return app

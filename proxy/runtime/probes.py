"""Liveness, readiness and the Prometheus scrape."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from proxy.budget.limiter import Limiter
from proxy.budget.usage import refresh_budget_gauges
from proxy.config import Settings
from proxy.http.responses import json_response
from proxy.metrics import Metrics
from proxy.rules.holder import RulesHolder
from proxy.store.credentials import KnownCredentials


class Probes:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        rules: RulesHolder,
        redis: aioredis.Redis | None,
        limiter: Limiter,
        credentials: KnownCredentials,
    ) -> None:
        self._settings = settings
        self._credentials = credentials
        self._metrics = metrics
        self._rules = rules
        self._redis = redis
        self._limiter = limiter

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/healthz", self.healthz, allow_head=True)
        router.add_get("/readyz", self.readyz, allow_head=True)
        router.add_get("/metrics", self.metrics)

    async def healthz(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready when rules are loaded and budget can be kept: by Redis, or by the fallback.

        An unreachable Redis does not make a replica unready: taking every replica out of the
        load balancer would turn a Redis outage into a full outage, while the in-process
        fallback keeps each replica within its share of the budget (invariant 7). A ping Redis
        answers closes the shared breaker, so "ok" here means the gateway uses Redis again.
        """
        redis_state = "absent"
        if self._redis is not None:
            try:
                await asyncio.wait_for(self._redis.ping(), self._settings.redis_timeout_s * 4)
                self._limiter.health.succeeded()
                redis_state = "ok"
            except Exception:  # any failure means "not reachable now"; the detail is in the logs
                redis_state = "fallback"
        checks = {"rules": self._rules.path, "redis": redis_state}
        return json_response({"status": "ok", "checks": checks})

    async def metrics(self, request: web.Request) -> web.Response:
        metrics, limiter = self._metrics, self._limiter
        metrics.redis_fallback.set(1 if limiter.fallback_active else 0)
        metrics.queue_waiters.clear()
        for (bucket, priority), count in limiter.waiters().items():
            metrics.queue_waiters.labels(bucket, priority).set(count)
        if self._redis is not None and not limiter.fallback_active:
            await refresh_budget_gauges(
                self._redis, limiter.keys, limiter.known_buckets(), metrics, self._credentials
            )
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

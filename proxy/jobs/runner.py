"""Periodic jobs (counter sync, reconciliation) run on one replica at a time.

Each run takes a Redis lease (SET NX PX, owner token) and renews it while it works; a replica
that dies loses the lease when it expires and another replica takes the next period. A run can
also be triggered now through the admin API, under the same lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web

from proxy.errors import Conflict, NotFound
from proxy.http.admin import require_admin
from proxy.http.responses import json_response
from proxy.metrics import Metrics
from proxy.store.health import REDIS_TROUBLE
from proxy.store.keys import tagged
from proxy.store.lease import Lease, LeaseHeld

log = logging.getLogger("proxy.jobs")

JobFn = Callable[[], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class JobSpec:
    name: str
    period_s: float
    run: JobFn
    lease_ttl_s: float = 120.0


@dataclass
class JobResult:
    name: str
    ok: bool
    duration_s: float
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "job": self.name,
            "status": "ok" if self.ok else "error",
            "durationSeconds": round(self.duration_s, 3),
            **self.summary,
        }
        if self.error:
            body["error"] = self.error
        return body


class JobRunner:
    def __init__(
        self, redis: aioredis.Redis, jobs: Mapping[str, JobSpec], metrics: Metrics
    ) -> None:
        self._redis = redis
        self.jobs = dict(jobs)
        self._metrics = metrics
        self._leases = {
            name: Lease(redis, tagged("jobs", "lease", name), spec.lease_ttl_s)
            for name, spec in jobs.items()
        }
        self._tasks: list[asyncio.Task[None]] = []
        for name in self.jobs:
            # Zero, not absent, so that increase() sees the first failure after a restart.
            metrics.job_runs.labels(name, "error").inc(0)

    async def run_now(self, name: str) -> JobResult:
        """Run one job under its lease; raises LeaseHeld when another replica runs it."""
        spec = self.jobs[name]
        async with self._leases[name].held():
            return await self._timed(spec)

    async def _timed(self, spec: JobSpec) -> JobResult:
        started = time.monotonic()
        try:
            summary = await spec.run()
        except Exception as exc:  # a job failure is reported, never fatal to the gateway
            duration = time.monotonic() - started
            log.exception("job failed", extra={"job": spec.name})
            self._record(spec.name, "error", duration)
            return JobResult(spec.name, False, duration, error=f"{type(exc).__name__}: {exc}")
        duration = time.monotonic() - started
        self._record(spec.name, "ok", duration)
        self._metrics.job_last_success.labels(spec.name).set(time.time())
        for where, found in (summary.get("drift") or {}).items():
            self._metrics.job_drift.labels(spec.name, where).inc(found)
        log.info(
            "job finished", extra={"job": spec.name, "duration_s": round(duration, 3), **summary}
        )
        return JobResult(spec.name, True, duration, summary)

    def _record(self, name: str, result: str, duration: float) -> None:
        self._metrics.job_runs.labels(name, result).inc()
        self._metrics.job_duration.labels(name).set(duration)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._every(spec)) for spec in self.jobs.values()]

    async def stop(self) -> None:
        """Stop the loops; a run in progress is cancelled and its lease released."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _claim_period(self, spec: JobSpec) -> bool:
        """One replica per period: every replica wakes each period, the first to claim it runs."""
        key = tagged("jobs", "period", spec.name)
        ttl_ms = int(spec.period_s * 900)
        return bool(await self._redis.set(key, "1", nx=True, px=ttl_ms))

    async def _every(self, spec: JobSpec) -> None:
        while True:
            await asyncio.sleep(spec.period_s)
            try:
                if await self._claim_period(spec):
                    await self.run_now(spec.name)
            except LeaseHeld:
                self._metrics.job_runs.labels(spec.name, "skipped").inc()
            except REDIS_TROUBLE as exc:
                self._metrics.job_runs.labels(spec.name, "error").inc()
                log.warning("job lease unavailable", extra={"job": spec.name, "error": str(exc)})


class JobEndpoints:
    """`POST /proxy/v1/jobs/{name}/run`: run a job now (admin token), answer its summary."""

    def __init__(self, runner: JobRunner, admin_token: str | None) -> None:
        self._runner = runner
        self._admin = admin_token

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_post("/proxy/v1/jobs/{name}/run", self.run)

    async def run(self, request: web.Request) -> web.Response:
        require_admin(request, self._admin)
        name = request.match_info["name"]
        if name not in self._runner.jobs:
            raise NotFound(f"No job {name!r}; jobs: {', '.join(sorted(self._runner.jobs))}")
        try:
            result = await self._runner.run_now(name)
        except LeaseHeld as exc:
            raise Conflict(f"Job {name!r} is running on another replica") from exc
        return json_response(result.to_json(), status=200 if result.ok else 500)

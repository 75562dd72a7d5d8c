"""Recording HubSpot's X-HubSpot-RateLimit-* answers: gauges and logs per answer, and the
`hubspot:rate_limits:{cred}` hash in Redis for dashboards.

The answer path only updates gauges and the last values in memory; a background flusher writes
each credential's hash at most once per `flush_interval_s`, so no client waits on Redis for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import redis.asyncio as aioredis

from proxy.hubspot.protocol import RATE_LIMIT_HEADER_PREFIX
from proxy.metrics import Metrics
from proxy.store.credentials import KnownCredentials
from proxy.store.health import REDIS_TROUBLE
from proxy.store.keys import rate_limits_key

log = logging.getLogger("proxy.ratelimit")

# How long the last-seen values stay in Redis: long enough for dashboards and the learned limit,
# short enough that a portal no longer used does not leave stale numbers behind.
RECORD_TTL_S = 24 * 3600


@dataclass(frozen=True)
class RateLimitSnapshot:
    values: dict[str, int]

    @property
    def max(self) -> int | None:
        return self.values.get("max")

    @property
    def remaining(self) -> int | None:
        return self.values.get("remaining")

    @property
    def interval_ms(self) -> int | None:
        return self.values.get("interval-milliseconds")

    @property
    def daily(self) -> int | None:
        return self.values.get("daily")

    @property
    def daily_remaining(self) -> int | None:
        return self.values.get("daily-remaining")


def parse_headers(headers: Mapping[str, str]) -> RateLimitSnapshot:
    values: dict[str, int] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith(RATE_LIMIT_HEADER_PREFIX):
            try:
                values[lower.removeprefix(RATE_LIMIT_HEADER_PREFIX)] = int(value)
            except ValueError:
                continue
    return RateLimitSnapshot(values)


@dataclass(frozen=True)
class Thresholds:
    warn_below: float = 0.20
    error_below: float = 0.05


class RateLimitRecorder:
    def __init__(
        self,
        redis: aioredis.Redis | None,
        metrics: Metrics,
        thresholds: Thresholds = Thresholds(),
        credentials: KnownCredentials | None = None,
        *,
        flush_interval_s: float = 1.0,
    ) -> None:
        self._redis = redis
        self._metrics = metrics
        self._thresholds = thresholds
        self.credentials = credentials or KnownCredentials(None)
        self._interval = flush_interval_s
        self._pending: dict[str, dict[str, int]] = {}  # credential -> values not yet in Redis
        self._flusher: asyncio.Task[None] | None = None

    def record(self, credential: str, snapshot: RateLimitSnapshot) -> None:
        """Gauges and logs now; Redis at the next flush (the latest values win). Only for a
        credential HubSpot accepted: a made-up token leaves no label or key."""
        label = self.credentials.label(credential)
        if not snapshot.values or label is None:
            return
        for header, value in snapshot.values.items():
            self._metrics.ratelimit_header.labels(label, header).set(value)
        self._check("burst", credential, snapshot.remaining, snapshot.max)
        self._check("daily", credential, snapshot.daily_remaining, snapshot.daily)
        if self._redis is not None:
            self._pending.setdefault(credential, {}).update(snapshot.values)

    def start(self) -> None:
        if self._redis is not None and self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_every(), name="rate-limit-record")

    async def stop(self) -> None:
        """Stop the flusher, then write what is still pending once."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self.flush()

    async def _flush_every(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> int:
        """Write every pending credential's hash in one round trip; how many were written."""
        pending, self._pending = self._pending, {}
        if self._redis is None or not pending:
            return 0
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for credential, values in pending.items():
                    key = rate_limits_key(credential)
                    pipe.hset(key, mapping={k: str(v) for k, v in values.items()})
                    pipe.expire(key, RECORD_TTL_S)
                await pipe.execute()
        except REDIS_TROUBLE:
            self._metrics.redis_errors.labels("ratelimit_headers").inc()
            for credential, values in pending.items():  # kept for the next flush; newer win
                self._pending[credential] = {**values, **self._pending.get(credential, {})}
            return 0
        return len(pending)

    def _check(
        self, window: str, credential: str, remaining: int | None, limit: int | None
    ) -> None:
        if remaining is None or not limit:
            return
        share = remaining / limit
        if share >= self._thresholds.warn_below:
            return  # the common case: no line, nothing to build
        fields = {"credential": credential, "window": window, "remaining": remaining, "max": limit}
        if share < self._thresholds.error_below:
            log.error("HubSpot %s budget nearly spent", window, extra=fields)
        else:
            log.warning("HubSpot %s budget running low", window, extra=fields)

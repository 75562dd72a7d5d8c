"""Recording HubSpot's X-HubSpot-RateLimit-* answers: in Redis for all replicas, gauges, logs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from proxy.hubspot.protocol import RATE_LIMIT_HEADER_PREFIX
from proxy.metrics import Metrics
from proxy.store.client import CLUSTER_TROUBLE
from proxy.store.credentials import KnownCredentials

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


def rate_limits_key(credential: str) -> str:
    return f"hubspot:rate_limits:{{{credential}}}"


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
    ) -> None:
        self._redis = redis
        self._metrics = metrics
        self._thresholds = thresholds
        self.credentials = credentials or KnownCredentials(None)

    async def record(self, credential: str, snapshot: RateLimitSnapshot) -> None:
        """Only for a credential HubSpot accepted: a made-up token leaves no label or key."""
        label = self.credentials.label(credential)
        if not snapshot.values or label is None:
            return
        for header, value in snapshot.values.items():
            self._metrics.ratelimit_header.labels(label, header).set(value)
        self._check("burst", credential, snapshot.remaining, snapshot.max)
        self._check("daily", credential, snapshot.daily_remaining, snapshot.daily)
        if self._redis is None:
            return
        key = rate_limits_key(credential)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hset(key, mapping={k: str(v) for k, v in snapshot.values.items()})
                pipe.expire(key, RECORD_TTL_S)
                await pipe.execute()
        except (RedisError, OSError, TimeoutError, *CLUSTER_TROUBLE):
            self._metrics.redis_errors.labels("ratelimit_headers").inc()

    def _check(
        self, window: str, credential: str, remaining: int | None, limit: int | None
    ) -> None:
        if remaining is None or not limit:
            return
        share = remaining / limit
        fields = {"credential": credential, "window": window, "remaining": remaining, "max": limit}
        if share < self._thresholds.error_below:
            log.error("HubSpot %s budget nearly spent", window, extra=fields)
        elif share < self._thresholds.warn_below:
            log.warning("HubSpot %s budget running low", window, extra=fields)

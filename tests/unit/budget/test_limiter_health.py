"""The limiter and the shared Redis breaker: a slow reply is not an outage (fakeredis)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import fakeredis
import pytest

from proxy.budget.limiter import BucketSpec, Limiter, Priority
from proxy.store.health import RedisHealth

pytestmark = pytest.mark.timeout(30)

GENERAL = BucketSpec("general", 10, 10_000)
Script = Callable[..., Awaitable[Any]]


class SlowOnce:
    """A Redis client whose first script call hangs while another caller gets its answer."""

    def __init__(self, health: RedisHealth) -> None:
        self._real = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        self._health = health
        self.slow = 1
        self.connection_pool = self  # the gateway packs its script calls on a pooled connection

    def register_script(self, source: str) -> Script:
        return self._real.register_script(source)

    def get_encoder(self) -> Any:
        return self._real.connection_pool.get_encoder()  # type: ignore[no-untyped-call]

    async def get_connection(self) -> Any:
        if self.slow:
            self.slow -= 1
            self._health.succeeded()  # another call was answered meanwhile
            await asyncio.sleep(10)
        return await self._real.connection_pool.get_connection()  # type: ignore[no-untyped-call]

    async def release(self, connection: Any) -> None:
        await self._real.connection_pool.release(connection)


async def test_a_slow_reply_while_redis_answers_others_asks_redis_again() -> None:
    """Not an outage, so no guess in process: the late script may have reserved a slot, and a
    call sent now on the local budget could overfill the shared window (invariant 1)."""
    health = RedisHealth()
    redis = SlowOnce(health)
    limiter = Limiter(redis, redis_timeout_s=0.05, health=health)  # type: ignore[arg-type]
    try:
        got = await limiter.acquire("cred0001", [GENERAL], priority=Priority.DEFAULT, max_wait_s=5)
        assert not got.fallback  # admitted by Redis, on the second ask
        assert not health.is_open
        stats = limiter.stats()
        assert (stats.redis_round_trips, stats.redis_errors) == (2, 1)
    finally:
        await limiter.aclose()

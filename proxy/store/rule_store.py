"""Redis for the rules runtime: credential-scoped keys, short timeouts, "unavailable" as a value.

A cache that cannot be read must never answer and must never fail a request (invariant 7), so
every call here returns its result or UNAVAILABLE within `timeout_s`. An error, or a few
timeouts in a row, rest Redis for `cooldown_s`, so an outage costs each request nothing rather
than a timeout each; one slow reply only sends its own request to HubSpot (a busy event loop
is no evidence that Redis is down). At most `concurrency` calls are in flight: a burst of
requests queues for a connection instead of opening hundreds at once, which is what made
replies slow in the first place.

Writes that could not be made while Redis was away can leave state that says more than it knows
(a complete index that missed a booking, a count that missed a cancellation). Such writes
register a repair (`repair_later`), run once Redis answers again, before anything else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar
from urllib.parse import quote

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as DroppedConnection
from redis.exceptions import RedisError

from proxy.metrics import Metrics
from proxy.store.client import CLUSTER_TROUBLE

log = logging.getLogger("proxy.rule_redis")

T = TypeVar("T")
PREFIX: Final = "hubspot"
TROUBLE: Final = (RedisError, OSError, TimeoutError, *CLUSTER_TROUBLE)
MAX_REPAIRS: Final = 10_000  # bounded: an endless outage must not grow memory without limit
TIMEOUTS_TO_REST: Final = 3


class Unavailable:
    """Redis could not be asked: the caller forwards instead of answering."""

    _instance: Unavailable | None = None

    def __new__(cls) -> Unavailable:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNAVAILABLE"


UNAVAILABLE: Final = Unavailable()


def s(value: object) -> str | None:
    """A Redis reply as text (the shared client does not decode)."""
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def part(value: str) -> str:
    """A key segment from any text: ':' and '{' can never split or re-tag a key."""
    return quote(value, safe="-_.@")


def key(cred: str, *parts: str) -> str:
    """`hubspot:{cred}:...`: the hash tag keeps one credential's keys in one Cluster slot."""
    return ":".join((PREFIX, "{" + cred + "}", *parts))


Repair = Callable[[aioredis.Redis], Awaitable[object]]


class RuleRedis:
    def __init__(
        self,
        client: aioredis.Redis | None,
        *,
        timeout_s: float,
        metrics: Metrics,
        cooldown_s: float = 1.0,
        concurrency: int = 32,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self._timeout = timeout_s
        self._metrics = metrics
        self._cooldown = cooldown_s
        self._clock = clock
        self._down_until = 0.0
        self._timeouts = 0
        self._slots = asyncio.Semaphore(concurrency)
        self._repairs: dict[str, Repair] = {}

    @property
    def usable(self) -> bool:
        return self.client is not None and self._clock() >= self._down_until

    async def run(
        self, component: str, op: Callable[[aioredis.Redis], Awaitable[T]]
    ) -> T | Unavailable:
        """`op(client)` within the timeout, or UNAVAILABLE (counted, and Redis rested a while)."""
        client = self.client
        if client is None or not self.usable:
            return UNAVAILABLE
        try:
            await asyncio.wait_for(self._slots.acquire(), self._timeout * 4)
        except TimeoutError:
            self._metrics.redis_errors.labels(component).inc()
            return UNAVAILABLE
        try:
            if self._repairs:
                await asyncio.wait_for(self._repair(client), self._timeout * 4)
            result = await asyncio.wait_for(self._once_more_if_dropped(client, op), self._timeout)
        except TROUBLE as exc:
            self._failed(component, exc)
            return UNAVAILABLE
        finally:
            self._slots.release()
        self._timeouts = 0
        return result

    @staticmethod
    async def _once_more_if_dropped(
        client: aioredis.Redis, op: Callable[[aioredis.Redis], Awaitable[T]]
    ) -> T:
        """A pooled connection Redis dropped (it restarted) fails once; redis-py discards it, so
        one more try goes out on a fresh connection instead of resting a Redis that is back."""
        try:
            return await op(client)
        except DroppedConnection:
            return await op(client)

    def _failed(self, component: str, exc: BaseException) -> None:
        self._metrics.redis_errors.labels(component).inc()
        self._timeouts = self._timeouts + 1 if isinstance(exc, TimeoutError) else TIMEOUTS_TO_REST
        if self._timeouts >= TIMEOUTS_TO_REST:
            self._down_until = self._clock() + self._cooldown
            log.warning("redis unavailable for %s: %s", component, type(exc).__name__)

    def repair_later(self, name: str, repair: Repair) -> None:
        """Run `repair` once Redis answers again; one per name (the latest wins)."""
        if len(self._repairs) < MAX_REPAIRS or name in self._repairs:
            self._repairs[name] = repair

    @property
    def pending_repairs(self) -> int:
        return len(self._repairs)

    async def _repair(self, client: aioredis.Redis) -> None:
        """Run the pending repairs; concurrent callers each take a repair off the list before
        running it, so none runs twice, and one that fails goes back for the next caller."""
        for name in list(self._repairs):
            repair = self._repairs.pop(name, None)
            if repair is None:
                continue  # another caller took it
            try:
                await repair(client)
            except BaseException:
                self._repairs.setdefault(name, repair)
                raise

"""Redis for the rules runtime: credential-scoped keys, short timeouts, "unavailable" as a value.

A cache that cannot be read must never answer and must never fail a request (invariant 7), so
every call here returns its result or UNAVAILABLE within `timeout_s` of Redis's time (plus at
most `SLOT_WAIT_TIMEOUTS` times that waiting for a connection). The first error or timeout opens
the breaker shared with the limiter (`store.health`), so an outage, or a hung Redis, costs each
request nothing rather than a timeout each, until a probe finds Redis answering again. At most
`concurrency` calls are in flight: a burst of requests queues for a connection instead of
opening hundreds at once, which is what made replies slow in the first place; a call that cannot
get one in time does without Redis, and does not open the breaker (a busy pool is no evidence
that Redis is down).

Writes that could not be made while Redis was away can leave state that says more than it knows
(a complete index that missed a booking, a count that missed a cancellation). Such writes
register a repair (`repair_later`), run once Redis answers again, before anything else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, TypeVar

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from proxy.metrics import Metrics
from proxy.store.client import is_cluster, pool_share
from proxy.store.health import (
    REDIS_TROUBLE,
    STALL_WAIT_S,
    RedisHealth,
    once_more_if_dropped,
    redis_timeout,
)
from proxy.store.scripts import run_script_calls
from proxy.store.trips import Call, Keys, Trips

log = logging.getLogger("proxy.rule_store")

T = TypeVar("T")
# A burst queues for a connection in this process; its bound is longer than Redis's own.
SLOT_WAIT_TIMEOUTS: Final = 4
MAX_REPAIRS: Final = 10_000  # bounded: an endless outage must not grow memory without limit


@dataclass(frozen=True)
class Patience:
    """How much more than one try an op safe to ask twice gets before UNAVAILABLE (`run`):
    `retries` while the breaker stays closed (Redis busy or the process starved, not Redis
    away), and `wait_s` through an open breaker for Redis to answer again."""

    retries: int = 0
    wait_s: float = 0.0


IMPATIENT: Final = Patience()
# An op a client waits for that has no answer without Redis (a seat reserve: guessing could
# overbook).
PATIENT: Final = Patience(retries=2, wait_s=STALL_WAIT_S)


class _Busy(Exception):
    """No connection slot came free in time: this process's queue, not Redis's trouble."""


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


Repair = Callable[[aioredis.Redis], Awaitable[object]]


class RuleRedis:
    def __init__(
        self,
        client: aioredis.Redis | None,
        *,
        timeout_s: float,
        metrics: Metrics,
        cooldown_s: float = 1.0,
        concurrency: int = 256,
        clock: Callable[[], float] = time.monotonic,
        health: RedisHealth | None = None,
    ) -> None:
        """`health` is the breaker shared with the limiter; without it, one of its own that
        probes every `cooldown_s`."""
        self.client = client
        self._timeout = timeout_s
        self._metrics = metrics
        self._health = health or RedisHealth(
            available=client is not None, clock=clock, probe_interval_s=cooldown_s
        )
        self._slots = asyncio.Semaphore(pool_share(client, concurrency))
        self._repairs: dict[str, Repair] = {}
        self._trips: dict[tuple[str, str], Trips] = {}

    @property
    def usable(self) -> bool:
        return self.client is not None and not self._health.is_open

    async def run(
        self,
        component: str,
        op: Callable[[aioredis.Redis], Awaitable[T]],
        *,
        patience: Patience = IMPATIENT,
    ) -> T | Unavailable:
        """`op(client)` within the timeout, or UNAVAILABLE (counted; trouble opens the breaker).

        `patience` only for an op safe to ask twice (a call that timed out may have run) whose
        UNAVAILABLE costs more than waiting: a search index lookup forwarded spends HubSpot's
        5-a-second search limit; a seat reserve refused refuses its booking."""
        client = self.client
        if client is None:
            return UNAVAILABLE
        loop = asyncio.get_running_loop()
        until = loop.time() + patience.wait_s
        retries = 0
        while await self._health.try_within(until - loop.time()):
            got = await self._run_once(client, component, op)
            if not isinstance(got, Unavailable):
                return got
            if self.usable:  # Redis busy or the process starved, not Redis away
                if retries >= patience.retries:
                    break
                retries += 1
        return UNAVAILABLE

    async def _run_once(
        self,
        client: aioredis.Redis,
        component: str,
        op: Callable[[aioredis.Redis], Awaitable[T]],
    ) -> T | Unavailable:
        # Waiting for a slot is this process's queue, not Redis: a longer bound, no breaker.
        slot_deadline = asyncio.get_running_loop().time() + self._timeout * SLOT_WAIT_TIMEOUTS
        if not await self._slot_by(slot_deadline):
            self._metrics.redis_errors.labels(component).inc()
            return UNAVAILABLE
        answers_before = self._health.answers
        try:
            async with redis_timeout(self._timeout):
                if self._repairs:
                    await self._repair(client)
                result = await once_more_if_dropped(lambda: op(client))
        except REDIS_TROUBLE as exc:
            self._metrics.redis_errors.labels(component).inc()
            self._health.failed(exc, answers_before=answers_before)
            log.warning("redis unavailable for %s: %s", component, type(exc).__name__)
            return UNAVAILABLE
        finally:
            self._slots.release()
        self._health.succeeded()
        return result

    async def call_script(
        self, component: str, lua: AsyncScript, keys: Keys, args: Sequence[Any]
    ) -> Any:
        """`lua` run with `keys` and `args` as `run` would, its reply or UNAVAILABLE; the calls
        made while one round trip of the same script is out leave together in the next
        (`store.trips`): under load, one round trip answers many callers."""
        client = self.client
        if client is None or not self._health.should_try():
            return UNAVAILABLE
        if self._repairs or is_cluster(client):
            # Repairs go first (`run`); a cluster's calls may live on different nodes.
            return await self.run(component, lambda r: lua(keys=keys, args=args))
        trips = self._trips.get((component, lua.sha))
        if trips is None:
            send = partial(self._send_trip, client, component, lua)
            trips = self._trips[(component, lua.sha)] = Trips(send)
        try:
            return await trips.call(keys, args)
        except (*REDIS_TROUBLE, _Busy):
            self._metrics.redis_errors.labels(component).inc()
            return UNAVAILABLE

    async def _send_trip(
        self, client: aioredis.Redis, component: str, lua: AsyncScript, calls: Sequence[Call]
    ) -> list[Any]:
        """One round trip for `calls`, bounded as `run` bounds one call; the breaker hears of
        it once, and of each call's own error."""
        slot_deadline = asyncio.get_running_loop().time() + self._timeout * SLOT_WAIT_TIMEOUTS
        if not await self._slot_by(slot_deadline):
            raise _Busy
        answers_before = self._health.answers
        try:
            async with redis_timeout(self._timeout):
                replies = await once_more_if_dropped(lambda: run_script_calls(client, lua, calls))
        except REDIS_TROUBLE as exc:
            self._health.failed(exc, answers_before=answers_before)
            log.warning("redis unavailable for %s: %s", component, type(exc).__name__)
            raise
        finally:
            self._slots.release()
        failed = next((r for r in replies if isinstance(r, Exception)), None)
        if failed is None:
            self._health.succeeded()
        else:
            self._health.failed(failed, answers_before=answers_before)
            log.warning("redis unavailable for %s: %s", component, type(failed).__name__)
        return replies

    async def _slot_by(self, deadline: float) -> bool:
        """One of the `concurrency` slots, waiting for it until `deadline` (a free one is
        taken at once, with no timer)."""
        if not self._slots.locked():
            await self._slots.acquire()
            return True
        try:
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        except TimeoutError:
            return False
        return True

    def repair_later(self, name: str, repair: Repair) -> bool:
        """Run `repair` once Redis answers again; one per name (the latest wins). False when
        too many wait already: the caller needs a repair that covers more."""
        if len(self._repairs) < MAX_REPAIRS or name in self._repairs:
            self._repairs[name] = repair
            return True
        return False

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

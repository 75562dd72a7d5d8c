"""Limiter behaviour around Redis: local priority queue, cancellation, fallback and recovery."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest

from proxy.budget.limiter import (
    Admission,
    BucketSpec,
    BudgetExceeded,
    KeyScheme,
    Limiter,
    Priority,
)
from proxy.hubspot.protocol import POLICY_DAILY, POLICY_SECONDLY, POLICY_TEN_SECONDLY
from tests.kit.clock import ManualClock
from tests.kit.waiting import eventually

GENERAL = BucketSpec("general", 4, 10_000)
HOUR_MS = 3_600_000


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
async def redis(server: fakeredis.FakeServer) -> AsyncIterator[fakeredis.FakeAsyncRedis]:
    client = fakeredis.FakeAsyncRedis(server=server)
    yield client
    await client.aclose()


@pytest.fixture
def cred() -> str:
    return uuid.uuid4().hex[:16]


def reset_ms() -> int:
    return int(time.time() * 1000) + HOUR_MS


async def fill(limiter: Limiter, cred: str, spec: BucketSpec) -> None:
    for _ in range(spec.limit):
        await limiter.acquire(cred, [spec], priority=Priority.INTERACTIVE, max_wait_s=0)


async def run_in_order(
    limiter: Limiter, cred: str, spec: BucketSpec, priorities: list[Priority]
) -> list[Priority]:
    """Start one waiter per priority, in that order; return the order they were admitted in."""
    order: list[Priority] = []

    async def call(priority: Priority) -> None:
        await limiter.acquire(cred, [spec], priority=priority, max_wait_s=30)
        order.append(priority)

    tasks = []
    for priority in priorities:
        tasks.append(asyncio.create_task(call(priority)))
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    return order


# -- Redis mode ---------------------------------------------------------------------------------


async def test_deadline_that_cannot_be_met_raises_at_once(redis: Any, cred: str) -> None:
    clock = ManualClock()
    limiter = Limiter(redis, clock=clock, sleep=clock.sleep)
    await fill(limiter, cred, GENERAL)
    trips = limiter.stats().redis_round_trips
    with pytest.raises(BudgetExceeded) as err:
        await limiter.acquire(cred, [GENERAL], priority=Priority.INTERACTIVE, max_wait_s=2)
    # raised on Redis's first answer, without waiting for the deadline
    assert (limiter.stats().redis_round_trips - trips, clock.slept) == (1, [])
    assert 8 < err.value.retry_after_s <= 10
    assert (err.value.bucket, err.value.policy) == ("general", POLICY_TEN_SECONDLY)
    assert limiter.stats().rejected == 1


async def test_waiters_counts_callers_by_bucket_and_priority(redis: Any, cred: str) -> None:
    limiter = Limiter(redis)
    spec = BucketSpec("search", 1, 400)
    daily = BucketSpec("daily", 100, 0, kind="daily")
    await limiter.acquire(
        cred, [spec, daily], priority=Priority.INTERACTIVE, max_wait_s=0, daily_reset_ms=reset_ms()
    )
    tasks = [
        asyncio.create_task(
            limiter.acquire(
                cred, [spec, daily], priority=p, max_wait_s=10, daily_reset_ms=reset_ms()
            )
        )
        for p in (Priority.DEFAULT, Priority.DEFAULT, Priority.BACKGROUND)
    ]
    await eventually(lambda: sum(limiter.waiters().values()) == 2 * len(tasks))
    assert limiter.waiters() == {
        ("search", "DEFAULT"): 2,
        ("daily", "DEFAULT"): 2,
        ("search", "BACKGROUND"): 1,
        ("daily", "BACKGROUND"): 1,
    }
    got = await asyncio.gather(*tasks)
    assert all(isinstance(a, Admission) and not a.fallback for a in got)
    assert limiter.waiters() == {}


async def test_priority_on_one_replica(redis: Any, cred: str) -> None:
    limiter = Limiter(redis)
    spec = BucketSpec("search", 2, 250)
    await fill(limiter, cred, spec)
    b, d, i = Priority.BACKGROUND, Priority.DEFAULT, Priority.INTERACTIVE
    order = await run_in_order(limiter, cred, spec, [b, b, b, d, d, i, i, i])
    assert order.index(b) > max(n for n, p in enumerate(order) if p == i)
    assert order.count(b) == 3


async def test_background_defers_without_polling_redis(redis: Any, cred: str) -> None:
    """Queued background callers wait for computed wake-ups, not a loop of round trips."""
    limiter = Limiter(redis)
    spec = BucketSpec("search", 2, 200)
    await fill(limiter, cred, spec)
    before = limiter.stats().redis_round_trips
    await run_in_order(limiter, cred, spec, [Priority.BACKGROUND] * 10)
    trips = limiter.stats().redis_round_trips - before
    # 10 admissions over ~5 windows; a poll every few ms would be hundreds of trips
    assert 10 <= trips <= 40


async def test_cancelled_while_queued_leaves_the_queue(redis: Any, cred: str) -> None:
    limiter = Limiter(redis)
    # A window long enough that the filling call's entry is still in it when the last caller
    # reserves, however slow the machine (at 300 ms a loaded full suite once saw it expire).
    spec = BucketSpec("search", 1, 2000)
    await fill(limiter, cred, spec)
    waiting = [
        asyncio.create_task(
            limiter.acquire(cred, [spec], priority=Priority.BACKGROUND, max_wait_s=10)
        )
        for _ in range(3)
    ]
    # all three queued, and the head has asked Redis for its slot
    await eventually(lambda: limiter.stats().redis_round_trips > 1)
    assert limiter.waiters() == {("search", "BACKGROUND"): 3}
    for task in waiting:
        task.cancel()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert limiter.waiters() == {}
    got = await limiter.acquire(cred, [spec], priority=Priority.INTERACTIVE, max_wait_s=5)
    assert not got.fallback
    await limiter.aclose()
    assert await redis.zcard(KeyScheme().window(cred, "search")) == 2


async def test_cancelled_during_the_redis_call_gives_the_slot_back(redis: Any, cred: str) -> None:
    limiter = Limiter(redis)
    spec = BucketSpec("general", 5, 10_000)
    for _ in range(20):
        task = asyncio.create_task(
            limiter.acquire(cred, [spec], priority=Priority.INTERACTIVE, max_wait_s=10)
        )
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await limiter.aclose()
    assert await redis.zcard(KeyScheme().window(cred, "general")) == 0


async def test_daily_bucket_needs_a_reset_time(redis: Any, cred: str) -> None:
    limiter = Limiter(redis)
    with pytest.raises(ValueError, match="daily_reset_ms"):
        await limiter.acquire(
            cred, [BucketSpec("daily", 5, 0, kind="daily")], priority=Priority.DEFAULT, max_wait_s=0
        )


@pytest.mark.parametrize("bad", ["", "a{b}", "x" * 200, "with space"])
async def test_credential_ids_must_be_short_hashes(redis: Any, bad: str) -> None:
    with pytest.raises(ValueError, match="credential"):
        await Limiter(redis).acquire(bad, [GENERAL], priority=Priority.DEFAULT, max_wait_s=0)


async def test_duplicate_buckets_are_refused(redis: Any, cred: str) -> None:
    with pytest.raises(ValueError, match="distinct"):
        await Limiter(redis).acquire(
            cred, [GENERAL, GENERAL], priority=Priority.DEFAULT, max_wait_s=0
        )


# -- fallback -----------------------------------------------------------------------------------


async def test_without_redis_each_replica_holds_its_share(cred: str) -> None:
    limiter = Limiter(None, expected_replicas=2)
    spec = BucketSpec("search", 10, 60_000)
    got = [
        await limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=0)
        for _ in range(2)  # share 5 -> leaky bucket of 2 per window: 2 now
    ]
    assert all(a.fallback for a in got)
    with pytest.raises(BudgetExceeded) as err:
        await limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=0)
    assert (err.value.bucket, err.value.policy) == ("search", POLICY_SECONDLY)
    assert err.value.retry_after_s > 0
    assert limiter.stats().admitted_fallback == 2
    assert limiter.fallback_active


async def test_fallback_daily_share(cred: str) -> None:
    limiter = Limiter(None, expected_replicas=3)
    daily = BucketSpec("daily", 10, 0, kind="daily")
    reset = reset_ms()
    for _ in range(3):
        await limiter.acquire(
            cred, [daily], priority=Priority.DEFAULT, max_wait_s=0, daily_reset_ms=reset
        )
    with pytest.raises(BudgetExceeded) as err:
        await limiter.acquire(
            cred, [daily], priority=Priority.DEFAULT, max_wait_s=0, daily_reset_ms=reset
        )
    assert err.value.policy == POLICY_DAILY
    assert 3500 < err.value.retry_after_s <= 3600


async def test_fallback_honours_pauses(cred: str) -> None:
    clock = ManualClock()
    limiter = Limiter(None, clock=clock, sleep=clock.sleep)
    await limiter.pause(cred, "general", 30)
    with pytest.raises(BudgetExceeded) as err:
        await limiter.acquire(cred, [GENERAL], priority=Priority.INTERACTIVE, max_wait_s=1)
    assert err.value.retry_after_s == 30
    await limiter.pause(cred, "search", 0.2)
    got = await limiter.acquire(
        cred, [BucketSpec("search", 5, 1000)], priority=Priority.INTERACTIVE, max_wait_s=5
    )
    assert clock.slept == [pytest.approx(0.2)]
    assert got.waited_s == pytest.approx(0.2)


async def test_priority_in_fallback(cred: str) -> None:
    limiter = Limiter(None)
    spec = BucketSpec("search", 2, 200)  # leaky bucket of 1 per 200 ms
    await limiter.acquire(cred, [spec], priority=Priority.INTERACTIVE, max_wait_s=0)
    b, i = Priority.BACKGROUND, Priority.INTERACTIVE
    order = await run_in_order(limiter, cred, spec, [b, b, b, i, i, i])
    # the first background caller was already at the head of the queue; the rest wait
    assert order[1:4] == [i, i, i]
    assert order.count(b) == 3


async def test_redis_down_falls_back_and_recovers(
    redis: Any, server: fakeredis.FakeServer, cred: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    transitions: list[bool] = []
    limiter = Limiter(redis, clock=clock, on_transition=transitions.append, probe_interval_s=5)
    spec = BucketSpec("general", 20, 10_000)
    caplog.set_level(logging.INFO, logger="proxy.limiter")
    assert not (
        await limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=1)
    ).fallback

    server.connected = False
    got = [
        await limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=1)
        for _ in range(3)
    ]
    assert all(a.fallback for a in got)
    assert transitions == [True]
    assert limiter.stats().redis_errors == 1  # no retry until the probe is due

    server.connected = True
    assert (await limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=1)).fallback
    clock.advance(11)  # the probe is due, and the calls admitted in process left their window
    assert not (
        await limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=1)
    ).fallback
    assert transitions == [True, False]
    assert not limiter.fallback_active
    levels = [(r.levelno, r.name) for r in caplog.records if r.name == "proxy.limiter"]
    assert levels == [(logging.WARNING, "proxy.limiter"), (logging.INFO, "proxy.limiter")]


async def test_fallback_counts_the_slots_redis_gave_this_replica_in_the_window(
    redis: Any, server: fakeredis.FakeServer, cred: str
) -> None:
    """In process, only this replica's own calls tell how full the window is: it counts them."""
    limiter = Limiter(redis)
    spec = BucketSpec("general", 20, 10_000)  # in process: a leaky bucket of 10
    for _ in range(7):
        await limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=1)
    server.connected = False
    got = [
        await limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=0)
        for _ in range(3)
    ]
    assert all(a.fallback for a in got)
    with pytest.raises(BudgetExceeded):
        await limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=0)
    assert (limiter.stats().admitted, limiter.stats().admitted_fallback) == (7, 3)


async def test_fallback_waits_while_this_replica_filled_more_than_its_bucket(
    redis: Any, server: fakeredis.FakeServer, cred: str
) -> None:
    limiter = Limiter(redis)
    spec = BucketSpec("general", 20, 10_000)
    for _ in range(15):  # more than the in-process bucket of 10 holds: 15 x 1 s to empty it
        await limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=1)
    server.connected = False
    with pytest.raises(BudgetExceeded) as err:
        await limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=1)
    assert 14.5 < err.value.retry_after_s <= 15
    assert limiter.fallback_active


async def test_fallback_starts_after_the_slots_reserved_ahead(
    redis: Any, server: fakeredis.FakeServer, cred: str
) -> None:
    """Slots Redis gave ahead are sent later: the in-process budget starts after the last."""
    limiter = Limiter(redis)
    spec = BucketSpec("general", 2, 10_000)
    ahead = [
        asyncio.create_task(
            limiter.acquire(cred, [spec], priority=Priority.INTERACTIVE, max_wait_s=15)
        )
        for _ in range(3)  # the third slot lies one window ahead
    ]
    await asyncio.sleep(0.1)
    server.connected = False
    with pytest.raises(BudgetExceeded) as err:
        await limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=1)
    assert err.value.retry_after_s > 9.5  # the hold to that slot, then its window drains
    for task in ahead:
        task.cancel()
    await asyncio.gather(*ahead, return_exceptions=True)


async def test_back_on_redis_calls_admitted_in_process_are_counted_for_every_replica(
    redis: Any, server: fakeredis.FakeServer, cred: str
) -> None:
    """The calls admitted in process become slots of the shared window, at their times, and
    the bucket rests only until every replica's breaker has closed (a probe interval and a
    timeout), not until those calls leave their window (a 10 s stop after a 2 s stall)."""
    clock = ManualClock()
    limiter = Limiter(redis, clock=clock, probe_interval_s=1)
    spec = BucketSpec("general", 6, 10_000)
    server.connected = False
    got = [
        await limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=0)
        for _ in range(3)
    ]
    assert all(a.fallback for a in got)
    server.connected = True
    clock.advance(6)  # the probe is due; the calls admitted in process are 6 s old
    with pytest.raises(BudgetExceeded) as rests:
        await limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=0.5)
    assert 1.0 < rests.value.retry_after_s <= 1.3  # 1 s probe + 0.25 s timeout, not 4 s
    assert not limiter.fallback_active
    window = KeyScheme().window(cred, "general")
    assert await redis.zcard(window) == 3  # handed back
    await asyncio.sleep(1.3)
    admitted = await limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=1)
    assert not admitted.fallback
    other_replica = Limiter(redis)
    for _ in range(2):  # the room left: 6 - 4
        await other_replica.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=0)
    with pytest.raises(BudgetExceeded) as full:
        await other_replica.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=1)
    assert 1.5 < full.value.retry_after_s <= 3.0  # till the calls made in process leave
    assert await redis.zcard(window) == 6


async def test_calls_admitted_in_process_are_handed_back_as_soon_as_redis_answers(
    redis: Any, server: fakeredis.FakeServer, cred: str
) -> None:
    """With no admission after the fallback, the calls made in process still reach Redis's
    window once the breaker closes (here another user of Redis got its answer): the other
    replicas count them at once, not when this one next admits a call."""
    limiter = Limiter(redis, clock=ManualClock(), probe_interval_s=5)
    spec = BucketSpec("general", 6, 10_000)
    server.connected = False
    for _ in range(3):
        await limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=0)
    server.connected = True
    limiter.health.succeeded()
    window = KeyScheme().window(cred, "general")
    for _ in range(100):
        if await redis.zcard(window) == 3:
            break
        await asyncio.sleep(0.01)
    assert await redis.zcard(window) == 3
    await limiter.aclose()


async def test_slow_redis_times_out_into_fallback(cred: str) -> None:
    class SlowPool:
        """A pool whose connection never comes: the call is slow from its first step."""

        calls = cancelled = 0

        def get_encoder(self) -> Any:
            return SimpleNamespace(encode=lambda v: v if isinstance(v, bytes) else str(v).encode())

        async def get_connection(self) -> Any:
            SlowPool.calls += 1
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                SlowPool.cancelled += 1
                raise

    class SlowRedis:
        connection_pool = SlowPool()

        def register_script(self, source: str) -> Any:
            return SimpleNamespace(sha="0" * 40)

    transitions: list[bool] = []
    limiter = Limiter(
        SlowRedis(),  # type: ignore[arg-type]
        redis_timeout_s=0.05,
        on_transition=transitions.append,
    )
    got = await limiter.acquire(cred, [GENERAL], priority=Priority.DEFAULT, max_wait_s=1)
    assert got.fallback
    assert (SlowPool.calls, SlowPool.cancelled) == (1, 1)  # given up, not waited for
    assert transitions == [True]
    await limiter.pause(cred, "general", 0.01)  # best effort: no Redis call while in fallback
    await limiter.learn(cred, "general", 100, 10, 10_000)
    assert limiter.stats().redis_round_trips == 1
    await limiter.aclose()


async def test_fallback_queue_respects_each_deadline(cred: str) -> None:
    """A caller queued behind a long fallback wait is refused at its own deadline."""
    limiter = Limiter(None, redis_timeout_s=0.05)
    spec = BucketSpec("search", 2, 2000)  # leaky bucket of 1 per 2 s
    await limiter.acquire(cred, [spec], priority=Priority.INTERACTIVE, max_wait_s=0)
    head = asyncio.create_task(
        limiter.acquire(cred, [spec], priority=Priority.INTERACTIVE, max_wait_s=30)
    )
    await eventually(lambda: limiter.waiters() == {("search", "INTERACTIVE"): 1})
    with pytest.raises(BudgetExceeded) as err:
        await limiter.acquire(cred, [spec], priority=Priority.INTERACTIVE, max_wait_s=0.1)
    assert (err.value.bucket, err.value.policy) == ("search", POLICY_SECONDLY)
    assert not head.done()
    head.cancel()
    with pytest.raises(asyncio.CancelledError):
        await head
    assert limiter.waiters() == {}


# -- new flows while the process is behind --------------------------------------------------------

FLOWS = BucketSpec("admissions", 100, 10_000, max_delay_ms=500)


async def test_a_new_flow_is_refused_at_once_while_the_process_is_behind(
    redis: Any, cred: str
) -> None:
    behind = [0.6]
    limiter = Limiter(redis, behind=lambda: behind[0])
    with pytest.raises(BudgetExceeded) as err:
        await limiter.acquire(cred, [FLOWS, GENERAL], priority=Priority.DEFAULT, max_wait_s=15)
    assert (err.value.bucket, err.value.policy) == ("admissions", POLICY_TEN_SECONDLY)
    assert err.value.retry_after_s == 2.0
    # Refused before Redis was asked: no slot of either bucket was spent on it.
    assert limiter.stats().redis_round_trips == 0 and limiter.stats().rejected == 1
    # Calls of flows under way draw no `admissions` and are never refused for it.
    await limiter.acquire(cred, [GENERAL], priority=Priority.INTERACTIVE, max_wait_s=0)
    behind[0] = 0.4
    await limiter.acquire(cred, [FLOWS, GENERAL], priority=Priority.DEFAULT, max_wait_s=0)
    assert limiter.stats().admitted == 2


async def test_a_flow_that_waited_while_the_process_fell_behind_is_refused(
    redis: Any, cred: str
) -> None:
    clock = ManualClock()
    behind = [0.0]

    async def sleep(seconds: float) -> None:
        behind[0] = 1.0  # the process fell behind while the flow waited for its slot
        await clock.sleep(seconds)

    limiter = Limiter(redis, clock=clock, sleep=sleep, behind=lambda: behind[0])
    await fill(limiter, cred, GENERAL)
    with pytest.raises(BudgetExceeded) as err:
        await limiter.acquire(cred, [FLOWS, GENERAL], priority=Priority.INTERACTIVE, max_wait_s=15)
    assert clock.slept and err.value.bucket == "admissions"

"""The one Redis breaker (pure: an injected clock, no Redis)."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from proxy.store.health import (
    LATE_EXTENSIONS,
    LATE_TIMER_S,
    LateTimeout,
    RedisHealth,
    once_more_if_dropped,
    redis_timeout,
)


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_a_timeout_while_redis_answered_no_one_opens_it_until_a_probe_succeeds() -> None:
    clock = Clock()
    transitions: list[bool] = []
    health = RedisHealth(clock=clock, probe_interval_s=1.0, on_transition=transitions.append)
    before = health.answers
    health.failed(TimeoutError(), answers_before=before)
    assert health.is_open
    assert [health.should_try() for _ in range(5)] == [False] * 5  # nobody touches Redis
    clock.now += 1.0
    assert [health.should_try() for _ in range(3)] == [True, False, False]  # one probe
    health.succeeded()
    assert not health.is_open
    assert transitions == [True, False]


def test_a_timeout_while_redis_answered_others_fails_only_its_own_call() -> None:
    health = RedisHealth(clock=Clock())
    before = health.answers
    health.succeeded()  # another call got its answer meanwhile: Redis is up, this one was slow
    health.failed(TimeoutError(), answers_before=before)
    assert not health.is_open


async def test_waiting_for_redis_ends_when_the_breaker_closes_or_a_probe_is_due() -> None:
    clock = Clock()
    health = RedisHealth(clock=clock, probe_interval_s=1.0)
    assert await health.wait_usable(0.0)  # closed: no wait
    health.failed(RedisConnectionError("refused"))
    assert not await health.wait_usable(0.01)  # the probe is a second away
    waiting = asyncio.ensure_future(health.wait_usable(30.0))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    health.succeeded()  # another caller's probe found Redis back
    assert await asyncio.wait_for(waiting, 1.0)
    health.failed(RedisConnectionError("refused"))
    clock.now += 1.0
    assert await asyncio.wait_for(health.wait_usable(30.0), 1.0)  # this caller may probe
    assert health.should_try()


async def test_past_the_stall_redis_is_away_and_nobody_waits_for_it() -> None:
    clock = Clock()
    health = RedisHealth(clock=clock, probe_interval_s=10.0, stall_s=2.5)
    health.failed(RedisConnectionError("refused"))
    clock.now += 2.5
    assert not await asyncio.wait_for(health.wait_usable(30.0), 0.5)
    assert not await asyncio.wait_for(health.try_within(30.0), 0.5)
    clock.now += 7.5
    assert await asyncio.wait_for(health.try_within(30.0), 0.5)  # a probe is due: this one
    assert not await RedisHealth(available=False).wait_usable(30.0)


async def test_a_late_timer_gives_the_call_its_timeout_again() -> None:
    """The loop was held up past the deadline; the reply comes soon after: no timeout."""
    async with redis_timeout(0.01):
        time.sleep(0.01 + 2 * LATE_TIMER_S)  # noqa: ASYNC251 (holding the loop up is the test)
        await asyncio.sleep(0.002)


async def test_a_call_still_unanswered_when_the_timer_is_on_time_times_out() -> None:
    with pytest.raises(TimeoutError) as timed_out:
        async with redis_timeout(0.01):
            time.sleep(0.01 + 2 * LATE_TIMER_S)  # noqa: ASYNC251 (holding the loop up is the test)
            await asyncio.sleep(10)
    assert not isinstance(timed_out.value, LateTimeout)  # Redis had its time: the breaker may open


async def test_a_timer_late_every_time_fails_only_its_own_call() -> None:
    health = RedisHealth(clock=Clock())
    before = health.answers
    turns = 0
    with pytest.raises(LateTimeout) as late:
        async with redis_timeout(0.01):
            while True:  # the loop is held up at every turn until the call gives up
                time.sleep(0.01 + 2 * LATE_TIMER_S)  # noqa: ASYNC251 (holding the loop up is the test)
                turns += 1
                await asyncio.sleep(0)
    # Given its timeout again a bounded number of times: each timer runs a turn or two after
    # its time, and the cancellation lands one turn after the last.
    assert turns <= 2 * (LATE_EXTENSIONS + 1) + 1
    health.failed(late.value, answers_before=before)
    assert not health.is_open


def test_an_error_opens_it_whatever_else_was_answered() -> None:
    health = RedisHealth(clock=Clock())
    before = health.answers
    health.succeeded()
    health.failed(RedisConnectionError("refused"), answers_before=before)
    assert health.is_open


def test_without_redis_it_is_open_and_never_probes() -> None:
    health = RedisHealth(available=False, clock=Clock())
    assert health.is_open
    assert not health.should_try()


async def test_a_call_on_a_dropped_connection_is_sent_once_more() -> None:
    tries: list[int] = []

    async def op() -> str:
        tries.append(1)
        if len(tries) == 1:
            raise RedisConnectionError("Connection closed by server.")  # Redis restarted
        return "answered"

    assert await once_more_if_dropped(op) == "answered" and len(tries) == 2


async def test_a_call_failing_twice_is_not_sent_a_third_time() -> None:
    tries: list[int] = []

    async def op() -> str:
        tries.append(1)
        raise RedisConnectionError("refused")

    with pytest.raises(RedisConnectionError):
        await once_more_if_dropped(op)
    assert len(tries) == 2

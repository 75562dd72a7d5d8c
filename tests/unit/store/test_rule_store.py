"""RuleRedis: Redis trouble is a value (UNAVAILABLE), never an exception or a long wait."""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from proxy.metrics import Metrics
from proxy.store.keys import key, part
from proxy.store.rule_store import UNAVAILABLE, Patience, RuleRedis


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> RuleRedis:
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    return RuleRedis(client, timeout_s=0.05, metrics=Metrics(), cooldown_s=1.0, clock=clock)


async def slow(_: Any) -> None:
    await asyncio.sleep(1)


async def broken(_: Any) -> None:
    raise RedisConnectionError("refused")


async def test_no_client_is_unavailable() -> None:
    store = RuleRedis(None, timeout_s=0.05, metrics=Metrics())
    assert await store.run("t", lambda r: r.get("k")) is UNAVAILABLE


async def test_the_first_timeout_opens_the_breaker_until_a_probe_succeeds(
    store: RuleRedis, clock: Clock
) -> None:
    """A hung Redis costs one call its timeout, not every call (issue 13, defect 15)."""
    assert await store.run("t", slow) is UNAVAILABLE
    assert not store.usable
    assert await store.run("t", lambda r: r.set("k", "v")) is UNAVAILABLE  # not even tried
    clock.now += 1.5
    assert await store.run("t", lambda r: r.set("k", "v")) is True  # the probe closes it
    assert store.usable


async def test_timeouts_in_a_row_or_an_error_rest_redis_a_while(
    store: RuleRedis, clock: Clock
) -> None:
    for _ in range(3):
        assert await store.run("t", slow) is UNAVAILABLE
    assert not store.usable
    assert await store.run("t", lambda r: r.set("k", "v")) is UNAVAILABLE  # not even tried
    clock.now += 1.5
    assert await store.run("t", lambda r: r.set("k", "v")) is True
    assert await store.run("t", broken) is UNAVAILABLE
    assert not store.usable


async def test_a_patient_read_is_asked_again_while_redis_answers_others(store: RuleRedis) -> None:
    """A timeout during which Redis answered another call leaves the breaker closed: a patient
    read tries again and gets its answer; an impatient one gives up."""
    tries = 0

    async def slow_first_time(r: Any) -> Any:
        nonlocal tries
        tries += 1
        if tries == 1:
            other = asyncio.create_task(store.run("other", lambda r: r.set("o", "1")))
            await asyncio.sleep(1)  # past the timeout, while the other call is answered
            await other
        return await r.get("k")

    await store.run("t", lambda r: r.set("k", "v"))
    assert await store.run("t", slow_first_time) is UNAVAILABLE
    assert store.usable and tries == 1
    tries = 0
    assert await store.run("t", slow_first_time, patience=Patience(retries=2)) == b"v"
    assert tries == 2


async def test_a_patient_read_gives_up_once_the_breaker_opens(store: RuleRedis) -> None:
    assert await store.run("t", slow, patience=Patience(retries=5)) is UNAVAILABLE
    assert not store.usable


async def test_a_patient_op_waits_through_an_open_breaker_for_redis_to_answer_again(
    store: RuleRedis, clock: Clock
) -> None:
    """Redis stalled: the breaker opened. A patient op waits for the probe, asks again, and
    closes the breaker, where an impatient one is UNAVAILABLE at once."""
    assert await store.run("t", broken) is UNAVAILABLE
    assert await store.run("t", lambda r: r.set("k", "v")) is UNAVAILABLE

    async def probe_due_soon() -> None:
        await asyncio.sleep(0.05)
        clock.now += 1.0

    due = asyncio.ensure_future(probe_due_soon())
    assert await store.run("t", lambda r: r.set("k", "v"), patience=Patience(wait_s=5.0)) is True
    await due
    assert store.usable


async def test_a_patient_op_gives_up_when_its_wait_ends_before_redis_answers(
    store: RuleRedis,
) -> None:
    assert await store.run("t", broken) is UNAVAILABLE
    patience = Patience(retries=3, wait_s=0.05)
    assert await store.run("t", lambda r: r.set("k", "v"), patience=patience) is UNAVAILABLE
    assert not store.usable


async def test_repairs_run_first_once_redis_answers(store: RuleRedis, clock: Clock) -> None:
    async def repair(r: Any) -> None:
        await r.set("repaired", "1")

    store.repair_later("x", repair)
    store.repair_later("x", repair)  # one per name
    assert store.pending_repairs == 1
    assert await store.run("t", lambda r: r.get("repaired")) == b"1"
    assert store.pending_repairs == 0


def test_keys_carry_the_credential_tag_and_escape_values() -> None:
    assert key("abc", "idx", part("a:b{c}")) == "hubspot:{abc}:idx:a%3Ab%7Bc%7D"

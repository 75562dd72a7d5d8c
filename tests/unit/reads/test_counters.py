"""The counter script (lua/counter_ops.lua) on fakeredis: seeding, dedup, reservations, floors."""

from __future__ import annotations

import asyncio

import fakeredis
import pytest

from proxy.metrics import Metrics
from proxy.reads import counters as counters_module
from proxy.reads.counters import CounterKeys, Counters, CounterState, Op, count_value
from proxy.rules.loader import CounterRule, load_rules
from proxy.store.rule_store import RuleRedis
from tests.kit.rules import rule_of

CRED = "cred0001"
RULE = rule_of(load_rules("rules/default.yaml"), "exam-counter", CounterRule)
DAY_MS = 86_400_000


@pytest.fixture
def redis() -> fakeredis.FakeAsyncRedis:
    return fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())


@pytest.fixture
def counters(redis: fakeredis.FakeAsyncRedis) -> Counters:
    return Counters(RuleRedis(redis, timeout_s=1.0, metrics=Metrics()))


async def do(counters: Counters, op: Op) -> CounterState:
    state = await counters.apply(CRED, RULE, op)
    assert isinstance(state, CounterState)
    return state


@pytest.mark.parametrize(
    ("value", "expected"),
    [("12", 12), (12, 12), ("12.0", 12), ("", None), (None, None), ("-1", None), (True, None)],
)
def test_count_values_as_hubspot_sends_them(value: object, expected: int | None) -> None:
    assert count_value(value) == expected


async def test_a_count_is_seeded_once_then_moves_only_with_bookings(counters: Counters) -> None:
    assert (await do(counters, Op("e1", "add", booking_id="b1"))).status == "unseeded"
    assert (await do(counters, Op("e1", seed=5, capacity=10))).count == 5
    assert (await do(counters, Op("e1", seed=99))).count == 5  # HubSpot's later value ignored
    assert (await do(counters, Op("e1", "add", booking_id="b1"))).count == 6
    twice = await do(counters, Op("e1", "add", booking_id="b1"))
    assert (twice.status, twice.count) == ("unchanged", 6)
    assert (await do(counters, Op("e1", "remove", booking_id="b1"))).count == 5
    again = await do(counters, Op("e1", "remove", booking_id="b1"))
    assert (again.status, again.count) == ("unchanged", 5)
    assert await counters.linked(CRED, RULE, "b1") == "e1"


async def test_changes_refresh_the_ttl(counters: Counters, redis: fakeredis.FakeAsyncRedis) -> None:
    await do(counters, Op("e1", seed=0))
    await do(counters, Op("e1", "add", booking_id="b1"))
    base = CounterKeys.base(CRED, RULE, "e1")
    for key in (base, base + ":members"):
        assert 90 * DAY_MS - 1000 < await redis.pttl(key) <= 90 * DAY_MS


async def test_reservations_stop_at_capacity_and_release_floors_at_zero(
    counters: Counters,
) -> None:
    await do(counters, Op("e1", seed=0, capacity=2))
    states = [await do(counters, Op("e1", "reserve", reservation_id=f"r{i}")) for i in range(3)]
    assert [s.status for s in states] == ["ok", "ok", "full"]
    assert [s.count for s in states] == [1, 2, 2]
    assert (await do(counters, Op("e1", "release", reservation_id="r0"))).count == 1
    assert (await do(counters, Op("e1", "release", reservation_id="r0"))).status == "unchanged"
    for _ in range(3):
        assert (await do(counters, Op("e1", "release"))).count == 0


async def test_reserve_needs_a_capacity(counters: Counters) -> None:
    await do(counters, Op("e1", seed=0))
    assert (await do(counters, Op("e1", "reserve", reservation_id="r"))).status == "nocapacity"
    assert (await do(counters, Op("e1", "reserve", limit=1, reservation_id="r"))).count == 1
    assert (await do(counters, Op("e1", "reserve", limit=1, reservation_id="s"))).status == "full"
    assert (await do(counters, Op("e1"))).capacity is None  # a caller's limit is not stored


async def test_a_booking_takes_its_reserved_seat(counters: Counters) -> None:
    await do(counters, Op("e1", seed=3, capacity=10))
    assert (await do(counters, Op("e1", "reserve", reservation_id="r1"))).count == 4
    assert (await do(counters, Op("e1", "add", booking_id="b1"))).count == 4
    assert (await do(counters, Op("e1", "add", booking_id="b2"))).count == 5
    named = await do(counters, Op("e1", "reserve", booking_id="b3"))
    assert named.count == 6
    assert (await do(counters, Op("e1", "add", booking_id="b3"))).status == "unchanged"


async def test_a_reservation_asked_again_is_held_once(counters: Counters) -> None:
    await do(counters, Op("e1", seed=3, capacity=10))
    again = [await do(counters, Op("e1", "reserve", reservation_id="r1")) for _ in range(3)]
    assert [(s.status, s.count) for s in again] == [("ok", 4)] * 3  # a lost reply, asked again


async def test_an_unconfirmed_reservation_gives_its_seat_back(
    counters: Counters, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(counters_module, "RESERVATION_HOLD_MS", 50)
    await do(counters, Op("e1", seed=0, capacity=1))
    assert (await do(counters, Op("e1", "reserve", reservation_id="r1"))).status == "ok"
    assert (await do(counters, Op("e1", "reserve", reservation_id="r2"))).status == "full"
    await asyncio.sleep(0.1)
    assert (await do(counters, Op("e1", "reserve", reservation_id="r3"))).status == "ok"


async def test_counters_are_per_credential(counters: Counters) -> None:
    await do(counters, Op("e1", seed=1))
    other = await counters.apply("cred0002", RULE, Op("e1"))
    assert isinstance(other, CounterState) and other.count is None

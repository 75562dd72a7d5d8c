"""`lua/cache_read.lua` against a real Valkey: an object-cache hit read with its counter in one
script shows, and leaves in Redis, exactly what the Python overlay after a plain read does, for
every count value HubSpot could send (and some it would not)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from proxy.hubspot.protocol import parse_json
from proxy.metrics import Metrics
from proxy.reads.counter_rules import CounterRuntime
from proxy.reads.counters import CounterKeys, Counters
from proxy.reads.object_cache import ObjectCache
from proxy.rules.loader import CounterRule, load_rules
from proxy.store.rule_store import RuleRedis, Unavailable
from tests.kit.rules import rule_of

RULE = rule_of(load_rules("rules/default.yaml"), "exam-counter", CounterRule)
EXAMS, EXAM, QUERY = RULE.object_type, "7", "properties=capacity,total_bookings"
VALUES: list[Any] = [
    "12", "12.0", "12.", 12, 12.0, 12.5, "12.5", -1, "-1", "-0", "0", 0, " 12", "1_000", "0x10",
    "1e3", 1e3, "", None, True, False, "abc", 2**60, "123456789012345678", [], {},
]  # fmt: skip
BODIES: list[Any] = [
    {"id": EXAM, "properties": {"capacity": "10"}},  # no count at all
    {"id": EXAM, "properties": {}},
    {"id": EXAM, "properties": []},
    {"id": EXAM},
    {"id": 7, "properties": {"total_bookings": "3"}},
    {"id": "8", "properties": {"total_bookings": "3"}},  # another object than the URL's
    [{"id": EXAM}],
    "text",
]


@pytest.fixture
async def runtime(redis_client: aioredis.Redis) -> tuple[ObjectCache, CounterRuntime]:
    store = RuleRedis(redis_client, timeout_s=2.0, metrics=Metrics())
    return ObjectCache(store), CounterRuntime(Counters(store))


async def shown_in_one_script(
    parts: tuple[ObjectCache, CounterRuntime], cred: str, body: bytes
) -> Any:
    cache, counters = parts
    await cache.fill(cred, EXAMS, EXAM, QUERY, "0", body, 60_000)
    overlay = counters.read_with_cache(cred, RULE, EXAM)
    got = await cache.get(cred, EXAMS, EXAM, QUERY, [overlay])
    assert not isinstance(got, Unavailable) and got.body == body
    data = parse_json(got.body)
    if isinstance(data, dict):
        assert await counters.overlay_read(cred, RULE, data, got.overlaid[0])
    return data


async def shown_the_python_way(
    parts: tuple[ObjectCache, CounterRuntime], cred: str, body: bytes
) -> Any:
    cache, counters = parts
    await cache.fill(cred, EXAMS, EXAM, QUERY, "0", body, 60_000)
    got = await cache.get(cred, EXAMS, EXAM, QUERY)
    assert not isinstance(got, Unavailable) and got.body == body
    data = parse_json(got.body)
    if isinstance(data, dict):
        assert await counters.overlay(cred, RULE, [data])
    return data


async def stored(redis: aioredis.Redis, cred: str) -> Any:
    keys = CounterKeys.all(cred, RULE, EXAM, "-")
    return await redis.hgetall(keys[0]), await redis.zcard(keys[2])


async def same_both_ways(
    parts: tuple[ObjectCache, CounterRuntime], redis: aioredis.Redis, n: int, body: Any
) -> None:
    raw = orjson.dumps(body)
    script_cred, python_cred = f"script{n:04d}", f"python{n:04d}"
    for _ in range(2):  # unseeded, then seeded
        shown = await shown_in_one_script(parts, script_cred, raw)
        expected = await shown_the_python_way(parts, python_cred, raw)
        assert shown == expected, body
        assert await stored(redis, script_cred) == await stored(redis, python_cred), body


@pytest.mark.parametrize("n", range(len(VALUES)))
async def test_each_count_value_is_shown_and_stored_as_the_python_overlay_does(
    runtime: tuple[ObjectCache, CounterRuntime], redis_client: aioredis.Redis, n: int
) -> None:
    body = {"id": EXAM, "properties": {"total_bookings": VALUES[n], "capacity": VALUES[-n]}}
    await same_both_ways(runtime, redis_client, n, body)


@pytest.mark.parametrize("n", range(len(BODIES)))
async def test_odd_bodies_are_shown_and_stored_as_the_python_overlay_does(
    runtime: tuple[ObjectCache, CounterRuntime], redis_client: aioredis.Redis, n: int
) -> None:
    await same_both_ways(runtime, redis_client, n, BODIES[n])


async def test_a_stale_entry_reads_no_counter(
    runtime: tuple[ObjectCache, CounterRuntime], redis_client: aioredis.Redis
) -> None:
    cache, counters = runtime
    body = orjson.dumps({"id": EXAM, "properties": {"total_bookings": "5"}})
    await cache.fill("stale001", EXAMS, EXAM, QUERY, "0", body, 60_000)
    assert await cache.invalidate("stale001", EXAMS, [EXAM], 60_000)
    overlay = counters.read_with_cache("stale001", RULE, EXAM)
    got = await cache.get("stale001", EXAMS, EXAM, QUERY, [overlay])
    assert not isinstance(got, Unavailable)
    assert (got.body, got.overlaid) == (None, ())
    assert await stored(redis_client, "stale001") == ({}, 0)  # nothing seeded from a stale copy

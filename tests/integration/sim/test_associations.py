"""Associations v4 on the simulator: both directions, idempotency, labels, batches, dated paths."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from hubspot_sim import SimConfig, create_app

pytestmark = pytest.mark.timeout(30)

Client = TestClient[web.Request, web.Application]
AUTH = {"Authorization": "Bearer sim-assoc-token"}
BOOKINGS, EXAMS = "2-50158943", "2-50158913"


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> Client:
    result: Client = await aiohttp_client(create_app(SimConfig(general_limit=10_000)))
    return result


async def call(client: Client, method: str, path: str, body: Any = None, status: int = 200) -> Any:
    resp = await client.request(method, path, headers=AUTH, json=body)
    assert resp.status == status, await resp.text()
    return None if status == 204 else await resp.json()


async def seed(client: Client, *types: str) -> list[str]:
    objects = [{"type": t, "properties": {}} for t in types]
    resp = await client.post("/__sim/seed", json={"objects": objects})
    return [o["id"] for o in (await resp.json())["objects"]]


async def targets(client: Client, from_type: str, from_id: str, to_type: str) -> list[Any]:
    body = await call(
        client, "GET", f"/crm/v4/objects/{from_type}/{from_id}/associations/{to_type}"
    )
    return [(r["toObjectId"], r["associationTypes"]) for r in body["results"]]


async def test_default_association_is_recorded_both_ways_once(client: Client) -> None:
    contact, company = await seed(client, "contacts", "companies")
    path = f"/crm/v4/objects/contacts/{contact}/associations/default/companies/{company}"
    body = await call(client, "PUT", path)
    assert body["status"] == "COMPLETE" and body["startedAt"] and body["completedAt"]
    assert body["results"] == [
        {
            "from": {"id": contact},
            "to": {"id": company},
            "associationSpec": {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279},
        },
        {
            "from": {"id": company},
            "to": {"id": contact},
            "associationSpec": {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 280},
        },
    ]
    await call(client, "PUT", path)  # again: still one association
    forward = [{"category": "HUBSPOT_DEFINED", "typeId": 279, "label": None}]
    backward = [{"category": "HUBSPOT_DEFINED", "typeId": 280, "label": None}]
    assert await targets(client, "contacts", contact, "companies") == [(int(company), forward)]
    assert await targets(client, "0-2", company, "0-1") == [(int(contact), backward)]


async def test_labeled_put_replaces_labels(client: Client) -> None:
    booking, exam = await seed(client, BOOKINGS, EXAMS)
    path = f"/crm/v4/objects/{BOOKINGS}/{booking}/associations/{EXAMS}/{exam}"
    spec = [{"associationCategory": "USER_DEFINED", "associationTypeId": 123}]
    body = await call(client, "PUT", path, spec, 201)
    assert body == {
        "fromObjectTypeId": BOOKINGS,
        "fromObjectId": int(booking),
        "toObjectTypeId": EXAMS,
        "toObjectId": int(exam),
        "labels": [],
    }
    await call(
        client, "PUT", path, [{"associationCategory": "USER_DEFINED", "associationTypeId": 9}], 201
    )
    [(to_id, kinds)] = await targets(client, BOOKINGS, booking, EXAMS)
    assert (to_id, [k["typeId"] for k in kinds]) == (int(exam), [9])
    assert len(await targets(client, EXAMS, exam, BOOKINGS)) == 1
    await call(client, "PUT", path, [{"associationTypeId": 1}], 400)


async def test_delete_removes_both_directions(client: Client) -> None:
    contact, booking = await seed(client, "0-1", BOOKINGS)
    await call(
        client, "PUT", f"/crm/v4/objects/0-1/{contact}/associations/default/{BOOKINGS}/{booking}"
    )
    await call(
        client,
        "DELETE",
        f"/crm/v4/objects/{BOOKINGS}/{booking}/associations/contacts/{contact}",
        status=204,
    )
    assert await targets(client, "0-1", contact, BOOKINGS) == []
    assert await targets(client, BOOKINGS, booking, "0-1") == []


async def test_unknown_records_are_404(client: Client) -> None:
    [contact] = await seed(client, "contacts")
    path = f"/crm/v4/objects/contacts/{contact}/associations/default/companies/999"
    assert (await call(client, "PUT", path, status=404))["category"] == "OBJECT_NOT_FOUND"


async def test_batch_associate_default_create_read_archive(client: Client) -> None:
    c1, c2, b1, b2 = await seed(client, "contacts", "contacts", BOOKINGS, BOOKINGS)
    base = f"/crm/v4/associations/contacts/{BOOKINGS}/batch"
    pairs = {
        "inputs": [{"from": {"id": c1}, "to": {"id": b1}}, {"from": {"id": c2}, "to": {"id": b2}}]
    }
    made = await call(client, "POST", f"{base}/associate/default", pairs)
    assert made["status"] == "COMPLETE" and len(made["results"]) == 4
    await call(client, "POST", f"{base}/associate/default", pairs)  # idempotent
    spec = {"associationCategory": "USER_DEFINED", "associationTypeId": 55}
    created = await call(
        client,
        "POST",
        f"{base}/create",
        {"inputs": [{"from": {"id": c1}, "to": {"id": b2}, "types": [spec]}]},
        201,
    )
    assert created["results"][0]["fromObjectId"] == int(c1)
    read = await call(client, "POST", f"{base}/read", {"inputs": [{"id": c1}, {"id": c2}]})
    by_from = {r["from"]["id"]: r["to"] for r in read["results"]}
    assert [t["toObjectId"] for t in by_from[c1]] == [int(b1), int(b2)]
    assert by_from[c1][1]["associationTypes"] == [
        {"category": "USER_DEFINED", "typeId": 55, "label": None}
    ]
    assert [t["toObjectId"] for t in by_from[c2]] == [int(b2)]
    reverse = await call(
        client,
        "POST",
        f"/crm/v4/associations/{BOOKINGS}/contacts/batch/read",
        {"inputs": [{"id": b2}]},
    )
    assert sorted(t["toObjectId"] for t in reverse["results"][0]["to"]) == sorted(
        [int(c1), int(c2)]
    )
    await call(
        client,
        "POST",
        f"{base}/archive",
        {"inputs": [{"from": {"id": c1}, "to": [{"id": b1}, {"id": b2}]}]},
        204,
    )
    partial = await call(client, "POST", f"{base}/read", {"inputs": [{"id": c1}, {"id": c2}]}, 207)
    assert [r["from"]["id"] for r in partial["results"]] == [c2]
    assert partial["numErrors"] == 1 and partial["errors"][0]["context"] == {"fromObjectId": [c1]}


async def test_batch_create_with_missing_record_is_207(client: Client) -> None:
    [contact] = await seed(client, "contacts")
    spec = {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}
    body = {"inputs": [{"from": {"id": contact}, "to": {"id": "404404"}, "types": [spec]}]}
    out = await call(
        client, "POST", "/crm/v4/associations/contacts/companies/batch/create", body, 207
    )
    assert out["numErrors"] == 1 and out["results"] == []
    assert set(out["errors"][0]) >= {"status", "category", "message", "context"}


async def test_date_versioned_association_paths(client: Client) -> None:
    contact, company = await seed(client, "contacts", "companies")
    await call(
        client,
        "PUT",
        f"/crm/objects/2026-03/contacts/{contact}/associations/default/companies/{company}",
    )
    listed = await call(
        client, "GET", f"/crm/objects/2026-03/companies/{company}/associations/contacts"
    )
    assert listed["results"][0]["toObjectId"] == int(contact)
    read = await call(
        client,
        "POST",
        "/crm/associations/2026-03/contacts/companies/batch/read",
        {"inputs": [{"id": contact}]},
    )
    assert read["results"][0]["to"][0]["toObjectId"] == int(company)


async def test_batch_input_limits(client: Client) -> None:
    inputs = [{"id": str(i)} for i in range(1001)]
    await call(
        client,
        "POST",
        "/crm/v4/associations/contacts/companies/batch/read",
        {"inputs": inputs},
        400,
    )
    pairs = [{"from": {"id": "1"}, "to": {"id": "2"}}] * 2001
    await call(
        client,
        "POST",
        "/crm/v4/associations/contacts/companies/batch/associate/default",
        {"inputs": pairs},
        400,
    )


async def test_seeded_associations_by_reference(client: Client) -> None:
    seeded = {
        "objects": [
            {"type": "contacts", "id": "501", "properties": {}},
            {"type": EXAMS, "properties": {}},
        ],
        "associations": [
            {"from_type": "contacts", "from_id": "$0", "to_type": EXAMS, "to_id": "$1"}
        ],
    }
    out = await (await client.post("/__sim/seed", json=seeded)).json()
    assert out["objects"][0] == {"type": "0-1", "id": "501"} and out["associations"] == 1
    exam = out["objects"][1]["id"]
    assert [t for t, _ in await targets(client, EXAMS, exam, "contacts")] == [501]
    stats = await (await client.get("/__sim/stats")).json()
    assert stats["totals"]["total"] == 1  # only the GET above; seeding is free

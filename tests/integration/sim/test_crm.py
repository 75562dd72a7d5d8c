"""CRM objects v3 on the simulator: shapes from HUBSPOT.md, batches, 207s and search paging."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from hubspot_sim import SimConfig, create_app

pytestmark = pytest.mark.timeout(30)

Client = TestClient[web.Request, web.Application]
AUTH = {"Authorization": "Bearer sim-crm-token"}
EXAMS = "2-50158913"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
DEFAULTS = {"hs_object_id", "createdate", "hs_lastmodifieddate"}


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> Client:
    # Generous limits: these tests are about shapes, not budgets.
    app = create_app(SimConfig(general_limit=10_000, search_limit=10_000))
    result: Client = await aiohttp_client(app)
    return result


async def call(
    client: Client, method: str, path: str, body: Any = None, status: int = 200, **params: str
) -> Any:
    resp = await client.request(method, path, headers=AUTH, json=body, params=params or None)
    assert resp.status == status, await resp.text()
    return None if status == 204 else await resp.json()


def assert_object(obj: dict[str, Any]) -> None:
    assert set(obj) >= {"id", "properties", "createdAt", "updatedAt", "archived"}
    assert obj["id"].isdigit()
    assert obj["archived"] is False
    assert ISO.match(obj["createdAt"]) and ISO.match(obj["updatedAt"])
    assert obj["properties"]["hs_object_id"] == obj["id"]
    assert set(obj["properties"]) >= DEFAULTS


async def test_create_get_update_archive(client: Client) -> None:
    made = await call(
        client,
        "POST",
        f"/crm/v3/objects/{EXAMS}",
        {"properties": {"capacity": 10, "name": "X"}},
        201,
    )
    assert_object(made)
    assert made["properties"]["capacity"] == "10"  # HubSpot stores strings
    path = f"/crm/v3/objects/{EXAMS}/{made['id']}"
    got = await call(client, "GET", path, properties="capacity,missing")
    assert_object(got)
    assert set(got["properties"]) == DEFAULTS | {"capacity", "missing"}
    assert got["properties"]["missing"] is None
    patched = await call(client, "PATCH", path, {"properties": {"capacity": 11}})
    assert patched["properties"]["capacity"] == "11"
    assert patched["properties"]["name"] == "X"
    await call(client, "DELETE", path, status=204)
    gone = await call(client, "GET", path, status=404)
    assert gone["status"] == "error" and gone["category"] == "OBJECT_NOT_FOUND"
    assert gone["correlationId"] and gone["message"]
    archived = await call(client, "GET", path, archived="true")
    assert archived["archived"] is True and "archivedAt" in archived


async def test_type_names_share_one_store(client: Client) -> None:
    made = await call(
        client, "POST", "/crm/v3/objects/contacts", {"properties": {"email": "a@b.c"}}, 201
    )
    for name in ("contacts", "contact", "0-1", "CONTACTS"):
        got = await call(client, "GET", f"/crm/v3/objects/{name}/{made['id']}")
        assert got["properties"]["email"] == "a@b.c"  # a contact's default properties
    await call(client, "GET", f"/crm/v3/objects/0-2/{made['id']}", status=404)


async def test_date_versioned_objects_path(client: Client) -> None:
    made = await call(
        client, "POST", "/crm/objects/2026-03/notes", {"properties": {"hs_note_body": "hi"}}, 201
    )
    got = await call(client, "GET", f"/crm/v3/objects/0-46/{made['id']}", properties="hs_note_body")
    assert got["properties"]["hs_note_body"] == "hi"
    found = await call(client, "POST", "/crm/objects/2026-03/0-46/search", {})
    assert found["total"] == 1
    batch = await call(
        client, "POST", "/crm/objects/2026-03/notes/batch/read", {"inputs": [{"id": made["id"]}]}
    )
    assert batch["results"][0]["id"] == made["id"]


async def test_get_by_id_property(client: Client) -> None:
    await call(client, "POST", "/crm/v3/objects/contacts", {"properties": {"email": "x@y.z"}}, 201)
    got = await call(client, "GET", "/crm/v3/objects/contacts/x@y.z", idProperty="email")
    assert got["properties"]["email"] == "x@y.z"


async def test_list_pages_with_after(client: Client) -> None:
    for i in range(5):
        await call(client, "POST", f"/crm/v3/objects/{EXAMS}", {"properties": {"n": i}}, 201)
    first = await call(client, "GET", f"/crm/v3/objects/{EXAMS}", limit="3", properties="n")
    assert [o["properties"]["n"] for o in first["results"]] == ["0", "1", "2"]
    after = first["paging"]["next"]["after"]
    rest = await call(
        client, "GET", f"/crm/v3/objects/{EXAMS}", limit="3", after=after, properties="n"
    )
    assert [o["properties"]["n"] for o in rest["results"]] == ["3", "4"]
    assert "paging" not in rest


async def seed(client: Client, n: int, type_name: str = EXAMS, **props: Any) -> list[str]:
    objects = [{"type": type_name, "properties": {"n": i, **props}} for i in range(n)]
    resp = await client.post("/__sim/seed", json={"objects": objects})
    return [o["id"] for o in (await resp.json())["objects"]]


async def test_batch_read_reports_missing_ids_with_207(client: Client) -> None:
    ids = await seed(client, 2)
    base = f"/crm/v3/objects/{EXAMS}/batch/read"
    ok = await call(client, "POST", base, {"inputs": [{"id": i} for i in ids], "properties": ["n"]})
    assert (
        ok["status"] == "COMPLETE" and ISO.match(ok["startedAt"]) and ISO.match(ok["completedAt"])
    )
    assert sorted(o["id"] for o in ok["results"]) == sorted(ids)
    partial = await call(client, "POST", base, {"inputs": [{"id": ids[0]}, {"id": "999"}]}, 207)
    assert partial["numErrors"] == 1
    error = partial["errors"][0]
    assert {error["status"], error["category"]} == {"error", "OBJECT_NOT_FOUND"}
    assert error["context"] == {"ids": ["999"]} and error["message"]


async def test_batch_create_echoes_trace_ids(client: Client) -> None:
    inputs = [{"properties": {"k": i}, "objectWriteTraceId": f"t{i}"} for i in range(3)]
    made = await call(
        client, "POST", f"/crm/v3/objects/{EXAMS}/batch/create", {"inputs": inputs}, 201
    )
    assert made["status"] == "COMPLETE"
    assert [(o["objectWriteTraceId"], o["properties"]["k"]) for o in made["results"]] == [
        ("t0", "0"),
        ("t1", "1"),
        ("t2", "2"),
    ]
    for obj in made["results"]:
        assert_object(obj)


async def test_batch_update_partial_failure_maps_back_by_trace_id(client: Client) -> None:
    [good] = await seed(client, 1)
    inputs = [
        {"id": good, "properties": {"n": 7}, "objectWriteTraceId": "ok-1"},
        {"id": "424242", "properties": {"n": 8}, "objectWriteTraceId": "bad-1"},
    ]
    body = await call(
        client, "POST", f"/crm/v3/objects/{EXAMS}/batch/update", {"inputs": inputs}, 207
    )
    assert body["numErrors"] == 1
    assert [(r["id"], r["objectWriteTraceId"], r["properties"]["n"]) for r in body["results"]] == [
        (good, "ok-1", "7")
    ]
    error = body["errors"][0]
    assert error["status"] == "error" and error["category"] == "OBJECT_NOT_FOUND"
    assert error["context"] == {"ids": ["424242"], "objectWriteTraceId": ["bad-1"]}


async def test_batch_update_rejects_duplicate_ids(client: Client) -> None:
    [good] = await seed(client, 1)
    inputs = [{"id": good, "properties": {}}, {"id": good, "properties": {}}]
    body = await call(
        client, "POST", f"/crm/v3/objects/{EXAMS}/batch/update", {"inputs": inputs}, 400
    )
    assert body["category"] == "VALIDATION_ERROR"


async def test_batch_upsert_flags_new_records(client: Client) -> None:
    await seed(client, 1, key="existing")
    inputs = [
        {"id": "existing", "idProperty": "key", "properties": {"n": 5}},
        {"id": "fresh", "idProperty": "key", "properties": {"n": 6}},
    ]
    body = await call(client, "POST", f"/crm/v3/objects/{EXAMS}/batch/upsert", {"inputs": inputs})
    assert [(r["new"], r["properties"]["key"], r["properties"]["n"]) for r in body["results"]] == [
        (False, "existing", "5"),
        (True, "fresh", "6"),
    ]


async def test_batch_archive_and_the_100_input_limit(client: Client) -> None:
    ids = await seed(client, 3)
    base = f"/crm/v3/objects/{EXAMS}/batch"
    await call(client, "POST", f"{base}/archive", {"inputs": [{"id": i} for i in ids[:2]]}, 204)
    left = await call(client, "GET", f"/crm/v3/objects/{EXAMS}")
    assert [o["id"] for o in left["results"]] == ids[2:]
    for action in ("read", "create", "update", "upsert", "archive"):
        too_many = {"inputs": [{"id": str(i), "properties": {}} for i in range(101)]}
        body = await call(client, "POST", f"{base}/{action}", too_many, 400)
        assert body["category"] == "VALIDATION_ERROR"
    await call(client, "POST", f"{base}/read", {"inputs": [{"id": i} for i in ids[2:]] * 100}, 200)


async def test_search_shapes_paging_and_properties(client: Client) -> None:
    await seed(client, 7, active="Active")
    await seed(client, 2, active="Cancelled")
    body: dict[str, Any] = {
        "filterGroups": [
            {"filters": [{"propertyName": "active", "operator": "EQ", "value": "Active"}]}
        ],
        "properties": ["n"],
        "sorts": [{"propertyName": "n", "direction": "DESCENDING"}],
        "limit": 5,
    }
    page = await call(client, "POST", f"/crm/v3/objects/{EXAMS}/search", body)
    assert page["total"] == 7
    assert [o["properties"]["n"] for o in page["results"]] == ["6", "5", "4", "3", "2"]
    assert set(page["results"][0]["properties"]) == DEFAULTS | {"n"}
    assert_object(page["results"][0])
    body["after"] = page["paging"]["next"]["after"]
    rest = await call(client, "POST", f"/crm/v3/objects/{EXAMS}/search", body)
    assert [o["properties"]["n"] for o in rest["results"]] == ["1", "0"]
    assert "paging" not in rest


async def test_search_rejects_oversized_and_invalid_bodies(client: Client) -> None:
    path = f"/crm/v3/objects/{EXAMS}/search"
    headers = {**AUTH, "Content-Type": "application/json"}
    for size, status in ((3000, 200), (3001, 400)):
        raw = '{"query":"' + "x" * (size - 12) + '"}'
        assert len(raw) == size
        resp = await client.post(path, data=raw, headers=headers)
        assert resp.status == status
    assert (await resp.json())["category"] == "VALIDATION_ERROR"
    flt = {"propertyName": "n", "operator": "HAS_PROPERTY"}
    for groups in (
        [{"filters": [flt]}] * 6,
        [{"filters": [flt] * 7}],
        [{"filters": [flt] * 6}] * 4,
    ):
        await call(client, "POST", path, {"filterGroups": groups}, 400)
    await call(client, "POST", path, {"limit": 201}, 400)


async def test_search_caps_at_ten_thousand_results(client: Client) -> None:
    await seed(client, 10_010)
    path = f"/crm/v3/objects/{EXAMS}/search"
    page = await call(client, "POST", path, {"limit": 200, "after": "9900"})
    assert page["total"] == 10_010
    assert len(page["results"]) == 100
    assert page["paging"]["next"]["after"] == "10000"
    body = await call(client, "POST", path, {"limit": 10, "after": "10000"}, 400)
    assert body["category"] == "VALIDATION_ERROR"


async def test_search_index_delay(aiohttp_client: AiohttpClient) -> None:
    client: Client = await aiohttp_client(create_app(SimConfig(search_index_delay_s=60)))
    made = await call(client, "POST", f"/crm/v3/objects/{EXAMS}", {"properties": {}}, 201)
    assert (await call(client, "POST", f"/crm/v3/objects/{EXAMS}/search", {}))["total"] == 0
    await call(client, "GET", f"/crm/v3/objects/{EXAMS}/{made['id']}")  # reads see it at once


async def test_create_with_associations(client: Client) -> None:
    [contact] = await seed(client, 1, type_name="contacts")
    spec = {"associationCategory": "USER_DEFINED", "associationTypeId": 77}
    body = {"properties": {}, "associations": [{"to": {"id": contact}, "types": [spec]}]}
    made = await call(client, "POST", "/crm/v3/objects/2-50158943", body, 201)
    links = await call(client, "GET", f"/crm/v4/objects/contacts/{contact}/associations/2-50158943")
    assert links["results"][0]["toObjectId"] == int(made["id"])
    bad = {"properties": {}, "associations": [{"to": {"id": "1"}, "types": [spec]}]}
    await call(client, "POST", "/crm/v3/objects/2-50158943", bad, 400)

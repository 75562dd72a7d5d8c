"""HubSpot-shaped answers for accepted writes, and pairing found records with lost creates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import orjson
import pytest

from proxy.writes.answers import WRITE_ID_HEADER, accepted, association_spec
from proxy.writes.lookup import find_created
from proxy.writes.model import (
    ASSOCIATE_DEFAULT,
    CREATE,
    NOTE_CREATE,
    UPDATE,
    WriteItem,
    WriteRequest,
)
from proxy.writes.store import WriteStore


def answer(kind: str, req: WriteRequest) -> Any:
    return accepted(
        "w1", kind, req, known_types={}, fallback_type_id=0, status_path="/proxy/v1/writes/w1"
    )


def test_default_association_answer_is_hubspots_both_directions() -> None:
    got = answer(ASSOCIATE_DEFAULT, WriteRequest("contacts", "1", to_type="notes", to_id="9"))
    assert got.status == 200 and got.headers == {WRITE_ID_HEADER: "w1"}
    body = got.body
    assert body["status"] == "COMPLETE" and body["startedAt"] and body["completedAt"]
    assert body["results"] == [
        {
            "from": {"id": "1"},
            "to": {"id": "9"},
            "associationSpec": {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 201},
        },
        {
            "from": {"id": "9"},
            "to": {"id": "1"},
            "associationSpec": {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202},
        },
    ]


def test_custom_pairs_use_configured_or_fallback_type_ids() -> None:
    pair = ("2-50158943", "2-50158913")
    known = {pair: ("USER_DEFINED", 77)}
    assert association_spec(pair, known, 0)["associationTypeId"] == 77
    assert association_spec(pair, {}, 5) == {
        "associationCategory": "USER_DEFINED",
        "associationTypeId": 5,
    }


def test_update_answer_is_the_object_with_new_values_over_the_base() -> None:
    base = {"id": "5", "properties": {"capacity": "10", "total_bookings": "3"}, "createdAt": "c"}
    req = WriteRequest(
        "2-50158913", "5", properties={"total_bookings": 4, "full": False}, base=base
    )
    got = answer(UPDATE, req)
    assert got.status == 200 and got.headers[WRITE_ID_HEADER] == "w1"
    props = got.body["properties"]
    assert props["capacity"] == "10" and props["total_bookings"] == "4" and props["full"] == "false"
    assert got.body["id"] == "5" and got.body["createdAt"] == "c" and got.body["updatedAt"]


def test_note_create_answer_is_202_pending_with_the_write_id() -> None:
    got = answer(NOTE_CREATE, WriteRequest("notes", properties={"hs_note_body": "x"}))
    assert got.status == 202
    assert got.body == {
        "status": "PENDING",
        "id": None,
        "writeId": "w1",
        "links": {"status": "/proxy/v1/writes/w1"},
    }
    orjson.dumps(got.body)


# -- finding notes a lost answer may have created ------------------------------------------------


class FakeCreators:
    def __init__(self, owners: dict[str, str]) -> None:
        self.owners = owners

    async def creators(self, object_type: str, ids: Sequence[str]) -> dict[str, str]:
        return {i: self.owners[i] for i in ids if i in self.owners}


def note(write_id: str, body: str, ts: str) -> WriteItem:
    props = {"hs_note_body": body, "hs_timestamp": ts}
    return WriteItem(write_id, "1-0", "c", NOTE_CREATE, WriteRequest("notes", properties=props))


def record(rid: str, body: str, ts: str, created: str = "2026-01-01T10:00:01.000Z") -> Any:
    props = {"hs_note_body": body, "hs_timestamp": ts}
    return {"id": rid, "properties": props, "createdAt": created}


SINCE = 1767261600000  # 2026-01-01T10:00:00Z


async def lookup(
    items: list[WriteItem], records: list[Any], owners: dict[str, str] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []

    async def call(method: str, path: str, body: bytes) -> tuple[int, Any]:
        sent.append({"method": method, "path": path, "body": orjson.loads(body)})
        return 200, {"total": len(records), "results": records}

    store = cast(WriteStore, FakeCreators(owners or {}))
    found = await find_created(call, store, "notes", [(i, SINCE) for i in items])
    return {k: v["id"] for k, v in found.items()}, sent


async def test_a_created_note_is_found_by_its_properties_with_dates_as_instants() -> None:
    items = [note("w1", "hello", "1767261600000"), note("w2", "other", "1767261600000")]
    found, sent = await lookup(items, [record("101", "hello", "2026-01-01T10:00:00.000Z")])
    assert found == {"w1": "101"}
    [call] = sent
    assert call["path"] == "/crm/v3/objects/notes/search"
    filters = call["body"]["filterGroups"][0]["filters"]
    assert {
        "propertyName": "hs_timestamp",
        "operator": "IN",
        "values": ["1767261600000"],
    } in filters


async def test_two_identical_notes_pair_with_two_records_at_most() -> None:
    items = [note("w1", "same", "1"), note("w2", "same", "1"), note("w3", "same", "1")]
    records = [record("101", "same", "1"), record("102", "same", "1")]
    found, _ = await lookup(items, records)
    assert found == {"w1": "101", "w2": "102"}


@pytest.mark.parametrize(
    ("owners", "created", "expected"),
    [
        ({"101": "someone-else"}, "2026-01-01T10:00:01.000Z", {}),
        ({"101": "w1"}, "2026-01-01T10:00:01.000Z", {"w1": "101"}),
        ({}, "2025-12-31T10:00:00.000Z", {}),  # made long before this write was sent
    ],
)
async def test_records_of_other_writes_or_older_ones_are_not_taken(
    owners: dict[str, str], created: str, expected: dict[str, str]
) -> None:
    found, _ = await lookup([note("w1", "x", "1")], [record("101", "x", "1", created)], owners)
    assert found == expected


async def test_a_rule_named_unique_property_alone_finds_the_record() -> None:
    request = WriteRequest(
        "2-50158943",
        properties={"idempotency_key": "k-1", "capacity": 3, "is_active": "Active"},
        unique_property="idempotency_key",
    )
    item = WriteItem("w1", "1-0", "c", CREATE, request)
    created = {"idempotency_key": "k-1", "capacity": "3", "is_active": "Active"}
    found, sent = await lookup([item], [{"id": "7", "properties": created, "createdAt": None}])
    assert found == {"w1": "7"}
    [call] = sent
    assert call["body"]["filterGroups"] == [
        {"filters": [{"propertyName": "idempotency_key", "operator": "IN", "values": ["k-1"]}]}
    ]
    assert WriteRequest.from_json(request.to_json()) == request  # it travels in the stream

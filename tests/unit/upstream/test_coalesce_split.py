"""A batch answer cut back into each single call's answer (pure): by record id and by content,
never by position or trace id."""

from __future__ import annotations

from typing import Any

import orjson

from proxy.hubspot.protocol import OBJECT_NOT_FOUND_MESSAGE
from proxy.upstream.coalesce.calls import BatchableCall, batchable
from proxy.upstream.coalesce.shapes import batch_call
from proxy.upstream.coalesce.split import AMBIGUOUS, Made, split_answer


def record(object_id: str, **props: str) -> dict[str, Any]:
    shown = {"hs_object_id": object_id, "createdate": "c", "hs_lastmodifieddate": "m", **props}
    return {"id": object_id, "properties": shown, "createdAt": "c", "updatedAt": "m",
            "archived": False}  # fmt: skip


def calls(*specs: tuple[str, str, bytes]) -> list[BatchableCall]:
    found = [batchable(*spec) for spec in specs]
    assert all(found)
    return [c for c in found if c is not None]


def test_each_read_gets_only_what_it_asked_for_and_a_missing_id_gets_the_single_404() -> None:
    reads = calls(
        ("GET", "/crm/v3/objects/contacts/1?properties=email", b""),
        ("GET", "/crm/v3/objects/contacts/2?properties=firstname", b""),
        ("GET", "/crm/v3/objects/contacts/9?properties=email", b""),
    )
    body = {
        "status": "COMPLETE",
        "results": [
            record("2", email="b@x", firstname="B"),
            record("1", email="a@x", firstname="A"),
        ],
        "numErrors": 1,
        "errors": [{"status": "error", "category": "OBJECT_NOT_FOUND", "message": "gone",
                    "context": {"ids": ["9"]}}],
    }  # fmt: skip
    one, two, missing = split_answer(reads, batch_call(reads), 207, body)
    assert one == Made(200, record("1", email="a@x"))
    assert two == Made(200, record("2", firstname="B"))
    assert isinstance(missing, Made) and missing.status == 404
    assert missing.body["message"] == OBJECT_NOT_FOUND_MESSAGE
    assert missing.body["category"] == "OBJECT_NOT_FOUND"


def test_an_error_that_is_not_not_found_sends_the_call_alone() -> None:
    updates = calls(
        ("PATCH", "/crm/v3/objects/contacts/1", b'{"properties": {"a": "1"}}'),
        ("PATCH", "/crm/v3/objects/contacts/2", b'{"properties": {"a": "x"}}'),
    )
    body = {
        "status": "COMPLETE",
        "results": [{**record("1", a="1"), "objectWriteTraceId": "0"}],
        "errors": [{"status": "error", "category": "VALIDATION_ERROR", "message": "bad a",
                    "context": {"ids": ["2"]}}],
    }  # fmt: skip
    ok, bad = split_answer(updates, batch_call(updates), 207, body)
    assert ok == Made(200, record("1", a="1"))  # no trace id: the single PATCH has none
    assert bad is None


def test_creates_are_told_apart_by_content_when_results_are_shuffled_without_trace_ids() -> None:
    creates = calls(
        *(("POST", "/crm/v3/objects/notes", orjson.dumps({"properties": {"n": str(i)}}))
          for i in range(3))
    )  # fmt: skip
    body = {"status": "COMPLETE", "results": [record("12", n="2"), record("10", n="0"),
                                              record("11", n="1")]}  # fmt: skip
    answers = split_answer(creates, batch_call(creates), 201, body)
    assert answers == [Made(201, record(f"1{i}", n=str(i))) for i in range(3)]


def test_a_create_whose_record_cannot_be_told_is_ambiguous_never_resent() -> None:
    creates = calls(
        ("POST", "/crm/v3/objects/notes", b'{"properties": {"n": "0"}}'),
        ("POST", "/crm/v3/objects/notes", b'{"properties": {"n": "1"}}'),
    )
    # HubSpot normalised both values, so neither result matches its input's content.
    body = {"status": "COMPLETE", "results": [record("10", n="zero"), record("11", n="one")]}
    assert split_answer(creates, batch_call(creates), 201, body) == [AMBIGUOUS, AMBIGUOUS]


def test_an_association_gets_both_directions_of_its_own_pair() -> None:
    puts = calls(
        ("PUT", "/crm/v4/objects/contacts/1/associations/default/companies/5", b""),
        ("PUT", "/crm/v4/objects/contacts/2/associations/default/companies/6", b""),
    )

    def entry(a: str, b: str) -> dict[str, Any]:
        spec = {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}
        return {"from": {"id": a}, "to": {"id": b}, "associationSpec": spec}

    results = [entry("6", "2"), entry("1", "5"), entry("2", "6"), entry("5", "1")]
    body = {"status": "COMPLETE", "startedAt": "s", "completedAt": "e", "results": results}
    first, second = split_answer(puts, batch_call(puts), 200, body)
    assert first == Made(200, {"status": "COMPLETE", "startedAt": "s", "completedAt": "e",
                               "results": [entry("1", "5"), entry("5", "1")]})  # fmt: skip
    assert isinstance(second, Made)
    assert second.body["results"] == [entry("2", "6"), entry("6", "2")]

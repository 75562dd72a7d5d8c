"""Coalescing writes into batch calls and reading each write's fate back (pure)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxy.writes.batching import Outcome, Split, judge, merge_properties, plan
from proxy.writes.model import (
    ASSOCIATE_DEFAULT,
    NOTE_CREATE,
    UPDATE,
    NotWritable,
    WriteItem,
    WriteRequest,
    entry_sort_key,
)

CRED = "c0ffee"
_seq = iter(range(1, 1_000_000))


def item(kind: str, req: WriteRequest, *, cred: str = CRED, entry: str | None = None) -> WriteItem:
    n = next(_seq)
    return WriteItem(f"w{n}", entry or f"{1000 + n}-0", cred, kind, req)


def note(body: str = "hello", **kw: Any) -> WriteItem:
    return item(NOTE_CREATE, WriteRequest("notes", properties={"hs_note_body": body}), **kw)


def assoc(
    from_id: str, to_id: str, from_type: str = "contacts", to_type: str = "deals"
) -> WriteItem:
    req = WriteRequest(from_type, from_id, to_type=to_type, to_id=to_id)
    return item(ASSOCIATE_DEFAULT, req)


def update(obj_id: str, obj_type: str = "2-50158913", **props: Any) -> WriteItem:
    return item(UPDATE, WriteRequest(obj_type, obj_id, properties=props))


def inputs(batch_body: bytes) -> list[dict[str, Any]]:
    parsed: list[dict[str, Any]] = orjson.loads(batch_body)["inputs"]
    return parsed


# -- grouping ------------------------------------------------------------------------------------


def test_groups_by_kind_and_type_pair_with_hubspot_batch_paths() -> None:
    items = [
        note("a"),
        assoc("1", "9"),
        update("5", total_bookings=1),
        assoc("2", "9"),
        assoc("1", "7", to_type="notes"),
        note("b"),
        update("6", obj_type="contacts", credits=2),
    ]
    batches = plan(items)
    assert [(b.path, len(b.units)) for b in batches] == [
        ("/crm/v3/objects/notes/batch/create", 2),
        ("/crm/v4/associations/contacts/deals/batch/associate/default", 2),
        ("/crm/v3/objects/2-50158913/batch/update", 1),
        ("/crm/v4/associations/contacts/notes/batch/associate/default", 1),
        ("/crm/v3/objects/contacts/batch/update", 1),
    ]


def test_type_names_and_ids_are_one_group() -> None:
    batches = plan([assoc("1", "9", "contacts", "deals"), assoc("2", "9", "0-1", "0-3")])
    assert len(batches) == 1 and len(batches[0].units) == 2


def test_credentials_are_never_mixed_in_one_call() -> None:
    batches = plan([note("a"), note("b", cred="other"), note("c")])
    assert sorted((b.credential, len(b.units)) for b in batches) == [(CRED, 2), ("other", 1)]


@pytest.mark.parametrize("maker", [lambda i: note(str(i)), lambda i: assoc(str(i), "9")])
def test_at_most_max_inputs_per_batch(maker: Any) -> None:
    batches = plan([maker(i) for i in range(250)])
    assert [len(b.units) for b in batches] == [100, 100, 50]
    assert plan([maker(i) for i in range(7)], max_inputs=3)[-1].units[0].items


def test_note_inputs_carry_the_write_id_as_trace_id() -> None:
    a, b = note("a"), note("b")
    body = inputs(plan([a, b])[0].body())
    assert [i["objectWriteTraceId"] for i in body] == [a.write_id, b.write_id]
    assert body[0]["properties"] == {"hs_note_body": "a"}


def test_the_same_pair_twice_is_one_association_input() -> None:
    first, second = assoc("1", "9"), assoc("1", "9")
    [batch] = plan([first, second])
    assert len(batch.units) == 1 and batch.units[0].items == (first, second)
    assert inputs(batch.body()) == [{"from": {"id": "1"}, "to": {"id": "9"}}]


# -- last write wins -------------------------------------------------------------------------------


def test_updates_of_one_object_merge_last_write_wins_per_property() -> None:
    a = update("5", total_bookings=1, capacity=10)
    b = update("5", total_bookings=2)
    c = update("5", status="full")
    [batch] = plan([c, a, b])  # given out of order: stream order decides
    [unit] = batch.units
    assert unit.items == (a, b, c)
    assert inputs(batch.body()) == [
        {
            "id": "5",
            "properties": {"total_bookings": 2, "capacity": 10, "status": "full"},
            "objectWriteTraceId": a.write_id,
        }
    ]
    assert merge_properties([b, a]) == {"total_bookings": 1, "capacity": 10}


def test_distinct_objects_are_distinct_inputs() -> None:
    [batch] = plan([update("5", x=1), update("6", x=2), update("5", y=3)])
    assert [u.payload["id"] for u in batch.units] == ["5", "6"]
    assert batch.units[0].payload["properties"] == {"x": 1, "y": 3}


# -- order ---------------------------------------------------------------------------------------


def test_stream_ids_order_numerically() -> None:
    assert entry_sort_key("10-0") > entry_sort_key("9-5") > entry_sort_key("9-1")
    late, early = note("late", entry="10-0"), note("early", entry="9-0")
    [batch] = plan([late, early])
    assert [u.items[0] for u in batch.units] == [early, late]


def test_batches_come_in_stream_order_of_their_first_write() -> None:
    items = [assoc("1", "9"), note("a"), assoc("2", "9")]
    assert [b.op for b in plan(items)] == ["associate", "create"]


def test_a_solo_object_sends_only_its_earliest_write() -> None:
    a, b = update("5", x=1), update("5", x=2)
    other = update("6", x=3)
    [batch] = plan([a, b, other], solo_keys=frozenset({a.order_key or ""}))
    assert [u.items for u in batch.units] == [(a,), (other,)]


def test_an_object_written_under_two_credentials_waits_for_the_first() -> None:
    a = update("5", x=1)
    b = item(UPDATE, WriteRequest("2-50158913", "5", properties={"x": 2}), cred="other")
    c = update("5", x=3)
    [batch] = plan([a, b, c])
    # c must not jump ahead of b: only a goes now, b and c in later rounds.
    assert batch.items == (a,)


def test_halves_split_inputs_not_merged_writes() -> None:
    [batch] = plan([note(str(i)) for i in range(5)])
    left, right = batch.halves()
    assert len(left.units) == 2 and len(right.units) == 3
    assert left.items + right.items == batch.items


# -- reading answers -----------------------------------------------------------------------------


def test_207_errors_go_back_to_their_own_note() -> None:
    good, bad = note("a"), note("b")
    [batch] = plan([good, bad])
    body = {
        "status": "COMPLETE",
        "results": [{"id": "101", "objectWriteTraceId": good.write_id, "properties": {}}],
        "numErrors": 1,
        "errors": [
            {
                "status": "error",
                "category": "VALIDATION_ERROR",
                "message": "association target '9' does not exist",
                "context": {"objectWriteTraceId": [bad.write_id]},
            }
        ],
    }
    sent, rejected = judge(batch, 207, body)  # type: ignore[misc]
    assert sent == Outcome("sent", result=body["results"][0])  # type: ignore[index]
    assert rejected.fate == "rejected" and "does not exist" in rejected.error


def test_association_errors_map_by_pair_and_results_by_either_direction() -> None:
    ok, missing = assoc("1", "9"), assoc("2", "404")
    [batch] = plan([ok, missing])
    spec = {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 4}
    body = {
        "results": [
            {"from": {"id": "1"}, "to": {"id": "9"}, "associationSpec": spec},
            {"from": {"id": "9"}, "to": {"id": "1"}, "associationSpec": spec},
        ],
        "errors": [
            {
                "category": "OBJECT_NOT_FOUND",
                "message": "One of the records does not exist",
                "context": {"fromObjectId": ["2"], "toObjectId": ["404"]},
            }
        ],
    }
    verdict = judge(batch, 207, body)
    assert isinstance(verdict, list)
    assert verdict[0].fate == "sent" and len(verdict[0].result) == 2
    assert verdict[1].fate == "rejected"


def test_updates_map_by_trace_id_or_record_id() -> None:
    a, b = update("5", x=1), update("6", x=2)
    [batch] = plan([a, b])
    body = {"results": [{"id": "6"}, {"id": "5", "objectWriteTraceId": a.write_id}]}
    verdict = judge(batch, 200, body)
    assert isinstance(verdict, list)
    assert [o.result["id"] for o in verdict] == ["5", "6"]


def test_a_batch_refused_whole_is_split_until_one_input_is_left() -> None:
    [batch] = plan([note("a"), note("b")])
    body = {"status": "error", "category": "VALIDATION_ERROR", "message": "bad property"}
    assert isinstance(judge(batch, 400, body), Split)
    [single] = plan([note("a")])
    [outcome] = judge(single, 400, body)  # type: ignore[misc]
    assert outcome.fate == "rejected" and "bad property" in outcome.error


def test_an_error_nobody_can_be_blamed_for_splits_unanswered_updates() -> None:
    [batch] = plan([update("5", x=1), update("6", x=2)])
    assert isinstance(judge(batch, 207, {"results": [], "errors": [{"message": "?"}]}), Split)


def test_creates_an_answer_leaves_unexplained_are_looked_up_not_split() -> None:
    # Resending a create that may have landed duplicates it: the worker searches for it first.
    [batch] = plan([note("a"), note("b")])
    verdict = judge(batch, 207, {"results": [], "errors": [{"message": "?"}]})
    assert isinstance(verdict, list)
    assert {(o.fate, o.maybe_applied) for o in verdict} == {("retry", True)}


@pytest.mark.parametrize(
    ("status", "fate", "maybe"),
    [(500, "retry", True), (502, "retry", True), (429, "retry", False), (423, "retry", False),
     (401, "retry", False), (404, "rejected", False)],
)  # fmt: skip
def test_whole_batch_failures(status: int, fate: str, maybe: bool) -> None:
    [batch] = plan([note("a"), note("b")])
    verdict = judge(batch, status, {"message": "x"})
    assert isinstance(verdict, list) and len(verdict) == 2
    assert {(o.fate, o.maybe_applied) for o in verdict} == {(fate, maybe)}


def test_a_complete_answer_applies_creates_it_does_not_name() -> None:
    # HubSpot's own example: 201 COMPLETE, results without objectWriteTraceId.
    [batch] = plan([note("a"), note("b")])
    results = [{"id": "2", "properties": {"hs_note_body": "?"}}, {"id": "1", "properties": {}}]
    verdict = judge(batch, 201, {"status": "COMPLETE", "results": results})
    assert isinstance(verdict, list)
    assert [o.fate for o in verdict] == ["sent", "sent"]


def test_no_answer_at_all_leaves_creates_maybe_applied() -> None:
    [batch] = plan([note("a"), note("b")])
    verdict = judge(batch, 0, None)
    assert isinstance(verdict, list)
    assert {(o.fate, o.maybe_applied) for o in verdict} == {("retry", True)}


# -- the write model -----------------------------------------------------------------------------


def test_calls_parse_into_requests() -> None:
    req = WriteRequest.from_call(
        ASSOCIATE_DEFAULT, "/crm/v4/objects/contacts/1/associations/default/2-50158943/77", b""
    )
    assert (req.object_type, req.object_id, req.to_type, req.to_id) == (
        "contacts", "1", "2-50158943", "77",
    )  # fmt: skip
    req = WriteRequest.from_call(UPDATE, "/crm/v3/objects/2-50158913/5", b'{"properties":{"a":1}}')
    assert (req.object_id, dict(req.properties)) == ("5", {"a": 1})
    body = b'{"properties":{"hs_note_body":"x"},"associations":[{"to":{"id":"1"}}]}'
    req = WriteRequest.from_call(NOTE_CREATE, "/crm/objects/2026-03/notes", body)
    assert req.object_type == "notes" and len(req.associations) == 1


@pytest.mark.parametrize(
    ("kind", "path", "body"),
    [
        (UPDATE, "/crm/v3/objects/contacts/5?idProperty=email", b'{"properties":{}}'),
        (UPDATE, "/crm/v3/objects/contacts/5", b'{"nope":1}'),
        (UPDATE, "/crm/v3/objects/contacts/batch", b'{"properties":{}}'),
        (NOTE_CREATE, "/crm/v3/objects/notes", b"[1]"),
        (ASSOCIATE_DEFAULT, "/crm/v4/objects/contacts/1/associations/deals/2", b""),
        ("delete", "/crm/v3/objects/contacts/5", b""),
    ],
)
def test_calls_that_do_not_fit_are_refused(kind: str, path: str, body: bytes) -> None:
    with pytest.raises(NotWritable):
        WriteRequest.from_call(kind, path, body)


def test_items_survive_the_stream_round_trip() -> None:
    original = note("round trip")
    fields = {k: v for k, v in original.to_fields().items()}
    assert WriteItem.from_fields(original.entry_id, fields) == original
    with pytest.raises(ValueError):
        WriteItem.from_fields("1-0", {**fields, "k": b"nope"})

"""Reading a HubSpot batch answer back to its inputs, with and without trace ids."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.hubspot.batch_results import NO_ANSWER, InputOutcome, map_batch_answer, normalised


def note(body: str, ts: Any = 1700000000000, trace: str | None = None) -> dict[str, Any]:
    one: dict[str, Any] = {"properties": {"hs_note_body": body, "hs_timestamp": ts}}
    if trace:
        one["objectWriteTraceId"] = trace
    return one


def created(record_id: str, properties: dict[str, Any], trace: str | None = None) -> dict[str, Any]:
    props = {k: normalised(v) for k, v in properties.items()}
    props |= {"hs_object_id": record_id, "createdate": "2026-01-01T00:00:00Z"}
    result: dict[str, Any] = {"id": record_id, "properties": props, "archived": False}
    if trace:
        result["objectWriteTraceId"] = trace
    return result


def complete(*results: dict[str, Any]) -> dict[str, Any]:
    return {"status": "COMPLETE", "results": list(results), "startedAt": "x", "completedAt": "y"}


def states(outcomes: list[InputOutcome]) -> list[str]:
    return [o.state for o in outcomes]


def result_ids(outcomes: list[InputOutcome]) -> list[str | None]:
    return [None if o.result is None else str(o.result["id"]) for o in outcomes]


def test_creates_map_by_trace_id_whatever_the_order() -> None:
    inputs = [note("a", trace="t1"), note("b", trace="t2")]
    body = complete(created("2", {"hs_note_body": "b"}, "t2"), created("1", {}, "t1"))
    got = map_batch_answer("create", inputs, 201, body)
    assert states(got) == ["applied", "applied"]
    assert result_ids(got) == ["1", "2"]
    assert [o.index for o in got] == [0, 1]


def test_creates_without_trace_ids_map_by_normalised_properties() -> None:
    inputs: list[dict[str, Any]] = [
        {"properties": {"n": 5, "flag": True, "x": "a"}},
        {"properties": {"n": 6, "flag": False, "x": "a"}},
        {"properties": {"n": 7.0, "flag": None, "x": "b"}},
    ]
    body = complete(
        created("30", inputs[2]["properties"]),
        created("10", inputs[0]["properties"]),
        created("20", inputs[1]["properties"]),
    )
    got = map_batch_answer("create", inputs, 201, body)
    assert result_ids(got) == ["10", "20", "30"]
    normalised_props = body["results"][0]["properties"]
    assert normalised_props["n"] == "7" and normalised_props["flag"] == ""


def test_identical_creates_are_interchangeable() -> None:
    inputs = [note("same"), note("same"), note("other")]
    body = complete(
        created("3", note("other")["properties"]), created("1", inputs[0]["properties"])
    )
    body["results"].append(created("2", inputs[1]["properties"]))
    got = map_batch_answer("create", inputs, 201, body)
    assert states(got) == ["applied"] * 3
    assert sorted(str(i) for i in result_ids(got)[:2]) == ["1", "2"] and result_ids(got)[2] == "3"


def test_a_subset_input_does_not_steal_the_fuller_inputs_result() -> None:
    inputs = [{"properties": {"a": "1"}}, {"properties": {"a": "1", "b": "2"}}]
    body = complete(created("B", {"a": "1", "b": "2"}), created("A", {"a": "1", "b": "9"}))
    got = map_batch_answer("create", inputs, 201, body)
    assert result_ids(got) == ["A", "B"]


def test_complete_applies_every_input_even_when_none_can_be_mapped() -> None:
    # HubSpot changed every value (dates, say): nothing matches, but COMPLETE says all applied.
    inputs = [note("a"), note("b")]
    body = complete(created("1", {"hs_note_body": "A!"}), created("2", {"hs_note_body": "B!"}))
    got = map_batch_answer("create", inputs, 201, body)
    assert states(got) == ["applied", "applied"]
    assert "unknown" not in states(got)


def test_complete_with_one_input_and_one_result_pairs_them() -> None:
    got = map_batch_answer("create", [note("a")], 201, complete(created("9", {"x": "changed"})))
    assert got == [InputOutcome(0, "applied", result=got[0].result)]
    assert result_ids(got) == ["9"]


def test_207_errors_map_by_context_trace_id() -> None:
    inputs = [note("a", trace="t1"), note("b", trace="t2")]
    error = {
        "status": "error",
        "category": "VALIDATION_ERROR",
        "message": "Property values were not valid",
        "context": {"objectWriteTraceId": ["t2"]},
    }
    body = {**complete(created("1", inputs[0]["properties"], "t1")), "numErrors": 1}
    body["errors"] = [error]
    got = map_batch_answer("create", inputs, 207, body)
    assert states(got) == ["applied", "failed"]
    assert got[1].error == error


def test_207_without_trace_ids_infers_the_failed_create_by_elimination() -> None:
    inputs = [note("a"), note("b"), note("c")]
    error = {"status": "error", "category": "VALIDATION_ERROR", "message": "bad", "context": {}}
    body = {
        **complete(created("3", inputs[2]["properties"]), created("1", inputs[0]["properties"])),
        "errors": [error],
    }
    got = map_batch_answer("create", inputs, 207, body)
    assert states(got) == ["applied", "failed", "applied"]
    assert result_ids(got) == ["1", None, "3"]
    assert got[1].error == error


def test_207_with_unplaced_error_and_unmapped_results_stays_unknown() -> None:
    inputs = [note("a"), note("b")]
    error = {"status": "error", "category": "VALIDATION_ERROR", "message": "bad"}
    body = {**complete(created("1", {"hs_note_body": "changed"})), "errors": [error]}
    assert states(map_batch_answer("create", inputs, 207, body)) == ["unknown", "unknown"]


def test_207_with_errors_placed_and_leftover_results_applies_the_rest() -> None:
    inputs = [note("a", trace="t1"), note("b", trace="t2"), note("c", trace="t3")]
    error = {"category": "VALIDATION_ERROR", "context": {"objectWriteTraceId": ["t1"]}}
    body = {
        **complete(created("2", {"hs_note_body": "B"}), created("3", {"hs_note_body": "C"})),
        "errors": [error],
    }
    assert states(map_batch_answer("create", inputs, 207, body)) == ["failed", "applied", "applied"]


def test_updates_and_reads_map_by_id() -> None:
    inputs = [{"id": "5", "properties": {"a": 1}}, {"id": "6", "properties": {"a": 2}}]
    body = complete({"id": "6", "properties": {"a": "2"}}, {"id": "5", "properties": {"a": "1"}})
    got = map_batch_answer("update", inputs, 200, body)
    assert result_ids(got) == ["5", "6"]
    reads = map_batch_answer("read", [{"id": "6"}, {"id": "5"}], 200, body)
    assert result_ids(reads) == ["6", "5"]


def test_207_read_errors_map_by_context_ids() -> None:
    error = {"status": "error", "category": "OBJECT_NOT_FOUND", "context": {"ids": ["404"]}}
    body = {**complete({"id": "1", "properties": {}}), "errors": [error]}
    got = map_batch_answer("read", [{"id": "404"}, {"id": "1"}], 207, body)
    assert states(got) == ["failed", "applied"]


def test_207_update_errors_map_by_ids_quoted_in_the_message() -> None:
    error = {"status": "error", "category": "OBJECT_NOT_FOUND", "message": "No object 77 found"}
    inputs: list[dict[str, Any]] = [
        {"id": "77", "properties": {}},
        {"id": "78", "properties": {}},
        {"id": "7"},
    ]
    body = {**complete({"id": "78"}), "errors": [error]}
    got = map_batch_answer("update", inputs, 207, body)
    assert states(got) == ["failed", "applied", "unknown"]


def test_associations_map_by_pair_in_either_direction() -> None:
    inputs = [{"from": {"id": "1"}, "to": {"id": "9"}}, {"from": {"id": "2"}, "to": {"id": "9"}}]
    body = complete(
        {"from": {"id": "9"}, "to": {"id": "2"}}, {"from": {"id": "1"}, "to": {"id": "9"}}
    )
    got = map_batch_answer("associate", inputs, 200, body)
    assert states(got) == ["applied", "applied"]
    assert got[0].result == {"from": {"id": "1"}, "to": {"id": "9"}}
    v4 = complete({"fromObjectId": 2, "toObjectId": 9})
    error = {
        "category": "OBJECT_NOT_FOUND",
        "context": {"fromObjectId": ["1"], "toObjectId": ["9"]},
    }
    got = map_batch_answer("associate", inputs, 207, {**v4, "errors": [error]})
    assert states(got) == ["failed", "applied"]


def test_upsert_maps_by_id_property_value() -> None:
    inputs = [
        {"id": "a@x.io", "idProperty": "email", "properties": {"n": 1}},
        {"id": "b@x.io", "idProperty": "email", "properties": {"n": 1}},
    ]
    body = complete(
        {"id": "12", "new": True, "properties": {"email": "b@x.io", "n": "1"}},
        {"id": "11", "new": False, "properties": {"email": "a@x.io", "n": "1"}},
    )
    assert result_ids(map_batch_answer("upsert", inputs, 200, body)) == ["11", "12"]


def test_whole_batch_400_fails_every_input_with_that_error() -> None:
    error = {"status": "error", "category": "VALIDATION_ERROR", "message": "Property x invalid"}
    got = map_batch_answer("create", [note("a"), note("b")], 400, error)
    assert got == [InputOutcome(0, "failed", error=error), InputOutcome(1, "failed", error=error)]


@pytest.mark.parametrize("status", [500, 502, 503, 504, 524, NO_ANSWER])
def test_5xx_and_no_answer_leave_every_input_unknown(status: int) -> None:
    got = map_batch_answer("create", [note("a"), note("b")], status, None)
    assert states(got) == ["unknown", "unknown"]


def test_archive_204_applies_every_input() -> None:
    assert states(map_batch_answer("archive", [{"id": "1"}, {"id": "2"}], 204, None)) == [
        "applied",
        "applied",
    ]


def test_2xx_with_unreadable_body_is_unknown_not_applied() -> None:
    assert states(map_batch_answer("create", [note("a")], 201, b"trunc")) == ["unknown"]


def test_a_result_with_a_foreign_trace_id_still_maps_by_content() -> None:
    inputs = [note("a", trace="t1")]
    body = complete(created("1", inputs[0]["properties"], "other"))
    got = map_batch_answer("create", inputs, 207, body)
    assert result_ids(got) == ["1"]


def test_note_timestamps_sent_as_epoch_ms_match_hubspots_iso_dates() -> None:
    inputs = [note("a", ts=1700000000000), note("a", ts=1700000001000)]
    later = {"hs_note_body": "a", "hs_timestamp": "2023-11-14T22:13:21.000Z"}
    earlier = {"hs_note_body": "a", "hs_timestamp": "2023-11-14T22:13:20Z"}
    got = map_batch_answer(
        "create", inputs, 207, complete(created("2", later), created("1", earlier))
    )
    assert result_ids(got) == ["1", "2"]

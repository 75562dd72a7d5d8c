"""What a call touched, read from single and batch shapes alike (pure)."""

from __future__ import annotations

from proxy.reads.call_objects import (
    answered_objects,
    association_pairs,
    deleted_ids,
    input_properties,
    written_records,
)


def obj(oid: str, **props: str) -> dict[str, object]:
    return {"id": oid, "properties": props, "createdAt": "c", "updatedAt": "u", "archived": False}


def test_objects_of_single_batch_and_search_answers() -> None:
    assert answered_objects(obj("1")) == [obj("1")]
    assert answered_objects({"status": "COMPLETE", "results": [obj("1"), obj("2")]}) == [
        obj("1"),
        obj("2"),
    ]
    assert answered_objects({"total": 0, "results": []}) == []
    assert answered_objects(None) == [] and answered_objects([1]) == []


def test_written_properties_of_patch_and_batch_update() -> None:
    assert input_properties({"properties": {"a": "1"}}, "7") == {"7": {"a": "1"}}
    batch = {"inputs": [{"id": "1", "properties": {"a": "1"}}, {"id": 2, "properties": {}}]}
    assert input_properties(batch, None) == {"1": {"a": "1"}, "2": {}}


def test_records_are_completed_by_what_was_written() -> None:
    answer = obj("7", is_active="Cancelled")
    (record,) = written_records(answer, {"properties": {"contact_id": "c1"}}, "7")
    assert record.properties == {"is_active": "Cancelled", "contact_id": "c1"}
    created = {"results": [obj("8"), obj("9")]}
    body = {"inputs": [{"properties": {"k": "a"}}, {"properties": {"k": "b"}}]}
    records = written_records(created, body, None, create=True)
    assert [(r.id, r.properties["k"]) for r in records] == [("8", "a"), ("9", "b")]


def test_deleted_ids_of_delete_archive_and_merge() -> None:
    assert deleted_ids(None, "5") == ["5"]
    assert deleted_ids({"inputs": [{"id": "1"}, {"id": 2}]}, None) == ["1", "2"]
    assert deleted_ids({"primaryObjectId": "1", "objectIdToMerge": "2"}, None) == ["2"]


def test_association_pairs_of_paths_and_batches() -> None:
    assert association_pairs({"fromObjectId": "b", "toObjectId": "e"}, None) == [("b", "e")]
    v4 = {"inputs": [{"from": {"id": "b1"}, "to": {"id": "e1"}}]}
    archive = {"inputs": [{"from": {"id": "b2"}, "to": [{"id": "e2"}, {"id": "e3"}]}]}
    assert association_pairs({}, v4) == [("b1", "e1")]
    assert association_pairs({}, archive) == [("b2", "e2"), ("b2", "e3")]

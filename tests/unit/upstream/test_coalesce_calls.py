"""Which single calls may share a batch call, and what each contributes to it (pure)."""

from __future__ import annotations

import orjson
import pytest

from proxy.upstream.coalesce.calls import batchable
from proxy.upstream.coalesce.shapes import batch_call

PROPS = orjson.dumps({"properties": {"firstname": "A"}})


def test_reads_of_a_type_group_by_family_and_by_asking_for_properties_or_not() -> None:
    named = batchable("GET", "/crm/v3/objects/contacts/1?properties=email,firstname", b"")
    by_id = batchable("GET", "/crm/v3/objects/0-1/2?properties=lastname", b"")
    bare = batchable("GET", "/crm/v3/objects/contacts/3", b"")
    dated = batchable("GET", "/crm/objects/2026-03/contacts/4?properties=email", b"")
    assert named and by_id and bare and dated
    assert named.group == by_id.group  # `contacts` and `0-1` are one type
    assert len({named.group, bare.group, dated.group}) == 3
    assert named.properties == ("email", "firstname")
    assert bare.properties is None
    assert dated.batch_path == "/crm/objects/2026-03/contacts/batch/read"


@pytest.mark.parametrize(
    "path_qs",
    [
        "/crm/v3/objects/contacts/1?associations=companies",
        "/crm/v3/objects/contacts/1?idProperty=email",
        "/crm/v3/objects/contacts/1?propertiesWithHistory=email",
        "/crm/v3/objects/contacts/1?archived=true",
        "/crm/v3/objects/contacts/1?properties=email&unknown=1",
        "/crm/v3/objects/contacts/batch",
        "/crm/v3/objects/contacts",
        "/crm/v3/properties/contacts/email",
    ],
)
def test_reads_a_batch_could_not_answer_exactly_go_alone(path_qs: str) -> None:
    assert batchable("GET", path_qs, b"") is None


@pytest.mark.parametrize(
    ("method", "path_qs", "body"),
    [
        ("PATCH", "/crm/v3/objects/contacts/1?idProperty=email", PROPS),
        ("PATCH", "/crm/v3/objects/contacts/1", b'{"properties": {}, "extra": 1}'),
        ("PATCH", "/crm/v3/objects/contacts/1", b'{"properties": []}'),
        ("PATCH", "/crm/v3/objects/contacts/1", b"not json"),
        ("POST", "/crm/v3/objects/contacts", b'{"properties": {}, "objectWriteTraceId": "x"}'),
        ("POST", "/crm/v3/objects/contacts/search", PROPS),
        ("POST", "/crm/v3/objects/contacts/batch/create", PROPS),
        ("DELETE", "/crm/v3/objects/contacts/1", b""),
        ("PUT", "/crm/v4/objects/contacts/1/associations/companies/2", b"[]"),
        ("PUT", "/crm/v4/objects/contacts/1/associations/default/companies/2?x=1", b""),
    ],
)
def test_writes_a_batch_could_not_answer_exactly_go_alone(
    method: str, path_qs: str, body: bytes
) -> None:
    assert batchable(method, path_qs, body) is None


def test_writes_map_to_their_batch_endpoints_in_both_families() -> None:
    create = batchable("POST", "/crm/v3/objects/notes", PROPS)
    update = batchable("PATCH", "/crm/objects/2026-03/contacts/7", PROPS)
    assoc = batchable("PUT", "/crm/v4/objects/contacts/1/associations/default/companies/2", b"")
    dated = batchable(
        "PUT", "/crm/objects/2026-03/contacts/1/associations/default/companies/2", b""
    )
    assert create and update and assoc and dated
    assert create.batch_path == "/crm/v3/objects/notes/batch/create"
    assert update.batch_path == "/crm/objects/2026-03/contacts/batch/update"
    assert assoc.batch_path == "/crm/v4/associations/contacts/companies/batch/associate/default"
    assert dated.batch_path == (
        "/crm/associations/2026-03/contacts/companies/batch/associate/default"
    )
    assert (assoc.object_id, assoc.to_id) == ("1", "2")


def test_a_batch_read_asks_for_the_union_once_per_id() -> None:
    calls = [
        batchable("GET", "/crm/v3/objects/contacts/1?properties=email", b""),
        batchable("GET", "/crm/v3/objects/contacts/2?properties=firstname,email", b""),
        batchable("GET", "/crm/v3/objects/contacts/1?properties=lastname", b""),
    ]
    batch = batch_call([c for c in calls if c is not None])
    assert orjson.loads(batch.body) == {
        "inputs": [{"id": "1"}, {"id": "2"}],
        "properties": ["email", "firstname", "lastname"],
        "propertiesWithHistory": [],
    }
    assert batch.positions == [0, 1, 0]


def test_write_inputs_carry_a_trace_id_and_associations_of_one_pair_are_one_input() -> None:
    update = batchable("PATCH", "/crm/v3/objects/contacts/5", PROPS)
    assert update is not None
    assert orjson.loads(batch_call([update]).body) == {
        "inputs": [{"id": "5", "properties": {"firstname": "A"}, "objectWriteTraceId": "0"}]
    }
    path = "/crm/v4/objects/contacts/1/associations/default/companies/2"
    pair = [batchable("PUT", path, b""), batchable("PUT", path, b"")]
    batch = batch_call([c for c in pair if c is not None])
    assert orjson.loads(batch.body) == {"inputs": [{"from": {"id": "1"}, "to": {"id": "2"}}]}
    assert batch.positions == [0, 0]

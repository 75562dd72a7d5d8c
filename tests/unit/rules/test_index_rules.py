"""Search bodies the duplicate/idempotency index may answer, and keys learned from objects."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.rules.loader import (
    IndexLookup,
    SearchIndexRule,
    WriteBehindRule,
    index_key_for_object,
    index_key_for_search,
    parse_rules,
    select_search_index,
    write_behind_accepts,
)

RULES = parse_rules(
    """
version: 1
rules:
  - name: dup
    type: search_index
    object_type: "2-50158943"
    key: [contact_id, exam_date]
    when: {is_active: Active}
    ttl: {positive: 1h}
  - name: idem
    type: search_index
    object_type: "2-50158943"
    key: [idempotency_key]
    ttl: {positive: 48h}
  - name: flagged
    type: search_index
    object_type: "0-1"
    key: [email]
    when: {verified: true, level: 3}
    ttl: {positive: 1h}
  - name: patch-counter
    type: write_behind
    match: {path: "/crm/v3/objects/2-50158913/{id}"}
    kind: update
    only_properties: [total_bookings]
""",
    "t.yaml",
)


def index_rule(name: str) -> SearchIndexRule:
    rule = RULES.rule(name)
    assert isinstance(rule, SearchIndexRule)
    return rule


DUP = index_rule("dup")
IDEM = index_rule("idem")
FLAGGED = index_rule("flagged")


def eq(name: str, value: Any) -> dict[str, Any]:
    return {"propertyName": name, "operator": "EQ", "value": value}


def body(*filters: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"filterGroups": [{"filters": list(filters)}], **extra}


DUP_FILTERS = (eq("contact_id", "c1"), eq("exam_date", "2026-03-15"), eq("is_active", "Active"))


def test_exact_equality_search_gives_the_key() -> None:
    found = index_key_for_search(
        DUP, body(*DUP_FILTERS, properties=["contact_id", "hs_object_id"], limit=1)
    )
    assert found == IndexLookup(("c1", "2026-03-15"), ("contact_id", "hs_object_id"), 1)


def test_filter_order_does_not_matter() -> None:
    found = index_key_for_search(DUP, body(*reversed(DUP_FILTERS)))
    assert found == IndexLookup(("c1", "2026-03-15"), (), None)


def test_sorts_and_first_page_cursor_are_fine() -> None:
    for after in (None, "", "0", 0):
        assert index_key_for_search(DUP, body(*DUP_FILTERS, sorts=["createdate"], after=after))


@pytest.mark.parametrize(
    "search",
    [
        pytest.param(body(*DUP_FILTERS, eq("status", "x")), id="extra filter"),
        pytest.param(
            body(DUP_FILTERS[0], DUP_FILTERS[1],
                 {"propertyName": "is_active", "operator": "NEQ", "value": "Cancelled"}),
            id="NEQ operator",
        ),
        pytest.param(
            body(DUP_FILTERS[0], DUP_FILTERS[1],
                 {"propertyName": "is_active", "operator": "IN", "values": ["Active"]}),
            id="IN operator",
        ),
        pytest.param(
            body(DUP_FILTERS[0], DUP_FILTERS[1],
                 {"propertyName": "is_active", "operator": "EQ", "values": ["Active"]}),
            id="EQ with values",
        ),
        pytest.param(
            {"filterGroups": [{"filters": list(DUP_FILTERS)}, {"filters": list(DUP_FILTERS)}]},
            id="two groups",
        ),
        pytest.param(body(DUP_FILTERS[0], DUP_FILTERS[1]), id="missing when filter"),
        pytest.param(body(DUP_FILTERS[0], DUP_FILTERS[1], eq("is_active", "Cancelled")),
                     id="different when value"),
        pytest.param(body(DUP_FILTERS[0], DUP_FILTERS[2]), id="missing key filter"),
        pytest.param(body(*DUP_FILTERS, DUP_FILTERS[0]), id="repeated filter"),
        pytest.param(body(eq("contact_id", ""), DUP_FILTERS[1], DUP_FILTERS[2]), id="empty value"),
        pytest.param(body(eq("contact_id", None), DUP_FILTERS[1], DUP_FILTERS[2]), id="null value"),
        pytest.param(body(eq("contact_id", ["c1"]), DUP_FILTERS[1], DUP_FILTERS[2]),
                     id="list value"),
        pytest.param(body(*DUP_FILTERS, query="smith"), id="full-text query"),
        pytest.param(body(*DUP_FILTERS, after="100"), id="later page"),
        pytest.param(body(*DUP_FILTERS, limit=0), id="limit 0"),
        pytest.param(body(*DUP_FILTERS, properties="contact_id"), id="properties not a list"),
        pytest.param({"filterGroups": []}, id="no groups"),
        pytest.param({"filterGroups": [{"filters": []}]}, id="no filters"),
        pytest.param({}, id="empty body"),
        pytest.param([], id="not a mapping"),
        pytest.param(None, id="no body"),
    ],
)  # fmt: skip
def test_other_searches_fall_through(search: Any) -> None:
    assert index_key_for_search(DUP, search) is None


def test_when_values_compare_as_hubspot_text() -> None:
    ok = body(eq("email", "a@b.c"), eq("verified", "true"), eq("level", 3))
    assert index_key_for_search(FLAGGED, ok) == IndexLookup(("a@b.c",), (), None)
    also_ok = body(eq("email", "a@b.c"), eq("verified", True), eq("level", "3"))
    assert index_key_for_search(FLAGGED, also_ok) is not None
    wrong = body(eq("email", "a@b.c"), eq("verified", "false"), eq("level", "3"))
    assert index_key_for_search(FLAGGED, wrong) is None


def test_select_picks_the_index_that_fits_the_filters() -> None:
    found = RULES.classify("POST", "/crm/objects/2026-03/2-50158943/search")
    assert [m.rule.name for m in found.by_role("lookup")] == ["dup", "idem"]
    chosen = select_search_index(found, body(eq("idempotency_key", "k-1")))
    assert chosen == (IDEM, IndexLookup(("k-1",), (), None))
    chosen = select_search_index(found, body(*DUP_FILTERS))
    assert chosen is not None and chosen[0] is DUP
    assert select_search_index(found, body(eq("contact_id", "c1"))) is None


def test_key_from_a_created_object() -> None:
    props = {"contact_id": "c1", "exam_date": "2026-03-15", "is_active": "Active", "x": "y"}
    assert index_key_for_object(DUP, props) == ("c1", "2026-03-15")
    assert index_key_for_object(IDEM, {"idempotency_key": 12}) == ("12",)


@pytest.mark.parametrize(
    "props",
    [
        {"contact_id": "c1", "exam_date": "2026-03-15", "is_active": "Cancelled"},
        {"contact_id": "c1", "exam_date": "2026-03-15"},
        {"contact_id": "c1", "is_active": "Active"},
        {"contact_id": "", "exam_date": "2026-03-15", "is_active": "Active"},
        {"contact_id": None, "exam_date": "2026-03-15", "is_active": "Active"},
    ],
)
def test_objects_the_index_skips(props: dict[str, Any]) -> None:
    assert index_key_for_object(DUP, props) is None


def test_write_behind_only_properties() -> None:
    rule = RULES.rule("patch-counter")
    assert isinstance(rule, WriteBehindRule) and rule.only_properties == ("total_bookings",)
    assert write_behind_accepts(rule, {"properties": {"total_bookings": "5"}})
    assert not write_behind_accepts(rule, {"properties": {"total_bookings": "5", "capacity": "9"}})
    assert not write_behind_accepts(rule, {"properties": {}})
    assert not write_behind_accepts(rule, None)
    open_rule = parse_rules(
        "version: 1\nrules:\n  - {name: n, type: write_behind, kind: create, "
        "match: {path: /crm/v3/objects/notes}}\n",
        "t.yaml",
    ).rules[0]
    assert isinstance(open_rule, WriteBehindRule) and write_behind_accepts(open_rule, {})

"""The simulator's CRM search: every operator, AND/OR groups, limits, sorting and paging."""

from __future__ import annotations

from typing import Any

import pytest

from hubspot_sim.search import SearchError, parse_search, run_search
from hubspot_sim.store import ObjectStore, SimObject

ROWS: list[dict[str, Any]] = [
    {"name": "Alpha Exam", "score": 10, "day": "2026-01-05", "email": "a@example.com"},
    {"name": "beta exam", "score": 20, "day": "2026-02-05", "email": "b@test.org"},
    {"name": "Gamma", "score": 30, "day": "2026-03-05"},
    {"name": "Delta", "score": 5, "email": ""},
]


@pytest.fixture
def objs() -> list[SimObject]:
    store = ObjectStore()
    for row in ROWS:
        store.create("2-123", row)
    return store.live("2-123")


def names(objs: list[SimObject], body: dict[str, Any]) -> list[str | None]:
    _, page, _ = run_search(objs, parse_search(body))
    return [o.properties.get("name") for o in page]


def one(flt: dict[str, Any]) -> dict[str, Any]:
    return {"filterGroups": [{"filters": [flt]}], "limit": 100}


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"propertyName": "score", "operator": "EQ", "value": "20"}, ["beta exam"]),
        ({"propertyName": "name", "operator": "EQ", "value": "GAMMA"}, ["Gamma"]),
        (
            {"propertyName": "score", "operator": "NEQ", "value": 20},
            ["Alpha Exam", "Gamma", "Delta"],
        ),
        ({"propertyName": "score", "operator": "LT", "value": 10}, ["Delta"]),
        ({"propertyName": "score", "operator": "LTE", "value": 10}, ["Alpha Exam", "Delta"]),
        ({"propertyName": "score", "operator": "GT", "value": 20}, ["Gamma"]),
        ({"propertyName": "score", "operator": "GTE", "value": 20}, ["beta exam", "Gamma"]),
        (
            {"propertyName": "score", "operator": "BETWEEN", "value": 6, "highValue": 25},
            ["Alpha Exam", "beta exam"],
        ),
        (
            {
                "propertyName": "day",
                "operator": "BETWEEN",
                "value": "2026-02-01",
                "highValue": "1772668800000",
            },
            ["beta exam", "Gamma"],
        ),
        ({"propertyName": "score", "operator": "IN", "values": [5, "30"]}, ["Gamma", "Delta"]),
        (
            {"propertyName": "score", "operator": "NOT_IN", "values": [5, 30]},
            ["Alpha Exam", "beta exam"],
        ),
        ({"propertyName": "email", "operator": "HAS_PROPERTY"}, ["Alpha Exam", "beta exam"]),
        ({"propertyName": "email", "operator": "NOT_HAS_PROPERTY"}, ["Gamma", "Delta"]),
        (
            {"propertyName": "name", "operator": "CONTAINS_TOKEN", "value": "exam"},
            ["Alpha Exam", "beta exam"],
        ),
        (
            {"propertyName": "email", "operator": "CONTAINS_TOKEN", "value": "*@example.com"},
            ["Alpha Exam"],
        ),
        (
            {"propertyName": "name", "operator": "NOT_CONTAINS_TOKEN", "value": "exam"},
            ["Gamma", "Delta"],
        ),
    ],
)
def test_operator(objs: list[SimObject], flt: dict[str, Any], expected: list[str]) -> None:
    assert names(objs, one(flt)) == expected


def test_filters_and_within_a_group_or_across_groups(objs: list[SimObject]) -> None:
    gt5 = {"propertyName": "score", "operator": "GT", "value": 5}
    exam = {"propertyName": "name", "operator": "CONTAINS_TOKEN", "value": "exam"}
    delta = {"propertyName": "name", "operator": "EQ", "value": "Delta"}
    assert names(objs, {"filterGroups": [{"filters": [gt5, exam]}]}) == ["Alpha Exam", "beta exam"]
    both = {"filterGroups": [{"filters": [gt5, exam]}, {"filters": [delta]}]}
    assert names(objs, both) == ["Alpha Exam", "beta exam", "Delta"]


def test_sorts_and_query(objs: list[SimObject]) -> None:
    desc = {"sorts": [{"propertyName": "score", "direction": "DESCENDING"}]}
    assert names(objs, desc) == ["Gamma", "beta exam", "Alpha Exam", "Delta"]
    assert names(objs, {"sorts": ["day"]}) == ["Alpha Exam", "beta exam", "Gamma", "Delta"]
    assert names(objs, {"query": "EXAM"}) == ["Alpha Exam", "beta exam"]


def test_paging_and_total(objs: list[SimObject]) -> None:
    total, page, after = run_search(objs, parse_search({"limit": 3}))
    assert (total, len(page), after) == (4, 3, "3")
    total, page, after = run_search(objs, parse_search({"limit": 3, "after": after}))
    assert (total, len(page), after) == (4, 1, None)


def many(n: int, per_group: int) -> list[dict[str, Any]]:
    flt = {"propertyName": "score", "operator": "HAS_PROPERTY"}
    return [{"filters": [flt] * per_group} for _ in range(n)]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"filterGroups": many(6, 1)}, "filter groups"),
        ({"filterGroups": many(1, 7)}, "in a group"),
        ({"filterGroups": many(4, 5)}, "Too many filters: 20"),
        ({"limit": 201}, "limit"),
        ({"after": "10000"}, "beyond 10000"),
        ({"filterGroups": [{"filters": [{"propertyName": "x", "operator": "LIKE"}]}]}, "operator"),
        ({"filterGroups": [{"filters": [{"propertyName": "x", "operator": "IN"}]}]}, "values"),
    ],
)
def test_invalid_requests(body: dict[str, Any], message: str) -> None:
    with pytest.raises(SearchError, match=message):
        parse_search(body)


@pytest.mark.parametrize("operator", ["EQ", "GT", "BETWEEN", "CONTAINS_TOKEN"])
def test_missing_value_is_a_validation_error(operator: str) -> None:
    with pytest.raises(SearchError, match="value"):
        parse_search(one({"propertyName": "score", "operator": operator}))


def test_at_most_limits_are_accepted() -> None:
    req = parse_search({"filterGroups": many(3, 6), "limit": 200, "after": "9999"})
    assert ([len(group) for group in req.groups], req.limit, req.after) == ([6, 6, 6], 200, 9999)
    store = ObjectStore()
    for score in range(250):
        store.create("2-123", {"score": score})
    total, page, after = run_search(
        store.live("2-123"), parse_search({"filterGroups": many(3, 6), "limit": 200})
    )
    assert (total, len(page), after) == (250, 200, "200")
    assert run_search(store.live("2-123"), req) == (250, [], None)

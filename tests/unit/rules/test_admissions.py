"""`limits.admissions`: the gateway's own limit on new flows, drawn by a flow's first call."""

from __future__ import annotations

import textwrap

import pytest

from proxy.budget.plans import bucket_specs
from proxy.rules.loader import RulesError, load_rules, parse_rules


def parse(text: str) -> object:
    return parse_rules(textwrap.dedent(text).lstrip("\n"), "r.yaml")


def problems(text: str) -> list[str]:
    with pytest.raises(RulesError) as info:
        parse(text)
    return [str(p) for p in info.value.problems]


def test_the_shipped_contact_read_is_admitted_per_booking_and_coalesces() -> None:
    rules = load_rules("rules/default.yaml")
    read = rules.classify("GET", "/crm/v3/objects/contacts/42?properties=credits")
    assert read.buckets == ("admissions", "general", "daily")
    assert read.route is not None and read.route.coalesce is not None
    assert read.route.priority == "default"
    specs = {s.name: s for s in bucket_specs(rules, read.buckets)}
    # Not HubSpot's limit, so no safety margin: exactly the flows the file allows per window.
    assert specs["admissions"].limit == rules.limits.raw("admissions").limit == 1250
    create = rules.classify("POST", "/crm/v3/objects/2-50158943")
    assert "admissions" not in create.buckets  # a booking under way is never held back by it
    assert create.route is not None and create.route.priority == "interactive"


def test_admissions_needs_a_limit_and_defaults_to_a_ten_second_window() -> None:
    assert problems("""
        version: 1
        limits:
          admissions: {window: 5s}
    """) == [
        "r.yaml:3: limits.admissions.limit: required: new flows per window the budget can finish"
    ]
    rules = parse("""
        version: 1
        limits:
          admissions: {limit: 7}
    """)
    assert rules.limits.raw("admissions").window_ms == 10_000  # type: ignore[attr-defined]


def test_a_route_cannot_draw_from_admissions_unless_it_is_configured() -> None:
    assert problems("""
        version: 1
        routes:
          - name: a
            match: {path: /a}
            buckets: [admissions, general]
    """) == [
        "r.yaml:5: routes[0].buckets: unknown bucket 'admissions' "
        "(configure limits.admissions first)"
    ]


def test_the_shipped_admissions_refuse_new_flows_while_the_gateway_is_behind() -> None:
    rules = load_rules("rules/default.yaml")
    read = rules.classify("GET", "/crm/v3/objects/contacts/42?properties=credits")
    specs = {s.name: s for s in bucket_specs(rules, read.buckets)}
    assert specs["admissions"].max_delay_ms == rules.limits.admissions_max_delay_ms == 500
    # Only the bucket of new flows sheds load: HubSpot's own buckets never refuse for it.
    assert specs["general"].max_delay_ms is None and specs["daily"].max_delay_ms is None


def test_max_delay_is_optional_and_must_be_a_positive_duration() -> None:
    rules = parse("""
        version: 1
        limits:
          admissions: {limit: 7}
    """)
    assert rules.limits.admissions_max_delay_ms is None  # type: ignore[attr-defined]
    assert problems("""
        version: 1
        limits:
          admissions: {limit: 7, max_delay: 0s}
    """) == ["r.yaml:3: limits.admissions.max_delay: duration must be greater than 0 (got '0s')"]
    assert problems("""
        version: 1
        limits:
          admissions: {limit: 7, max_delay: 300}
    """) == [
        "r.yaml:3: limits.admissions.max_delay: expected a duration with a unit like 10s, "
        "got the number 300"
    ]


def test_the_shipped_flow_starts_are_the_booking_searches_and_the_exam_reads() -> None:
    rules = load_rules("rules/default.yaml")
    starts = {r.name for r in rules.routes if r.starts_flow}
    assert starts == {"booking-search", "exam-search", "exam-read"}
    for later in ("booking-create", "contact-credits", "notes"):
        assert later not in starts  # a booking under way is never turned away for it


def test_starts_flow_needs_max_delay() -> None:
    assert problems("""
        version: 1
        limits:
          admissions: {limit: 7}
        routes:
          - name: a
            match: {path: /a}
            starts_flow: true
    """) == [
        "r.yaml:7: routes[0].starts_flow: needs limits.admissions.max_delay "
        "(how far behind is too far)"
    ]

"""Integrity rule keys: a counter's `capacity_guard`, a create write-behind's `unique_property`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from proxy.rules.loader import (
    CapacityGuard,
    CounterRule,
    RulesError,
    WriteBehindRule,
    load_rules,
    parse_rules,
)

DEFAULT = Path(__file__).parents[3] / "rules" / "default.yaml"

RULE = """
    version: 1
    rules:
      - name: seats
        type: counter
        object_type: "2-50158913"
        property: total_bookings
        source:
          association: {from_type: "2-50158943", to_type: "2-50158913"}
"""


def counter(extra: str) -> CounterRule:
    text = textwrap.dedent(RULE).lstrip("\n") + textwrap.indent(textwrap.dedent(extra), "    ")
    (rule,) = parse_rules(text, "r.yaml").rules
    assert isinstance(rule, CounterRule)
    return rule


def problems(extra: str) -> list[str]:
    text = textwrap.dedent(RULE).lstrip("\n") + textwrap.indent(textwrap.dedent(extra), "    ")
    with pytest.raises(RulesError) as info:
        parse_rules(text, "r.yaml")
    return [str(p) for p in info.value.problems]


def test_the_shipped_rules_guard_exam_capacity() -> None:
    (rule,) = [r for r in load_rules(DEFAULT).rules if r.name == "exam-counter"]
    assert isinstance(rule, CounterRule)
    assert rule.guard == CapacityGuard(
        "mock_exam_id", 400, "VALIDATION_ERROR", "This mock exam session is now full"
    )


def test_a_guard_takes_its_error_from_the_rule() -> None:
    rule = counter("""
        capacity_property: capacity
        capacity_guard:
          property: exam_ref
          full_error: {status: 409, category: CONFLICT, message: "Session full"}
    """)
    assert rule.guard == CapacityGuard("exam_ref", 409, "CONFLICT", "Session full")


def test_a_guard_makes_booking_creates_the_counters_business() -> None:
    guarded = counter("capacity_property: capacity\ncapacity_guard: {property: exam_ref}\n")
    plain = counter("capacity_property: capacity\n")
    roles = [role for _, role in guarded.matchers]
    assert roles.count("create") == 2  # single and batch creates
    assert "create" not in [role for _, role in plain.matchers]
    assert plain.guard is None


def test_guard_problems_are_reported_with_their_line() -> None:
    found = problems("""
        capacity_guard:
          full_error: {status: 700}
    """)
    assert found == [
        "r.yaml:10: rules[0].capacity_guard: needs capacity_property (the seats the guard "
        "counts against)",
        "r.yaml:11: rules[0].capacity_guard.property: required",
        "r.yaml:11: rules[0].capacity_guard.full_error: status must be a 4xx or 5xx, got 700",
    ]


WRITE_BEHIND = """
    version: 1
    rules:
      - name: bookings-async
        type: write_behind
        match: {path: "/crm/v3/objects/2-50158943"}
"""


def test_a_create_write_behind_may_name_its_unique_property() -> None:
    text = textwrap.dedent(WRITE_BEHIND).lstrip("\n") + "    kind: create\n"
    (rule,) = parse_rules(text + "    unique_property: idempotency_key\n", "r.yaml").rules
    assert isinstance(rule, WriteBehindRule) and rule.unique_property == "idempotency_key"
    with pytest.raises(RulesError) as info:
        parse_rules(
            text.replace("kind: create", "kind: update") + "    unique_property: k\n", "r.yaml"
        )
    assert [str(p) for p in info.value.problems] == [
        "r.yaml:7: rules[0].unique_property: only a create write-behind looks records up"
    ]

"""A route's `coalesce:` block: read into the model, every mistake reported at its line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from proxy.rules.loader import RulesError, check_file, parse_rules
from proxy.rules.model import CoalesceConfig

DEFAULT = Path(__file__).parents[3] / "rules" / "default.yaml"


def route_with(block: str) -> str:
    return textwrap.dedent("""\
        version: 1
        routes:
          - name: reads
            match: {method: GET, path: "/crm/v3/objects/{objectType}/{objectId}"}
        """) + textwrap.indent(block, "    ")


def problems(text: str) -> list[str]:
    with pytest.raises(RulesError) as info:
        parse_rules(text, "r.yaml")
    return [str(p) for p in info.value.problems]


def test_a_block_is_read_with_defaults_for_what_it_leaves_out() -> None:
    rules = parse_rules(route_with("coalesce: {max_hold: 20ms}\n"), "r.yaml")
    assert rules.routes[0].coalesce == CoalesceConfig(max_batch=100, max_hold_ms=20, enabled=True)


def test_a_borrowing_block_keeps_its_pace_and_hold() -> None:
    rules = parse_rules(route_with("coalesce: {max_hold: 40ms, pace: borrow}\n"), "r.yaml")
    assert rules.routes[0].coalesce == CoalesceConfig(max_hold_ms=40, pace="borrow")


@pytest.mark.parametrize(("value", "share"), [("", 0.8), ("pace_share: 0.5", 0.5)])
def test_the_paced_share_of_the_budget_defaults_to_four_fifths(value: str, share: float) -> None:
    text = route_with("").replace("routes:", f"limits: {{{value}}}\nroutes:")
    assert parse_rules(text, "r.yaml").limits.pace_share == share


@pytest.mark.parametrize("value", ["0", "1.5", "'half'", "true"])
def test_a_paced_share_outside_zero_to_one_is_reported(value: str) -> None:
    text = route_with("").replace("routes:", f"limits: {{pace_share: {value}}}\nroutes:")
    [found] = problems(text)
    assert found.startswith("r.yaml:2: limits.pace_share: must be a number in (0, 1]"), found


def test_no_block_means_no_coalescing() -> None:
    rules = parse_rules(route_with(""), "r.yaml")
    assert rules.routes[0].coalesce is None


def test_a_disabled_block_is_kept_disabled() -> None:
    rules = parse_rules(route_with("coalesce: {enabled: false, max_batch: 10}\n"), "r.yaml")
    assert rules.routes[0].coalesce == CoalesceConfig(max_batch=10, enabled=False)


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("coalesce: {max_batch: 101}", "r.yaml:5: routes[0].coalesce.max_batch: HubSpot takes at "
         "most 100 inputs per batch (got 101)"),
        ("coalesce: {max_batch: 1}", "r.yaml:5: routes[0].coalesce.max_batch: must be at least 2"),
        ("coalesce: {max_hold: 50}", "r.yaml:5: routes[0].coalesce.max_hold: expected a duration"),
        ("coalesce: {max_hold: 2s}", "r.yaml:5: routes[0].coalesce.max_hold: must be at most "
         "1000ms (got 2000ms)"),
        ("coalesce: {enabled: yes please}", "r.yaml:5: routes[0].coalesce.enabled: expected true"),
        ("coalesce: {max_wait: 1s}", "r.yaml:5: routes[0].coalesce.max_wait: unknown key"),
        ("coalesce: true", "r.yaml:5: routes[0].coalesce: expected a mapping"),
        ("coalesce: {pace: lend, max_hold: 40ms}", "r.yaml:5: routes[0].coalesce.pace: invalid "
         "value 'lend'"),
        ("coalesce: {pace: borrow}", "r.yaml:5: routes[0].coalesce.pace: borrow needs a max_hold"),
    ],
)  # fmt: skip
def test_each_mistake_is_reported_at_its_line(block: str, expected: str) -> None:
    found = problems(route_with(block + "\n"))
    assert len(found) == 1, found
    assert found[0].startswith(expected), found


def test_the_shipped_rules_coalesce_the_booking_flow_and_pass_check(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert check_file(DEFAULT) == 0
    rules = parse_rules(DEFAULT.read_text(), str(DEFAULT))
    coalescing = {r.name for r in rules.routes if r.coalesce is not None and r.coalesce.enabled}
    assert {"exam-read", "contact-read", "booking-create", "contact-credits"} <= coalescing
    borrowing = {
        r.name for r in rules.routes if r.coalesce is not None and r.coalesce.pace == "borrow"
    }
    assert borrowing == {"booking-create", "contact-credits", "notes"}  # a booking's later steps

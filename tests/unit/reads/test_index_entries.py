"""Index entries (pure): TTL edges, entry values, and HubSpot's search answer shape."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from proxy.reads.index_entries import (
    NO_DUPLICATE,
    Record,
    active_entry,
    active_id,
    end_of_date_ms,
    positive_ttl_ms,
    search_answer,
)
from proxy.rules.loader import SearchIndexRule, UntilEndOf, load_rules
from tests.kit.rules import rule_of

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
RULES = load_rules("rules/default.yaml")
DUP = rule_of(RULES, "booking-duplicate", SearchIndexRule)
IDEM = rule_of(RULES, "booking-idempotency", SearchIndexRule)


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp() * 1000)


NOW = ms(2030, 3, 15, 10, 30)


def ttl(date: str, now: int = NOW) -> int:
    return positive_ttl_ms(DUP, {"contact_id": "c1", "exam_date": date}, now)


def test_the_default_rules_carry_the_prd_ttls() -> None:
    assert DUP.positive_ttl == UntilEndOf("exam_date", DAY_MS, "UTC")
    assert DUP.negative_ttl_ms == 3 * HOUR_MS
    assert IDEM.positive_ttl == 48 * HOUR_MS and IDEM.negative_ttl_ms == 3 * HOUR_MS


def test_positive_lasts_until_the_exam_date_is_over() -> None:
    assert ttl("2030-03-25") == ms(2030, 3, 26) - NOW


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("2030-03-15", DAY_MS),  # the exam is today: 13.5 h left, the minimum wins
        ("2030-03-10", DAY_MS),  # a past date still gets the minimum
        ("2030-03-16", ms(2030, 3, 17) - NOW),  # 37.5 h left: more than the minimum
        ("not a date", DAY_MS),
        ("", DAY_MS),
    ],
)
def test_positive_ttl_edges(date: str, expected: int) -> None:
    assert ttl(date) == expected


def test_the_minimum_gives_way_exactly_at_24_hours() -> None:
    end = ms(2030, 3, 16)
    assert ttl("2030-03-15", now=end - DAY_MS) == DAY_MS
    assert ttl("2030-03-15", now=end - DAY_MS - 1) == DAY_MS + 1


def test_dates_in_hubspots_other_spellings() -> None:
    midnight = str(ms(2030, 3, 25))  # date properties as epoch ms at midnight UTC
    assert end_of_date_ms(midnight, "UTC") == ms(2030, 3, 26)
    assert end_of_date_ms("2030-03-25T00:00:00.000Z", "UTC") == ms(2030, 3, 26)
    new_york = end_of_date_ms("2030-03-25", "America/New_York")
    assert new_york == ms(2030, 3, 26, 4)  # midnight in New York (EDT) is 04:00 UTC


def test_plain_durations_ignore_the_date() -> None:
    assert positive_ttl_ms(IDEM, {"idempotency_key": "k"}, NOW) == 48 * HOUR_MS


def test_entry_values_follow_the_prd() -> None:
    assert active_entry("12345") == "12345:Active"
    assert active_id("12345:Active") == "12345"
    for untrusted in ("12345:Cancelled", NO_DUPLICATE, None, ":Active", "garbage"):
        assert active_id(untrusted) is None


def test_a_hit_has_hubspots_search_shape() -> None:
    record = Record(
        "7",
        {"contact_id": "c1", "createdate": "2030-01-01T00:00:00Z", "booking_id": None},
        created_at="2030-01-01T00:00:00Z",
        updated_at="2030-01-02T00:00:00Z",
    )
    answer = search_answer([record], ["contact_id", "booking_id", "unknown"])
    assert answer == {
        "total": 1,
        "results": [
            {
                "id": "7",
                "properties": {
                    "contact_id": "c1",
                    "booking_id": None,
                    "unknown": None,
                    "hs_object_id": "7",
                    "createdate": "2030-01-01T00:00:00Z",
                    "hs_lastmodifieddate": None,
                },
                "createdAt": "2030-01-01T00:00:00Z",
                "updatedAt": "2030-01-02T00:00:00Z",
                "archived": False,
            }
        ],
    }
    assert search_answer([], ["x"]) == {"total": 0, "results": []}


def test_records_merge_newer_sightings_over_older() -> None:
    old = Record("7", {"a": "1", "b": "1"}, "c0", "u0")
    new = Record("7", {"b": "2"}, None, "u1")
    merged = old.merged(new)
    assert merged.properties == {"a": "1", "b": "2"} and merged.created_at == "c0"
    assert merged.updated_at == "u1"
    assert Record.loads(merged.dumps()) == merged

"""The pace bucket a coalescing route's departures draw from (pure)."""

from __future__ import annotations

from proxy.budget.model import BucketSpec
from proxy.upstream.coalesce.pacing import paced

GENERAL = BucketSpec("general", 90, 10_250)
DAILY = BucketSpec("daily", 225_000, 86_400_000, "daily")


def test_departures_are_spread_one_per_window_over_limit() -> None:
    assert paced([GENERAL, DAILY]) == [GENERAL, DAILY, BucketSpec("general-pace", 1, 114)]


def test_the_pace_follows_the_first_rolling_window_of_the_call() -> None:
    associations = BucketSpec("associations", 90, 10_250)
    assert paced([associations, DAILY])[-1] == BucketSpec("associations-pace", 1, 114)


def test_a_call_without_a_rolling_window_is_not_paced() -> None:
    assert paced([DAILY]) == [DAILY]


def test_pacing_twice_adds_one_pace_bucket() -> None:
    once = paced([GENERAL, DAILY])
    assert paced(once) == once


def test_a_limit_above_the_window_in_ms_still_paces_one_per_ms() -> None:
    assert paced([BucketSpec("general", 5000, 1000)])[-1] == BucketSpec("general-pace", 1, 1)

"""The pace bucket a coalescing route's departures draw from (pure)."""

from __future__ import annotations

from dataclasses import replace

from proxy.budget.model import BucketSpec
from proxy.upstream.coalesce.pacing import IDLE_INTERVALS, pace_first, paced, same_slot

GENERAL = BucketSpec("general", 90, 10_250)
DAILY = BucketSpec("daily", 225_000, 86_400_000, "daily")
PACE = BucketSpec("general-pace", 1, 143)


def test_departures_are_spread_one_per_window_over_the_paced_share_of_the_limit() -> None:
    assert paced([GENERAL, DAILY], 0.8) == [GENERAL, DAILY, PACE]
    assert paced([GENERAL, DAILY], 1.0)[-1] == BucketSpec("general-pace", 1, 114)


def test_the_pace_follows_the_first_rolling_window_of_the_call() -> None:
    associations = BucketSpec("associations", 90, 10_250)
    assert paced([associations, DAILY], 0.8)[-1] == BucketSpec("associations-pace", 1, 143)


def test_a_call_without_a_rolling_window_is_not_paced() -> None:
    assert paced([DAILY], 0.8) == [DAILY]


def test_pacing_twice_adds_one_pace_bucket() -> None:
    once = paced([GENERAL, DAILY], 0.8)
    assert paced(once, 0.8) == once


def test_a_limit_above_the_window_in_ms_still_paces_one_per_ms() -> None:
    assert paced([BucketSpec("general", 5000, 1000)], 1.0)[-1] == BucketSpec("general-pace", 1, 1)


def test_a_borrowed_pace_is_the_same_bucket_taken_without_waiting() -> None:
    borrowed = paced([GENERAL, DAILY], 0.8, borrow=True)
    assert borrowed == [GENERAL, DAILY, replace(PACE, borrow=True)]
    assert same_slot(borrowed, paced([GENERAL, DAILY], 0.8))


def test_a_lone_call_finds_the_pace_free_only_after_it_has_been_idle() -> None:
    lone = paced([GENERAL, DAILY], 0.8, lone=True)
    assert lone[-1] == BucketSpec("general-pace", 1, 143 * IDLE_INTERVALS)
    assert same_slot(lone, paced([GENERAL, DAILY], 0.8))


def test_the_pace_is_waited_for_before_the_budget_is_taken() -> None:
    assert pace_first([GENERAL, DAILY, PACE]) == [[PACE], [GENERAL, DAILY]]


def test_a_borrowed_pace_is_taken_with_the_budget_in_one_step() -> None:
    borrowed = [GENERAL, DAILY, replace(PACE, borrow=True)]
    assert pace_first(borrowed) == [borrowed]
    assert pace_first([GENERAL, DAILY]) == [[GENERAL, DAILY]]

"""Pure admission arithmetic: the slot rule, its reference model, learned limits, fallback size."""

from __future__ import annotations

import random
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import replace
from fractions import Fraction

import pytest

from proxy.budget.model import (
    BucketSpec,
    BudgetModel,
    Priority,
    earliest_slot,
    fallback_rate,
    fallback_share,
    learned_target,
    policy_for,
    recovered_limit,
    recovery_step,
)
from proxy.hubspot.protocol import POLICY_DAILY, POLICY_SECONDLY, POLICY_TEN_SECONDLY

GENERAL = BucketSpec("general", 5, 100)
SEARCH = BucketSpec("search", 2, 50)
DAILY = BucketSpec("daily", 3, 0, kind="daily")


def max_in_any_window(slots: Sequence[int | Fraction], window: int | Fraction) -> int:
    """Brute force: the most slots in any half-open window [x, x + window)."""
    ordered = sorted(slots)
    # the fullest window can always be slid right until it starts at a slot
    return max((bisect_left(ordered, x + window) - i for i, x in enumerate(ordered)), default=0)


# -- the slot rule ------------------------------------------------------------------------------


def test_earliest_slot_is_now_while_the_window_has_room() -> None:
    assert earliest_slot([], 3, 100, 50) == 50
    assert earliest_slot([10, 20], 3, 100, 50) == 50


def test_earliest_slot_waits_for_the_nth_most_recent_to_leave_the_window() -> None:
    assert earliest_slot([10, 20, 30], 3, 100, 50) == 110
    assert earliest_slot([10, 20, 30], 2, 100, 50) == 120


def test_earliest_slot_is_monotone() -> None:
    assert earliest_slot([10, 200], 3, 100, 50) == 200


def test_n_calls_now_then_the_next_at_first_plus_window() -> None:
    model = BudgetModel()
    slots = [model.admit([GENERAL], 1000, 10_000, f"t{i}").slot_ms for i in range(6)]
    assert slots == [1000] * 5 + [1100]


def test_a_plan_past_max_ms_reserves_nothing() -> None:
    model = BudgetModel()
    for i in range(5):
        model.admit([GENERAL], 0, 0, f"t{i}")
    plan = model.admit([GENERAL], 10, 50, "late")
    assert (plan.status, plan.slot_ms, plan.bucket) == ("later", 100, "general")
    assert len(model.logs["general"]) == 5


def test_all_or_nothing_across_buckets() -> None:
    model = BudgetModel()
    for i in range(2):
        assert model.admit([SEARCH, DAILY], 0, 0, f"t{i}", reset_ms=9999).status == "reserved"
    plan = model.admit([SEARCH, DAILY], 1, 0, "t2", reset_ms=9999)
    assert (plan.status, plan.bucket) == ("later", "search")
    assert model.daily["daily"] == 2  # the daily unit was not taken
    assert model.admit([SEARCH, DAILY], 50, 0, "t3", reset_ms=9999).status == "reserved"
    plan = model.admit([SEARCH, DAILY], 200, 0, "t4", reset_ms=9999)
    assert (plan.status, plan.slot_ms, plan.bucket) == ("daily_full", 9999, "daily")
    assert all(token != "t4" for _, token in model.logs["search"])


PACE = BucketSpec("general-pace", 1, 100)


def test_a_borrowed_pace_is_taken_without_waiting_and_paid_by_the_next_waiter() -> None:
    model = BudgetModel()
    assert model.admit([GENERAL, PACE], 0, 1000, "first").slot_ms == 0
    borrowed = replace(PACE, borrow=True)
    for i in range(3):  # a flow's later steps leave now; the pace's slots are theirs all the same
        plan = model.admit([GENERAL, borrowed], 10, 0, f"step{i}")
        assert (plan.status, plan.slot_ms) == ("reserved", 10)
    assert [t for t, _ in model.logs["general-pace"]] == [0, 100, 200, 300]
    waiter = model.admit([GENERAL, PACE], 10, 1000, "next-flow")
    assert (waiter.slot_ms, waiter.bucket) == (400, "general-pace")


def test_a_borrower_still_waits_for_the_buckets_it_does_not_borrow() -> None:
    model = BudgetModel()
    for i in range(5):
        model.admit([GENERAL], 0, 1000, f"t{i}")
    plan = model.admit([GENERAL, replace(PACE, borrow=True)], 10, 1000, "step")
    assert (plan.slot_ms, plan.bucket) == (100, "general")
    assert model.logs["general-pace"] == [(100, "step")]  # at the call's slot: never before it
    assert model.admit([GENERAL, replace(PACE, borrow=True)], 10, 0, "x").status == "later"


def test_pause_pushes_the_slot() -> None:
    model = BudgetModel()
    model.pause("general", 0, 300)
    plan = model.admit([GENERAL], 100, 1000, "t")
    assert (plan.status, plan.slot_ms) == ("reserved", 300)


def test_release_gives_the_slot_back() -> None:
    model = BudgetModel()
    for i in range(5):
        model.admit([GENERAL], 0, 1000, f"t{i}")
    assert model.admit([GENERAL], 0, 1000, "x").slot_ms == 100
    model.release([GENERAL], "x")
    assert model.admit([GENERAL], 0, 1000, "y").slot_ms == 100


@pytest.mark.parametrize("seed", range(300))
def test_random_arrivals_never_exceed_the_limit_in_any_window(seed: int) -> None:
    rng = random.Random(seed)
    specs = [
        BucketSpec("a", rng.randint(1, 6), rng.randint(5, 80)),
        BucketSpec("b", rng.randint(1, 6), rng.randint(5, 80)),
    ]
    model = BudgetModel()
    kept: dict[str, dict[str, int]] = {"a": {}, "b": {}}
    now = 0
    for i in range(rng.randint(20, 120)):
        now += rng.choice([0, 0, 1, 3, 10, 40])
        chosen = rng.sample(specs, rng.randint(1, 2))
        plan = model.admit(chosen, now, rng.choice([0, 5, 50, 10_000]), f"t{i}")
        if plan.status == "reserved":
            for spec in chosen:
                kept[spec.name][f"t{i}"] = plan.slot_ms
        if rng.random() < 0.1 and kept["a"]:
            token = rng.choice(list(kept["a"]))
            model.release(specs, token)
            for bucket in kept.values():
                bucket.pop(token, None)
        if rng.random() < 0.05:
            model.learn(specs[0], 10, rng.randint(0, 10), now)
    for spec in specs:
        assert max_in_any_window(list(kept[spec.name].values()), spec.window_ms) <= spec.limit


@pytest.mark.parametrize("seed", range(50))
def test_alone_the_slots_are_the_greedy_schedule(seed: int) -> None:
    """One bucket, no releases, unlimited max_ms: each slot is as early as the rule allows."""
    rng = random.Random(seed)
    spec = BucketSpec("a", rng.randint(1, 5), rng.randint(10, 50))
    model = BudgetModel()
    now, slots = 0, list[int]()
    for i in range(60):
        now += rng.choice([0, 1, 7, 30])
        slot = model.admit([spec], now, 10**9, f"t{i}").slot_ms
        floor = max([now, *slots[-1:]])
        if i >= spec.limit:
            floor = max(floor, slots[i - spec.limit] + spec.window_ms)
        assert slot == floor
        slots.append(slot)
    assert max_in_any_window(slots, spec.window_ms) <= spec.limit


# -- learned limits -----------------------------------------------------------------------------


def test_learned_target_shrinks_by_the_share_others_spend() -> None:
    assert learned_target(90, 100, 40, 0) == 36  # others spent 60 of 100: keep 40% of 90
    assert learned_target(90, 100, 40, 60) is None  # all of it was ours
    assert learned_target(90, 100, 0, 10) == 9
    assert learned_target(90, 100, -5, 0) == 1  # never below one call per window


def test_learned_limit_recovers_a_tenth_per_window() -> None:
    assert recovery_step(90) == 9
    assert recovery_step(30) == 3
    assert recovery_step(3) == 1
    assert recovered_limit(90, 36, 1000, 100, 1050) == 36
    assert recovered_limit(90, 36, 1000, 100, 1100) == 45
    assert recovered_limit(90, 36, 1000, 100, 1000 + 100 * 20) == 90


def test_model_learn_applies_and_recovers() -> None:
    model = BudgetModel()
    spec = BucketSpec("general", 10, 100)
    assert model.learn(spec, 100, 50, 0) == 5
    assert model.effective_limit(spec, 99) == 5
    assert model.effective_limit(spec, 100) == 6
    assert model.learn(spec, 100, 90, 100) == 6  # a milder reading does not raise it at once


# -- fallback sizing ----------------------------------------------------------------------------


def leaky_bucket_admissions(
    arrivals: Sequence[Fraction], max_rate: int, period: Fraction
) -> list[Fraction]:
    """Exact model of aiolimiter.AsyncLimiter: admit when level + 1 <= max_rate, drain steadily."""
    rate = max_rate / period
    level, last, out = Fraction(0), Fraction(0), []
    for arrival in sorted(arrivals):
        t = max(arrival, last)
        level = max(Fraction(0), level - (t - last) * rate)
        if level + 1 > max_rate:
            t += (level + 1 - max_rate) / rate
            level = Fraction(max_rate - 1)
        level, last = level + 1, t
        out.append(t)
    return out


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 10, 100, 171])
@pytest.mark.parametrize("replicas", [1, 2, 3])
def test_fallback_sizing_keeps_every_window_within_the_share(limit: int, replicas: int) -> None:
    window_ms = 1000
    max_rate, period_s = fallback_rate(limit, replicas, window_ms)
    period = Fraction(period_s).limit_denominator(10**6)
    rng = random.Random(limit * 10 + replicas)
    arrivals = [Fraction(0)] * (3 * limit) + [
        Fraction(rng.randint(0, 5000), 1000) for _ in range(5 * limit)
    ]
    admitted = leaky_bucket_admissions(arrivals, max_rate, period)
    assert max_in_any_window(admitted, Fraction(1)) <= fallback_share(limit, replicas)


def test_a_leaky_bucket_sized_at_the_share_lets_twice_through() -> None:
    admitted = leaky_bucket_admissions([Fraction(0)] * 40, 10, Fraction(1))
    assert max_in_any_window(admitted, Fraction(1)) == 19


# -- small things -------------------------------------------------------------------------------


def test_policies() -> None:
    assert policy_for(BucketSpec("general", 90, 10_000)) == POLICY_TEN_SECONDLY
    assert policy_for(BucketSpec("search", 4, 1000)) == POLICY_SECONDLY
    assert policy_for(BucketSpec("daily", 1000, 0, kind="daily")) == POLICY_DAILY
    assert policy_for(BucketSpec("search", 4, 2000)) == POLICY_SECONDLY
    assert policy_for(BucketSpec("associations", 90, 10_000)) == POLICY_TEN_SECONDLY
    assert policy_for(BucketSpec("other", 4, 1000)) == POLICY_SECONDLY


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "", "limit": 1, "window_ms": 1},
        {"name": "a:b", "limit": 1, "window_ms": 1},
        {"name": "a", "limit": 0, "window_ms": 1},
        {"name": "a", "limit": 1, "window_ms": 0},
        {"name": "a", "limit": 1, "window_ms": 0, "kind": "daily", "borrow": True},
    ],
)
def test_bucket_spec_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        BucketSpec(**kwargs)  # type: ignore[arg-type]


def test_priority_order() -> None:
    assert sorted([Priority.BACKGROUND, Priority.INTERACTIVE, Priority.DEFAULT]) == [
        Priority.INTERACTIVE,
        Priority.DEFAULT,
        Priority.BACKGROUND,
    ]

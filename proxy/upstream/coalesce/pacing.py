"""Pacing: a credential's coalesced departures spread evenly over HubSpot's window (pure).

A burst must not spend the whole 10 s window on singles in its first second and leave the rest
waiting for the window to roll. So every departure of a coalescing route, a lone call or a batch
call, also takes a slot of a pace bucket: one departure per window / (limit x
`limits.pace_share`) of the budget it draws from (143 ms for 0.8 of Starter's 90 per 10.25 s
guarded window), kept in Redis like every bucket, so all replicas share one pace. The share left
over is for the calls that do not coalesce (write-behind batches, the counter sync, admin
scripts): paced at the whole budget, a burst filled the window they need (N=100: 1.11-1.14
calls per booking and p99 2.1-2.6 s at 0.9; 0.95-0.98 and 1.8 s at 0.8).

A lone call leaves at once when the pace has been idle (IDLE_INTERVALS); otherwise its group
waits for its paced slot while compatible calls join, and leaves with all of them. The pace is
waited for first and the budget taken when the pace slot has come (`pace_first`).

A route with `coalesce.pace: borrow` (the later steps of a flow already under way) gathers for
its `max_hold` and then leaves without waiting for the pace: its departure takes the pace's next
slot all the same, so the calls that do wait for the pace (a flow's first step) wait for it.
A flow's steps then move in platoons: the callers one batch answered send their next calls
together, those ride together at once, and the pace's wait is paid once per flow, at its
first step, instead of once per step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

from proxy.budget.model import BucketSpec

PACE_SUFFIX = "-pace"


# A lone call leaves at once only when the pace has seen no departure for this many of its
# intervals: the budget is free. In a burst the pace is never that idle, so the first call of a
# kind gathers too, instead of leaving alone and taking a pace slot for one caller.
IDLE_INTERVALS: Final = 3


def paced(
    buckets: Sequence[BucketSpec], share: float, *, borrow: bool = False, lone: bool = False
) -> list[BucketSpec]:
    """`buckets` plus the pace bucket of the first rolling window among them (none: as is),
    one departure per window / (limit x `share`); `borrow`: the pace's slot is taken without
    waiting for it; `lone`: the pace as a lone call sees it (free only after IDLE_INTERVALS
    without a departure)."""
    window = next((b for b in buckets if b.kind == "window"), None)
    if window is None or any(b.name.endswith(PACE_SUFFIX) for b in buckets):
        return list(buckets)
    interval_ms = max(1, math.ceil(window.window_ms / (window.limit * share)))
    if lone:
        interval_ms *= IDLE_INTERVALS
    return [*buckets, BucketSpec(window.name + PACE_SUFFIX, 1, interval_ms, borrow=borrow)]


def pace_first(buckets: Sequence[BucketSpec]) -> list[list[BucketSpec]]:
    """The admissions a departure waits for, in order: a pace it waits for alone first, then
    the budget (with a borrowed pace). Reserving the budget at a paced slot ahead would put
    that slot in the budget's log ahead of now, and a flow's later steps, which borrow the
    pace, could then only leave after it: the budget is taken when the pace slot has come."""
    waited = [b for b in buckets if b.name.endswith(PACE_SUFFIX) and not b.borrow]
    rest = [b for b in buckets if b not in waited]
    return [waited, rest] if waited and rest else [list(buckets)]


def same_slot(a: Sequence[BucketSpec], b: Sequence[BucketSpec]) -> bool:
    """Whether a slot reserved for `a` is one for `b`: the same buckets (a pace however taken)."""
    return [s.name for s in a] == [s.name for s in b]

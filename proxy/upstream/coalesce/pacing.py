"""Pacing: a credential's coalesced departures spread evenly over HubSpot's window (pure).

A burst must not spend the whole 10 s window on singles in its first second and leave the rest
waiting for the window to roll. So every departure of a coalescing route, a lone call or a batch
call, also takes a slot of a pace bucket: one departure per `window / limit` of the budget it
draws from (114 ms for Starter's 90 per 10.25 s guarded window), kept in Redis like every bucket,
so all replicas share one pace. When the pace slot is free a lone call leaves at once; when it is
not, the call's group waits for its paced slot while compatible calls join, and leaves with all
of them. With K kinds of call busy, each kind leaves every K x window / limit: no fixed hold,
only the wait the budget needs anyway.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from proxy.budget.model import BucketSpec

PACE_SUFFIX = "-pace"


def paced(buckets: Sequence[BucketSpec]) -> list[BucketSpec]:
    """`buckets` plus the pace bucket of the first rolling window among them (none: as is)."""
    window = next((b for b in buckets if b.kind == "window"), None)
    if window is None or any(b.name.endswith(PACE_SUFFIX) for b in buckets):
        return list(buckets)
    interval_ms = max(1, math.ceil(window.window_ms / window.limit))
    return [*buckets, BucketSpec(window.name + PACE_SUFFIX, 1, interval_ms)]

"""How long calls of one kind gather before leaving: longer as HubSpot's budget runs low (pure).

With budget to spare a call is held for nothing; as the share of the 10 s window already spent
(HubSpot's own `X-HubSpot-RateLimit-Remaining` of `-Max`, on the last answer seen for the
credential) grows, calls gather for up to the route's `max_hold`. A kind of call then leaves
at most once per hold, so a burst cannot spend the whole window on singles in its first second:
with K kinds busy, departures settle at K / hold per second, under the budget's refill when
`max_hold >= K x window / limit`. Before any answer is seen, the hold is the whole `max_hold`.
"""

from __future__ import annotations

from proxy.upstream.rate_headers import RateLimitSnapshot


def hold_s(max_hold_s: float, seen: RateLimitSnapshot | None) -> float:
    if seen is None or not seen.max or seen.remaining is None:
        return max_hold_s
    spent = 1 - max(0, min(seen.remaining, seen.max)) / seen.max
    return max_hold_s * spent

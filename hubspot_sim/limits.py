"""HubSpot's per-token limits, enforced exactly with sliding logs (never a token bucket).

A call at time t is admitted when fewer than N admitted calls arrived in (t - W, t]; so no
half-open window of length W ever holds more than N admitted calls. Refused calls (429) are not
recorded: HubSpot did not process them, and counting them would let a client that keeps retrying
lock itself out forever, which is not what HubSpot's rolling policy does.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from proxy.hubspot.protocol import POLICY_DAILY, POLICY_SECONDLY, POLICY_TEN_SECONDLY

from .config import SimConfig

KIND_GENERAL: Final = "general"
KIND_SEARCH: Final = "search"
KIND_ASSOC_BATCH: Final = "assoc_batch"

BUCKET_GENERAL: Final = "general"
BUCKET_SEARCH: Final = "search"
BUCKET_DAILY: Final = "daily"
BUCKETS: Final = (BUCKET_GENERAL, BUCKET_SEARCH, BUCKET_DAILY)


class SlidingLog:
    """Arrival times of the calls inside one rolling window."""

    __slots__ = ("_times",)

    def __init__(self) -> None:
        self._times: deque[float] = deque()

    def count(self, now: float, window_s: float) -> int:
        cutoff = now - window_s
        times = self._times
        while times and times[0] <= cutoff:
            times.popleft()
        return len(times)

    def add(self, now: float, n: int = 1) -> None:
        self._times.extend([now] * n)


class DailyCounter:
    """A fixed window: HubSpot resets the daily quota at midnight, not on a rolling basis.

    Periods are counted from the simulator's start (`origin`), so a shrunken `daily_window_s`
    resets predictably in tests.
    """

    __slots__ = ("_count", "_origin", "_period")

    def __init__(self, origin: float) -> None:
        self._origin = origin
        self._period = -1
        self._count = 0

    def count(self, now: float, window_s: float) -> int:
        period = int((now - self._origin) // window_s)
        if period != self._period:
            self._period = period
            self._count = 0
        return self._count

    def add(self, now: float, window_s: float, n: int = 1) -> None:
        self.count(now, window_s)
        self._count += n


class TokenBudget:
    """The three budgets one token draws on."""

    __slots__ = ("daily", "general", "search")

    def __init__(self, origin: float) -> None:
        self.general = SlidingLog()
        self.search = SlidingLog()
        self.daily = DailyCounter(origin)

    def admit(self, kind: str, now: float, cfg: SimConfig) -> str | None:
        """Record the call and return None, or return the refusing policy (nothing recorded)."""
        if self.daily.count(now, cfg.daily_window_s) >= cfg.daily_max:
            return POLICY_DAILY
        if kind == KIND_SEARCH:
            # Search is exempt from the 10 s bucket but has its own per-second one.
            if self.search.count(now, cfg.search_window_s) >= cfg.search_limit:
                return POLICY_SECONDLY
            self.search.add(now)
        elif kind == KIND_GENERAL:
            if self.general.count(now, cfg.general_window_s) >= cfg.general_max:
                return POLICY_TEN_SECONDLY
            self.general.add(now)
        # Association batch calls skip the 10 s bucket; every admitted call counts per day.
        self.daily.add(now, cfg.daily_window_s)
        return None

    def spend(self, bucket: str, count: int, now: float, cfg: SimConfig) -> None:
        """Calls made by another integration on the same budget (they count per day too)."""
        if bucket == BUCKET_GENERAL:
            self.general.add(now, count)
        elif bucket == BUCKET_SEARCH:
            self.search.add(now, count)
        elif bucket != BUCKET_DAILY:
            raise ValueError(f"unknown bucket {bucket!r}; expected one of {list(BUCKETS)}")
        self.daily.add(now, cfg.daily_window_s, count)

    def usage(self, now: float, cfg: SimConfig) -> dict[str, int]:
        return {
            BUCKET_GENERAL: self.general.count(now, cfg.general_window_s),
            BUCKET_SEARCH: self.search.count(now, cfg.search_window_s),
            BUCKET_DAILY: self.daily.count(now, cfg.daily_window_s),
        }

    def headers(self, now: float, cfg: SimConfig) -> dict[str, str]:
        """HubSpot's rate-limit headers for the general policy (non-search responses only)."""
        used = self.general.count(now, cfg.general_window_s)
        daily_used = self.daily.count(now, cfg.daily_window_s)
        return {
            "X-HubSpot-RateLimit-Max": str(cfg.general_max),
            "X-HubSpot-RateLimit-Remaining": str(max(0, cfg.general_max - used)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(round(cfg.general_window_s * 1000)),
            "X-HubSpot-RateLimit-Daily": str(cfg.daily_max),
            "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, cfg.daily_max - daily_used)),
        }

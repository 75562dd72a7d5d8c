"""In-process budget used while Redis is unreachable (`store.health` says when).

While in fallback each replica holds `limit // expected_replicas` per bucket (its share), so the
replicas together stay within the limit without talking to each other. Window buckets use
aiolimiter's leaky bucket sized by `budget.fallback_rate` (a leaky bucket lets up to twice its
capacity through one rolling window, so it holds half the share). Daily buckets keep a local
counter of the share. Calls admitted here are unknown to Redis: a replica in fallback while the
others still reach Redis can add its share on top of the limit for as long as that split lasts.

The switches themselves are guarded so that, for one replica, no rolling window holds more than
the limit across them: the in-process budget of a bucket starts as full as the slots Redis gave
this replica make it, after the last of them (`prefill`), and `take_recent` tells the limiter
which calls admitted here are still in their window, to add to Redis's window logs once it
answers again (`absorb.lua`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiolimiter import AsyncLimiter

from proxy.budget.model import BucketSpec, BudgetExceeded, fallback_rate, fallback_share, policy_for

log = logging.getLogger("proxy.limiter")


@dataclass
class _DailyCount:
    reset_ms: int
    used: int


def drop_cred(kept: MutableMapping[Any, Any], cred: str) -> None:
    """Drop the entries of `cred` from a mapping keyed by (cred, bucket, ...)."""
    for key in [k for k in kept if k[0] == cred]:
        del kept[key]


class LocalBudget:
    """This replica's share of every bucket, kept in process."""

    def __init__(
        self,
        *,
        expected_replicas: int,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._replicas = max(1, expected_replicas)
        self._clock = clock
        self._sleep = sleep
        self._wall_ms = wall_ms
        self._windows: dict[tuple[str, str, int, int], AsyncLimiter] = {}
        self._daily: dict[tuple[str, str], _DailyCount] = {}
        self._pauses: dict[tuple[str, str], float] = {}
        # (cred, bucket) -> the window's length (s) and the local clock times of the calls
        # admitted here in it, for Redis to count once it answers again
        self._admitted: dict[tuple[str, str], tuple[float, deque[float]]] = {}

    def pause(self, cred: str, bucket: str, seconds: float) -> None:
        key = (cred, bucket)
        self._pauses[key] = max(self._pauses.get(key, -math.inf), self._clock() + seconds)

    async def acquire(
        self, cred: str, specs: Sequence[BucketSpec], deadline: float, reset_ms: int | None
    ) -> int:
        """Wait for room in every bucket (or raise BudgetExceeded); returns the wall-clock ms."""
        self._check_daily(cred, specs, reset_ms)
        await self._wait_pauses(cred, specs, deadline)
        for spec in specs:
            # A borrowed pace is not waited for; a leaky bucket cannot hold a slot ahead, so
            # in process the borrowing call leaves the pace as it is.
            if spec.kind == "window" and not spec.borrow:
                await self._acquire_window(cred, spec, deadline)
        self._take_daily(cred, specs, reset_ms)
        return self._wall_ms()

    def give_back(self, cred: str, specs: Sequence[BucketSpec]) -> None:
        """Return daily units (leaky-bucket capacity, already spent, is not returned)."""
        for spec in specs:
            count = self._daily.get((cred, spec.name))
            if spec.kind == "daily" and count is not None:
                count.used = max(0, count.used - 1)

    async def _wait_pauses(self, cred: str, specs: Sequence[BucketSpec], deadline: float) -> None:
        for spec in specs:
            left = self._pauses.get((cred, spec.name), -math.inf) - self._clock()
            if left <= 0:
                continue
            if self._clock() + left > deadline:
                raise BudgetExceeded(left, spec.name, policy_for(spec))
            await self._sleep(left)

    async def prefill(self, cred: str, spec: BucketSpec, used: int, hold_s: float) -> None:
        """Start the bucket's in-process budget as if `used` calls had been admitted here
        `hold_s` from now (the last slot Redis gave this replica, which may lie ahead).

        Both forms keep this replica's calls in any window within its share (twice the leaky
        bucket's capacity `c`): starting now at level `used` <= c lets through at most
        `2c - used` more while those calls are in the window; otherwise an empty bucket starts
        `used / c` periods after the hold, when the calls it must count fill at most
        `used - c x elapsed` of the window, and none once `used >= c`.
        """
        key = (cred, spec.name, spec.limit, spec.window_ms)
        self._windows.pop(key, None)
        limiter = self._limiter(cred, spec)
        capacity = int(limiter.max_rate)
        if hold_s <= 0 and used <= capacity:
            if used > 0:
                await limiter.acquire(used)  # a fresh bucket: never blocks
            return
        self.pause(cred, spec.name, max(0.0, hold_s) + used * limiter.time_period / capacity)

    @property
    def has_recent(self) -> bool:
        """Whether calls were admitted here since Redis last heard of them."""
        return bool(self._admitted)

    def take_recent(self) -> dict[tuple[str, str], tuple[float, list[float]]]:
        """For each (cred, bucket): its window (s) and the local clock times of the calls
        admitted here still in it; Redis is to count them now (`put_back` what it could not)."""
        now = self._clock()
        taken = {}
        for key, (window_s, times) in self._admitted.items():
            recent = [at for at in times if now - at < window_s]
            if recent:
                taken[key] = (window_s, recent)
        self._admitted.clear()
        return taken

    def put_back(self, taken: Mapping[tuple[str, str], tuple[float, list[float]]]) -> None:
        """Calls `take_recent` gave that Redis did not get: to hand back again."""
        for (cred, bucket), (window_s, times) in taken.items():
            self._note_admitted(cred, bucket, window_s, len(times), times)

    def _note_admitted(
        self, cred: str, bucket: str, window_s: float, limit: int, times: Sequence[float]
    ) -> None:
        kept = self._admitted.get((cred, bucket))
        if kept is None or (kept[1].maxlen or 0) < limit:
            # Bounded: more calls than the limit cannot matter to a window of `limit`.
            so_far = kept[1] if kept is not None else ()
            kept = self._admitted[(cred, bucket)] = (window_s, deque(so_far, maxlen=limit))
        kept[1].extend(times)

    def forget(self, cred: str) -> None:
        """Drop what this replica keeps for `cred` (HubSpot refused it and never accepted it):
        no pause is handed to Redis for it, and made-up tokens do not accumulate here."""
        for kept in (self._windows, self._daily, self._pauses, self._admitted):
            drop_cred(kept, cred)

    async def _acquire_window(self, cred: str, spec: BucketSpec, deadline: float) -> None:
        await self._take_window(cred, spec, deadline)
        self._note_admitted(cred, spec.name, spec.window_ms / 1000, spec.limit, [self._clock()])

    async def _take_window(self, cred: str, spec: BucketSpec, deadline: float) -> None:
        limiter = self._limiter(cred, spec)
        if limiter.has_capacity():
            await limiter.acquire()
            return
        try:
            async with asyncio.timeout(max(0.0, deadline - self._clock())):
                await limiter.acquire()
        except TimeoutError:
            retry = limiter.time_period / limiter.max_rate
            raise BudgetExceeded(retry, spec.name, policy_for(spec)) from None

    def _limiter(self, cred: str, spec: BucketSpec) -> AsyncLimiter:
        key = (cred, spec.name, spec.limit, spec.window_ms)
        limiter = self._windows.get(key)
        if limiter is None:
            max_rate, period_s = fallback_rate(spec.limit, self._replicas, spec.window_ms)
            limiter = self._windows[key] = AsyncLimiter(max_rate, period_s)
        return limiter

    def _daily_count(self, cred: str, spec: BucketSpec, reset_ms: int | None) -> _DailyCount:
        key = (cred, spec.name)
        count = self._daily.get(key)
        reset = reset_ms or 0
        if count is None or count.reset_ms != reset or self._wall_ms() >= count.reset_ms:
            count = self._daily[key] = _DailyCount(reset, 0)
        return count

    def _check_daily(self, cred: str, specs: Sequence[BucketSpec], reset_ms: int | None) -> None:
        for spec in specs:
            if spec.kind != "daily":
                continue
            count = self._daily_count(cred, spec, reset_ms)
            if count.used + 1 > fallback_share(spec.limit, self._replicas):
                retry = max(0.0, (count.reset_ms - self._wall_ms()) / 1000)
                raise BudgetExceeded(retry, spec.name, policy_for(spec))

    def _take_daily(self, cred: str, specs: Sequence[BucketSpec], reset_ms: int | None) -> None:
        self._check_daily(cred, specs, reset_ms)
        for spec in specs:
            if spec.kind == "daily":
                self._daily_count(cred, spec, reset_ms).used += 1

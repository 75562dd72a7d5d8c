"""How far behind this process is: the gateway's own sign of overload.

Budget admission keeps HubSpot's limits; it cannot see that the process itself is behind. When
more calls arrive than the CPU serves, every call waits for the event loop and for its Redis
replies, a booking's steps slow down together, and bookings already under way run out of their
client's time after their booking exists (half done). A flow's first call (`limits.admissions`)
is therefore refused while the process is further behind than the rules allow
(`admissions.max_delay`), so the CPU goes to the flows already started.

Two readings; the larger counts:
- the calls the process answers itself (cache, index, `respond`, an accepted write) do no
  upstream call and wait for no budget, so their time is the process's own: event-loop turns
  and Redis round trips, which stretch as the CPU saturates. Their mean per TICK_S is folded
  into a value that decays by half in HALF_LIFE_S.
- a timer due every TICK_S measures how late it runs, rising at once and decaying likewise; a
  read while the timer is overdue counts the overdue time, so a blocked loop shows at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

TICK_S = 0.025
HALF_LIFE_S = 0.5
_DECAY = 0.5 ** (TICK_S / HALF_LIFE_S)


class Overload:
    def __init__(self, on_change: Callable[[float], None] | None = None) -> None:
        """`on_change(behind_s)` after every tick: the gauge that shows it."""
        self._on_change = on_change
        self._late_s = 0.0
        self._answers_s = 0.0
        self._tick_sum = 0.0
        self._tick_count = 0
        self._due: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._arm()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._due = self._loop = None

    def answered_locally(self, seconds: float) -> None:
        """A call the process answered itself took `seconds` (budget and load waits excluded)."""
        self._tick_sum += seconds
        self._tick_count += 1

    def past(self, limit_ms: int | None) -> bool:
        """Whether the process is further behind than `limit_ms` (never, for None)."""
        return limit_ms is not None and self.behind_s() * 1000 > limit_ms

    def behind_s(self) -> float:
        """How far behind the process is now, in seconds."""
        behind = max(self._late_s, self._answers_s)
        if self._loop is None or self._due is None:
            return behind
        return max(behind, self._loop.time() - self._due)

    def _arm(self) -> None:
        assert self._loop is not None
        self._due = self._loop.time() + TICK_S
        self._timer = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None and self._due is not None
        late = max(0.0, self._loop.time() - self._due)
        self._late_s = max(late, self._late_s * _DECAY)
        self._answers_s *= _DECAY
        if self._tick_count:
            self._answers_s += (1 - _DECAY) * self._tick_sum / self._tick_count
            self._tick_sum, self._tick_count = 0.0, 0
        if self._on_change is not None:
            self._on_change(self.behind_s())
        self._arm()

"""A clock tests move by hand, so a test proves a window or a wait without sleeping through it."""

from __future__ import annotations

import asyncio


class ManualClock:
    """Monotonic time that moves only when told; sleeps on it are recorded and return at once."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # still a suspension point, as a real sleep is

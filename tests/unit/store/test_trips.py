"""Trips: calls made while a round trip is out leave together in the next, each answered."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from proxy.store.trips import Call, Trips


class Sender:
    def __init__(self) -> None:
        self.trips: list[list[Any]] = []
        self.release = asyncio.Event()
        self.fail: Exception | None = None

    async def __call__(self, calls: Sequence[Call]) -> list[Any]:
        self.trips.append([args[0] for _, args in calls])
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [ValueError(a[0]) if a[0] == "bad" else f"r{a[0]}" for _, a in calls]


async def test_calls_made_while_a_trip_is_out_leave_together_in_order() -> None:
    sender = Sender()
    trips = Trips(sender, max_trip=4)
    first = trips.call(["k"], ["0"])
    await asyncio.sleep(0)  # the first trip leaves alone
    rest = [trips.call(["k"], [str(n)]) for n in range(1, 7)]
    sender.release.set()
    assert await first == "r0"
    assert await asyncio.gather(*rest) == [f"r{n}" for n in range(1, 7)]
    assert sender.trips == [["0"], ["1", "2", "3", "4"], ["5", "6"]]


async def test_a_call_error_is_its_own_and_a_trip_error_is_everyones() -> None:
    sender = Sender()
    trips = Trips(sender)
    good, bad = trips.call([], ["a"]), trips.call([], ["bad"])
    sender.release.set()
    assert await good == "ra"
    with pytest.raises(ValueError, match="bad"):
        await bad
    sender.fail = ConnectionError("gone")
    both = [trips.call([], ["b"]), trips.call([], ["c"])]
    results = await asyncio.gather(*both, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_a_cancelled_caller_is_not_sent() -> None:
    sender = Sender()
    trips = Trips(sender)
    first = trips.call([], ["0"])
    await asyncio.sleep(0)
    gone, kept = trips.call([], ["1"]), trips.call([], ["2"])
    gone.cancel()
    sender.release.set()
    assert await first == "r0"
    assert await kept == "r2"
    assert sender.trips == [["0"], ["2"]]

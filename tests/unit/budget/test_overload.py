"""How far behind the process is: a late event loop and slow local answers both show, and fade."""

from __future__ import annotations

import asyncio
import time

from proxy.budget.overload import Overload
from tests.kit.waiting import eventually


async def test_a_blocked_loop_shows_at_once_and_fades() -> None:
    shown: list[float] = []
    overload = Overload(on_change=shown.append)
    overload.start()
    try:
        await eventually(lambda: bool(shown))
        time.sleep(0.3)  # noqa: ASYNC251 -- the loop blocked on purpose: the tick is overdue
        assert overload.behind_s() >= 0.25
        await asyncio.sleep(0)
        await eventually(lambda: overload.behind_s() < 0.05)
        assert max(shown) >= 0.25  # the gauge saw it too
    finally:
        overload.stop()
    assert overload.behind_s() < 0.05


async def test_slow_local_answers_raise_it_and_it_fades_when_they_stop() -> None:
    overload = Overload()
    overload.start()
    try:

        async def slow_answers() -> None:
            while True:
                overload.answered_locally(2.0)
                await asyncio.sleep(0.005)

        feeding = asyncio.create_task(slow_answers())
        await eventually(lambda: overload.behind_s() > 1.0)
        feeding.cancel()
        await eventually(lambda: overload.behind_s() < 0.1)
    finally:
        overload.stop()

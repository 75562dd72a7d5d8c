"""Pacing: while calls keep coming, they gather more as the window is spent, so a stream of
calls does not spend the whole budget on singles and leave the rest waiting for the window."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.kit.harness import AUTH

CALLS = 30
# A budget of 20 per 10 s, and holds of up to 500 ms.
pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.parametrize(("limit", "window_s", "max_hold"), [(20, 10, "500ms")]),
]


async def test_a_stream_of_reads_spends_less_than_the_budget(gateway: Any, world: Any) -> None:
    ids = await world.seed("0-1", *({"email": f"c{i}@example.com"} for i in range(CALLS)))

    async def read(delay_s: float, object_id: str) -> int:
        await asyncio.sleep(delay_s)
        resp = await gateway.get(f"/crm/v3/objects/contacts/{object_id}", headers=AUTH)
        status: int = resp.status
        return status

    statuses = await asyncio.gather(*(read(0.02 * n, i) for n, i in enumerate(ids)))

    calls = await world.calls()
    assert statuses == [200] * CALLS
    # Without pacing each read would leave alone: 20 singles spend the window and the last 10
    # wait for it. Paced, the stream costs well under the budget and nobody waits for a window.
    assert len(calls) <= 14, calls
    assert ("POST", "/crm/v3/objects/contacts/batch/read") in calls
    assert await world.rate_limited() == 0

"""Pacing: every departure of a coalescing route takes a paced slot (one per window / limit), so
a stream of calls gathers into batch calls instead of spending the window on singles."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.kit.harness import AUTH

CALLS = 30
# A budget of 20 per 10 s: one departure per ~513 ms. Next to no hold: calls gather while their
# group waits for its paced slot.
pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.parametrize(("limit", "window_s", "max_hold"), [(20, 10, "1ms")]),
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
    # Unpaced, each read finding budget free would leave alone: 20 singles would spend the
    # window and the last 10 wait for it. Paced, the first leaves alone and the rest ride in
    # the batch reads of the next slots (~0.5 s apart): a handful of calls for 30 reads.
    assert len(calls) <= 6, calls
    assert calls[0] == ("GET", f"/crm/v3/objects/contacts/{ids[0]}")
    assert ("POST", "/crm/v3/objects/contacts/batch/read") in calls
    assert await world.rate_limited() == 0


async def test_kinds_share_the_pace_and_each_leaves_with_what_gathered(
    gateway: Any, world: Any
) -> None:
    ids = await world.seed("0-1", *({"email": f"c{i}@example.com"} for i in range(CALLS)))

    async def read(object_id: str) -> int:
        resp = await gateway.get(f"/crm/v3/objects/contacts/{object_id}", headers=AUTH)
        return int(resp.status)

    async def update(object_id: str) -> int:
        body = {"properties": {"firstname": "paced"}}
        resp = await gateway.patch(f"/crm/v3/objects/contacts/{object_id}", json=body, headers=AUTH)
        return int(resp.status)

    reads = [read(i) for i in ids[: CALLS // 2]]
    updates = [update(i) for i in ids[CALLS // 2 :]]
    statuses = await asyncio.gather(*reads, *updates)

    assert statuses == [200] * CALLS
    calls = await world.calls()
    # All arrive at once: at most one of them finds the pace slot free and leaves alone; the
    # others wait in one group per kind and leave in that kind's next paced slot.
    assert len(calls) <= 4, calls
    assert {path for _, path in calls} >= {
        "/crm/v3/objects/contacts/batch/read",
        "/crm/v3/objects/contacts/batch/update",
    }
    assert await world.rate_limited() == 0

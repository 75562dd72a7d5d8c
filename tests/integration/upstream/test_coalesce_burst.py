"""Coalescing under backpressure, counted at the simulator: calls waiting for budget leave as
batch calls; a lone call with budget free leaves as itself."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from tests.conftest import AUTH

pytestmark = pytest.mark.timeout(60)


async def test_a_lone_read_with_budget_free_goes_out_as_the_single_get(
    gateway: Any, world: Any
) -> None:
    [contact] = await world.seed("0-1", {"email": "a@example.com"})
    resp = await gateway.get(f"/crm/v3/objects/contacts/{contact}", headers=AUTH)
    assert resp.status == 200
    assert (await resp.json())["id"] == contact
    assert await world.calls() == [("GET", f"/crm/v3/objects/contacts/{contact}")]


@pytest.mark.parametrize("count", [150])
async def test_a_burst_of_reads_on_a_spent_budget_leaves_as_full_batch_reads(
    gateway: Any, world: Any, saturate: Any, count: int
) -> None:
    ids = await world.seed("0-1", *({"email": f"c{i}@example.com"} for i in range(count)))
    await saturate()
    before = len(await world.calls())

    async def read(object_id: str) -> tuple[int, Any]:
        resp = await gateway.get(
            f"/crm/v3/objects/contacts/{object_id}?properties=email", headers=AUTH
        )
        return resp.status, await resp.json()

    answers = await asyncio.gather(*(read(i) for i in ids))

    assert [status for status, _ in answers] == [200] * count
    assert [body["id"] for _, body in answers] == ids
    assert [body["properties"]["email"] for _, body in answers] == [
        f"c{i}@example.com" for i in range(count)
    ]
    burst = (await world.calls())[before:]
    assert burst == [("POST", "/crm/v3/objects/contacts/batch/read")] * math.ceil(count / 100)
    assert await world.rate_limited() == 0

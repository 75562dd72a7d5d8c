"""`coalesce.pace: borrow`: a flow's later steps leave after their gather without waiting for the
pace, and the first steps still waiting for it pay for their slot (platoons)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.integration.upstream.conftest import COALESCING_RULES
from tests.kit.harness import AUTH

WAVE = 8
# 20 per 10 s paced at 0.8 of it: one departure per 625 ms, long beside the 50 ms gather.
pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.parametrize(("limit", "window_s", "max_hold"), [(20, 10, "50ms")]),
]


@pytest.fixture(params=["borrow", "wait"])
def pace(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def rules_text(pace: str) -> str:
    creates = "coalesce: {max_batch: 100, max_hold: HOLD}"
    assert COALESCING_RULES.count(creates) == 4
    # Reads ask for the pace as soon as they come; creates gather for HOLD first.
    first, rest = COALESCING_RULES.replace(creates, "coalesce: {max_batch: 100}", 1).split(
        "  - name: object-creates", 1
    )
    rest = rest.replace(creates, f"coalesce: {{max_batch: 100, max_hold: HOLD, pace: {pace}}}", 1)
    return first + "  - name: object-creates" + rest


async def test_the_next_step_of_a_flow_rides_ahead_of_new_first_steps(
    gateway: Any, world: Any, pace: str
) -> None:
    """Wave A's reads ride in one paced batch read; each reader then creates at once, while wave
    B's reads (started by A's first answer) wait for the pace. Borrowing, A's creates leave in
    one batch create after their gather, ahead of B's batch read (which asked for the pace
    first); waiting for the pace, behind it."""
    ids = await world.seed("0-1", *({"email": f"c{i}@example.com"} for i in range(2 * WAVE + 1)))
    lone, wave_a, wave_b = ids[0], ids[1 : WAVE + 1], ids[WAVE + 1 :]
    resp = await gateway.get(f"/crm/v3/objects/contacts/{lone}", headers=AUTH)
    assert resp.status == 200  # the pace was idle: it left at once, and the pace is busy now
    answered = asyncio.Event()

    async def read(object_id: str) -> int:
        resp = await gateway.get(f"/crm/v3/objects/contacts/{object_id}", headers=AUTH)
        return int(resp.status)

    async def read_then_create(object_id: str) -> tuple[int, int]:
        status = await read(object_id)
        answered.set()
        body = {"properties": {"email": f"next-{object_id}@example.com"}}
        resp = await gateway.post("/crm/v3/objects/contacts", json=body, headers=AUTH)
        return status, int(resp.status)

    async def second_wave() -> list[int]:
        await answered.wait()
        return list(await asyncio.gather(*(read(i) for i in wave_b)))

    flows, b_statuses = await asyncio.gather(
        asyncio.gather(*(read_then_create(i) for i in wave_a)), second_wave()
    )

    assert list(flows) == [(200, 201)] * WAVE
    assert b_statuses == [200] * WAVE
    calls = await world.calls()
    assert calls[0] == ("GET", f"/crm/v3/objects/contacts/{lone}")
    batches = [path.rsplit("/", 1)[-1] for _, path in calls[1:]]
    assert sorted(batches) == ["create", "read", "read"], calls  # one batch call per wave and step
    expected = ["read", "create", "read"] if pace == "borrow" else ["read", "read", "create"]
    assert batches == expected, calls
    assert len(await world.objects("0-1")) == 2 * WAVE + 1 + WAVE  # every create made, once
    assert await world.rate_limited() == 0

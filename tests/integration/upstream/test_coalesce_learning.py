"""Coalesced answers feed the rules like single ones: with the shipped rules on a spent budget,
booking creates ride in one batch/create, and the idempotency index learns every one of them
from its own made-up 201, so the backend's idempotency searches never reach HubSpot."""

from __future__ import annotations

import asyncio
import pathlib
from typing import Any

import pytest

from tests.kit.harness import AUTH

BOOKINGS = "2-50158943"
# rules/default.yaml on a budget of LIMIT calls per WINDOW (the fixtures' values), all of it ours.
SHIPPED = (pathlib.Path(__file__).parents[3] / "rules" / "default.yaml").read_text()
SHIPPED_ON_A_SMALL_BUDGET = SHIPPED.replace(
    "  general: {limit: 100, window: 10s}", "  general: {limit: LIMIT, window: WINDOWs}"
).replace("  safety_margin: 0.9\n", "  safety_margin: 1.0\n")
pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.parametrize("rules_text", [SHIPPED_ON_A_SMALL_BUDGET]),
]


def by_key(key: str) -> dict[str, Any]:
    filters = [{"propertyName": "idempotency_key", "operator": "EQ", "value": key}]
    return {"filterGroups": [{"filters": filters}], "properties": ["idempotency_key"]}


async def test_coalesced_booking_creates_are_learned_by_the_idempotency_index(
    gateway: Any, world: Any, saturate: Any
) -> None:
    assert "LIMIT" not in SHIPPED  # the replacement above found the shipped limits
    assert "limit: LIMIT" in SHIPPED_ON_A_SMALL_BUDGET
    await saturate()
    before = len(await world.calls())

    async def book(key: str) -> Any:
        body = {"properties": {"contact_id": key, "idempotency_key": key, "is_active": "Active"}}
        resp = await gateway.post(f"/crm/v3/objects/{BOOKINGS}", json=body, headers=AUTH)
        assert resp.status == 201, await resp.text()
        return await resp.json()

    made = await asyncio.gather(*(book(f"k{i}") for i in range(4)))
    for i, booking in enumerate(made):
        resp = await gateway.post(
            f"/crm/v3/objects/{BOOKINGS}/search", json=by_key(f"k{i}"), headers=AUTH
        )
        found = await resp.json()
        assert [r["id"] for r in found["results"]] == [booking["id"]]

    assert (await world.calls())[before:] == [("POST", f"/crm/v3/objects/{BOOKINGS}/batch/create")]

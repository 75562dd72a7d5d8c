"""Issue 13 (7): two tokens of one portal. A complete index knows what *its* credential created;
another token's misses go to HubSpot until the gateway has seen that token create."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import AUTH, GatewayFactory
from tests.security.conftest import TOKEN_B, StrictSim

pytestmark = pytest.mark.timeout(60)

BOOKINGS = "2-50158943"
SEARCH = f"/crm/v3/objects/{BOOKINGS}/search"
AUTH_B = {"Authorization": f"Bearer {TOKEN_B}"}


def by_key(key: str) -> dict[str, Any]:
    filters = [{"propertyName": "idempotency_key", "operator": "EQ", "value": key}]
    return {"filterGroups": [{"filters": filters}]}


async def test_a_rotated_token_sees_the_booking_the_old_token_created(
    strict_sim: StrictSim, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(strict_sim.url)
    booking = {"properties": {"contact_id": "c1", "exam_date": "2030-03-15",
                              "is_active": "Active", "idempotency_key": "k1"}}  # fmt: skip
    resp = await gw.post(f"/crm/v3/objects/{BOOKINGS}", json=booking, headers=AUTH)
    assert resp.status == 201, await resp.text()
    created = (await resp.json())["id"]
    resp = await gw.post(SEARCH, json=by_key("k2"), headers=AUTH)
    assert (await resp.json())["total"] == 0  # token A's own index answers its misses
    assert [c for c in await strict_sim.calls() if c[1] == SEARCH] == []

    resp = await gw.post(SEARCH, json=by_key("k1"), headers=AUTH_B)
    assert resp.status == 200
    assert [r["id"] for r in (await resp.json())["results"]] == [created]  # HubSpot's truth
    assert len([c for c in await strict_sim.calls(TOKEN_B) if c[1] == SEARCH]) == 1

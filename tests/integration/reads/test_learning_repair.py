"""A create the index could not learn (Redis hung for a moment) is learned once Redis answers.

Under load a Redis call of the learning step can time out. The shipped rules' duplicate and
idempotency checks are `complete`: dropping their completeness for such a failure sent every
later check of the 9:00 burst to HubSpot's 5-per-second search limit (48 h for the
idempotency index). The create is filed instead, before anything is read from Redis again.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from tests.kit.harness import GatewayFactory
from tests.kit.read_side import book, dup_search, eq, search, searches
from tests.kit.sim_client import Sim

pytestmark = pytest.mark.timeout(60)

PROBE_S = 1.1  # the breaker lets one call probe Redis a second after it opened


def by_key(key: str) -> dict[str, Any]:
    return {"filterGroups": [{"filters": [eq("idempotency_key", key)]}]}


async def test_a_create_learned_late_keeps_the_complete_indexes_answering(
    pausable_valkey: tuple[str, int], world: Sim, gateway_factory: GatewayFactory
) -> None:
    url, pid = pausable_valkey
    gw = await gateway_factory(world.url, redis_url=url)  # the shipped rules
    await book(gw, "c0", idempotency_key="k0")  # the backend has created through the gateway
    assert (await search(gw, dup_search("c1")))["total"] == 0  # loads the date's scope
    assert (await search(gw, by_key("k-unused")))["total"] == 0

    os.kill(pid, signal.SIGSTOP)
    try:
        booking = await book(gw, "c1", idempotency_key="k1")  # forwarded; learning fails
    finally:
        os.kill(pid, signal.SIGCONT)
    await asyncio.sleep(PROBE_S)
    before = searches(await world.calls())

    duplicate = await search(gw, dup_search("c1"))
    again = await search(gw, by_key("k1"))
    other_contact = await search(gw, dup_search("c2"))
    other_key = await search(gw, by_key("k2"))

    assert [r["id"] for r in duplicate["results"]] == [booking["id"]]
    assert [r["id"] for r in again["results"]] == [booking["id"]]
    assert other_contact["total"] == 0 and other_key["total"] == 0
    assert searches(await world.calls()) == before  # all four from Redis, none from HubSpot

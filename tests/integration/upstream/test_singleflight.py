"""Concurrent identical reads through the gateway cost HubSpot one call (singleflight).

The simulator answers after 300 ms, so calls sent together are all in flight at once; the
counts are read from the simulator's own call log.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import pytest

from tests.kit.burst import seed_objects
from tests.kit.harness import AUTH, TOKEN, GatewayFactory, SimFactory, sim_url

pytestmark = pytest.mark.timeout(60)

OTHER = "other-token-not-real"


async def upstream_calls(sim: str, token: str = TOKEN) -> list[tuple[str, str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{sim}/__sim/calls", params={"token": token}) as resp,
    ):
        return [(c["method"], c["path"]) for c in (await resp.json())["calls"]]


def hits(metrics: str, kind: str) -> float:
    found = re.search(rf'hubspot_proxy_singleflight_hits_total{{kind="{kind}"}} (\S+)', metrics)
    return float(found.group(1)) if found else 0.0


@pytest.fixture
async def slow_sim(sim_factory: SimFactory) -> str:
    return sim_url(await sim_factory(latency_ms=(300, 300)))


async def test_identical_gets_share_one_call_and_keep_their_request_ids(
    slow_sim: str, gateway_factory: GatewayFactory
) -> None:
    (contact,) = await seed_objects(slow_sim, "contacts", 1)
    gw = await gateway_factory(slow_sim)
    path = f"/crm/v3/objects/contacts/{contact}?properties=name"
    answers = await asyncio.gather(
        *(gw.get(path, headers={**AUTH, "X-Request-Id": f"req-{i}"}) for i in range(20))
    )
    bodies = [await a.json() for a in answers]

    assert [a.status for a in answers] == [200] * 20
    assert all(b == bodies[0] for b in bodies) and bodies[0]["id"] == contact
    assert [a.headers["X-Request-Id"] for a in answers] == [f"req-{i}" for i in range(20)]
    assert await upstream_calls(slow_sim) == [("GET", f"/crm/v3/objects/contacts/{contact}")]
    assert hits(await (await gw.get("/metrics")).text(), "call") == 19


async def test_another_token_never_shares_a_call(
    slow_sim: str, gateway_factory: GatewayFactory
) -> None:
    (contact,) = await seed_objects(slow_sim, "contacts", 1)
    gw = await gateway_factory(slow_sim)
    path = f"/crm/v3/objects/contacts/{contact}"
    other = {"Authorization": f"Bearer {OTHER}"}
    answers = await asyncio.gather(
        *(gw.get(path, headers=AUTH) for _ in range(5)),
        *(gw.get(path, headers=other) for _ in range(5)),
    )

    assert [a.status for a in answers] == [200] * 10
    assert len(await upstream_calls(slow_sim)) == 1
    assert len(await upstream_calls(slow_sim, OTHER)) == 1


async def test_identical_searches_share_and_different_bodies_do_not(
    slow_sim: str, gateway_factory: GatewayFactory
) -> None:
    await seed_objects(slow_sim, "companies", 3)
    gw = await gateway_factory(slow_sim)
    path = "/crm/v3/objects/companies/search"

    def body(limit: int) -> dict[str, Any]:
        return {"filterGroups": [], "properties": ["name"], "limit": limit}

    answers = await asyncio.gather(
        *(gw.post(path, json=body(10), headers=AUTH) for _ in range(8)),
        *(gw.post(path, json=body(2), headers=AUTH) for _ in range(4)),
    )
    results = [await a.json() for a in answers]

    assert [a.status for a in answers] == [200] * 12
    assert [len(r["results"]) for r in results] == [3] * 8 + [2] * 4
    assert await upstream_calls(slow_sim) == [("POST", path)] * 2
    assert hits(await (await gw.get("/metrics")).text(), "call") == 10


async def test_a_leader_that_hangs_up_does_not_fail_its_followers(
    slow_sim: str, gateway_factory: GatewayFactory
) -> None:
    (contact,) = await seed_objects(slow_sim, "contacts", 1)
    gw = await gateway_factory(slow_sim)
    path = f"/crm/v3/objects/contacts/{contact}"
    leader = asyncio.create_task(
        gw.get(path, headers=AUTH, timeout=aiohttp.ClientTimeout(total=0.1))
    )
    await asyncio.sleep(0.02)  # the leader's call is in flight
    follower = await gw.get(path, headers=AUTH)
    with pytest.raises(asyncio.TimeoutError):
        await leader

    assert follower.status == 200
    assert (await follower.json())["id"] == contact
    assert len(await upstream_calls(slow_sim)) == 1

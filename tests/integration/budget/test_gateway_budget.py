"""The budget as clients see it through one gateway: deadlines, disconnects, priorities, 429s."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from proxy.app import SERVICES
from tests.kit.burst import burst_rules, nth, seed_objects, sim_token_calls, sim_token_stats
from tests.kit.harness import AUTH, TOKEN, GatewayFactory, SimFactory, sim_url
from tests.kit.processes import start_valkey
from tests.kit.waiting import eventually

pytestmark = pytest.mark.timeout(60)

Client = TestClient[Any, Any]


@dataclass
class Stack:
    """A simulator with one seeded contact, and a gateway in front of it."""

    sim: str
    gw: Client
    contact_path: str


StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
def stack(tmp_path: Path, sim_factory: SimFactory, gateway_factory: GatewayFactory) -> StackFactory:
    """Both sides share one general limit (per `window_s`); `routes` is appended to the rules."""

    async def make(
        limit: int, window_s: float, *, margin: float = 1.0, routes: str = "", **gateway: Any
    ) -> Stack:
        server = await sim_factory(general_limit=limit, general_window_s=window_s)
        rules = tmp_path / "rules.yaml"
        text = burst_rules((limit, f"{window_s:g}s"), (5, "1s"), margin=margin, replicas=1)
        rules.write_text(text + routes)
        gw = await gateway_factory(sim_url(server), rules_path=str(rules), **gateway)
        (contact,) = await seed_objects(sim_url(server), "contacts", 1)
        return Stack(sim_url(server), gw, f"/crm/v3/objects/contacts/{contact}")

    return make


async def test_a_deadline_that_cannot_be_met_gets_hubspots_429_with_retry_after(
    stack: StackFactory,
) -> None:
    s = await stack(5, 4)
    gw, path = s.gw, s.contact_path
    for _ in range(5):
        assert (await gw.get(path, headers=AUTH)).status == 200

    resp = await gw.get(path, headers={**AUTH, "X-HubSpot-Proxy-Max-Wait-Ms": "100"})

    assert resp.status == 429
    body = await resp.json()
    assert body["policyName"] == "TEN_SECONDLY_ROLLING"
    assert body["errorType"] == "RATE_LIMIT"
    assert body["status"] == "error" and body["correlationId"]
    assert resp.headers["X-HubSpot-Proxy-Error"] == "budget-deadline"
    # The window is 4 s (plus a 200 ms guard) and began moments ago.
    assert 3 <= int(resp.headers["Retry-After"]) <= 5
    stats = await sim_token_stats(s.sim)
    assert stats["total"] == 5 and stats["rate_limited"] == {}


async def test_a_client_that_disconnects_leaves_the_queue(
    stack: StackFactory, redis_client: aioredis.Redis
) -> None:
    s = await stack(1, 1)
    gw, path = s.gw, s.contact_path
    assert (await gw.get(path, headers=AUTH)).status == 200

    with pytest.raises(asyncio.TimeoutError):
        await gw.get(path, headers=AUTH, timeout=aiohttp.ClientTimeout(total=0.2))
    await asyncio.sleep(1.5)  # past the slot the abandoned call had reserved

    stats = await sim_token_stats(s.sim)
    assert stats["total"] == 1
    windows = [k async for k in redis_client.scan_iter(match="hubspot:{*}:win:general")]
    assert len(windows) == 1
    assert await redis_client.zcard(windows[0]) == 1


async def test_interactive_calls_go_before_background_ones(stack: StackFactory) -> None:
    routes = (
        "routes:\n"
        "  - name: reports\n"
        '    match: {method: GET, path: "/crm/v3/objects/companies/{id}"}\n'
        "    priority: background\n"
        "  - name: booking\n"
        '    match: {method: GET, path: "/crm/v3/objects/contacts/{id}"}\n'
        "    priority: interactive\n"
    )
    s = await stack(4, 1, routes=routes)
    gw, contact_path = s.gw, s.contact_path
    (company,) = await seed_objects(s.sim, "companies", 1)
    company_path = f"/crm/v3/objects/companies/{company}"
    await asyncio.gather(*(gw.get(nth(contact_path, i), headers=AUTH) for i in range(4)))

    background = [asyncio.create_task(gw.get(nth(company_path, i), headers=AUTH)) for i in range(4)]
    limiter = gw.app[SERVICES].limiter
    await eventually(lambda: limiter.waiters().get(("general", "BACKGROUND")) == 4)  # queued first
    interactive = [
        asyncio.create_task(gw.get(nth(contact_path, i), headers=AUTH)) for i in range(4)
    ]
    answers = await asyncio.gather(*background, *interactive)

    assert [a.status for a in answers] == [200] * 8
    calls = await sim_token_calls(s.sim)
    later = [c["path"].split("/")[4] for c in calls[4:]]
    assert later == ["contacts"] * 4 + ["companies"] * 4


async def test_hubspot_429s_caused_by_another_integration_are_absorbed(
    stack: StackFactory,
) -> None:
    # A 6 s window: the other integration's spend is still in it when the burst arrives, however
    # slowly a loaded machine gets there.
    s = await stack(10, 6)
    gw = s.gw
    async with aiohttp.ClientSession() as session:
        spend = {"token": TOKEN, "bucket": "general", "count": 8}
        await session.post(f"{s.sim}/__sim/spend", json=spend)

    answers = await asyncio.gather(
        *(gw.get(nth(s.contact_path, i), headers=AUTH) for i in range(10))
    )

    assert [a.status for a in answers] == [200] * 10
    stats = await sim_token_stats(s.sim)
    assert stats["rate_limited"].get("TEN_SECONDLY_ROLLING", 0) >= 1
    assert stats["by_status"]["200"] == 10
    metrics = await (await gw.get("/metrics")).text()
    assert 'hubspot_proxy_upstream_429_total{policy="TEN_SECONDLY_ROLLING"}' in metrics


async def test_redis_killed_mid_burst_falls_back_without_a_429_storm(
    stack: StackFactory,
) -> None:
    valkey = start_valkey()
    try:
        s = await stack(20, 1, margin=0.9, redis_url=str(valkey.connection_url))
        gw, path = s.gw, s.contact_path
        calls = [asyncio.create_task(gw.get(nth(path, i), headers=AUTH)) for i in range(60)]
        await asyncio.sleep(0.5)
        valkey.terminate()
        answers = await asyncio.gather(*calls)
    finally:
        if valkey.is_running():
            valkey.stop()

    assert [a.status for a in answers] == [200] * 60
    stats = await sim_token_stats(s.sim)
    assert sum(stats["rate_limited"].values()) <= 6  # the switch may overlap one window, no more
    metrics = await (await gw.get("/metrics")).text()
    assert 'hubspot_proxy_redis_fallback_transitions_total{to="fallback"} 1.0' in metrics
    assert "hubspot_proxy_redis_fallback 1.0" in metrics


async def test_metrics_report_budget_use_per_bucket(stack: StackFactory) -> None:
    s = await stack(10, 2)
    gw = s.gw
    for _ in range(3):
        await gw.get(s.contact_path, headers=AUTH)

    metrics = await (await gw.get("/metrics")).text()

    lines = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("hubspot_proxy_budget_")
    }
    used = [
        v
        for k, v in lines.items()
        if k.startswith("hubspot_proxy_budget_used") and 'bucket="general"' in k
    ]
    limit = [
        v
        for k, v in lines.items()
        if k.startswith("hubspot_proxy_budget_limit") and 'bucket="general"' in k
    ]
    assert used == [3.0] and limit == [10.0]
    assert TOKEN not in metrics

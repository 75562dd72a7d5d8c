"""A gateway that is behind (its CPU saturated) refuses new flows at their first call that costs
budget, with HubSpot's 429 and a Retry-After, while the calls of flows under way still go out.

The shipped rules (`limits.admissions.max_delay: 500ms`); the process is made to look behind by
reporting slow local answers to its overload reading, as a saturated process would see them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.app import SERVICES
from proxy.budget.overload import Overload
from proxy.store.rule_store import UNAVAILABLE, Unavailable
from tests.kit.booking_flow import BOOKINGS
from tests.kit.burst import seed_objects, sim_token_calls
from tests.kit.harness import AUTH, GatewayFactory, SimFactory, sim_url
from tests.kit.waiting import eventually

pytestmark = pytest.mark.timeout(60)

SEARCH = {"filterGroups": [{"filters": [
    {"propertyName": "idempotency_key", "operator": "EQ", "value": "k-1"}
]}], "limit": 1}  # fmt: skip


@asynccontextmanager
async def behind(overload: Overload) -> AsyncIterator[None]:
    """Local answers of two seconds each, until the block ends."""

    async def slow_answers() -> None:
        while True:
            overload.answered_locally(2.0)
            await asyncio.sleep(0.005)

    feeding = asyncio.create_task(slow_answers())
    try:
        await eventually(lambda: overload.behind_s() > 1.0)
        yield
    finally:
        feeding.cancel()


async def test_new_flows_are_refused_while_behind_and_flows_under_way_go_on(
    sim_factory: SimFactory, gateway_factory: GatewayFactory
) -> None:
    sim = sim_url(await sim_factory())
    gw = await gateway_factory(sim)
    overload = gw.app[SERVICES].overload
    (contact,) = await seed_objects(sim, "contacts", 1)
    path = f"/crm/v3/objects/contacts/{contact}"

    async with behind(overload):
        refused = await gw.get(f"{path}?properties=credits", headers=AUTH)
        body = await refused.json()
        # The booking's searches come before its admission (`starts_flow` in the shipped rules).
        search = await gw.post(f"/crm/v3/objects/{BOOKINGS}/search", json=SEARCH, headers=AUTH)
        credits = await gw.patch(path, json={"properties": {"credits": "1"}}, headers=AUTH)
        assert credits.status == 200  # a flow under way draws no `admissions`
    assert refused.status == 429 and refused.headers["Retry-After"] == "2"
    assert refused.headers["X-HubSpot-Proxy-Error"] == "behind"
    assert body["category"] == "RATE_LIMIT"
    assert body["policyName"] == "TEN_SECONDLY_ROLLING"
    assert search.status == 429 and (await search.json())["policyName"] == "SECONDLY"
    assert [c["method"] for c in await sim_token_calls(sim)] == ["PATCH"]

    await eventually(lambda: overload.behind_s() < 0.5)
    admitted = await gw.get(f"{path}?properties=credits", headers=AUTH)
    assert admitted.status == 200
    assert [c["method"] for c in await sim_token_calls(sim)] == ["PATCH", "GET"]


def without_starts_flow(directory: Path) -> Path:
    """The shipped rules with no route marked `starts_flow`."""
    doc: dict[str, Any] = yaml.safe_load(Path("rules/default.yaml").read_text())
    for route in doc["routes"]:
        route.pop("starts_flow", None)
    rules = directory / "rules.yaml"
    rules.write_text(yaml.safe_dump(doc, sort_keys=False))
    return rules


async def test_a_search_redis_did_not_answer_in_time_is_refused_not_forwarded_while_behind(
    sim_factory: SimFactory,
    gateway_factory: GatewayFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Redis answers others (the breaker stays closed), but not this lookup in time: a process
    that is behind refuses the search instead of spending HubSpot's 5-a-second search budget,
    also on a route not marked `starts_flow`."""
    sim = sim_url(await sim_factory())
    gw = await gateway_factory(sim, rules_path=str(without_starts_flow(tmp_path)))
    services = gw.app[SERVICES]
    (contact,) = await seed_objects(sim, "contacts", 1)
    seen = await gw.get(f"/crm/v3/objects/contacts/{contact}", headers=AUTH)
    assert seen.status == 200  # HubSpot accepted the token: its index lookups are asked

    async def unanswered(*args: Any, **kwargs: Any) -> Unavailable:
        return UNAVAILABLE

    monkeypatch.setattr(services.actions.index, "lookup", unanswered)
    search = SEARCH
    before = len(await sim_token_calls(sim))
    async with behind(services.overload):
        refused = await gw.post(f"/crm/v3/objects/{BOOKINGS}/search", json=search, headers=AUTH)
    assert refused.status == 429 and refused.headers["X-HubSpot-Proxy-Error"] == "behind"
    assert (await refused.json())["policyName"] == "SECONDLY"
    assert len(await sim_token_calls(sim)) == before  # nothing reached HubSpot

    await eventually(lambda: services.overload.behind_s() < 0.5)
    forwarded = await gw.post(f"/crm/v3/objects/{BOOKINGS}/search", json=search, headers=AUTH)
    assert forwarded.status == 200  # not behind: forwarded, as when Redis is away
    assert len(await sim_token_calls(sim)) == before + 1

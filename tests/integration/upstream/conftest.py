"""A gateway whose routes coalesce, a tiny budget to saturate, and the simulator behind it."""

from __future__ import annotations

import asyncio
import itertools
import pathlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from hubspot import HubSpot

from tests.kit.harness import AUTH, TOKEN, GatewayFactory, SimFactory, sim_url

Client = TestClient[Any, Any]

# `limit` calls per window (3: three warm-up calls saturate it until the window has passed).
COALESCING_RULES = """\
version: 1
limits:
  safety_margin: 1.0
  general: {limit: LIMIT, window: WINDOWs}
defaults: {priority: interactive, max_wait: 30s}
routes:
  - name: object-reads
    match: {method: GET, path: "/crm/v3/objects/{objectType}/{objectId}"}
    coalesce: {max_batch: 100, max_hold: HOLD}
  - name: object-creates
    match: {method: POST, path: "/crm/v3/objects/{objectType}"}
    coalesce: {max_batch: 100, max_hold: HOLD}
  - name: object-updates
    match: {method: PATCH, path: "/crm/v3/objects/{objectType}/{objectId}"}
    coalesce: {max_batch: 100, max_hold: HOLD}
  - name: default-associations
    match:
      method: PUT
      path: "/crm/v4/objects/{fromType}/{fromId}/associations/default/{toType}/{toId}"
    coalesce: {max_batch: 100, max_hold: HOLD}
"""


class SimView:
    """The simulator seen from outside the gateway: seeding, call log, direct (single) calls."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._references = itertools.count()  # one token per reference call: none is limited

    async def _json(self, method: str, path: str, body: Any = None) -> Any:
        async with aiohttp.ClientSession() as s, s.request(method, self.url + path, json=body) as r:
            return await r.json()

    async def seed(self, type_id: str, *props: dict[str, Any]) -> list[str]:
        objects = [{"type": type_id, "properties": p} for p in props]
        answer = await self._json("POST", "/__sim/seed", {"objects": objects})
        return [str(o["id"]) for o in answer["objects"]]

    async def calls(self) -> list[tuple[str, str]]:
        return [(method, path) for _, method, path in await self.timed_calls()]

    async def timed_calls(self) -> list[tuple[float, str, str]]:
        """(arrival on the simulator's clock, method, path) of each call the gateway sent."""
        answer = await self._json("GET", f"/__sim/calls?token={TOKEN}")
        return [(c["t"], c["method"], c["path"]) for c in answer["calls"]]

    async def objects(self, type_id: str) -> list[dict[str, Any]]:
        return list((await self._json("GET", f"/__sim/objects/{type_id}"))["results"])

    async def configure(self, **changes: Any) -> None:
        await self._json("POST", "/__sim/config", changes)

    async def rate_limited(self) -> int:
        stats = await self._json("GET", f"/__sim/stats?token={TOKEN}")
        return sum(stats["rate_limited"].values())

    async def direct(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """HubSpot's own answer to the single call, bypassing the gateway (with a token of its
        own, so it neither spends the gateway's budget nor shows in its call log)."""
        headers = {"Authorization": f"Bearer reference-{next(self._references)}"}
        async with (
            aiohttp.ClientSession() as s,
            s.request(method, self.url + path, json=body, headers=headers) as r,
        ):
            return r.status, await r.json()


@pytest.fixture
def sim_options() -> dict[str, Any]:
    """Simulator settings; tests parametrize it with HubSpot's batch answer variants."""
    return {}


@pytest.fixture
def rules_text() -> str:
    """The gateway's rules, with LIMIT, WINDOW and HOLD standing for the fixtures' values."""
    return COALESCING_RULES


@pytest.fixture
def gateway_settings() -> dict[str, Any]:
    """Settings the gateway runs with beyond the rules (tests parametrize it)."""
    return {}


@pytest.fixture
def limit() -> int:
    return 3


@pytest.fixture
def max_hold() -> str:
    return "50ms"


@pytest.fixture
def window_s() -> int:
    """The budget's window: how long a call waits for a slot once the warm-up spent it."""
    return 1


@pytest.fixture
async def world(
    sim_factory: SimFactory, sim_options: dict[str, Any], limit: int, window_s: int
) -> SimView:
    """HubSpot with the gateway's budget, so its rate-limit headers tell the same pressure."""
    options = {"general_limit": limit, "general_window_s": float(window_s), **sim_options}
    return SimView(sim_url(await sim_factory(**options)))


@pytest.fixture
async def gateway(
    world: SimView,
    gateway_factory: GatewayFactory,
    tmp_path: pathlib.Path,
    limit: int,
    window_s: int,
    max_hold: str,
    rules_text: str,
    gateway_settings: dict[str, Any],
) -> Client:
    rules = tmp_path / "rules.yaml"
    text = rules_text.replace("LIMIT", str(limit)).replace("WINDOW", str(window_s))
    rules.write_text(text.replace("HOLD", max_hold))
    # A loaded machine can slow Redis past the default bound, and the in-process fallback
    # budget would then admit calls these tests count on waiting: give Redis time to answer.
    settings = {"redis_timeout_s": 2.0, **gateway_settings}
    return await gateway_factory(world.url, rules_path=str(rules), **settings)


Saturate = Callable[[], Awaitable[None]]


@pytest.fixture
def saturate(gateway: Client, world: SimView, limit: int) -> Saturate:
    """Spend the gateway's whole budget of the second, so the next calls wait for a slot."""

    async def spend() -> None:
        [spare] = await world.seed("0-2", {"name": "warm-up"})
        for _ in range(limit):
            resp = await gateway.get(f"/crm/v3/objects/companies/{spare}", headers=AUTH)
            assert resp.status == 200
        await asyncio.sleep(0)

    return spend


@pytest.fixture
def sdk(gateway: Client) -> HubSpot:
    """The official Python SDK pointed at the gateway."""
    return HubSpot(access_token=TOKEN, host=str(gateway.make_url("")).rstrip("/"))

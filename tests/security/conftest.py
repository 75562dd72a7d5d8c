"""Fixtures of the security suite: a simulator that knows which tokens are real, and a helper
to read HubSpot's side of things."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.kit.harness import TOKEN, SimFactory, sim_url

# A second real token of the same portal (e.g. during a rotation).
TOKEN_B = "test-token-b-not-real"
ADMIN = "admin-token-not-real"


class StrictSim:
    """The simulator accepting only TOKEN and TOKEN_B: any other token gets HubSpot's 401."""

    def __init__(self, server: TestServer) -> None:
        self.url = sim_url(server)

    async def _json(self, method: str, path: str, body: Any = None) -> Any:
        async with aiohttp.ClientSession() as s, s.request(method, self.url + path, json=body) as r:
            return await r.json()

    async def seed(self, type_id: str, *props: dict[str, Any]) -> list[str]:
        objects = [{"type": type_id, "properties": p} for p in props]
        answer = await self._json("POST", "/__sim/seed", {"objects": objects})
        return [o["id"] for o in answer["objects"]]

    async def calls(self, token: str = TOKEN) -> list[tuple[str, str]]:
        answer = await self._json("GET", f"/__sim/calls?token={token}")
        return [(c["method"], c["path"]) for c in answer["calls"]]

    async def totals(self) -> dict[str, Any]:
        return dict((await self._json("GET", "/__sim/stats"))["totals"])

    async def objects(self, type_id: str) -> list[dict[str, Any]]:
        return list((await self._json("GET", f"/__sim/objects/{type_id}"))["results"])


@pytest.fixture
async def strict_sim(sim_factory: SimFactory) -> StrictSim:
    return StrictSim(await sim_factory(accepted_tokens=(TOKEN, TOKEN_B)))

"""The simulator seen from a test: seed objects, read its call log, ask HubSpot directly."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.kit.harness import TOKEN, sim_url

SimTestClient = TestClient[web.Request, web.Application]
MakeSim = Callable[..., Awaitable[SimTestClient]]


class Sim:
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

    async def configure(self, **changes: Any) -> None:
        """Change the simulator's latency, faults or limits (`SimConfig` names)."""
        await self._json("POST", "/__sim/config", changes)

    async def totals(self) -> dict[str, Any]:
        return dict((await self._json("GET", "/__sim/stats"))["totals"])

    async def direct(self, method: str, path: str, body: Any = None, token: str = TOKEN) -> Any:
        """HubSpot's own answer, bypassing the gateway (an admin, or the reference answer)."""
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession() as s,
            s.request(method, self.url + path, json=body, headers=headers) as r,
        ):
            return await r.json() if r.status != 204 else None

    async def objects(self, type_id: str) -> list[dict[str, Any]]:
        return list((await self._json("GET", f"/__sim/objects/{type_id}"))["results"])

    async def associations(self, from_type: str, from_id: str, to_type: str) -> list[str]:
        found = await self._json("GET", f"/__sim/associations/{from_type}/{from_id}/{to_type}")
        return [str(r["toObjectId"]) for r in found["results"]]

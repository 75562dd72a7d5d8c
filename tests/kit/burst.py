"""Driving bursts of HubSpot calls through gateways and reading what the simulator saw."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.kit.harness import AUTH, TOKEN


@dataclass(frozen=True)
class CallResult:
    status: int
    kind: str


def burst_rules(
    general: tuple[int, str], search: tuple[int, str], *, margin: float, replicas: int
) -> str:
    """A rules file with shrunk limits, so a burst saturates them within seconds."""
    return (
        "version: 1\n"
        "limits:\n"
        f"  safety_margin: {margin}\n"
        f"  general: {{limit: {general[0]}, window: {general[1]}}}\n"
        f"  search: {{limit: {search[0]}, window: {search[1]}}}\n"
        f"  expected_replicas: {replicas}\n"
        "defaults: {priority: interactive, max_wait: 60s}\n"
    )


async def seed_objects(sim: str, type_: str, count: int) -> list[str]:
    """Create records in the simulator without spending any budget; returns their ids."""
    objects = [{"type": type_, "properties": {"name": f"n{i}"}} for i in range(count)]
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sim}/__sim/seed", json={"objects": objects}) as resp,
    ):
        seeded: dict[str, Any] = await resp.json()
    return [str(o["id"]) for o in seeded["objects"]]


async def mixed_burst(
    gateways: Sequence[str], contact_id: str, general: int, search: int
) -> list[CallResult]:
    """`general` GETs and `search` searches, all at once, spread over the gateways."""
    kinds = ["general"] * general + ["search"] * search
    targets = itertools.cycle(gateways)
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def one(kind: str, base: str) -> CallResult:
            if kind == "general":
                call = session.get(f"{base}/crm/v3/objects/contacts/{contact_id}", headers=AUTH)
            else:
                query = {"filterGroups": [], "limit": 1}
                call = session.post(
                    f"{base}/crm/v3/objects/contacts/search", json=query, headers=AUTH
                )
            async with call as resp:
                await resp.read()
                return CallResult(resp.status, kind)

        return await asyncio.gather(*(one(kind, next(targets)) for kind in kinds))


async def sim_token_calls(sim: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{sim}/__sim/calls", params={"token": TOKEN}) as resp,
    ):
        body = await resp.json()
    calls: list[dict[str, Any]] = body["calls"]
    return calls


async def sim_token_stats(sim: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{sim}/__sim/stats", params={"token": TOKEN}) as resp,
    ):
        stats: dict[str, Any] = await resp.json()
    return stats


def max_in_window(times: Sequence[float], window_s: float) -> int:
    """The most arrivals in any half-open rolling window, by brute force over arrival times."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


def budget_use(times: Sequence[float], limit: int, window_s: float) -> float:
    """How close a saturated burst came to the fastest schedule the rolling limit allows.

    N calls under "at most `limit` in any window" need at least (ceil(N / limit) - 1) windows
    between the first and the last; the ratio of that to the observed span is the share of
    budget the limiter used while calls were waiting.
    """
    ordered = sorted(times)
    ideal = (math.ceil(len(ordered) / limit) - 1) * window_s
    span = ordered[-1] - ordered[0]
    return 1.0 if span <= 0 else ideal / span


def saturated_use(times: Sequence[float], limit: int, window_s: float) -> float | None:
    """Calls sent per window while calls were waiting, as a share of the limit.

    Counts the arrivals before the last window's (the final, partly filled one's) and divides
    by what the limit allowed over the same span; None when the burst fit in one window.
    """
    ordered = sorted(times)
    span = ordered[-1] - ordered[0] if ordered else 0.0
    if span < window_s:
        return None
    before_last = sum(1 for t in ordered if t <= ordered[-1] - window_s / 2)
    return before_last / (limit * span / window_s)

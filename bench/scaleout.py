"""Scenario 3, scale-out: 1, 2 and 4 gateway processes sharing one Valkey.

Per process count: (1) limit adherence: a burst of forwarded calls (contact GETs and searches)
spread over all processes, to a simulator with shrunk limits; the most calls the simulator saw
in any window against the limit, and its 429s. (2) cache-hit throughput: the same mock-exam GET
answered from the shared object cache, load spread evenly over the processes.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from bench import load, ops, plots, procs, report, rulefiles
from bench.env import ensure_tool
from tests.kit.burst import (
    budget_use,
    burst_rules,
    max_in_window,
    mixed_burst,
    seed_objects,
    sim_token_calls,
    sim_token_stats,
)
from tests.kit.harness import TOKEN

HEADERS = {"Authorization": f"Bearer {TOKEN}"}
GENERAL_LIMIT, GENERAL_WINDOW_S = 20, 2.0
SEARCH_LIMIT, SEARCH_WINDOW_S = 5, 1.0


@dataclass(frozen=True)
class Settings:
    processes: tuple[int, ...]
    general_calls: int
    search_calls: int
    connections: int  # cache-hit load, in all
    duration_s: float


FULL = Settings((1, 2, 4), 200, 50, 64, 10.0)
QUICK = Settings((1, 2, 4), 40, 10, 64, 1.0)


async def _reset(sim: str, redis_url: str) -> tuple[str, str]:
    async with aiohttp.ClientSession() as session, session.post(f"{sim}/__sim/reset") as resp:
        resp.raise_for_status()
    client = aioredis.from_url(redis_url)
    try:
        await client.flushall()
    finally:
        await client.aclose()
    (contact,) = await seed_objects(sim, "contacts", 1)
    (exam,) = await seed_objects(sim, rulefiles.EXAM_TYPE, 1)
    return contact, exam


async def _limits(sim: str, urls: list[str], contact: str, s: Settings) -> dict[str, Any]:
    results = await mixed_burst(urls, contact, s.general_calls, s.search_calls)
    stats = await sim_token_stats(sim)
    calls = await sim_token_calls(sim)
    general = [c["t"] for c in calls if c["kind"] == "general"]
    search = [c["t"] for c in calls if c["kind"] == "search"]
    return {
        "client_statuses": dict(Counter(str(r.status) for r in results)),
        "upstream_429": int(stats.get("by_status", {}).get("429", 0)),
        "upstream_calls": int(stats.get("total", 0)),
        "max_general_in_window": max_in_window(general, GENERAL_WINDOW_S) if general else 0,
        "max_search_in_window": max_in_window(search, SEARCH_WINDOW_S) if search else 0,
        "general_budget_use": budget_use(general, GENERAL_LIMIT, GENERAL_WINDOW_S)
        if len(general) > 1
        else None,
        "span_s": (max(general) - min(general)) if general else None,
    }


async def _cache_probe(sim: str, urls: list[str], exam: str) -> bool:
    """Warm every process, then check 5 GETs per process reach HubSpot not once."""
    path = f"/crm/v3/objects/{rulefiles.EXAM_TYPE}/{exam}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for url in urls:
            async with session.get(url + path, headers=HEADERS) as resp:
                await resp.read()
        before = (await sim_token_stats(sim)).get("total", 0)
        for url in urls:
            for _ in range(5):
                async with session.get(url + path, headers=HEADERS) as resp:
                    await resp.read()
        after = (await sim_token_stats(sim)).get("total", 0)
    return bool(after == before)


async def _throughput(urls: list[str], exam: str, s: Settings, wrk: str | None) -> dict[str, Any]:
    path = f"/crm/v3/objects/{rulefiles.EXAM_TYPE}/{exam}"
    each = max(1, s.connections // len(urls))
    threads = 2 if len(urls) == 1 else 1
    runs = await asyncio.gather(
        *(load.drive(u + path, each, s.duration_s, HEADERS, wrk=wrk, threads=threads) for u in urls)
    )
    p50s = [r.p50_ms for r in runs if r.p50_ms is not None]
    p99s = [r.p99_ms for r in runs if r.p99_ms is not None]
    return {
        "rps": sum(r.rps for r in runs),
        "p50_ms_median_process": sorted(p50s)[len(p50s) // 2] if p50s else None,
        "p99_ms_worst_process": max(p99s) if p99s else None,
        "non_2xx": sum(r.non_2xx for r in runs),
        "errors": sum(r.errors for r in runs),
        "per_process": [r.to_json() for r in runs],
    }


async def _one(
    k: int, sim: str, redis_url: str, tmp: Path, s: Settings, wrk: str | None
) -> dict[str, Any]:
    contact, exam = await _reset(sim, redis_url)
    rules = burst_rules(
        (GENERAL_LIMIT, f"{GENERAL_WINDOW_S:g}s"),
        (SEARCH_LIMIT, f"{SEARCH_WINDOW_S:g}s"),
        margin=1.0,
        replicas=k,
    )
    path = rulefiles.write(tmp, f"scale-{k}.yaml", rules + rulefiles.cache_rule())
    row: dict[str, Any] = {"processes": k}
    with procs.gateways(k, sim, redis_url, path) as gws:
        urls = [g.url for g in gws]
        print(f"[scaleout] {k} process(es): limit burst ...", flush=True)
        row["limits"] = await _limits(sim, urls, contact, s)
        row["cache_active"] = await _cache_probe(sim, urls, exam)
        if row["cache_active"]:
            print(f"[scaleout] {k} process(es): cache-hit load ...", flush=True)
            row["cache"] = await _throughput(urls, exam, s, wrk)
        async with aiohttp.ClientSession() as session:
            row["gateway_metrics"] = await ops.scrape(session, urls)
    return row


def markdown(
    rows: list[dict[str, Any]], s: Settings, facts: dict[str, Any], notes: list[str]
) -> str:
    head = ["processes", "cache-hit req/s", "p50 (median process)", "p99 (worst process)",
            f"max general in {GENERAL_WINDOW_S:g} s (limit {GENERAL_LIMIT})",
            f"max search in {SEARCH_WINDOW_S:g} s (limit {SEARCH_LIMIT})", "upstream 429s",
            "client non-200", "budget use"]  # fmt: skip
    body = []
    for r in rows:
        lim, cache = r["limits"], r.get("cache")
        non200 = sum(n for st, n in lim["client_statuses"].items() if st != "200")
        body.append([
            r["processes"],
            f"{cache['rps']:.0f}" if cache else "n/a (cache not answering)",
            report.fmt_ms(cache["p50_ms_median_process"]) if cache else "-",
            report.fmt_ms(cache["p99_ms_worst_process"]) if cache else "-",
            lim["max_general_in_window"], lim["max_search_in_window"], lim["upstream_429"],
            non200, report.fmt_pct(lim["general_budget_use"]),
        ])  # fmt: skip
    return report.header("Scale-out on one Valkey", facts, notes) + "\n" + report.table(head, body)


async def run(quick: bool, facts: dict[str, Any], results: Path) -> dict[str, Any]:
    s = QUICK if quick else FULL
    wrk = ensure_tool("wrk")
    rows: list[dict[str, Any]] = []
    sim_args = [
        "--general-limit",
        str(GENERAL_LIMIT),
        "--general-window-s",
        f"{GENERAL_WINDOW_S:g}",
    ]
    sim_args += ["--search-limit", str(SEARCH_LIMIT), "--search-window-s", f"{SEARCH_WINDOW_S:g}"]
    sim_args += ["--latency-ms", "5,20"]
    with (
        tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp,
        procs.valkey() as redis_url,
        procs.sim(*sim_args) as sim,
    ):
        for k in s.processes:
            try:
                rows.append(await _one(k, sim.url, redis_url, Path(tmp), s, wrk))
            except Exception as exc:  # report the others
                print(f"[scaleout] {k} process(es) failed: {exc!r}", flush=True)
    notes = [
        f"Limit burst: {s.general_calls} contact GETs + {s.search_calls} searches at once, "
        f"round-robin over the processes; simulator limits {GENERAL_LIMIT} general per "
        f"{GENERAL_WINDOW_S:g} s and {SEARCH_LIMIT} search per {SEARCH_WINDOW_S:g} s, gateway "
        "rules with the same limits and safety_margin 1.0 (any slip shows as a 429). Budget "
        "use = fastest schedule the limit allows / observed span (1.0 = no budget wasted).",
        f"Cache hit: GET of one mock exam (object_cache rule, warmed), {s.connections} "
        f"connections in all split over the processes, {s.duration_s:g} s, "
        f"{'wrk' if wrk else 'bench.pyload'} on the same {facts['cpu_count']}-CPU machine: "
        "more processes than CPUs cannot add throughput here.",
    ]
    if quick:
        notes.insert(0, f"QUICK MODE: smaller burst, {s.duration_s:g} s cache-hit measurements.")
    rps = {"cache-hit req/s": [r.get("cache", {}).get("rps") for r in rows]}
    png = plots.bars(
        "scaleout_rps.png", "Cache-hit throughput by gateway processes",
        [f"{r['processes']} proc" for r in rows], rps, "requests per second", results,
    )  # fmt: skip
    data = {"settings": s.__dict__, "machine": facts, "notes": notes, "rows": rows,
            "plots": [png] if png else []}  # fmt: skip
    report.write("scaleout", data, markdown(rows, s, facts, notes), results)
    return data

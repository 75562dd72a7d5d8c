"""Scenario 2, the gateway's own cost: one small GET against a fast static upstream (nginx).

Targets: (a) the upstream itself, (b) nginx as a plain reverse proxy, (c) the gateway passing
through (limits so high the budget never waits), (d) the gateway answering from its object
cache (warmed). Throughput and latency are given as ratios to (b). Each of nginx and the
gateway runs one worker process, on the same machine as the load generator.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import load, ops, plots, procs, report, rulefiles
from bench.env import ensure_tool
from tests.kit.harness import TOKEN

PATH = f"/crm/v3/objects/{rulefiles.EXAM_TYPE}/1001?properties=capacity,total_bookings"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
TARGETS = ("upstream", "nginx-proxy", "gateway-pass", "gateway-cache")
LABELS = {
    "upstream": "(a) nothing",
    "nginx-proxy": "(b) nginx proxy",
    "gateway-pass": "(c) gateway pass-through",
    "gateway-cache": "(d) gateway cache hit",
}


@dataclass(frozen=True)
class Settings:
    connections: tuple[int, ...]
    duration_s: float


FULL = Settings((1, 64, 256), 10.0)
QUICK = Settings((1, 64, 256), 1.0)


async def _upstream_calls(session: aiohttp.ClientSession, gateway: str) -> float:
    metrics = await ops.scrape(session, [gateway])
    return ops.family_sum(metrics, "hubspot_proxy_upstream_calls_total") or 0.0


async def _warm_cache(gateway: str) -> dict[str, Any]:
    """Fill the cache, then see whether 20 more GETs reach the upstream (they should not)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        statuses = []
        for _ in range(3):
            async with session.get(gateway + PATH, headers=HEADERS) as resp:
                await resp.read()
                statuses.append(resp.status)
        before = await _upstream_calls(session, gateway)
        for _ in range(20):
            async with session.get(gateway + PATH, headers=HEADERS) as resp:
                await resp.read()
        forwarded = await _upstream_calls(session, gateway) - before
    return {"warm_statuses": statuses, "probe_forwarded_of_20": forwarded, "active": forwarded == 0}


async def _measure(
    urls: dict[str, str], s: Settings, wrk: str | None
) -> dict[str, dict[int, load.LoadResult]]:
    out: dict[str, dict[int, load.LoadResult]] = {}
    for target, base in urls.items():
        out[target] = {}
        for c in s.connections:
            print(f"[overhead] {target} c={c} ...", flush=True)
            out[target][c] = await load.drive(base + PATH, c, s.duration_s, HEADERS, wrk=wrk)
            await asyncio.sleep(0.2)
    return out


def _ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


def _rows(measured: dict[str, dict[int, load.LoadResult]], s: Settings) -> list[dict[str, Any]]:
    rows = []
    for c in s.connections:
        ref = measured["nginx-proxy"][c]
        for target in TARGETS:
            r = measured[target][c]
            rows.append(
                {
                    "connections": c,
                    "target": target,
                    **r.to_json(),
                    "rps_vs_nginx": _ratio(r.rps, ref.rps),
                    "p50_vs_nginx": _ratio(r.p50_ms, ref.p50_ms),
                    "p99_vs_nginx": _ratio(r.p99_ms, ref.p99_ms),
                }
            )
    return rows


def markdown(rows: list[dict[str, Any]], facts: dict[str, Any], notes: list[str]) -> str:
    head = ["conns", "target", "req/s", "p50", "p99", "req/s ÷ nginx", "p50 ÷ nginx",
            "p99 ÷ nginx", "non-2xx / errors"]  # fmt: skip
    body = [
        [
            r["connections"], LABELS[r["target"]], f"{r['rps']:.0f}", report.fmt_ms(r["p50_ms"]),
            report.fmt_ms(r["p99_ms"]), report.fmt_ratio(r["rps_vs_nginx"]),
            report.fmt_ratio(r["p50_vs_nginx"]), report.fmt_ratio(r["p99_vs_nginx"]),
            f"{r['non_2xx']} / {r['errors']}" + (f" ({r['note']})" if r["note"] else ""),
        ]
        for r in rows
    ]  # fmt: skip
    return report.header("Gateway overhead", facts, notes) + "\n" + report.table(head, body)


def _plots(rows: list[dict[str, Any]], s: Settings, results: Path) -> list[str]:
    groups = [f"{c} conn" for c in s.connections]
    written = []
    for metric, name, ylabel in (
        ("rps", "overhead_rps.png", "requests per second (log scale)"),
        ("p50_ms", "overhead_p50.png", "p50 latency, ms (log scale)"),
        ("p99_ms", "overhead_p99.png", "p99 latency, ms (log scale)"),
    ):
        series = {LABELS[t]: [r[metric] for r in rows if r["target"] == t] for t in TARGETS}
        title = f"One small GET: {ylabel.split(' (')[0]} by target"
        png = plots.bars(name, title, groups, series, ylabel, results, log=True)
        if png:
            written.append(png)
    return written


async def run(quick: bool, facts: dict[str, Any], results: Path) -> dict[str, Any]:
    s = QUICK if quick else FULL
    nginx = ensure_tool("nginx") or procs.nginx_binary()
    if nginx is None:
        print("[overhead] SKIPPED: nginx is not installed and cannot be installed here")
        return {"skipped": "nginx unavailable"}
    wrk = ensure_tool("wrk")
    static_port, proxy_port = procs.free_port(), procs.free_port()
    static = procs.static_server_block(static_port)
    proxied = procs.proxy_server_block(proxy_port, static_port)
    with (
        tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp_name,
        procs.nginx(nginx, Path(tmp_name) / "static", static, static_port),
        procs.nginx(nginx, Path(tmp_name) / "proxy", proxied, proxy_port),
        procs.valkey() as redis_url,
    ):
        tmp = Path(tmp_name)
        upstream = f"http://127.0.0.1:{static_port}"
        passthrough = rulefiles.write(tmp, "pass.yaml", rulefiles.high_limits(cache=False))
        cached = rulefiles.write(tmp, "cache.yaml", rulefiles.high_limits(cache=True))
        with (
            procs.gateways(1, upstream, redis_url, passthrough) as (gw_pass,),
            procs.gateways(1, upstream, redis_url, cached) as (gw_cache,),
        ):
            cache = await _warm_cache(gw_cache.url)
            urls = {
                "upstream": upstream,
                "nginx-proxy": f"http://127.0.0.1:{proxy_port}",
                "gateway-pass": gw_pass.url,
                "gateway-cache": gw_cache.url,
            }
            measured = await _measure(urls, s, wrk)
    rows = _rows(measured, s)
    notes = [
        f"GET {PATH} with a Bearer token; {s.duration_s:g} s per measurement; load by "
        f"{'wrk (--latency)' if wrk else 'bench.pyload (aiohttp)'} on the same machine.",
        "Upstream: nginx `return 200` of a 260-byte mock exam. nginx and the gateway each run "
        "one worker process; gateway (c) uses limits of 10^8 per window (the budget never "
        "waits, but every call still takes its Redis admission round trip).",
        "Gateway (d): object_cache rule on mock exams, warmed; "
        + (
            "probe: 0 of 20 GETs reached the upstream (cache active)."
            if cache["active"]
            else f"probe: {cache['probe_forwarded_of_20']:g} of 20 GETs reached the upstream, "
            "so the cache was NOT answering: (d) measured forwarding."
        ),
    ]
    if quick:
        notes.insert(
            0, f"QUICK MODE: {s.duration_s:g} s per measurement instead of {FULL.duration_s:g} s."
        )
    pngs = _plots(rows, s, results)
    data = {"settings": s.__dict__, "machine": facts, "notes": notes, "cache_probe": cache,
            "rows": rows, "plots": pngs}  # fmt: skip
    report.write("overhead", data, markdown(rows, facts, notes), results)
    return data

"""Scenario 2, the gateway's own cost, against the Python floors it is built from.

Targets, all in one run, interleaved round by round (the machine is shared, so only ratios
measured side by side mean much):

    static        a minimal aiohttp server answering static JSON (`bench.floors`): the floor
                  for answers the gateway makes up (cache hit, `respond`)
    static-redis  the same server after one EVALSHA of a tiny script on the gateways' Valkey
                  (redis-py asyncio): the cache hit is a ratio of it too, so a reader sees how
                  much of the gap is the one round trip a hit needs and how much the gateway's
                  own Python
    aiohttp-proxy a minimal aiohttp reverse proxy (`bench.floors`): the floor for forwarding
    proxy-redis   the same proxy after one EVALSHA per call: pass-through is a ratio of it too,
                  as every forwarded call is admitted in Redis first
    nginx-proxy   nginx as a reverse proxy, when nginx can be had
    gateway-pass  the gateway forwarding a GET (limits so high the budget never waits)
    gateway-cache the gateway answering the booking flow's exam read from its object cache,
                  with the exam counter overlaid (warmed)
    gateway-respond the gateway answering the unused enrollment search (`respond` rule, POST)

The upstream is nginx (static, with HubSpot's rate-limit headers) when it can be had, else the
static aiohttp server. Besides throughput and latency, the run counts the Redis commands of one
call of each gateway target (Valkey's MONITOR: those sent, and those run inside scripts) and
samples each gateway's CPU with py-spy (`bench.spy`) into `overhead_profile.md`.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import load, plots, procs, report, rulefiles, spy
from bench.env import ensure_tool
from tests.kit.harness import TOKEN
from tests.kit.monitor import watched
from tests.kit.processes import Process, free_port

EXAM_PATH = f"/crm/v3/objects/{rulefiles.EXAM_TYPE}/1001?properties=capacity,total_bookings"
# Forwarded as it comes: no rule, no coalescing, not a CRM read (which singleflight shares).
PASS_PATH = "/files/v3/files/1001"
SEARCH_PATH = "/crm/v3/objects/enrollments/search"
SEARCH_BODY = '{"filterGroups":[],"limit":1}'
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@dataclass(frozen=True)
class Target:
    name: str
    label: str
    path: str
    post: str | None = None
    floor: str | None = None  # the target this one is a ratio of
    also: str | None = None  # a second floor it is shown as a ratio of


TARGETS = (
    Target("static", "aiohttp static JSON server (GET)", EXAM_PATH),
    Target("static-post", "aiohttp static JSON server (POST)", SEARCH_PATH, SEARCH_BODY),
    Target("static-redis", "aiohttp static JSON + one Redis EVALSHA", EXAM_PATH, floor="static"),
    Target("aiohttp-proxy", "minimal aiohttp reverse proxy", PASS_PATH),
    Target("proxy-redis", "minimal aiohttp proxy + one Redis EVALSHA", PASS_PATH,
           floor="aiohttp-proxy"),
    Target("nginx-proxy", "nginx reverse proxy", PASS_PATH, floor="aiohttp-proxy"),
    Target("gateway-pass", "gateway pass-through", PASS_PATH, floor="aiohttp-proxy",
           also="proxy-redis"),
    Target("gateway-cache", "gateway exam read, object-cache hit", EXAM_PATH, floor="static",
           also="static-redis"),
    Target("gateway-respond", "gateway enrollment search, `respond`", SEARCH_PATH,
           SEARCH_BODY, floor="static-post"),
)  # fmt: skip
GATEWAYS = ("gateway-pass", "gateway-cache", "gateway-respond")


@dataclass(frozen=True)
class Settings:
    connections: tuple[int, ...]
    duration_s: float
    rounds: int
    probe_calls: int
    profile_s: float


FULL = Settings((1, 64), 5.0, 3, 200, 8.0)
QUICK = Settings((1, 64), 1.0, 1, 50, 2.0)


@contextmanager
def _floor(kind: str, *upstream: str) -> Iterator[Process]:
    """A `bench.floors` process on a free port, stopped on exit."""
    argv = [sys.executable, "-m", "bench.floors", kind, str(free_port()), *upstream]
    proc = Process(argv, {**os.environ, "PYTHONUNBUFFERED": "1"}).start()
    try:
        yield proc
    finally:
        procs.stop_quietly(proc)


@contextmanager
def _upstream(stack: ExitStack, tmp: Path, static: Process) -> Iterator[tuple[str, str | None]]:
    """The upstream (nginx when it can be had, else the static floor) and nginx's proxy URL."""
    nginx = ensure_tool("nginx") or procs.nginx_binary()
    if nginx is None:
        yield static.url, None
        return
    static_port, proxy_port = free_port(), free_port()
    block = procs.static_server_block(static_port)
    stack.enter_context(procs.nginx(nginx, tmp / "static", block, static_port))
    proxied = procs.proxy_server_block(proxy_port, static_port)
    stack.enter_context(procs.nginx(nginx, tmp / "proxy", proxied, proxy_port))
    yield f"http://127.0.0.1:{static_port}", f"http://127.0.0.1:{proxy_port}"


async def _call(session: aiohttp.ClientSession, url: str, target: Target) -> int:
    data = None if target.post is None else target.post.encode()
    headers = {**HEADERS, "Content-Type": "application/json"} if data else HEADERS
    method = "GET" if target.post is None else "POST"
    async with session.request(method, url + target.path, data=data, headers=headers) as resp:
        await resp.read()
        return resp.status


async def _per_call(redis_url: str, url: str, target: Target, calls: int) -> dict[str, Any]:
    """Redis commands one call makes, over `calls` calls in a row. The gateway's once-a-second
    flush of rate-limit headers falls in the window too: it is part of its cost."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for _ in range(3):
            await _call(session, url, target)  # warm: cache filled, scripts loaded, counter seeded
        await asyncio.sleep(1.2)  # the warm-up's header flush is not this probe's

        async def probe() -> list[int]:
            return [await _call(session, url, target) for _ in range(calls)]

        statuses, seen = await watched(redis_url, probe())
    return {
        "calls": calls,
        "ok": sum(1 for s in statuses if s == 200),
        "sent": dict(sorted(seen.sent.items())),
        "in_scripts": dict(sorted(seen.in_scripts.items())),
        "sent_per_call": sum(seen.sent.values()) / calls,
        "in_scripts_per_call": sum(seen.in_scripts.values()) / calls,
    }


async def _measure(
    urls: dict[str, str], s: Settings, wrk: str | None
) -> dict[str, dict[int, list[load.LoadResult]]]:
    """Every target at every connection count, interleaved round by round."""
    out: dict[str, dict[int, list[load.LoadResult]]] = {t: {} for t in urls}
    for round_no in range(s.rounds):
        for c in s.connections:
            for t in TARGETS:
                if t.name not in urls:
                    continue
                print(f"[overhead] round {round_no + 1} {t.name} c={c} ...", flush=True)
                result = await load.drive(
                    urls[t.name] + t.path, c, s.duration_s, HEADERS, wrk=wrk, post=t.post
                )
                out[t.name].setdefault(c, []).append(result)
                await asyncio.sleep(0.2)
    return out


def _median(results: list[load.LoadResult]) -> dict[str, Any]:
    def med(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    return {
        "tool": results[0].tool,
        "runs": len(results),
        "rps": med([r.rps for r in results]) or 0.0,
        "p50_ms": med([r.p50_ms for r in results]),
        "p99_ms": med([r.p99_ms for r in results]),
        "non_2xx": sum(r.non_2xx for r in results),
        "errors": sum(r.errors for r in results),
        "rps_runs": [r.rps for r in results],
    }


def _ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


def _rows(
    measured: dict[str, dict[int, list[load.LoadResult]]], s: Settings
) -> list[dict[str, Any]]:
    rows = []
    for c in s.connections:
        medians = {name: _median(by_c[c]) for name, by_c in measured.items() if c in by_c}
        for t in TARGETS:
            if t.name not in medians:
                continue
            m = medians[t.name]
            floor = medians.get(t.floor or t.name, m)
            also = medians.get(t.also) if t.also else None
            rows.append(
                {
                    "connections": c,
                    "target": t.name,
                    "floor": t.floor or t.name,
                    **m,
                    "rps_vs_floor": _ratio(m["rps"], floor["rps"]),
                    "also": t.also if also else None,
                    "rps_vs_also": _ratio(m["rps"], also["rps"]) if also else None,
                    "p50_added_ms": None
                    if m["p50_ms"] is None or floor["p50_ms"] is None
                    else m["p50_ms"] - floor["p50_ms"],
                }
            )
    return rows


LABELS = {t.name: t.label for t in TARGETS}


def _vs_floors(r: dict[str, Any]) -> str:
    if r["floor"] == r["target"]:
        return "1"
    text = f"{report.fmt_ratio(r['rps_vs_floor'])} of {r['floor']}"
    if r.get("also"):
        text += f"; {report.fmt_ratio(r['rps_vs_also'])} of {r['also']}"
    return text


def markdown(
    rows: list[dict[str, Any]], redis: dict[str, Any], facts: dict[str, Any], notes: list[str]
) -> str:
    head = ["conns", "target", "req/s", "p50", "p99", "÷ its floor", "p50 added",
            "non-2xx / errors"]  # fmt: skip
    body = [
        [
            r["connections"], LABELS[r["target"]], f"{r['rps']:.0f}", report.fmt_ms(r["p50_ms"]),
            report.fmt_ms(r["p99_ms"]), _vs_floors(r),
            "-" if r["floor"] == r["target"] else report.fmt_ms(r["p50_added_ms"]),
            f"{r['non_2xx']} / {r['errors']}",
        ]
        for r in rows
    ]  # fmt: skip
    counted = [
        [LABELS[name], f"{probe['sent_per_call']:.2f}",
         ", ".join(f"{k} {n / probe['calls']:.2f}" for k, n in probe["sent"].items()) or "-",
         f"{probe['in_scripts_per_call']:.2f}", f"{probe['ok']} of {probe['calls']}"]
        for name, probe in redis.items()
    ]  # fmt: skip
    redis_table = report.table(
        ["target", "commands sent per call", "by command", "run inside scripts", "200s"], counted
    )
    return (
        report.header("Gateway overhead", facts, notes)
        + "\n"
        + report.table(head, body)
        + "\n\nRedis commands per call, seen by Valkey's MONITOR over a run of calls in a row:\n\n"
        + redis_table
    )


def _plots(rows: list[dict[str, Any]], s: Settings, results: Path) -> list[str]:
    groups = [f"{c} conn" for c in s.connections]
    names = [t.name for t in TARGETS if any(r["target"] == t.name for r in rows)]
    written = []
    for metric, name, ylabel in (
        ("rps", "overhead_rps.png", "requests per second (log scale)"),
        ("p50_ms", "overhead_p50.png", "p50 latency, ms (log scale)"),
        ("p99_ms", "overhead_p99.png", "p99 latency, ms (log scale)"),
    ):
        series = {LABELS[t]: [r[metric] for r in rows if r["target"] == t] for t in names}
        title = f"One small call: {ylabel.split(' (')[0]} by target"
        png = plots.bars(name, title, groups, series, ylabel, results, log=True)
        if png:
            written.append(png)
    return written


async def _profile(
    gateways: dict[str, Process], urls: dict[str, str], s: Settings, wrk: str | None, out: Path
) -> dict[str, Any]:
    """py-spy on each gateway while 64 connections load it; summaries by part of the code."""
    binary = spy.py_spy()
    if binary is None:
        return {"skipped": "py-spy is not installed (pip install -e '.[bench]')"}
    found: dict[str, Any] = {}
    for name, proc in gateways.items():
        t = next(t for t in TARGETS if t.name == name)
        assert proc.popen is not None
        raw = out / f"{name}.spy"
        load_run = load.drive(urls[name] + t.path, 64, s.profile_s + 2, HEADERS, wrk=wrk,
                              post=t.post)  # fmt: skip
        recorded, _ = await asyncio.gather(
            spy.record(binary, proc.popen.pid, s.profile_s, raw), load_run
        )
        if recorded:
            found[name] = spy.summarize(raw.read_text())
    return found


def _profile_markdown(found: dict[str, Any], facts: dict[str, Any]) -> str:
    notes = [
        "py-spy samples of each gateway process while 64 connections load it; a part's share "
        "is the share of samples with a frame in it (inclusive), so shares add up past 100%.",
    ]
    parts = [spy.markdown(LABELS[name], summary) for name, summary in found.items()]
    return (
        report.header("Gateway overhead: where the CPU goes", facts, notes)
        + "\n"
        + ("\n\n".join(parts) or "(py-spy could not sample the gateways)")
    )


def _write_profile(results: Path, text: str) -> None:
    results.mkdir(parents=True, exist_ok=True)
    (results / "overhead_profile.md").write_text(text + "\n")


async def _scenario(
    s: Settings, tmp: Path, wrk: str | None, results: Path, facts: dict[str, Any]
) -> dict[str, Any]:
    with ExitStack() as stack:
        static = stack.enter_context(_floor("static"))
        upstream, nginx_proxy = stack.enter_context(_upstream(stack, tmp, static))
        minimal = stack.enter_context(_floor("proxy", upstream))
        redis_url = stack.enter_context(procs.valkey())
        static_redis = stack.enter_context(_floor("static-redis", redis_url))
        proxy_redis = stack.enter_context(_floor("proxy-redis", upstream, redis_url))
        passing = rulefiles.write(tmp, "pass.yaml", rulefiles.high_limits(cache=False))
        answering = rulefiles.write(tmp, "answer.yaml", rulefiles.answering_rules())
        (gw_pass,) = stack.enter_context(procs.gateways(1, upstream, redis_url, passing))
        (gw_answer,) = stack.enter_context(procs.gateways(1, upstream, redis_url, answering))
        urls = {"static": static.url, "static-post": static.url, "static-redis": static_redis.url,
                "aiohttp-proxy": minimal.url, "proxy-redis": proxy_redis.url,
                "gateway-pass": gw_pass.url, "gateway-cache": gw_answer.url,
                "gateway-respond": gw_answer.url}  # fmt: skip
        if nginx_proxy:
            urls["nginx-proxy"] = nginx_proxy
        redis = {}
        for name in GATEWAYS:
            t = next(t for t in TARGETS if t.name == name)
            redis[name] = await _per_call(redis_url, urls[name], t, s.probe_calls)
        measured = await _measure(urls, s, wrk)
        gateways = {"gateway-pass": gw_pass, "gateway-cache": gw_answer}
        profile = await _profile(gateways, urls, s, wrk, tmp)
    _write_profile(results, _profile_markdown(profile, facts))
    return {"measured": measured, "redis": redis, "upstream": upstream, "nginx": bool(nginx_proxy),
            "profile": {k: v.to_json() for k, v in profile.items()}}  # fmt: skip


async def run(quick: bool, facts: dict[str, Any], results: Path) -> dict[str, Any]:
    s = QUICK if quick else FULL
    wrk = ensure_tool("wrk")
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp_name:
        got = await _scenario(s, Path(tmp_name), wrk, results, facts)
    rows = _rows(got["measured"], s)
    notes = [
        f"{s.rounds} interleaved round(s) of {s.duration_s:g} s per target and connection count; "
        f"medians. Load by {'wrk (--latency)' if wrk else 'bench.pyload (aiohttp)'} on the "
        "same 2-core machine; every server is one process (aiohttp ones on uvloop).",
        f"Upstream: {'nginx' if got['nginx'] else 'the static aiohttp server'} answering a "
        "260-byte mock exam with HubSpot's rate-limit headers. Pass-through: GET "
        f"{PASS_PATH} (no rule; limits of 10^8 per window, so the budget never waits but every "
        f"call is admitted in Redis). Cache hit: GET {EXAM_PATH} with the exam counter overlaid. "
        f"respond: POST {SEARCH_PATH}.",
        "÷ its floor: req/s over the minimal aiohttp proxy (forwarding) or the static aiohttp "
        "server (answers made up); p50 added: the target's p50 less its floor's. The cache hit "
        "is also shown over static-redis, the static server after one EVALSHA of a tiny script "
        "on the same Valkey (redis-py asyncio, one round trip per request, no pipelining): the "
        "round trip a hit needs, the rest being the gateway's own Python. Pass-through is also "
        "shown over proxy-redis, the minimal proxy after the same EVALSHA: the admission's "
        "round trip.",
    ]
    if quick:
        notes.insert(
            0, f"QUICK MODE: {s.duration_s:g} s per measurement instead of {FULL.duration_s:g} s."
        )
    pngs = _plots(rows, s, results)
    data = {"settings": s.__dict__, "machine": facts, "notes": notes, "rows": rows,
            "redis": got["redis"], "profile": got["profile"], "plots": pngs}  # fmt: skip
    report.write("overhead", data, markdown(rows, got["redis"], facts, notes), results)
    return data

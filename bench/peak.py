"""Scenario 1, the peak booking burst (PRD 2.3): N trainees book within 10 s at Starter limits.

Variants, each on a freshly reset simulator (and a flushed Valkey): `direct` (today's backend:
straight to HubSpot, no retries), `sdk-retry` (straight to HubSpot with the Node SDK's retry
policy), `gateway-k cold` and `gateway-k warm` (through k = 1 or 3 gateway processes with
rules/default.yaml, no client retries; cold: nothing before the burst, as when exams open at
9:00; warm: exams read and duplicate scopes loaded first, the way ops would before opening).

`BENCH_PEAK_N=100,300` and `BENCH_PEAK_VARIANTS="gateway-1 cold,direct"` run a subset of the
full set (the report says which ran). `BENCH_GATEWAY_ENV="HUBSPOT_PROXY_REDIS_TIMEOUT_S=1"`
(space-separated NAME=value pairs) runs the gateways with other settings; the report says so.
`BENCH_PEAK_STALL=2:0.6` hangs the Valkey server (SIGSTOP) 2 s into each burst for 0.6 s, as a
stalled Redis would (a fork, a failover, a noisy neighbour): what a stall costs the bookings.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from bench import ops, plots, procs, report
from bench.rulefiles import scaled_default
from tests.kit.booking_flow import (
    BOOKINGS,
    MOCK_EXAMS,
    SDK_RETRY,
    STEPS,
    Booking,
    RetryPolicy,
    Trainee,
    book,
    booked_before,
    problems,
    seed_portal,
    verify_portal,
)
from tests.kit.burst import max_in_window, sim_token_calls, sim_token_stats
from tests.kit.harness import TOKEN


@dataclass(frozen=True)
class Settings:
    trainees: tuple[int, ...]
    arrival_s: float  # trainees arrive evenly over this long
    timeout_s: float  # a booking gives up after this long
    latency_ms: tuple[int, int]
    scale: float  # every window, wait and timeout times this (1: real time)
    drain_max_s: float
    cap_s: float  # bound on one variant's burst
    poll_s: float  # drain checks: quiet for 4 polls this far apart
    exams: int = 4
    credits: int = 2


FULL = Settings((100, 300, 1000, 3000), 10.0, 30.0, (100, 300), 1.0, 180.0, 900.0, 0.5)
QUICK = Settings((100,), 2.0, 6.0, (20, 60), 0.2, 15.0, 60.0, 0.25)


@dataclass(frozen=True)
class Variant:
    name: str
    gateways: int
    retry: RetryPolicy | None
    warm: bool = False


def variants(scale: float) -> tuple[Variant, ...]:
    return (
        Variant("direct", 0, None),
        Variant("sdk-retry", 0, SDK_RETRY.scaled(scale)),
        Variant("gateway-1 cold", 1, None),
        Variant("gateway-1 warm", 1, None, warm=True),
        Variant("gateway-3 cold", 3, None),
        Variant("gateway-3 warm", 3, None, warm=True),
    )


def _selected(s: Settings) -> tuple[tuple[int, ...], tuple[Variant, ...]]:
    """The N and variants to run: all of them, or the subset the environment names."""
    ns, names = os.environ.get("BENCH_PEAK_N"), os.environ.get("BENCH_PEAK_VARIANTS")
    trainees = tuple(int(n) for n in ns.split(",")) if ns else s.trainees
    chosen = variants(s.scale)
    if names:
        wanted = [n.strip() for n in names.split(",")]
        chosen = tuple(v for v in chosen if v.name in wanted)
    return trainees, chosen


# An upstream call's operation, for counting batch calls per operation.
_BATCH = re.compile(
    r"^/crm/(?:v\d+/|objects/\d{4}-\d{2}/|associations/\d{4}-\d{2}/)(.+)/batch/(.+)$"
)


# A single call's path with its ids left out, e.g. /crm/v3/objects/0-1/{id}.
_ID = re.compile(r"/\d+(?=/|$)")


def batches_per_operation(calls: list[dict[str, Any]]) -> dict[str, int]:
    """{"<object path> <operation>": batch calls}, e.g. {"objects/0-46 create": 3}."""
    found: Counter[str] = Counter()
    for call in calls:
        matched = _BATCH.match(str(call.get("path", "")))
        if matched:
            found[f"{matched.group(1)} {matched.group(2)}"] += 1
    return dict(found.most_common())


def singles_per_operation(calls: list[dict[str, Any]]) -> dict[str, int]:
    """{"<METHOD> <path, ids left out>": calls} of the upstream calls that were not batches,
    e.g. {"GET /crm/v3/objects/0-1/{id}": 12}: what the budget spent one call per client call on."""
    found: Counter[str] = Counter()
    for call in calls:
        path = str(call.get("path", ""))
        if not _BATCH.match(path):
            found[f"{call.get('method', '?')} {_ID.sub('/{id}', path)}"] += 1
    return dict(found.most_common())


@dataclass
class Context:
    settings: Settings
    sim: str
    redis_url: str
    rules: Path
    session: aiohttp.ClientSession


async def _burst(
    bases: list[str], trainees: list[Trainee], retry: RetryPolicy | None, s: Settings
) -> tuple[list[Booking], float, bool]:
    """(bookings, burst start, cap hit): trainee i starts at i x arrival/N, on gateway i % k."""
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.monotonic() + 0.2
        step = s.arrival_s / len(trainees)

        async def one(t: Trainee) -> Booking:
            await asyncio.sleep(max(0.0, start + t.index * step - time.monotonic()))
            base = bases[t.index % len(bases)]
            return await book(session, base, TOKEN, t, retry=retry, timeout_s=s.timeout_s)

        tasks = [asyncio.create_task(one(t)) for t in trainees]
        done, pending = await asyncio.wait(tasks, timeout=s.cap_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    bookings = []
    for t, task in zip(trainees, tasks, strict=True):
        if task in done and not task.cancelled():
            bookings.append(task.result())
        else:
            bookings.append(Booking(t, start, time.monotonic(), "cap-hit"))
    return bookings, start, bool(pending)


async def _warm(ctx: Context, gateways: list[str], trainees: list[Trainee]) -> dict[str, Any]:
    """What ops would do before exams open: read each exam through every gateway (exam cache,
    counter) and ask the duplicate check once per exam date (loads a `complete` scope where the
    rule has one), then let one general window pass so the burst starts with a full budget."""
    before = await sim_token_stats(ctx.sim)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    exams = {t.exam.id: t.exam for t in trainees}
    for gw in gateways:
        for exam in exams.values():
            url = f"{gw}/crm/v3/objects/{MOCK_EXAMS}/{exam.id}?properties=capacity,total_bookings"
            async with ctx.session.get(url, headers=headers) as resp:
                await resp.read()
    for exam in exams.values():
        filters = [
            {"propertyName": "contact_id", "operator": "EQ", "value": "0"},
            {"propertyName": "exam_date", "operator": "EQ", "value": exam.date},
            {"propertyName": "is_active", "operator": "EQ", "value": "Active"},
        ]
        body = {"filterGroups": [{"filters": filters}], "limit": 1}
        url = f"{gateways[0]}/crm/v3/objects/{BOOKINGS}/search"
        async with ctx.session.post(url, json=body, headers=headers) as resp:
            await resp.read()
    await asyncio.sleep(10 * ctx.settings.scale + 0.5)
    after = await sim_token_stats(ctx.sim)
    return {"upstream_calls": after.get("total", 0) - before.get("total", 0)}


def _delta(after: dict[str, Any], before: dict[str, Any], key: str) -> int:
    return int(after.get(key, 0)) - int(before.get(key, 0))


def _status_delta(after: dict[str, Any], before: dict[str, Any], code: str) -> int:
    return int(after.get("by_status", {}).get(code, 0)) - int(
        before.get("by_status", {}).get(code, 0)
    )


def step_latency(bookings: list[Booking]) -> dict[str, dict[str, float | None]]:
    """{step: {p50_s, p99_s}} of each step's calls (client-side, send to answer) over the
    successful bookings: where a booking's time goes."""
    per_step: dict[str, list[float]] = {}
    for booking in bookings:
        if booking.ok:
            for call in booking.calls:
                per_step.setdefault(call.step, []).append(call.finished - call.started)
    return {
        step: {"p50_s": report.percentile(took, 50), "p99_s": report.percentile(took, 99)}
        for step in STEPS
        if (took := per_step.get(step))
    }


def gateway_env() -> dict[str, str]:
    """Gateway settings the run asks for beyond the bench's own (`BENCH_GATEWAY_ENV`)."""
    pairs = os.environ.get("BENCH_GATEWAY_ENV", "").split()
    return dict(pair.partition("=")[::2] for pair in pairs)


def redis_stall() -> tuple[float, float] | None:
    """(seconds into the burst, seconds hung) from `BENCH_PEAK_STALL=AT:SECONDS`, or None."""
    given = os.environ.get("BENCH_PEAK_STALL")
    if not given:
        return None
    at, _, hung = given.partition(":")
    return float(at), float(hung)


@contextlib.asynccontextmanager
async def _stalled(redis_url: str, burst_start: float) -> AsyncIterator[None]:
    """The Valkey server hung for a moment of the burst, if the run asks for it."""
    stall = redis_stall()
    if stall is None:
        yield
        return
    client = aioredis.from_url(redis_url)
    try:
        pid = int((await client.info("server"))["process_id"])
    finally:
        await client.aclose()

    async def hang() -> None:
        await asyncio.sleep(max(0.0, burst_start + stall[0] - time.monotonic()))
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(stall[1])
        finally:
            os.kill(pid, signal.SIGCONT)

    task = asyncio.create_task(hang())
    try:
        yield
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _summary(
    bookings: list[Booking], stats: dict[str, Any], calls: list[dict[str, Any]], s: Settings
) -> dict[str, Any]:
    ok = [b.duration for b in bookings if b.ok]
    upstream = stats["upstream_calls"]
    general = [c["t"] for c in calls if c["kind"] == "general"]
    search = [c["t"] for c in calls if c["kind"] == "search"]
    return {
        "bookings": len(bookings),
        "succeeded": len(ok),
        "success_rate": len(ok) / len(bookings),
        "upstream_calls": upstream,
        "upstream_calls_per_booking": upstream / len(bookings),
        "upstream_calls_per_success": upstream / len(ok) if ok else None,
        "upstream_429": stats["upstream_429"],
        "error_share_429": stats["upstream_429"] / upstream if upstream else 0.0,
        "p50_s": report.percentile(ok, 50),
        "p95_s": report.percentile(ok, 95),
        "p99_s": report.percentile(ok, 99),
        "wall_s": max(b.finished for b in bookings) - min(b.started for b in bookings),
        "max_general_in_window": max_in_window(general, 10 * s.scale) if general else 0,
        "max_search_in_window": max_in_window(search, 1 * s.scale) if search else 0,
        "outcomes": dict(Counter(b.outcome for b in bookings).most_common()),
        "steps": step_latency(bookings),
    }


async def _reset(ctx: Context) -> None:
    async with ctx.session.post(f"{ctx.sim}/__sim/reset") as resp:
        resp.raise_for_status()
    client = aioredis.from_url(ctx.redis_url)
    try:
        await client.flushall()
    finally:
        await client.aclose()


async def run_variant(ctx: Context, n: int, v: Variant) -> dict[str, Any]:
    s = ctx.settings
    await _reset(ctx)
    trainees = await seed_portal(ctx.session, ctx.sim, n, exams=s.exams, credits=s.credits)
    out: dict[str, Any] = {"trainees": n, "variant": v.name, "gateways": v.gateways}
    started = time.monotonic()
    with procs.gateways(v.gateways, ctx.sim, ctx.redis_url, ctx.rules, gateway_env()) as gws:
        urls = [g.url for g in gws]
        if urls:  # a gateway in service has seen its backend create before 9:00
            await booked_before(ctx.session, urls[0], TOKEN)
        if v.warm:
            out["warm"] = await _warm(ctx, urls, trainees)
        before = await sim_token_stats(ctx.sim)
        cpu_before = [procs.cpu_seconds(g) for g in gws]
        probers = ops.start_probes(urls)
        async with _stalled(ctx.redis_url, time.monotonic() + 0.2):  # _burst's start
            bookings, burst_start, cap_hit = await _burst(urls or [ctx.sim], trainees, v.retry, s)
        out["probes"] = ops.finish_probes(probers)
        out["cap_hit"] = cap_hit
        out["gateway_cpu_s"] = _cpu_spent(cpu_before, [procs.cpu_seconds(g) for g in gws])
        if urls:
            out["drain"] = (
                await ops.drain(ctx.session, ctx.sim, urls, s.drain_max_s, s.poll_s)
            ).to_json()
            out["jobs"] = await ops.run_job(ctx.session, urls[0], "sync_counters")
            if out["jobs"] == "ok":
                job_drain = await ops.drain(ctx.session, ctx.sim, urls, s.drain_max_s, s.poll_s)
                out["jobs_drain"] = job_drain.to_json()
            out["gateway_metrics"] = await ops.scrape(ctx.session, urls)
        after = await sim_token_stats(ctx.sim)
        calls = [c for c in await sim_token_calls(ctx.sim) if c["t"] >= burst_start - 0.01]
    stats = {
        "upstream_calls": _delta(after, before, "total"),
        "upstream_429": _status_delta(after, before, "429"),
        "rate_limited": after.get("rate_limited", {}),
        "by_kind": {
            k: v - before.get("by_kind", {}).get(k, 0) for k, v in after.get("by_kind", {}).items()
        },
    }
    out.update(_summary(bookings, stats, calls, s))
    out["sim"] = stats
    out["check"] = await verify_portal(ctx.session, ctx.sim, bookings, trainees, credits=s.credits)
    # Half done: a booking HubSpot holds whose client was not told it succeeded (created, but
    # credits, note or associations may be missing).
    out["half_done"] = out["check"]["orphan_bookings"]
    out["batches"] = batches_per_operation(calls)
    out["singles"] = singles_per_operation(calls)
    out["variant_s"] = round(time.monotonic() - started, 1)
    out["_series"] = plots.Series(n, v.name, burst_start, bookings, calls)
    return out


def _data_cell(row: dict[str, Any]) -> str:
    found = problems(row["check"])
    text = "ok" if not found else ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in found.items())
    if row["gateways"]:
        text += f"; jobs: {row.get('jobs', 'n/a')}"
        drain = row.get("drain", {})
        if drain and not drain.get("settled"):
            text += "; write-behind not drained"
    return text


def _row_cells(r: dict[str, Any]) -> list[Any]:
    if "success_rate" not in r:
        error = _short_error(str(r.get("error", "?"))).replace("|", "/")
        return [r["trainees"], r["variant"], f"failed to run: {error}"] + [""] * 12
    wall = report.fmt_s(r["wall_s"]) + (" (cap hit)" if r.get("cap_hit") else "")
    return [
        r["trainees"], r["variant"], report.fmt_pct(r["success_rate"]),
        f"{r['upstream_calls_per_booking']:.2f}", r["upstream_429"],
        report.fmt_pct(r["error_share_429"]), report.fmt_s(r["p50_s"]),
        report.fmt_s(r["p95_s"]), report.fmt_s(r["p99_s"]), wall,
        r["max_general_in_window"], r["max_search_in_window"], r.get("half_done", "-"),
        _batches_cell(r.get("batches") or {}), _data_cell(r),
    ]  # fmt: skip


def _batches_cell(batches: dict[str, int]) -> str:
    return ", ".join(f"{op} {n}" for op, n in batches.items()) or "none"


def markdown(
    rows: list[dict[str, Any]], s: Settings, facts: dict[str, Any], notes: list[str]
) -> str:
    head = [
        "N", "variant", "success", "upstream calls/booking", "upstream 429s", "429 share",
        "p50", "p95", "p99", "wall", f"max general/{10 * s.scale:g} s",
        f"max search/{s.scale:g} s", "half-done", "batch calls by operation",
        "data after the run",
    ]  # fmt: skip
    failures = [
        f"- N={r['trainees']} {r['variant']}: "
        + ", ".join(f"{k} {v}" for k, v in list(r["outcomes"].items())[:6])
        for r in rows
        if "outcomes" in r
    ]
    text = report.header("Peak booking burst (PRD 2.3)", facts, notes)
    table = report.table(head, [_row_cells(r) for r in rows])
    steps = _steps_table(rows)
    return (
        text + "\n" + table + "\n\nOutcomes (why bookings ended):\n\n" + "\n".join(failures)
        + "\n\nPer step, p50 / p99 of successful bookings' calls (client side), and the "
        "gateway's mean coalescing hold (joining a group to its departure, budget wait included) "
        "per operation, and the CPU time its processes spent during the burst (wall time is "
        "the `wall` column):\n\n" + steps
        + "\n\nReadiness probes during the burst, one prober process per gateway sending "
        "`/readyz` as a kubelet does (a new connection each second, failed past the shipped "
        "probes' 5 s; the readinessProbe marks a pod unready after 2 failures in a row, the "
        "livenessProbe restarts it after 3 ten seconds apart); `over 2 s`: the probes the "
        "2 s timeout shipped before would have failed:\n\n"
        + _probes_table(rows)
    )  # fmt: skip


def _probes_table(rows: list[dict[str, Any]]) -> str:
    cells = [
        [r["trainees"], r["variant"], p["probes"], p["failures"], p["longest_failure_streak"],
         f"{p['over_2s']} ({p['longest_over_2s_streak']} in a row)", report.fmt_s(p["p50_s"]),
         report.fmt_s(p["max_s"])]
        for r in rows
        for p in r.get("probes", [])
    ]  # fmt: skip
    head = ["N", "variant", "probes", "failed", "most failed in a row", "over 2 s", "p50", "max"]
    return report.table(head, cells)


def _steps_table(rows: list[dict[str, Any]]) -> str:
    ran = [r for r in rows if r.get("steps")]
    cells = [
        [r["trainees"], r["variant"]]
        + [_p50_p99(r["steps"].get(step)) for step in STEPS]
        + [_mean_holds(r.get("gateway_metrics") or {}), report.fmt_s(r.get("gateway_cpu_s"))]
        for r in ran
    ]
    return report.table(["N", "variant", *STEPS, "mean hold", "gateway CPU in burst"], cells)


def _cpu_spent(before: list[float | None], after: list[float | None]) -> float | None:
    """CPU seconds the gateway processes spent during the burst (None: not measurable)."""
    if not before or None in before or None in after:
        return None
    return sum(a - b for a, b in zip(after, before, strict=True) if a is not None and b is not None)


def _p50_p99(step: dict[str, float | None] | None) -> str:
    if not step:
        return "-"
    return f"{report.fmt_s(step['p50_s'])} / {report.fmt_s(step['p99_s'])}"


def _mean_holds(metrics: dict[str, dict[str, float]]) -> str:
    """`read 0.21 s, create 0.18 s`: hold sum / count per operation, from the gateway's metrics."""
    sums = metrics.get("hubspot_proxy_coalesce_hold_seconds_sum", {})
    counts = metrics.get("hubspot_proxy_coalesce_hold_seconds_count", {})
    means = [
        f"{_label_value(labels)} {sums[labels] / count:.2f} s"
        for labels, count in sorted(counts.items())
        if count and labels in sums
    ]
    return ", ".join(means) or "-"


def _label_value(labels: str) -> str:
    """`read` of `{operation="read"}`."""
    return labels.partition('"')[2].partition('"')[0]


def _notes(s: Settings) -> list[str]:
    notes = [
        f"Simulator: Starter limits (100 general per {10 * s.scale:g} s, 5 search per "
        f"{s.scale:g} s), latency {s.latency_ms[0]}-{s.latency_ms[1]} ms; trainees arrive "
        f"evenly over {s.arrival_s:g} s; a booking times out after {s.timeout_s:g} s.",
        "Variants: direct = no retries; sdk-retry = Node SDK policy (10 s x attempt on "
        "TEN_SECONDLY_ROLLING, 1 s x attempt on SECONDLY, 200 ms x attempt on 5xx, 6 attempts); "
        "gateway-k = k gateway processes on one Valkey, rules/default.yaml, no client retries.",
        "cold = nothing before the burst but one booking the backend made earlier (exams open at "
        "9:00: empty caches and indexes; the gateway has seen the token create, as one in "
        "service has, so its complete indexes may answer misses). warm = "
        "before the burst, GET every exam through every gateway, one duplicate search per exam "
        "date, then one general window of quiet; the warm-up's upstream calls are not counted.",
        "half-done = bookings HubSpot holds whose client was not told they succeeded. Batch "
        "calls by operation come from the simulator's call log (burst and drain).",
        "Upstream calls include refused ones (429); 429 share = 429s / all upstream calls "
        "(HubSpot's 5% guideline). Percentiles over successful bookings; wall = first arrival "
        "to last booking's end. Max-in-window counts the calls the simulator admitted.",
    ]
    if gateway_env():
        settings = " ".join(f"{k}={v}" for k, v in gateway_env().items())
        notes.append(f"Gateways ran with {settings} (BENCH_GATEWAY_ENV).")
    stall = redis_stall()
    if stall is not None:
        notes.append(
            f"Valkey hung (SIGSTOP) {stall[0]:g} s into each burst for {stall[1]:g} s "
            "(BENCH_PEAK_STALL)."
        )
    if s.scale != 1:
        notes.insert(
            0,
            f"QUICK MODE: time scaled x{s.scale:g} (windows, SDK waits, gateway max_wait, "
            "arrival window, timeout, latency); call counts and limits are Starter's. Only N=100.",
        )
    return notes


async def run(quick: bool, facts: dict[str, Any], results: Path) -> dict[str, Any]:
    s = QUICK if quick else FULL
    rows: list[dict[str, Any]] = []
    series: list[plots.Series] = []
    notes = _notes(s)
    data: dict[str, Any] = {"settings": s.__dict__, "machine": facts, "notes": notes}
    sim_args = ["--tier", "starter", "--latency-ms", f"{s.latency_ms[0]},{s.latency_ms[1]}"]
    sim_args += ["--seed", "7", "--general-window-s", f"{10 * s.scale:g}"]
    sim_args += ["--search-window-s", f"{s.scale:g}"]
    with (
        tempfile.TemporaryDirectory(prefix="bench-peak-") as tmp,
        procs.valkey() as redis_url,
        procs.sim(*sim_args) as sim,
    ):
        rules = scaled_default(s.scale, Path(tmp))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            ctx = Context(s, sim.url, redis_url, rules, session)
            trainees, chosen = _selected(s)
            data["ran"] = {"trainees": trainees, "variants": [v.name for v in chosen]}
            notes.append(f"Ran N = {', '.join(map(str, trainees))}; variants: "
                         f"{', '.join(v.name for v in chosen)}.")  # fmt: skip
            for n in trainees:
                for v in chosen:
                    print(f"[peak] N={n} {v.name} ...", flush=True)
                    try:
                        row = await run_variant(ctx, n, v)
                        series.append(row.pop("_series"))
                    except Exception as exc:  # one broken variant must not lose the others
                        print(f"[peak] N={n} {v.name} failed: {exc!r}", flush=True)
                        row = _failed_row(n, v, exc)
                    rows.append(row)
                    data["rows"] = rows  # partial results survive an interrupted full run
                    report.write("peak", data, markdown(rows, s, facts, notes), results, echo=False)
    data["plots"] = plots.peak(series, s.scale, results)
    report.write("peak", data, markdown(rows, s, facts, notes), results)
    return data


def _failed_row(n: int, v: Variant, exc: BaseException) -> dict[str, Any]:
    error = f"{type(exc).__name__}: {exc}"
    return {"trainees": n, "variant": v.name, "gateways": v.gateways, "error": error}


def _short_error(text: str) -> str:
    """The last line of an error (a child's traceback ends with the exception), shortened."""
    parts = (ln.strip() for ln in text.replace("\\n", "\n").splitlines())
    lines = [ln for ln in parts if any(ch.isalnum() for ch in ln)]
    last = lines[-1] if lines else text
    return (last[:157] + "...") if len(last) > 160 else last

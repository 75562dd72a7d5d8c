"""What an operator does around a run: scrape `/metrics`, run jobs, wait for write-behind."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from bench import probe
from bench.procs import ADMIN_TOKEN

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")

INTERESTING = (
    "hubspot_proxy_requests_total",
    "hubspot_proxy_budget_rejected_total",
    "hubspot_proxy_upstream_calls_total",
    "hubspot_proxy_upstream_429_total",
    "hubspot_proxy_upstream_retries_total",
    "hubspot_proxy_rule_answers_total",
    "hubspot_proxy_cache_events_total",
    "hubspot_proxy_writes_total",
    "hubspot_proxy_write_pending",
    "hubspot_proxy_dead_letters",
    "hubspot_proxy_batch_size_count",
    "hubspot_proxy_batch_size_sum",
    "hubspot_proxy_job_runs_total",
    "hubspot_proxy_redis_errors_total",
    "hubspot_proxy_redis_fallback",
    "hubspot_proxy_coalesce_hold_seconds_sum",
    "hubspot_proxy_coalesce_hold_seconds_count",
    "hubspot_proxy_coalesced_batch_size_sum",
    "hubspot_proxy_coalesced_batch_size_count",
    "hubspot_proxy_queue_wait_seconds_sum",
    "hubspot_proxy_queue_wait_seconds_count",
    "hubspot_proxy_coalesce_alone_total",
    "hubspot_proxy_coalesce_regrouped_total",
    "hubspot_proxy_request_queued_seconds_bucket",
    "hubspot_proxy_request_queued_seconds_sum",
    "hubspot_proxy_request_queued_seconds_count",
)

Metrics = dict[str, dict[str, float]]


def parse_metrics(text: str) -> Metrics:
    """{family: {labels: value}} for the samples of the Prometheus text format."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m:
            try:
                out[m.group(1)][m.group(2) or ""] = float(m.group(3))
            except ValueError:
                continue
    return dict(out)


async def scrape(session: aiohttp.ClientSession, urls: Sequence[str]) -> Metrics:
    """The interesting families summed over gateways, label by label."""
    total: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for url in urls:
        try:
            async with session.get(f"{url}/metrics") as resp:
                text = await resp.text()
        except aiohttp.ClientError:
            continue
        for family, samples in parse_metrics(text).items():
            if family in INTERESTING:
                for labels, value in samples.items():
                    total[family][labels] += value
    return {k: dict(v) for k, v in total.items()}


def family_sum(metrics: Metrics, family: str, contains: str = "") -> float | None:
    samples = metrics.get(family)
    if samples is None:
        return None
    return sum(v for labels, v in samples.items() if contains in labels)


async def run_job(session: aiohttp.ClientSession, gateway: str, job: str) -> str:
    """`ok`, `n/a` (endpoint not there: 404/405) or `http-<status>`."""
    url = f"{gateway}/proxy/v1/jobs/{job}/run"
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        async with session.post(url, headers=headers) as resp:
            await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"error: {type(exc).__name__}"
    if status in (404, 405):
        return "n/a"
    return "ok" if 200 <= status <= 299 else f"http-{status}"


@dataclass
class Drain:
    seconds: float
    pending_left: float | None
    settled: bool

    def to_json(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "pending_left": self.pending_left, "settled": self.settled}


async def _sim_snapshot(session: aiohttp.ClientSession, sim: str) -> tuple[Any, ...]:
    async with session.get(f"{sim}/__sim/stats") as resp:
        body = await resp.json()
    return (body["objects"], body["associations"], body["totals"]["total"])


async def drain(
    session: aiohttp.ClientSession,
    sim: str,
    gateways: Sequence[str],
    max_s: float,
    poll_s: float = 0.5,
    quiet_polls: int = 4,
) -> Drain:
    """Wait until write-behind has nothing pending and the simulator saw no call for a while."""
    started = time.monotonic()
    last: tuple[Any, ...] | None = None
    quiet, pending = 0, None
    while time.monotonic() - started < max_s:
        pending = family_sum(await scrape(session, gateways), "hubspot_proxy_write_pending")
        snap = await _sim_snapshot(session, sim)
        quiet = quiet + 1 if snap == last and not pending else 0
        if quiet >= quiet_polls:
            return Drain(round(time.monotonic() - started, 2), pending, True)
        last = snap
        await asyncio.sleep(poll_s)
    return Drain(round(time.monotonic() - started, 2), pending, False)


def start_probes(urls: Sequence[str], path: str = "/readyz") -> list[subprocess.Popen[str]]:
    """A kubelet-like prober (`bench.probe`) per gateway, each a process of its own."""
    argv = [sys.executable, "-m", "bench.probe"]
    return [
        subprocess.Popen([*argv, url + path], stdout=subprocess.PIPE, text=True) for url in urls
    ]


def finish_probes(probers: Sequence[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    """Stop the probers; what each saw."""
    for proc in probers:
        proc.send_signal(signal.SIGTERM)
    said = [proc.communicate(timeout=15)[0] for proc in probers]
    # Stopped before it could set its handler (a run of under a second): it probed nothing.
    return [json.loads(text) if text.strip() else probe.summary([]) for text in said]

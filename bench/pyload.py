"""A small wrk stand-in: `python -m bench.pyload URL CONNECTIONS SECONDS [--header H]...`.

Runs in its own process (uvloop when installed) so the bench's event loop does not share a CPU
with the load; prints one JSON line shaped like `bench.load.LoadResult`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp

from bench.env import run_async


async def _worker(
    session: aiohttp.ClientSession,
    url: str,
    post: str | None,
    until: float,
    latencies: list[float],
    errs: list[int],
) -> None:
    method = "GET" if post is None else "POST"
    data = None if post is None else post.encode()
    headers = None if post is None else {"Content-Type": "application/json"}
    while time.monotonic() < until:
        started = time.perf_counter()
        try:
            async with session.request(method, url, data=data, headers=headers) as resp:
                await resp.read()
                if not 200 <= resp.status < 400:
                    errs[0] += 1
        except (aiohttp.ClientError, TimeoutError):
            errs[1] += 1
            continue
        latencies.append((time.perf_counter() - started) * 1000)


def _pct(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(
    url: str,
    connections: int,
    duration: float,
    headers: dict[str, str],
    request_timeout: float,
    post: str | None = None,
) -> dict[str, object]:
    latencies: list[float] = []
    errs = [0, 0]  # non-2xx, errors
    connector = aiohttp.TCPConnector(limit=connections)
    client_timeout = aiohttp.ClientTimeout(total=request_timeout)
    async with aiohttp.ClientSession(
        connector=connector, headers=headers, timeout=client_timeout
    ) as session:
        started = time.monotonic()
        until = started + duration
        await asyncio.gather(
            *(_worker(session, url, post, until, latencies, errs) for _ in range(connections))
        )
        elapsed = time.monotonic() - started
    ordered = sorted(latencies)
    return {
        "tool": "python",
        "connections": connections,
        "duration_s": duration,
        "requests": len(ordered) + errs[0],
        "rps": round((len(ordered) + errs[0]) / elapsed, 1),
        "p50_ms": _pct(ordered, 0.50),
        "p99_ms": _pct(ordered, 0.99),
        "non_2xx": errs[0],
        "errors": errs[1],
        "note": "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pyload")
    parser.add_argument("url")
    parser.add_argument("connections", type=int)
    parser.add_argument("duration", type=float)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--post", default=None, help="POST this JSON body instead of GET")
    ns = parser.parse_args()
    headers = dict(h.split(": ", 1) for h in ns.header)
    result = run_async(run(ns.url, ns.connections, ns.duration, headers, ns.timeout, ns.post))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

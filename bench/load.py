"""Closed-loop HTTP load for a fixed time: wrk when installed, else `bench.pyload` (aiohttp)."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import tempfile
from dataclasses import asdict, dataclass
from typing import Any

from bench.env import REPO

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_LAT = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_TOTAL = re.compile(r"^\s*(\d+) requests in", re.M)
_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass
class LoadResult:
    tool: str
    connections: int
    duration_s: float
    requests: int = 0
    rps: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    non_2xx: int = 0
    errors: int = 0
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_wrk(text: str, connections: int, duration_s: float) -> LoadResult:
    result = LoadResult("wrk", connections, duration_s)
    for pct, value, unit in _LAT.findall(text):
        ms = float(value) * _UNITS[unit]
        if pct == "50":
            result.p50_ms = ms
        else:
            result.p99_ms = ms
    if m := _RPS.search(text):
        result.rps = float(m.group(1))
    if m := _TOTAL.search(text):
        result.requests = int(m.group(1))
    if m := _NON2XX.search(text):
        result.non_2xx = int(m.group(1))
    if m := _SOCKET.search(text):
        result.errors = sum(int(x) for x in m.groups())
    if result.requests == 0:
        result.note = text.strip().splitlines()[-1] if text.strip() else "no output"
    return result


async def _run(argv: list[str], timeout_s: float) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return "killed: load generator overran its time"
    return out.decode(errors="replace")


async def drive(
    url: str,
    connections: int,
    duration_s: float,
    headers: dict[str, str],
    *,
    wrk: str | None,
    threads: int = 2,
    timeout_s: float = 5.0,
    post: str | None = None,
) -> LoadResult:
    """`connections` keep-alive connections sending GET `url` (or POST the JSON `post`) back to
    back for `duration_s`."""
    bound = duration_s + timeout_s + 15
    if wrk:
        argv = [wrk, f"-t{max(1, min(threads, connections))}", f"-c{connections}"]
        argv += [f"-d{max(1, round(duration_s))}s", "--latency", f"--timeout={round(timeout_s)}s"]
        for name, value in headers.items():
            argv += ["-H", f"{name}: {value}"]
        if post is None:
            return parse_wrk(await _run([*argv, url], bound), connections, duration_s)
        with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
            script.write(_wrk_post(post))
            script.flush()
            text = await _run([*argv, "-s", script.name, url], bound)
        return parse_wrk(text, connections, duration_s)
    argv = [sys.executable, "-m", "bench.pyload", url, str(connections), f"{duration_s:g}"]
    argv += [f"--timeout={timeout_s:g}"] + ([] if post is None else [f"--post={post}"])
    for name, value in headers.items():
        argv += ["--header", f"{name}: {value}"]
    text = await _run(argv, bound)
    try:
        return LoadResult(**json.loads(text.strip().splitlines()[-1]))
    except (ValueError, IndexError, TypeError):
        return LoadResult("python", connections, duration_s, note=text[-300:])


def _wrk_post(body: str) -> str:
    """wrk's Lua: every request a POST of `body` as JSON."""
    return (
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )

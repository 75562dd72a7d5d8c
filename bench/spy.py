"""Where a gateway process spends its CPU under load: py-spy samples it, and the samples are
summed by the part of the code they are in, so the next change can see where the time goes.

Each sample is a stack; it counts once for every part (a proxy module, a library) that has a
frame on it (inclusive share), and once for the function at its top (self share).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
_LIBRARIES = ("aiohttp", "redis", "multidict", "yarl", "prometheus_client", "orjson", "uvloop")


def py_spy() -> str | None:
    """py-spy from the bench's own environment (the `bench` extra), else from PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def record(binary: str, pid: int, seconds: float, out: Path) -> bool:
    """Sample `pid` for `seconds` into `out` (py-spy's raw collapsed stacks); False if it failed."""
    argv = [binary, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    argv += ["--rate", "250", "--format", "raw", "--nonblocking", "--output", str(out)]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        await asyncio.wait_for(proc.wait(), seconds + 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return False
    return proc.returncode == 0


def part_of(file: str) -> str:
    """`proxy/budget/limiter.py` for the gateway's own code, the library's name otherwise."""
    path = "/" + file.replace("\\", "/")
    if "/proxy/" in path and "site-packages" not in path:
        return "proxy/" + path.rsplit("/proxy/", 1)[1]
    for library in _LIBRARIES:
        if f"/{library}/" in path:
            return library
    if "asyncio/" in path:
        return "asyncio"
    return "other"


@dataclass(frozen=True)
class Summary:
    samples: int
    inclusive: list[tuple[str, float]]  # part, share of samples with a frame in it
    top_self: list[tuple[str, float]]  # function (part), share of samples at the top

    def to_json(self) -> dict[str, Any]:
        return {"samples": self.samples, "inclusive": self.inclusive, "self": self.top_self}


def summarize(raw: str, top: int = 15) -> Summary:
    inclusive: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [m for f in stack.split(";") if (m := _FRAME.match(f.strip()))]
        for part in {part_of(m["file"]) for m in frames}:
            inclusive[part] += count
        if frames:
            leaf = frames[-1]
            leaves[f"{leaf['func']} ({part_of(leaf['file'])})"] += count
    share = 1 / total if total else 0.0
    return Summary(
        total,
        [(name, n * share) for name, n in inclusive.most_common(top)],
        [(name, n * share) for name, n in leaves.most_common(top)],
    )


def markdown(title: str, summary: Summary) -> str:
    lines = [f"### {title} ({summary.samples} samples)", "", "| part (inclusive) | share |"]
    lines += ["|---|---|"] + [f"| {name} | {share:.1%} |" for name, share in summary.inclusive]
    lines += ["", "| function at the top of the stack (self) | share |", "|---|---|"]
    lines += [f"| {name} | {share:.1%} |" for name, share in summary.top_self]
    return "\n".join(lines)

"""`python -m bench.probe URL [PERIOD_S] [TIMEOUT_S]`: GET `URL` as a kubelet's HTTP probe does,
from a process of its own (the bench's event loop is busy driving the load it measures): a new
connection every PERIOD_S seconds (default 1), failed when no 200 comes within TIMEOUT_S
(default 5, the shipped k8s probes'). On SIGTERM or SIGINT it prints one JSON line: how many
probes ran, failed, failed in a row at most, took longer than the 2 s the probes used to allow
(and how many of those in a row), and the p50 and slowest of those answered.
"""

from __future__ import annotations

import json
import signal
import sys
import time
import urllib.error
import urllib.request
from types import FrameType
from typing import Any

OLD_TIMEOUT_S = 2.0


class _Stop(Exception):
    pass


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def _probe(url: str, timeout_s: float) -> float | None:
    """Seconds to a 200, or None (refused, an error status, or past the timeout)."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            resp.read()
            ok = resp.status == 200
    except (OSError, urllib.error.URLError):
        return None
    took = time.monotonic() - started
    return took if ok and took <= timeout_s else None


def summary(took: list[float | None]) -> dict[str, Any]:
    """What a run of probes (seconds to a 200, or None for a failure) comes to."""
    done = sorted(t for t in took if t is not None)
    return {
        "probes": len(took),
        "failures": len(took) - len(done),
        "longest_failure_streak": _longest_run([t is None for t in took]),
        "over_2s": sum(1 for t in took if t is None or t > OLD_TIMEOUT_S),
        "longest_over_2s_streak": _longest_run([t is None or t > OLD_TIMEOUT_S for t in took]),
        "p50_s": round(done[len(done) // 2], 3) if done else None,
        "max_s": round(done[-1], 3) if done else None,
    }


def _longest_run(flags: list[bool]) -> int:
    longest = run = 0
    for flag in flags:
        run = run + 1 if flag else 0
        longest = max(longest, run)
    return longest


def main() -> None:
    url = sys.argv[1]
    period_s = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    timeout_s = float(sys.argv[3]) if len(sys.argv) > 3 else 5.0
    took: list[float | None] = []
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while True:
            started = time.monotonic()
            took.append(_probe(url, timeout_s))
            time.sleep(max(0.0, started + period_s - time.monotonic()))
    except _Stop:
        pass
    print(json.dumps(summary(took)), flush=True)


if __name__ == "__main__":
    main()

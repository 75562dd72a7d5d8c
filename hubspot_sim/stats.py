"""What the simulator saw, per token: counts, 429s, peak window usage and a call log.

Tokens are secrets, so they only ever appear as a short hash; a caller that knows a token can
still ask for its stats (the hash is computed server-side).
"""

from __future__ import annotations

import hashlib
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from .limits import KIND_GENERAL, KIND_SEARCH, SlidingLog


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


class WindowMax:
    """Largest number of calls in any rolling window of the given length.

    The busiest window can always be taken to end at an arrival, so checking the count each
    time a call arrives finds the exact maximum.
    """

    __slots__ = ("_log", "peak")

    def __init__(self) -> None:
        self._log = SlidingLog()
        self.peak = 0

    def add(self, now: float, window_s: float) -> None:
        in_window = self._log.count(now, window_s) + 1
        self._log.add(now)
        self.peak = max(self.peak, in_window)


@dataclass
class CallRecord:
    t: float  # time.monotonic() at arrival, comparable with the tests' own clock
    kind: str
    method: str
    path: str
    status: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "kind": self.kind,
            "method": self.method,
            "path": self.path,
            "status": self.status,
        }


class TokenStats:
    def __init__(self, hashed: str, log_max: int) -> None:
        self.token_hash = hashed
        self.by_kind: Counter[str] = Counter()
        self.by_kind_status: dict[str, Counter[str]] = {}
        self.by_status: Counter[str] = Counter()
        self.rate_limited: Counter[str] = Counter()
        self.spent: Counter[str] = Counter()
        self.general_peak = WindowMax()
        self.search_peak = WindowMax()
        self.calls: deque[CallRecord] = deque(maxlen=log_max)
        self.accepted = 0

    def admitted(
        self, kind: str, now: float, method: str, path: str, windows: tuple[float, float]
    ) -> CallRecord:
        """Note an admitted call; `windows` is (general_window_s, search_window_s)."""
        if kind == KIND_GENERAL:
            self.general_peak.add(now, windows[0])
        elif kind == KIND_SEARCH:
            self.search_peak.add(now, windows[1])
        record = CallRecord(now, kind, method, path)
        self.calls.append(record)
        self.accepted += 1
        return record

    def answered(self, kind: str, status: int, policy: str | None = None) -> None:
        code = str(status)
        self.by_kind[kind] += 1
        self.by_kind_status.setdefault(kind, Counter())[code] += 1
        self.by_status[code] += 1
        if policy is not None:
            self.rate_limited[policy] += 1

    def to_json(self, usage: dict[str, int]) -> dict[str, Any]:
        return {
            "token_hash": self.token_hash,
            "total": sum(self.by_kind.values()),
            "by_kind": dict(self.by_kind),
            "by_kind_status": {k: dict(v) for k, v in self.by_kind_status.items()},
            "by_status": dict(self.by_status),
            "rate_limited": dict(self.rate_limited),
            "max_in_window": {
                "general": self.general_peak.peak,
                "search": self.search_peak.peak,
            },
            "window_usage": usage,
            "spent": dict(self.spent),
            "accepted": self.accepted,
        }


class StatsRegistry:
    def __init__(self, log_max: int) -> None:
        self._log_max = log_max
        self.tokens: dict[str, TokenStats] = {}
        self.unauthenticated = 0

    def for_hash(self, hashed: str) -> TokenStats:
        stats = self.tokens.get(hashed)
        if stats is None:
            stats = self.tokens[hashed] = TokenStats(hashed, self._log_max)
        return stats

    def totals(self) -> dict[str, Any]:
        by_status: Counter[str] = Counter()
        by_kind: Counter[str] = Counter()
        rate_limited: Counter[str] = Counter()
        for stats in self.tokens.values():
            by_status.update(stats.by_status)
            by_kind.update(stats.by_kind)
            rate_limited.update(stats.rate_limited)
        return {
            "total": sum(by_kind.values()),
            "by_kind": dict(by_kind),
            "by_status": dict(by_status),
            "rate_limited": dict(rate_limited),
            "unauthenticated": self.unauthenticated,
        }

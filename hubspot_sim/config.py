"""Simulator settings: HubSpot's published limits per tier, every one overridable.

Tests shrink the windows (e.g. 20 calls per 2 s) so rolling-window behaviour can be checked in
well under a second of wall time; `None` means "the tier's published value".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Final

# (calls per 10 s, calls per day) for private apps; HUBSPOT.md "Limits". Where HubSpot's pages
# disagree (add-on 200 vs 250, professional daily 625k vs 650k) the issue fixes the value used.
TIER_LIMITS: Final[dict[str, tuple[int, int]]] = {
    "starter": (100, 250_000),
    "free": (100, 250_000),
    "professional": (190, 625_000),
    "enterprise": (190, 1_000_000),
    "addon": (250, 2_000_000),
}

FAULT_STATUSES: Final = (502, 503, 504)


@dataclass(frozen=True)
class SimConfig:
    """Everything the simulator can be told; frozen so a running app swaps whole copies."""

    tier: str = "starter"
    general_limit: int | None = None  # None: the tier's burst limit
    general_window_s: float = 10.0
    search_limit: int = 5
    search_window_s: float = 1.0
    daily_limit: int | None = None  # None: the tier's daily limit
    daily_window_s: float = 86_400.0
    latency_ms: tuple[float, float] = (0.0, 0.0)
    seed: int | None = None
    fault_5xx_rate: float = 0.0
    fault_timeout_rate: float = 0.0
    fault_423_rate: float = 0.0
    # Faults after the call was applied: HubSpot wrote it, the client learns nothing (5xx) or
    # gives up waiting (timeout). The faults above come before anything is applied.
    fault_5xx_after_rate: float = 0.0
    fault_timeout_after_rate: float = 0.0
    timeout_s: float = 30.0
    # Batch answers as HubSpot may give them: `objectWriteTraceId` echoed on results and errors
    # or not (the v3 reference example has none), results in input order or shuffled, and one
    # invalid input failing the whole batch with a 400 instead of a 207.
    echo_trace_ids: bool = True
    shuffle_batch_results: bool = False
    reject_whole_batch: bool = False
    portal_id: int = 12345678
    # HubSpot indexes new objects for search "after a few moments"; 0 makes them visible at once.
    search_index_delay_s: float = 0.0
    search_body_max_chars: int = 3000
    gzip_min_bytes: int = 1024
    call_log_max: int = 100_000

    def __post_init__(self) -> None:
        if self.tier not in TIER_LIMITS:
            raise ValueError(f"unknown tier {self.tier!r}; expected one of {sorted(TIER_LIMITS)}")
        lo, hi = self.latency_ms
        if lo < 0 or hi < lo:
            raise ValueError(f"latency_ms must be 0 <= lo <= hi, got {self.latency_ms}")
        rates = self.fault_rates
        if any(r < 0 for r in rates) or sum(rates) > 1:
            raise ValueError("fault rates must be >= 0 and sum to at most 1")
        for name in ("general_window_s", "search_window_s", "daily_window_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")

    @property
    def fault_rates(self) -> tuple[float, ...]:
        return (
            self.fault_5xx_rate,
            self.fault_timeout_rate,
            self.fault_423_rate,
            self.fault_5xx_after_rate,
            self.fault_timeout_after_rate,
        )

    @property
    def general_max(self) -> int:
        return self.general_limit if self.general_limit is not None else TIER_LIMITS[self.tier][0]

    @property
    def daily_max(self) -> int:
        return self.daily_limit if self.daily_limit is not None else TIER_LIMITS[self.tier][1]

    def replace(self, changes: dict[str, Any]) -> SimConfig:
        """A copy with `changes` applied (JSON values coerced); unknown keys raise ValueError."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - set(fields))
        if unknown:
            raise ValueError(f"unknown config keys: {unknown}")
        coerced: dict[str, Any] = {}
        for key, value in changes.items():
            if key == "latency_ms":
                lo, hi = value
                coerced[key] = (float(lo), float(hi))
            else:
                coerced[key] = value
        return dataclasses.replace(self, **coerced)

    def to_json(self) -> dict[str, Any]:
        body = dataclasses.asdict(self)
        body["latency_ms"] = list(self.latency_ms)
        body["general_max"] = self.general_max
        body["daily_max"] = self.daily_max
        return body

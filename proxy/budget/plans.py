"""Turning a classified call into a budget plan: which buckets, what priority, which deadline."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from zoneinfo import ZoneInfo

from proxy.budget.model import BucketSpec, Priority
from proxy.hubspot import protocol as hubspot
from proxy.rules.loader import Classification, LimitsConfig, Rules
from proxy.rules.model import ADMISSIONS

MAX_WAIT_HEADER = "X-HubSpot-Proxy-Max-Wait-Ms"


@dataclass
class CallTrace:
    """What happened to one call on its way out, for the request log line."""

    request_id: str = ""
    waited_s: float = 0.0
    attempts: int = 0


@dataclass(frozen=True)
class CallPlan:
    credential: str
    buckets: Sequence[BucketSpec]
    priority: Priority
    deadline: float  # time.monotonic() by which the call must have been sent
    idempotent: bool
    daily_reset_ms: int | None = None
    trace: CallTrace = field(default_factory=CallTrace)

    @cached_property
    def bucket_label(self) -> str:
        return "+".join(b.name for b in self.buckets)


def is_idempotent(method: str, path: str) -> bool:
    """Calls that may be retried after an ambiguous 5xx: they cannot create a second record."""
    return method in {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"} or hubspot.is_search(method, path)


def next_midnight_ms(timezone: str, now: datetime | None = None) -> int:
    """Epoch ms of the next midnight in the account's time zone, when HubSpot resets the daily."""
    zone = ZoneInfo(timezone)
    local = (now or datetime.now(tz=zone)).astimezone(zone)
    midnight = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return int(midnight.timestamp() * 1000)


class _Midnights:
    """`next_midnight_ms` once per day per time zone, not on every call: the answer holds until
    the midnight it names has passed."""

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def __call__(self, timezone: str) -> int:
        midnight = self._next.get(timezone)
        if midnight is None or time.time() * 1000 >= midnight:
            midnight = self._next[timezone] = next_midnight_ms(timezone)
        return midnight


daily_reset_ms = _Midnights()


def guarded_window_ms(window_ms: int) -> int:
    """The window the limiter keeps: HubSpot's, plus a guard for arrival jitter.

    Admission reserves slots in clusters (N calls at t, N more at t + W). Calls admitted at the
    same instant reach HubSpot spread over the time it takes to send them; if a late arrival of
    one cluster and an early one of the next fall within HubSpot's window, it counts both. A
    guard of 5% of the window (at most 250 ms) keeps the clusters apart, and a short window
    (search's second) gets up to 100 ms (at most 10% of it) rather than 50: a late send on a
    loaded event loop, or a slow network, overran 50 ms (three replicas on two busy CPUs).
    """
    return window_ms + min(250, max(window_ms // 20, min(100, window_ms // 10)))


_SPECS: dict[tuple[str, ...], tuple[LimitsConfig, tuple[BucketSpec, ...]]] = {}


def bucket_specs(rules: Rules, names: tuple[str, ...]) -> tuple[BucketSpec, ...]:
    """The specs of `names` under `rules`' limits; kept while those limits are in force."""
    kept = _SPECS.get(names)
    if kept is not None and kept[0] is rules.limits:
        return kept[1]
    specs = _bucket_specs(rules, names)
    _SPECS[names] = (rules.limits, specs)
    return specs


def _bucket_specs(rules: Rules, names: tuple[str, ...]) -> tuple[BucketSpec, ...]:
    specs = []
    for name in names:
        limit, window_ms = rules.limits.effective(name)
        if name == "daily":
            specs.append(BucketSpec(name, limit, window_ms, "daily"))
        else:
            delay_ms = rules.limits.admissions_max_delay_ms if name == ADMISSIONS else None
            window = guarded_window_ms(window_ms)
            specs.append(BucketSpec(name, limit, window, max_delay_ms=delay_ms))
    return tuple(specs)


def client_max_wait_s(header: str | None) -> float | None:
    """A client may ask to wait less than its route allows, never more."""
    if header is None:
        return None
    try:
        value = int(header)
    except ValueError:
        return None
    return max(0, value) / 1000


def plan_for(
    rules: Rules,
    credential: str,
    method: str,
    path: str,
    *,
    max_wait_header: str | None = None,
    priority: Priority | None = None,
    request_id: str = "",
    wait_s: float | None = None,
    classification: Classification | None = None,
    now: float | None = None,
) -> CallPlan:
    """The budget plan of one call. `wait_s` replaces the route's max_wait (the gateway's own
    background calls); `classification` saves classifying a call the caller already has; `now`
    (time.monotonic()) is when the call arrived, for a plan made later."""
    classified = classification or rules.classify(method, path)
    wait_s = classified.max_wait_s if wait_s is None else wait_s
    asked = client_max_wait_s(max_wait_header)
    if asked is not None:
        wait_s = min(wait_s, asked)
    return CallPlan(
        credential=credential,
        buckets=bucket_specs(rules, classified.buckets),
        priority=priority if priority is not None else Priority[classified.priority.upper()],
        deadline=(time.monotonic() if now is None else now) + wait_s,
        idempotent=is_idempotent(method, path),
        daily_reset_ms=daily_reset_ms(rules.limits.daily_timezone),
        trace=CallTrace(request_id=request_id),
    )

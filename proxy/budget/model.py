"""Budget arithmetic (pure): bucket specs, the admission slot rule, learned limits, fallback sizing.

`lua/admit_core.lua` (run by `admit.lua`, and by `admit_many.lua` for a batch) is the production
implementation of the slot rule; `BudgetModel` below is its Python mirror, kept in step with it
so the arithmetic can be tested with a fake clock and random arrival sequences. Times are
integers in milliseconds; nothing here reads a clock.

Why the slot rule never puts more than N calls in any rolling window of W ms
---------------------------------------------------------------------------
Each bucket keeps a log of slot times. A new slot t is admitted only if

  (a) t >= the latest slot in the log (insertion is monotone), and
  (b) t >= e + W where e is the N-th most recent slot (when the log holds N or more).

Claim: if every half-open window [x, x+W) holds at most N slots before an insertion, it does
after. Windows without t are unchanged. By (a) t is the largest slot, so a window containing t
holds t plus a suffix of the log; if it held N+1 slots it would hold the N most recent ones,
including e, so t - e < W, contradicting (b). Removing a slot (a cancelled reservation, or
trimming slots at or before now - W, which can no longer share a window with any t >= now) never
adds a slot to a window, so the property holds for every sequence of admissions and releases,
also when N varies between insertions (learned limits): each window holds at most the largest N.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final, Literal

from proxy.hubspot.protocol import POLICY_DAILY, POLICY_SECONDLY, POLICY_TEN_SECONDLY

_POLICIES: Final = {"general": POLICY_TEN_SECONDLY, "search": POLICY_SECONDLY}
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Learned limits recover by 1/RECOVERY_DIVISOR of the configured limit (rounded up) per window.
RECOVERY_DIVISOR: Final = 10
# A learned limit is kept this many windows; by then it has recovered fully anyway.
LEARNED_TTL_WINDOWS: Final = 12


class Priority(IntEnum):
    INTERACTIVE = 0
    DEFAULT = 1
    BACKGROUND = 2

    @property
    def label(self) -> str:
        """The lower-case name metrics and logs use; `.name` is a descriptor call per use."""
        return _PRIORITY_LABELS[self]


_PRIORITY_LABELS: Final = {p: p.name.lower() for p in Priority}


# How far ahead (seconds) each class may reserve a slot. INTERACTIVE: as far as its deadline
# allows; BACKGROUND: only a slot free now, so it never takes a slot ahead of a waiting
# interactive call on any replica.
DEFAULT_HORIZONS_S: Final[Mapping[Priority, float]] = {
    Priority.INTERACTIVE: math.inf,
    Priority.DEFAULT: 2.0,
    Priority.BACKGROUND: 0.0,
}


@dataclass(frozen=True)
class BucketSpec:
    """One bucket's effective limit (the caller has applied the safety margin)."""

    name: str
    limit: int
    window_ms: int
    kind: Literal["window", "daily"] = "window"
    # A pace the call takes a slot of without waiting for it (`coalesce.pace: borrow`): the
    # slot is reserved where it falls, so the next call that does wait for the pace waits
    # longer; the call itself leaves when its other buckets let it.
    borrow: bool = False
    # A bucket that counts flows, not calls (`limits.admissions`): a new flow is refused at once
    # while this process is this far behind (`proxy.budget.overload`).
    max_delay_ms: int | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"bucket name must match {_NAME.pattern}: {self.name!r}")
        if self.limit < 1:
            raise ValueError(f"bucket {self.name}: limit must be >= 1, got {self.limit}")
        if self.kind == "window" and self.window_ms < 1:
            raise ValueError(f"bucket {self.name}: window_ms must be >= 1, got {self.window_ms}")
        if self.kind not in ("window", "daily"):
            raise ValueError(f"bucket {self.name}: unknown kind {self.kind!r}")
        if self.borrow and self.kind != "window":
            raise ValueError(f"bucket {self.name}: only a window bucket can be borrowed from")
        if self.max_delay_ms is not None and self.max_delay_ms < 1:
            raise ValueError(f"bucket {self.name}: max_delay_ms must be >= 1")


@dataclass(frozen=True)
class Admission:
    slot_ms: int  # Redis time (epoch ms) at which the call may be sent; wall clock in fallback
    waited_s: float
    fallback: bool


class BudgetExceeded(Exception):
    """The call cannot be admitted before its deadline."""

    def __init__(self, retry_after_s: float, bucket: str, policy: str) -> None:
        super().__init__(f"budget exceeded: bucket={bucket} policy={policy} retry={retry_after_s}")
        self.retry_after_s = retry_after_s
        self.bucket = bucket
        self.policy = policy


class ProcessBehind(BudgetExceeded):
    """A new flow refused because this process is behind (`proxy.budget.overload`), not for
    lack of budget: the flows it has started need its CPU first."""


def policy_for(spec: BucketSpec) -> str:
    """HubSpot's policy name for a 429 caused by this bucket (other names: by window length)."""
    if spec.kind == "daily":
        return POLICY_DAILY
    if spec.name in _POLICIES:
        return _POLICIES[spec.name]
    return POLICY_SECONDLY if spec.window_ms <= 1000 else POLICY_TEN_SECONDLY


def earliest_slot(log: Sequence[int], limit: int, window_ms: int, now_ms: int) -> int:
    """Earliest t >= now that rules (a) and (b) above allow; `log` is ascending."""
    t = now_ms
    if log:
        t = max(t, log[-1])
    if len(log) >= limit:
        t = max(t, log[-limit] + window_ms)
    return t


def recovery_step(limit: int) -> int:
    return max(1, -(-limit // RECOVERY_DIVISOR))


def recovered_limit(
    limit: int, learned: int, learned_at_ms: int, window_ms: int, now_ms: int
) -> int:
    """A learned (shrunk) limit grows back by `recovery_step` per elapsed window, up to `limit`."""
    windows = max(0, now_ms - learned_at_ms) // window_ms
    return max(1, min(limit, learned + windows * recovery_step(limit)))


def learned_target(limit: int, upstream_max: int, upstream_remaining: int, own: int) -> int | None:
    """The limit to use when HubSpot says `max - remaining` were spent and we spent `own`.

    Others' spend is what HubSpot counted beyond ours; our limit shrinks in proportion to the
    share of the upstream budget they leave. None: nobody else is spending.
    """
    if upstream_max <= 0:
        return None
    others = (upstream_max - upstream_remaining) - own
    if others <= 0:
        return None
    left = max(0, upstream_max - others)
    return max(1, min(limit, (limit * left) // upstream_max))


def fallback_share(limit: int, expected_replicas: int) -> int:
    return max(1, limit // max(1, expected_replicas))


def fallback_rate(limit: int, expected_replicas: int, window_ms: int) -> tuple[int, float]:
    """(max_rate, time_period_s) for an aiolimiter.AsyncLimiter holding this replica's share.

    AsyncLimiter is a leaky bucket: a full burst of `max_rate` plus what leaks during the window
    can pass in one rolling window, i.e. up to 2 x max_rate. Halving the share keeps any window
    at or under it. A share of 1 leaks over two windows instead (1 burst + half a unit < 2).
    """
    share = fallback_share(limit, expected_replicas)
    window_s = window_ms / 1000
    if share == 1:
        return 1, 2 * window_s
    return share // 2, window_s


SlotStatus = Literal["reserved", "later", "daily_full"]


@dataclass(frozen=True)
class SlotReply:
    """One admission decision, as returned by admit.lua."""

    status: SlotStatus
    slot_ms: int  # reserved slot, earliest possible slot, or the daily reset
    now_ms: int
    bucket: str  # the bucket that determined slot_ms

    @property
    def wait_ms(self) -> int:
        return max(0, self.slot_ms - self.now_ms)


@dataclass
class _Learned:
    value: int
    at_ms: int


@dataclass
class BudgetModel:
    """Python mirror of admit.lua / release.lua / pause.lua / learn.lua for one credential."""

    logs: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    daily: dict[str, int] = field(default_factory=dict)
    pauses: dict[str, int] = field(default_factory=dict)  # bucket -> paused until (ms)
    learned: dict[str, _Learned] = field(default_factory=dict)

    def effective_limit(self, spec: BucketSpec, now_ms: int) -> int:
        got = self.learned.get(spec.name)
        if got is None:
            return spec.limit
        return recovered_limit(spec.limit, got.value, got.at_ms, spec.window_ms, now_ms)

    def _window_slot(self, spec: BucketSpec, now_ms: int) -> int:
        log = self.logs.setdefault(spec.name, [])
        log[:] = [(t, m) for t, m in log if t > now_ms - spec.window_ms]
        limit = self.effective_limit(spec, now_ms)
        return earliest_slot([t for t, _ in log], limit, spec.window_ms, now_ms)

    def admit(
        self, specs: Sequence[BucketSpec], now_ms: int, max_ms: int, token: str, reset_ms: int = 0
    ) -> SlotReply:
        t, binding = now_ms, specs[0].name
        borrowed: dict[str, int] = {}
        for spec in specs:
            if spec.kind == "daily":
                if self.daily.get(spec.name, 0) + 1 > spec.limit:
                    return SlotReply("daily_full", reset_ms, now_ms, spec.name)
                cand = now_ms
            else:
                cand = self._window_slot(spec, now_ms)
            cand = max(cand, self.pauses.get(spec.name, now_ms))
            if spec.borrow:
                borrowed[spec.name] = cand
            elif cand > t:
                t, binding = cand, spec.name
        if t - now_ms > max_ms:
            return SlotReply("later", t, now_ms, binding)
        for spec in specs:
            if spec.kind == "daily":
                self.daily[spec.name] = self.daily.get(spec.name, 0) + 1
            else:
                self.logs[spec.name].append((max(t, borrowed.get(spec.name, t)), token))
        return SlotReply("reserved", t, now_ms, binding)

    def release(self, specs: Sequence[BucketSpec], token: str) -> None:
        for spec in specs:
            if spec.kind == "daily":
                self.daily[spec.name] = max(0, self.daily.get(spec.name, 0) - 1)
            else:
                log = self.logs.get(spec.name, [])
                log[:] = [(t, m) for t, m in log if m != token]

    def pause(self, bucket: str, now_ms: int, ms: int) -> None:
        self.pauses[bucket] = max(self.pauses.get(bucket, 0), now_ms + ms)

    def learn(
        self, spec: BucketSpec, upstream_max: int, upstream_remaining: int, now_ms: int
    ) -> int:
        own = sum(
            1 for t, _ in self.logs.get(spec.name, []) if now_ms - spec.window_ms < t <= now_ms
        )
        current = self.effective_limit(spec, now_ms)
        target = learned_target(spec.limit, upstream_max, upstream_remaining, own)
        if target is not None and target < current:
            self.learned[spec.name] = _Learned(target, now_ms)
            return target
        return current

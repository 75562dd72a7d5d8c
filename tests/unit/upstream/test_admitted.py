"""The admitted caller in fallback (no Redis): a call that never left gives its daily unit back."""

from __future__ import annotations

import socket
import time

import pytest
from multidict import CIMultiDict

from proxy.budget.limiter import BucketSpec, BudgetExceeded, Limiter, Priority
from proxy.budget.plans import CallPlan
from proxy.config import Settings
from proxy.errors import UpstreamNotReached
from proxy.metrics import Metrics
from proxy.upstream.admitted import AdmittedCaller
from proxy.upstream.rate_headers import RateLimitRecorder
from proxy.upstream.transport import Outgoing, Upstream

pytestmark = pytest.mark.timeout(30)

DAILY_SHARE = 3
DAILY = BucketSpec("daily", DAILY_SHARE, 86_400_000, "daily")
RESET_MS = int(time.time() * 1000) + 3_600_000  # one day for the whole test


def closed_port() -> int:
    """A loopback port nothing listens on: connections to it are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def plan() -> CallPlan:
    return CallPlan(
        "cred0001",
        [DAILY],
        Priority.DEFAULT,
        deadline=time.monotonic() + 5,
        idempotent=False,  # no retry: one admission per call
        daily_reset_ms=RESET_MS,
    )


async def acquire_daily(limiter: Limiter) -> None:
    await limiter.acquire(
        "cred0001", [DAILY], priority=Priority.DEFAULT, max_wait_s=1, daily_reset_ms=RESET_MS
    )


async def test_a_call_that_never_left_gives_its_daily_unit_back() -> None:
    limiter = Limiter(None)  # no Redis: the in-process share of the budget
    upstream = Upstream(Settings(upstream=f"http://127.0.0.1:{closed_port()}"))
    await upstream.start()
    metrics = Metrics()
    caller = AdmittedCaller(limiter, upstream, RateLimitRecorder(None, metrics), metrics)
    out = Outgoing("GET", "/crm/v3/objects/contacts", CIMultiDict(), b"")
    try:
        for _ in range(DAILY_SHARE * 2):
            with pytest.raises(UpstreamNotReached):
                await caller.fetch(plan(), out)
        # Every unit came back: the whole share is still there, and no more.
        for _ in range(DAILY_SHARE):
            await acquire_daily(limiter)
        with pytest.raises(BudgetExceeded):
            await acquire_daily(limiter)
        assert limiter.stats().admitted_fallback == DAILY_SHARE * 3
    finally:
        await upstream.close()
        await limiter.aclose()

"""Budget use per credential and bucket, read from Redis when Prometheus scrapes.

Every replica reports the same shared numbers (the alerts aggregate them with `max`).
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from proxy.budget.limiter import KeyScheme
from proxy.budget.model import BucketSpec
from proxy.metrics import Metrics
from proxy.store.credentials import KnownCredentials
from proxy.store.health import REDIS_TROUBLE


async def refresh_budget_gauges(
    redis: Redis,
    keys: KeyScheme,
    known: dict[tuple[str, str], BucketSpec],
    metrics: Metrics,
    credentials: KnownCredentials,
) -> None:
    """Set used / limit / remaining; reservations already made count as used.

    Only accepted credentials are reported; those past the label bound are summed as `other`.
    """
    labels = {cred: credentials.label(cred) for cred, _ in known}
    known = {k: spec for k, spec in known.items() if labels[k[0]] is not None}
    if not known:
        return
    now_ms = int(time.time() * 1000)
    items = list(known.items())
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for (cred, _bucket), spec in items:
                if spec.kind == "daily":
                    pipe.get(keys.data(cred, spec))
                else:
                    pipe.zcount(keys.data(cred, spec), now_ms - spec.window_ms, "+inf")
            replies = await pipe.execute()
    except REDIS_TROUBLE:
        metrics.redis_errors.labels("budget_metrics").inc()
        return
    totals: dict[tuple[str, str], tuple[int, int]] = {}
    for ((cred, bucket), spec), reply in zip(items, replies, strict=True):
        named = (labels[cred] or "", bucket)
        limit, used = totals.get(named, (0, 0))
        totals[named] = (limit + spec.limit, used + int(reply or 0))
    for (label, bucket), (limit, used) in totals.items():
        metrics.budget_limit.labels(label, bucket).set(limit)
        metrics.budget_used.labels(label, bucket).set(used)
        metrics.budget_remaining.labels(label, bucket).set(max(0, limit - used))

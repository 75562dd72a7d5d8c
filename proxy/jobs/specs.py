"""Which jobs a gateway runs, and how often."""

from __future__ import annotations

from redis.asyncio import Redis

from proxy.jobs.counter_jobs import CounterJobs, QueuedLinks
from proxy.jobs.runner import JobSpec
from proxy.rules.holder import RulesHolder
from proxy.runtime.actions import Actions
from proxy.upstream.background import BackgroundClient

SYNC_COUNTERS_PERIOD_S = 60.0
RECONCILE_PERIOD_S = 300.0


def build_jobs(
    redis: Redis | None,
    rules: RulesHolder,
    client: BackgroundClient,
    actions: Actions,
    queued_links: QueuedLinks | None = None,
) -> dict[str, JobSpec]:
    vault = actions.own.vault
    if redis is None or vault is None:
        return {}
    counters = CounterJobs(redis, rules, client, vault, actions, queued_links)
    return {
        "sync_counters": JobSpec("sync_counters", SYNC_COUNTERS_PERIOD_S, counters.sync_counters),
        "reconcile": JobSpec("reconcile", RECONCILE_PERIOD_S, counters.reconcile),
    }

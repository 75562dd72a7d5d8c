"""Which jobs a gateway runs, and how often."""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.counter_jobs import CounterJobs, HubSpotJobCalls
from proxy.jobs import JobSpec

if TYPE_CHECKING:
    from proxy.app import Services

SYNC_COUNTERS_PERIOD_S = 60.0
RECONCILE_PERIOD_S = 300.0


def build_jobs(services: Services) -> dict[str, JobSpec]:
    redis, vault = services.redis, services.actions.own.vault
    if redis is None or vault is None:
        return {}
    calls = HubSpotJobCalls(services.rules, services.caller, vault)
    counters = CounterJobs(redis, services.rules, calls, services.actions)
    return {
        "sync_counters": JobSpec("sync_counters", SYNC_COUNTERS_PERIOD_S, counters.sync_counters),
        "reconcile": JobSpec("reconcile", RECONCILE_PERIOD_S, counters.reconcile),
    }

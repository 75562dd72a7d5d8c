"""Every Prometheus metric of the gateway, on one registry passed in (so tests get their own).

Labels never carry a token: credentials appear only as their short keyed hash.
"""

from __future__ import annotations

from typing import Any, Self

import prometheus_client
from prometheus_client import CollectorRegistry

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60)
_WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 20, 30)


class _KeptChildren:
    """`labels(...)` answered from a dict once a child exists: prometheus_client checks the
    values and takes a lock on every call, and the request path labels several metrics per
    call. `remove` and `clear` drop the kept children with the metric's own."""

    _kept: dict[tuple[str, ...], Any]

    def labels(self, *values: Any, **named: Any) -> Self:
        kept = self.__dict__.setdefault("_kept", {})
        child: Self | None = kept.get(values) if values and not named else None
        if child is None:
            child = super().labels(*values, **named)  # type: ignore[misc]
            if values and not named:
                kept[values] = child
        return child

    def remove(self, *values: Any) -> None:
        self.__dict__.get("_kept", {}).pop(values, None)
        super().remove(*values)  # type: ignore[misc]

    def clear(self) -> None:
        self.__dict__.get("_kept", {}).clear()
        super().clear()  # type: ignore[misc]


class Counter(_KeptChildren, prometheus_client.Counter):
    pass


class Gauge(_KeptChildren, prometheus_client.Gauge):
    pass


class Histogram(_KeptChildren, prometheus_client.Histogram):
    pass


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "hubspot_proxy_requests",
            "Client requests by route, method and outcome",
            ["route", "method", "outcome"],
            registry=r,
        )
        self.request_duration = Histogram(
            "hubspot_proxy_request_duration_seconds",
            "Time from request received to response started, by route",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.request_queued = Histogram(
            "hubspot_proxy_request_queued_seconds",
            "Time a request sat in the kernel and the event loop before the gateway's handler"
            " started (Linux; TCP_INFO's last data received): a saturated process shows here",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "hubspot_proxy_queue_wait_seconds",
            "Time a call waited for budget, by bucket and priority",
            ["bucket", "priority"],
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.queue_waiters = Gauge(
            "hubspot_proxy_queue_waiters",
            "Calls waiting for budget in this replica, by bucket and priority",
            ["bucket", "priority"],
            registry=r,
        )
        self.upstream_calls = Counter(
            "hubspot_proxy_upstream_calls",
            "Calls sent to HubSpot, by bucket and status",
            ["bucket", "status"],
            registry=r,
        )
        self.upstream_429 = Counter(
            "hubspot_proxy_upstream_429",
            "429 answers from HubSpot, by policy",
            ["policy"],
            registry=r,
        )
        self.upstream_retries = Counter(
            "hubspot_proxy_upstream_retries",
            "Calls the gateway retried, by reason",
            ["reason"],
            registry=r,
        )
        self.ratelimit_header = Gauge(
            "hubspot_proxy_ratelimit_header",
            "Last X-HubSpot-RateLimit-* value seen, by credential hash and header",
            ["credential", "header"],
            registry=r,
        )
        self.budget_limit = Gauge(
            "hubspot_proxy_budget_limit",
            "Effective limit of each bucket (after safety margin and learning)",
            ["credential", "bucket"],
            registry=r,
        )
        self.budget_used = Gauge(
            "hubspot_proxy_budget_used",
            "Calls admitted in the bucket's current window",
            ["credential", "bucket"],
            registry=r,
        )
        self.budget_remaining = Gauge(
            "hubspot_proxy_budget_remaining",
            "Calls still admissible in the bucket's current window",
            ["credential", "bucket"],
            registry=r,
        )
        self.admitted = Counter(
            "hubspot_proxy_admitted",
            "Calls admitted by the limiter, by priority",
            ["priority"],
            registry=r,
        )
        self.rejected = Counter(
            "hubspot_proxy_budget_rejected",
            "Calls answered 429 by the gateway because their deadline could not be met",
            ["bucket", "priority"],
            registry=r,
        )
        self.gateway_delay = Gauge(
            "hubspot_proxy_gateway_delay_seconds",
            "How long this process takes over the calls it answers itself, or how late it runs "
            "its timers (decays by half in 0.5 s); past limits.admissions.max_delay new flows "
            "are refused",
            registry=r,
        )
        self.redis_fallback = Gauge(
            "hubspot_proxy_redis_fallback",
            "1 while the limiter runs on its in-process fallback because Redis is unreachable",
            registry=r,
        )
        self.redis_fallback_transitions = Counter(
            "hubspot_proxy_redis_fallback_transitions",
            "Switches between Redis and the in-process fallback, by direction",
            ["to"],
            registry=r,
        )
        self.redis_errors = Counter(
            "hubspot_proxy_redis_errors",
            "Redis calls that failed or timed out, by component",
            ["component"],
            registry=r,
        )
        self.cache_events = Counter(
            "hubspot_proxy_cache_events",
            "Cache and index events by rule and event (hit, miss, fill, invalidate, bypass)",
            ["rule", "event"],
            registry=r,
        )
        self.rule_answers = Counter(
            "hubspot_proxy_rule_answers",
            "Requests answered by a rule without an upstream call, by rule and type",
            ["rule", "type"],
            registry=r,
        )
        self.singleflight_hits = Counter(
            "hubspot_proxy_singleflight_hits",
            "Calls that shared an identical call already in flight instead of going upstream, "
            "by kind (call: the same read; scope_load: a miss waiting for its scope's load)",
            ["kind"],
            registry=r,
        )
        self.rules_reloads = Counter(
            "hubspot_proxy_rules_reloads",
            "Rules file reloads, by result (ok, error)",
            ["result"],
            registry=r,
        )
        self.rules_loaded_timestamp = Gauge(
            "hubspot_proxy_rules_loaded_timestamp_seconds",
            "When the rules in force were loaded",
            registry=r,
        )
        self.writes = Counter(
            "hubspot_proxy_writes",
            "Write-behind items by kind and state (accepted, sent, failed, dead, refused)",
            ["kind", "state"],
            registry=r,
        )
        self.write_pending = Gauge(
            "hubspot_proxy_write_pending",
            "Write-behind items in the stream not yet acknowledged",
            registry=r,
        )
        self.write_lag = Gauge(
            "hubspot_proxy_write_lag_seconds",
            "Age of the oldest write-behind item not yet acknowledged",
            registry=r,
        )
        self.dead_letters = Gauge(
            "hubspot_proxy_dead_letters",
            "Write-behind items in the dead-letter stream",
            registry=r,
        )
        self.batch_size = Histogram(
            "hubspot_proxy_batch_size",
            "Inputs per batch call sent by the write-behind worker, by kind",
            ["kind"],
            buckets=(1, 2, 5, 10, 25, 50, 100),
            registry=r,
        )
        self.coalesced_batch_size = Histogram(
            "hubspot_proxy_coalesced_batch_size",
            "Client calls per batch call sent by coalescing, by operation",
            ["operation"],
            buckets=(1, 2, 5, 10, 25, 50, 100),
            registry=r,
        )
        self.coalesce_calls_saved = Counter(
            "hubspot_proxy_coalesce_calls_saved",
            "Upstream calls coalescing saved (client calls answered minus batch calls sent)",
            ["operation"],
            registry=r,
        )
        self.coalesce_alone = Counter(
            "hubspot_proxy_coalesce_alone",
            "Calls of coalescing routes that went out alone, one upstream call each, by operation"
            " and why: idle (the budget was free), one (the only call of its group), unsettled"
            " (the batch answer did not settle it, e.g. its own 400), bisected (the last input of"
            " a refused batch) or admission failed (not for the budget: Redis, say)",
            ["operation", "reason"],
            registry=r,
        )
        self.coalesce_regrouped = Counter(
            "hubspot_proxy_coalesce_regrouped",
            "Calls that joined another group because their group's slot came too late for its"
            " earliest member (that member got the 429), by operation",
            ["operation"],
            registry=r,
        )
        self.coalesce_hold = Histogram(
            "hubspot_proxy_coalesce_hold_seconds",
            "Time a client call waited in a coalescing group until its batch left, by operation",
            ["operation"],
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.job_runs = Counter(
            "hubspot_proxy_job_runs",
            "Job runs by job and result (ok, error, skipped)",
            ["task", "result"],
            registry=r,
        )
        self.job_last_success = Gauge(
            "hubspot_proxy_job_last_success_timestamp_seconds",
            "When each job last finished without error",
            ["task"],
            registry=r,
        )
        self.job_duration = Gauge(
            "hubspot_proxy_job_duration_seconds",
            "How long each job's last run took",
            ["task"],
            registry=r,
        )
        self.job_credential_failures = Counter(
            "hubspot_proxy_job_credential_failures",
            "Credentials whose part of a job run failed and was skipped (the run went on)",
            ["task"],
            registry=r,
        )
        self.job_drift = Counter(
            "hubspot_proxy_job_drift",
            "Drift found and fixed by jobs, by job and where (redis, hubspot, index)",
            ["task", "where"],
            registry=r,
        )

"""Whether a forwarded call may ride in a batch call with its concurrent twins (its route's
`coalesce:` block), and the ride it takes; `proxy.upstream.coalesce` does the gathering."""

from __future__ import annotations

from dataclasses import replace

from proxy.budget.plans import bucket_specs
from proxy.http.context import ClientRequest
from proxy.rules.loader import Rules
from proxy.rules.model import ADMISSIONS
from proxy.upstream.coalesce.calls import batchable
from proxy.upstream.coalesce.gatherer import Ride
from proxy.upstream.coalesce.pacing import paced
from proxy.upstream.forward import outgoing_for


def ride_for(rules: Rules, req: ClientRequest) -> Ride | None:
    """The call's ride, or None when it goes out on its own (no token: HubSpot answers 401).

    A route drawing from `admissions` counts flows, not calls: the ride's plan leaves that
    bucket to `admission`, which each rider takes for itself before it gathers. The ride's
    departures, alone or in a batch, are paced (`proxy.upstream.coalesce.pacing`)."""
    route = req.classification.route
    settings = route.coalesce if route is not None else None
    if settings is None or not settings.enabled or not req.has_token:
        return None
    call = batchable(req.method, req.path_qs, req.body)
    if call is None:
        return None
    plan = req.plan
    flows = [bucket for bucket in plan.buckets if bucket.name == ADMISSIONS]
    calls = [bucket for bucket in plan.buckets if bucket.name != ADMISSIONS]
    batch_specs = bucket_specs(rules, rules.classify("POST", call.batch_path).buckets)
    share = rules.limits.pace_share
    return Ride(
        call=call,
        plan=replace(plan, buckets=paced(calls, share)),
        admission=replace(plan, buckets=flows) if flows else None,
        out=outgoing_for(req),
        max_batch=settings.max_batch,
        max_hold_s=settings.max_hold_ms / 1000,
        batch_buckets=paced(batch_specs, share, borrow=settings.pace == "borrow"),
        lone_buckets=paced(calls, share, lone=True),
    )

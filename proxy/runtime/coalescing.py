"""Whether a forwarded call may ride in a batch call with its concurrent twins (its route's
`coalesce:` block), and the ride it takes; `proxy.upstream.coalesce` does the gathering."""

from __future__ import annotations

from proxy.budget.plans import bucket_specs
from proxy.http.context import ClientRequest
from proxy.rules.loader import Rules
from proxy.rules.model import ADMISSIONS
from proxy.upstream.coalesce.calls import batchable
from proxy.upstream.coalesce.gatherer import Ride
from proxy.upstream.forward import outgoing_for


def ride_for(rules: Rules, req: ClientRequest) -> Ride | None:
    """The call's ride, or None when it goes out on its own: no token (HubSpot answers 401), or
    a route drawing from `admissions`, which counts flows: a batch would admit all its riders
    for one unit."""
    route = req.classification.route
    settings = route.coalesce if route is not None else None
    if settings is None or not settings.enabled or not req.has_token:
        return None
    call = batchable(req.method, req.path_qs, req.body)
    if call is None:
        return None
    if any(bucket.name == ADMISSIONS for bucket in req.plan.buckets):
        return None
    batch_buckets = rules.classify("POST", call.batch_path).buckets
    return Ride(
        call=call,
        plan=req.plan,
        out=outgoing_for(req),
        max_batch=settings.max_batch,
        max_hold_s=settings.max_hold_ms / 1000,
        batch_buckets=bucket_specs(rules, batch_buckets),
    )

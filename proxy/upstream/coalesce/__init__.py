"""Coalescing under backpressure: compatible calls waiting for budget leave as one batch call.

    calls     which single calls may share a batch (grouping key) and what each one contributes
    shapes    the batch call of a group: path and body per operation
    split     HubSpot's batch answer cut back into the answer each single call would have had
    pacing    the pace bucket every departure takes: one per window / limit, shared by replicas
    gatherer  groups waiting for their paced slot, the leader's admission, per-record order
    departure a group's one call and each member's answer from it; a refused batch bisected

May import what `proxy.upstream` may import.
"""

"""Flush cadence: a kind of write goes out at most once per interval unless its batch is full.

Nobody waits for a written-behind write, but each batch call spends budget the interactive
calls need. During a 9:00 burst the worker would otherwise send a small batch of each kind every
cycle (one per 100 ms linger): at 100 bookings in 10 s that was ~10 batch calls per kind. Held
back to one per `interval_s` (full batches of `max_inputs` always go), a kind sends a few fuller
batches over the burst. A write of a kind quiet for an interval leaves at once. Pure: the clock
is a parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from proxy.hubspot.protocol import canonical_object_type
from proxy.writes.batching import Batch

Kind = tuple[str, str, str, str]  # credential, operation, object type, associated type


def kind_of(batch: Batch) -> Kind:
    to_type = canonical_object_type(batch.to_type) if batch.to_type else ""
    return batch.credential, batch.op, canonical_object_type(batch.object_type), to_type


@dataclass
class FlushCadence:
    interval_s: float
    max_inputs: int
    _last: dict[Kind, float] = field(default_factory=dict)

    def due(self, batches: Sequence[Batch], now: float) -> tuple[list[Batch], list[Batch], float]:
        """(the batches to send now, the ones held back, when the held ones are due); a batch
        chosen here counts as sent at `now`."""
        send: list[Batch] = []
        later: list[Batch] = []
        next_at = now
        for batch in batches:
            kind = kind_of(batch)
            at = self._last.get(kind, -self.interval_s) + self.interval_s
            if at <= now or len(batch.units) >= self.max_inputs:
                send.append(batch)
                continue
            later.append(batch)
            next_at = at if next_at == now else min(next_at, at)
        for batch in send:
            self._last[kind_of(batch)] = now
        return send, later, next_at

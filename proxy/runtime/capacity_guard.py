"""The capacity guard: a booking create that names its exam takes the seat before HubSpot sees it.

Without it, a backend without its own lock overbooks: concurrent trainees read the same count,
all see a free seat, and all create. With a counter rule's `capacity_guard`, the create itself
reserves the seat (one Lua call: taken only while the count is below capacity), so no
interleaving of any number of replicas can overbook:

- a seat left: the create is forwarded; HubSpot's 2xx turns the reservation into the new
  booking's seat (its later booking->exam association then counts nothing more), a 4xx gives the
  seat back, and a 5xx or timeout keeps it held (the booking may exist) until its association
  takes it or the hold expires;
- no seat left: the rule's HubSpot-shaped error (by default `400 VALIDATION_ERROR`,
  "This mock exam session is now full"), and HubSpot is not called;
- Redis cannot say, or the exam's count is not in Redis and HubSpot's could not be read (the
  read is shared by every create waiting for it): a HubSpot-shaped 503, since forwarding blind
  is how exams were overbooked.

A cancellation gives the seat back through the counter rule as before (`is_active` changes).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from proxy.errors import GatewayError, ServiceUnavailable
from proxy.http.context import ClientRequest
from proxy.hubspot.batch_results import map_batch_answer
from proxy.hubspot.protocol import parse_json
from proxy.reads.counter_rules import CounterRuntime
from proxy.reads.counters import CounterState, Op
from proxy.rules.loader import CapacityGuard, CounterRule
from proxy.runtime.own_calls import OwnCalls
from proxy.runtime.portals import Portals
from proxy.store.rule_store import Unavailable
from proxy.upstream.answer import Answer


class SessionFull(GatewayError):
    """The rule's own answer for a create that finds no seat left."""

    proxy_error = "capacity-full"

    def __init__(self, guard: CapacityGuard, context: Mapping[str, list[str]]) -> None:
        super().__init__(guard.message)
        self.status = guard.status
        self.category = guard.category
        self.context = dict(context)

    def body_extra(self) -> dict[str, Any]:
        return {"context": self.context}


Counts = tuple[int | None, int | None]  # HubSpot's count and capacity of one exam


@dataclass(frozen=True)
class Seat:
    """A seat reserved for one input of a create (`index` in its inputs)."""

    rule: CounterRule
    owner: str  # the credential (or portal) the count is kept under
    object_id: str
    reservation: str
    index: int


def _inputs(body: Any) -> list[Mapping[str, Any]]:
    """The created records' inputs: a single create's body, or a batch create's inputs."""
    if not isinstance(body, dict):
        return []
    if isinstance(body.get("properties"), dict):
        return [body]
    inputs = body.get("inputs")
    return [i for i in inputs if isinstance(i, dict)] if isinstance(inputs, list) else []


def _named(guard: CapacityGuard, one: Mapping[str, Any]) -> str | None:
    props = one.get("properties")
    value = props.get(guard.property) if isinstance(props, dict) else None
    return str(value) if isinstance(value, str | int) and str(value) else None


class CapacityGuards:
    def __init__(self, counters: CounterRuntime, own: OwnCalls, portals: Portals) -> None:
        self.counters = counters
        self.own = own
        self.portals = portals
        self._reading: dict[tuple[str, str, str], asyncio.Future[Counts | None]] = {}

    async def take(self, call: ClientRequest) -> list[Seat]:
        """Reserve a seat for every created record that names a guarded exam, or raise."""
        seats: list[Seat] = []
        if call.token is None:
            return seats  # HubSpot answers 401: nothing is created
        try:
            for match in call.classification.by_role("create"):
                rule = match.rule
                if not isinstance(rule, CounterRule) or rule.guard is None:
                    continue
                for index, one in enumerate(_inputs(call.json)):
                    object_id = _named(rule.guard, one)
                    if object_id is not None:
                        seats.append(await self._reserve(call, call.token, rule, object_id, index))
        except BaseException:
            await self.release(seats)
            raise
        return seats

    async def _reserve(
        self, call: ClientRequest, token: str, rule: CounterRule, object_id: str, index: int
    ) -> Seat:
        assert rule.guard is not None
        owner = await self.portals.owner(call.credential, rule, token)
        op = Op(object_id, "reserve", reservation_id=uuid.uuid4().hex)
        # Refusing the create is the alternative to waiting for a slow or stalled Redis, and
        # the script holds a reservation id once: the reserve is patient.
        state = await self.counters.counters.apply(owner, rule, op, patient=True)
        if isinstance(state, CounterState) and state.status in ("unseeded", "nocapacity"):
            seen = await self._hubspot_counts(call.credential, rule, object_id, token)
            if seen is None:
                raise _cannot_check()  # HubSpot did not say: forwarding blind could overbook
            if seen[0] is not None:
                op = replace(op, seed=seen[0], capacity=seen[1])
                state = await self.counters.counters.apply(owner, rule, op, patient=True)
        if isinstance(state, Unavailable):
            raise _cannot_check()
        if state.status == "full":
            context = {"count": [str(state.count)], "capacity": [str(state.capacity)]}
            raise SessionFull(rule.guard, context)
        # `nocapacity`/`unseeded`: nothing to guard against (HubSpot holds no count or capacity).
        held = op.reservation_id if state.status == "ok" else ""
        return Seat(rule, owner, object_id, held, index)

    async def _hubspot_counts(
        self, cred: str, rule: CounterRule, object_id: str, token: str
    ) -> Counts | None:
        """HubSpot's (count, capacity), read once for all the creates that wait for it: a burst
        of creates for an exam not seeded yet would otherwise send one read each."""
        key = (cred, rule.name, object_id)
        reading = self._reading.get(key)
        if reading is None:
            reading = asyncio.ensure_future(self.own.counts(cred, rule, object_id, token))
            self._reading[key] = reading
            reading.add_done_callback(lambda _: self._reading.pop(key, None))
        return await asyncio.shield(reading)

    async def settle(self, call: ClientRequest, seats: Sequence[Seat], answer: Answer) -> None:
        """After HubSpot answered the create: seats become bookings, or are given back."""
        held = [s for s in seats if s.reservation]
        if not held:
            return
        if 400 <= answer.status < 500:
            await self.release(held)
            return
        if not 200 <= answer.status < 300:
            return  # 5xx or no answer: the booking may exist; the hold expires if it does not
        created = _created_ids(call.json, answer)
        for seat in held:
            booking_id = created.get(seat.index)
            if booking_id is None:
                continue  # applied but not named: the association takes the held seat
            await self._change(
                seat,
                Op(
                    seat.object_id,
                    "confirm",
                    booking_id=booking_id,
                    reservation_id=seat.reservation,
                ),
            )

    async def release(self, seats: Sequence[Seat]) -> None:
        for seat in seats:
            if seat.reservation:
                await self._change(
                    seat, Op(seat.object_id, "release", reservation_id=seat.reservation)
                )

    async def _change(self, seat: Seat, op: Op) -> None:
        """A change HubSpot's answer decided: recorded now, or once Redis answers again."""
        counters = self.counters.counters
        if isinstance(await counters.apply(seat.owner, seat.rule, op), Unavailable):
            counters.apply_later(seat.owner, seat.rule, op)


def _cannot_check() -> ServiceUnavailable:
    return ServiceUnavailable(
        "The gateway cannot check the seats left right now; retry later.",
        headers={"Retry-After": "1"},
    )


def _created_ids(body: Any, answer: Answer) -> dict[int, str]:
    """Input index -> created record id: the object itself, or a batch answer mapped back."""
    data = parse_json(answer.body)
    if not isinstance(data, dict):
        return {}
    if isinstance(body, dict) and isinstance(body.get("properties"), dict):
        return {0: str(data["id"])} if data.get("id") is not None else {}
    mapped = map_batch_answer("create", _inputs(body), answer.status, data)
    return {
        m.index: str(m.result["id"])
        for m in mapped
        if m.result is not None and m.result.get("id") is not None
    }

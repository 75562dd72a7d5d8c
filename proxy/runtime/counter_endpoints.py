"""The gateway's own counter endpoints: atomic seat reservation, native to the gateway.

    POST /proxy/v1/counters/{objectType}/{objectId}/reserve  {"capacity"?, "bookingId"?}
    POST /proxy/v1/counters/{objectType}/{objectId}/release  {"bookingId"?, "reservationId"?}

A reserve is one Lua call: it takes a seat only while the count is below capacity, so no
interleaving of any number of replicas can overbook. A seat reserved without a booking id is held
for RESERVATION_HOLD_MS; the booking's association then takes it instead of adding a second
count, and an unconfirmed hold gives the seat back. Capacity comes from the body (for that call
only), else from the exam as the gateway last saw it, else from HubSpot. Counters are per
credential, like every cache, unless the rule says `shared_by: portal`.

Counter state is created only for a credential HubSpot has accepted and whose token the vault
holds: the jobs serve every counter with that token, so a counter of a made-up token would be
work they cannot do. A credential not yet accepted is checked by reading the object from
HubSpot first (the read a fresh counter needs anyway). The object id must be HubSpot's record
id (digits): it goes into the URL of that read.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from typing import Any, Final

import orjson
from aiohttp import web
from multidict import CIMultiDict

from proxy.errors import BadRequest, Conflict, NotFound, ServiceUnavailable, Unauthorized
from proxy.http.credentials import bearer_token, credential_id
from proxy.http.incoming import read_body
from proxy.http.responses import json_response
from proxy.hubspot.urls import is_record_id
from proxy.reads.counters import CounterState, Op, count_value
from proxy.reads.index_entries import text
from proxy.rules.loader import CounterRule
from proxy.runtime.actions import Actions
from proxy.store.credentials import KnownCredentials
from proxy.store.rule_store import PATIENT, Unavailable

PATH = "/proxy/v1/counters/{objectType}/{objectId}"
VOUCHED_MAX: Final = 10_000
Seen = tuple[int | None, int | None] | None  # HubSpot's (count, capacity) of an object


class ExamFull(Conflict):
    """HubSpot's CONFLICT shape, with the reason clients branch on."""

    proxy_error = "exam-full"

    def __init__(self, count: int | None, capacity: int | None) -> None:
        super().__init__(f"The object is full: {count} of {capacity} taken")
        self.context = {"count": [str(count)], "capacity": [str(capacity)]}

    def body_extra(self) -> dict[str, Any]:
        return {"subCategory": "EXAM_FULL", "errorType": "EXAM_FULL", "context": self.context}


class CounterEndpoints:
    def __init__(
        self,
        actions: Actions,
        credentials: KnownCredentials,
        credential_key: str,
        max_body: int = 64 * 1024,
        body_timeout_s: float = 30.0,
    ) -> None:
        self.actions = actions
        self._credentials = credentials
        # Credentials checked (accepted, token kept) by this process, and those being checked
        # now: concurrent first calls share one check, keyed by the object it reads.
        self._vouched: set[str] = set()
        self._checks: dict[str, tuple[str, asyncio.Task[Seen]]] = {}
        self._key = credential_key.encode()
        self._max_body = max_body
        self._timeout_s = body_timeout_s

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_post(PATH + "/reserve", self.reserve)
        router.add_post(PATH + "/release", self.release)

    async def reserve(self, request: web.Request) -> web.Response:
        cred, token, rule, object_id, body = await self._read(request)
        owner, seen = await self._owner(cred, token, rule, object_id)
        booking = text(body.get("bookingId")) or ""
        reservation = uuid.uuid4().hex
        op = Op(object_id, "reserve", booking_id=booking, reservation_id=reservation,
                limit=count_value(body.get("capacity")))  # fmt: skip
        state = await self._apply(owner, rule, op)
        if state.status in ("unseeded", "nocapacity"):
            seen = seen or await self.actions.own.counts(cred, rule, object_id, token)
            if seen is None:
                raise NotFound(f"Cannot read {rule.object_type} {object_id} from HubSpot")
            seeded = replace(op, seed=seen[0] or 0, capacity=seen[1])
            state = await self._apply(owner, rule, seeded)
        if state.status == "nocapacity":
            raise BadRequest(f"No {rule.capacity_property or 'capacity'} known: send `capacity`")
        if state.status == "full":
            raise ExamFull(state.count, state.capacity)
        self.actions.metrics.rule_answers.labels(rule.name, "counter_reserve").inc()
        held = state.status == "ok" and not booking
        return self._answer(rule, object_id, state, reservation if held else None)

    async def release(self, request: web.Request) -> web.Response:
        cred, token, rule, object_id, body = await self._read(request)
        owner, _ = await self._owner(cred, token, rule, object_id)
        op = Op(object_id, "release", booking_id=text(body.get("bookingId")) or "",
                reservation_id=text(body.get("reservationId")) or "")  # fmt: skip
        state = await self._apply(owner, rule, op)
        self.actions.metrics.rule_answers.labels(rule.name, "counter_release").inc()
        return self._answer(rule, object_id, state, None)

    async def _read(
        self, request: web.Request
    ) -> tuple[str, str, CounterRule, str, dict[str, Any]]:
        token = bearer_token(request)
        if token is None:
            raise Unauthorized("Authentication credentials not found.")
        rule = self.actions.counter_rule(request.match_info["objectType"])
        if rule is None:
            raise NotFound(f"No counter is configured for {request.match_info['objectType']}")
        raw = await read_body(
            request, CIMultiDict(request.headers), limit=self._max_body, timeout_s=self._timeout_s
        )
        try:
            body = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"Invalid input JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object")
        object_id = request.match_info["objectId"]
        if not is_record_id(object_id):
            raise BadRequest("objectId must be a HubSpot record id (digits)")
        cred = credential_id(token, self._key)
        return cred, token, rule, object_id, body

    async def _owner(
        self, cred: str, token: str, rule: CounterRule, object_id: str
    ) -> tuple[str, Seen]:
        """Whose count this is (the credential's, or its portal's for a shared rule), once the
        token is vouched for; and the object's (count, capacity) if HubSpot was asked."""
        seen = await self._vouch(cred, token, rule, object_id)
        owner = await self.actions.portals.owner(cred, rule, token)
        if owner != cred and not await self.actions.own.remember_token(owner, token, PATIENT):
            raise ServiceUnavailable("The counter store is unavailable; try again shortly")
        return owner, seen

    async def _vouch(self, cred: str, token: str, rule: CounterRule, object_id: str) -> Seen:
        """Refuse a token HubSpot does not accept, and keep it for the jobs, once per process
        and credential; answers the object's (count, capacity) when it asked HubSpot for it."""
        if cred in self._vouched:
            return None
        if cred not in self._checks:
            check = asyncio.ensure_future(self._check(cred, token, rule, object_id))
            self._checks[cred] = (object_id, check)
            check.add_done_callback(lambda _: self._checks.pop(cred, None))
        read, check = self._checks[cred]
        seen = await asyncio.shield(check)
        return seen if read == object_id else None

    async def _check(self, cred: str, token: str, rule: CounterRule, object_id: str) -> Seen:
        seen = None
        if not await self._credentials.is_accepted(cred):
            seen = await self.actions.own.counts(cred, rule, object_id, token)
            if not self._credentials.seen(cred):
                raise Unauthorized("Authentication credentials not found.")
        if not await self.actions.own.remember_token(cred, token, PATIENT):
            raise ServiceUnavailable("The counter store is unavailable; try again shortly")
        if len(self._vouched) >= VOUCHED_MAX:
            self._vouched.clear()
        self._vouched.add(cred)
        return seen

    async def _apply(self, cred: str, rule: CounterRule, op: Op) -> CounterState:
        # Every op here but an anonymous release names its reservation or booking, so it is
        # safe to ask twice: it waits for a slow or stalled Redis instead of a 503.
        patient = op.op == "reserve" or bool(op.booking_id or op.reservation_id)
        state = await self.actions.counters.counters.apply(cred, rule, op, patient=patient)
        if isinstance(state, Unavailable):
            # Without Redis no replica can know the count: guessing could overbook.
            raise ServiceUnavailable("The counter store is unavailable; try again shortly")
        return state

    @staticmethod
    def _answer(
        rule: CounterRule, object_id: str, state: CounterState, reservation: str | None
    ) -> web.Response:
        body: dict[str, Any] = {
            "id": object_id,
            "objectType": rule.object_type,
            "property": rule.property,
            "count": state.count,
            "capacity": state.capacity,
            "status": "UNCHANGED" if state.status == "unchanged" else "DONE",
        }
        if reservation is not None:
            body["reservationId"] = reservation
        return json_response(body)

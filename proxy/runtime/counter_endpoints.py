"""The gateway's own counter endpoints: atomic seat reservation, native to the gateway.

    POST /proxy/v1/counters/{objectType}/{objectId}/reserve  {"capacity"?, "bookingId"?}
    POST /proxy/v1/counters/{objectType}/{objectId}/release  {"bookingId"?, "reservationId"?}

A reserve is one Lua call: it takes a seat only while the count is below capacity, so no
interleaving of any number of replicas can overbook. A seat reserved without a booking id is held
for RESERVATION_HOLD_MS; the booking's association then takes it instead of adding a second
count, and an unconfirmed hold gives the seat back. Capacity comes from the body (for that call
only), else from the exam as the gateway last saw it, else from HubSpot. Counters are per
credential, like every cache.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

from proxy.errors import BadRequest, Conflict, NotFound, ServiceUnavailable, Unauthorized
from proxy.http.credentials import bearer_token, credential_id
from proxy.http.incoming import read_body
from proxy.http.responses import json_response
from proxy.reads.counters import CounterState, Op, count_value
from proxy.reads.index_entries import text
from proxy.rules.loader import CounterRule
from proxy.runtime.actions import Actions
from proxy.store.rule_store import Unavailable

PATH = "/proxy/v1/counters/{objectType}/{objectId}"


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
        credential_key: str,
        max_body: int = 64 * 1024,
        body_timeout_s: float = 30.0,
    ) -> None:
        self.actions = actions
        self._key = credential_key.encode()
        self._max_body = max_body
        self._timeout_s = body_timeout_s

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_post(PATH + "/reserve", self.reserve)
        router.add_post(PATH + "/release", self.release)

    async def reserve(self, request: web.Request) -> web.Response:
        cred, token, rule, object_id, body = await self._read(request)
        booking = text(body.get("bookingId")) or ""
        reservation = uuid.uuid4().hex
        op = Op(object_id, "reserve", booking_id=booking, reservation_id=reservation,
                limit=count_value(body.get("capacity")))  # fmt: skip
        state = await self._apply(cred, rule, op)
        if state.status in ("unseeded", "nocapacity"):
            seen = await self.actions.own.counts(cred, rule, object_id, token)
            if seen is None:
                raise NotFound(f"Cannot read {rule.object_type} {object_id} from HubSpot")
            seeded = replace(op, seed=seen[0] or 0, capacity=seen[1])
            state = await self._apply(cred, rule, seeded)
        if state.status == "nocapacity":
            raise BadRequest(f"No {rule.capacity_property or 'capacity'} known: send `capacity`")
        if state.status == "full":
            raise ExamFull(state.count, state.capacity)
        self.actions.metrics.rule_answers.labels(rule.name, "counter_reserve").inc()
        held = state.status == "ok" and not booking
        return self._answer(rule, object_id, state, reservation if held else None)

    async def release(self, request: web.Request) -> web.Response:
        cred, _, rule, object_id, body = await self._read(request)
        op = Op(object_id, "release", booking_id=text(body.get("bookingId")) or "",
                reservation_id=text(body.get("reservationId")) or "")  # fmt: skip
        state = await self._apply(cred, rule, op)
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
        cred = credential_id(token, self._key)
        return cred, token, rule, request.match_info["objectId"], body

    async def _apply(self, cred: str, rule: CounterRule, op: Op) -> CounterState:
        state = await self.actions.counters.counters.apply(cred, rule, op)
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

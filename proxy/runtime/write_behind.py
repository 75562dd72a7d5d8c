"""Write-behind at the edge: the action that accepts a call instead of forwarding it, and the
write endpoints.

GET    /proxy/v1/writes/{id}                      the write's state (its own credential, or admin)
GET    /proxy/v1/dead-letters                     admin: list
POST   /proxy/v1/dead-letters/{ref}/retry         admin: re-enqueue
DELETE /proxy/v1/dead-letters/{ref}               admin: drop
"""

from __future__ import annotations

import hmac
from dataclasses import replace
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

from proxy.errors import BadRequest, NotFound, ServiceUnavailable, Unauthorized
from proxy.http.admin import require_admin
from proxy.http.context import ClientRequest
from proxy.http.credentials import bearer_token, credential_id
from proxy.http.responses import json_response
from proxy.reads.call_objects import association_pairs
from proxy.reads.counter_rules import booking_exam_pairs
from proxy.rules.loader import (
    AssociationSource,
    Classification,
    CounterRule,
    WriteBehindRule,
    write_behind_accepts,
)
from proxy.runtime.learning import RuleLearning
from proxy.upstream.answer import Answer
from proxy.upstream.forward import answer_response
from proxy.writes.model import (
    ASSOCIATE_DEFAULT,
    CREATE,
    NOTE_CREATE,
    UPDATE,
    NotWritable,
    WriteRequest,
)
from proxy.writes.service import Accepted, CounterNotSeeded, WriteBehind

NOTES = "0-46"
_KINDS = {"associate_default": ASSOCIATE_DEFAULT, "update": UPDATE, "create": CREATE}


def write_kind(rule: WriteBehindRule, object_type: str | None) -> str:
    """The worker's kind for a rule: note creates have their own batch and replay lookup."""
    if rule.kind == "create" and object_type == NOTES:
        return NOTE_CREATE
    return _KINDS[rule.kind]


class WriteBehindAction:
    def __init__(self, writes: WriteBehind, learning: RuleLearning, *, rules_store: bool) -> None:
        self._writes = writes
        self._learning = learning
        self._rules_store = rules_store  # the rules runtime has Redis: counts may be learned

    async def accept(self, req: ClientRequest, rule: WriteBehindRule) -> web.StreamResponse | None:
        """Accept the call for later and answer now; None means "forward it instead"."""
        token = req.token
        if token is None:
            return None  # HubSpot answers 401; the gateway must not accept what it cannot send
        if req.body and req.json is None:
            return None  # not JSON: HubSpot owns the exact validation error
        if not write_behind_accepts(rule, req.json):
            return None
        if self._rules_store:
            await self._learning.before_send(req)
        kind = write_kind(rule, req.classification.object_type)
        try:
            write = WriteRequest.from_call(kind, req.path_qs, req.body)
        except NotWritable:
            return None
        if rule.unique_property is not None and rule.unique_property in write.properties:
            write = replace(write, unique_property=rule.unique_property)
        counted = self._counted_association(req.classification, req.json)
        accepted = await self._accept_counted(req, token, kind, write, counted)
        req.outcome = "accepted"
        headers = CIMultiDict(
            {"Content-Type": "application/json;charset=utf-8", **accepted.headers}
        )
        answer = Answer(accepted.status, None, headers, orjson.dumps(accepted.body))
        if self._rules_store:
            # The rules learn from the answer as if HubSpot had given it (a booking->exam
            # association counts now, unless the acceptance counted it); the answer comes back
            # overlaid.
            req.counted = counted[0] if counted else None
            await self._learning.after_answer_safely(req, answer)
        return answer_response(answer, req.request_id)

    def _counted_association(
        self, cls: Classification, body: Any
    ) -> tuple[CounterRule, str, str] | None:
        """(rule, booking id, exam id) when accepting this call for later links a counted
        booking: the count then changes in the same Redis step as the acceptance."""
        if not self._rules_store:
            return None
        for match in cls.by_role("associate"):
            rule = match.rule
            if not isinstance(rule, CounterRule) or not isinstance(rule.source, AssociationSource):
                continue
            pairs = booking_exam_pairs(rule, association_pairs(match.params, body))
            if len(pairs) == 1:
                return rule, *pairs[0]
        return None

    async def _accept_counted(
        self,
        req: ClientRequest,
        token: str,
        kind: str,
        write: WriteRequest,
        counted: tuple[CounterRule, str, str] | None,
    ) -> Accepted:
        """Accept the write, with the count it changes in the same Redis step (issue: counts
        that cannot be lost). A counter never seen is seeded from HubSpot first; when HubSpot
        cannot say, the write is refused with a 503 rather than accepted uncounted."""
        cred = req.credential
        if counted is None:
            return await self._writes.accept(cred, token, kind, write)
        rule, booking_id, object_id = counted
        learning = self._learning
        owner = await learning.portals.owner(cred, rule, token)  # a portal's shared count, maybe
        change = learning.counters.accept_change(owner, rule, booking_id, object_id)
        try:
            return await self._writes.accept(cred, token, kind, write, change)
        except CounterNotSeeded:
            pass
        seen = await learning.own.counts(cred, rule, object_id, token)  # the caller's budget
        if seen is None or seen[0] is None:
            raise ServiceUnavailable(
                f"Could not read {rule.property} of {object_id} from HubSpot to count this "
                "booking; the write was not accepted, retry later.",
                headers={"Retry-After": "1"},
            )
        change = learning.counters.accept_change(owner, rule, booking_id, object_id, seen)
        return await self._writes.accept(cred, token, kind, write, change)


class WriteEndpoints:
    def __init__(self, writes: WriteBehind, admin_token: str | None, credential_key: str) -> None:
        self._writes = writes
        self._admin = admin_token
        self._key = credential_key.encode()

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/proxy/v1/writes/{id}", self.status)
        router.add_get("/proxy/v1/dead-letters", self.dead_letters)
        router.add_post("/proxy/v1/dead-letters/{ref}/retry", self.retry)
        router.add_delete("/proxy/v1/dead-letters/{ref}", self.drop)

    async def status(self, request: web.Request) -> web.Response:
        token = bearer_token(request)
        if token is None:
            raise Unauthorized("A bearer token is required")
        admin = self._admin
        is_admin = admin is not None and hmac.compare_digest(token.encode(), admin.encode())
        credential = None if is_admin else credential_id(token, self._key)
        found = await self._writes.status(request.match_info["id"], credential)
        if found is None:
            raise NotFound(f"No write {request.match_info['id']}")
        return json_response(found)

    async def dead_letters(self, request: web.Request) -> web.Response:
        require_admin(request, self._admin)
        raw_limit = request.query.get("limit", "100")
        if not raw_limit.isdigit():
            raise BadRequest(f"limit must be a whole number, got {raw_limit!r}")
        limit = min(1000, max(1, int(raw_limit)))
        results = await self._writes.dead_letters(limit)
        return json_response({"total": len(results), "results": results})

    async def retry(self, request: web.Request) -> web.Response:
        require_admin(request, self._admin)
        write_id = await self._writes.retry_dead(request.match_info["ref"])
        if write_id is None:
            raise NotFound(f"No dead letter {request.match_info['ref']}")
        return json_response({"status": "QUEUED", "writeId": write_id})

    async def drop(self, request: web.Request) -> web.Response:
        require_admin(request, self._admin)
        write_id = await self._writes.drop_dead(request.match_info["ref"])
        if write_id is None:
            raise NotFound(f"No dead letter {request.match_info['ref']}")
        return web.Response(status=204)

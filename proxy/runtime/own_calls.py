"""HubSpot calls the rules runtime makes on its own: scope loads and counter seeds.

They go through the same AdmittedCaller as client calls, so they are inside the budget like any
other. Scope loads use the token kept in the TokenVault: a first load runs at the priority of the
client waiting for it, a refresh at background priority (nobody waits for it).
"""

from __future__ import annotations

import gzip
import logging
import time
import zlib
from typing import Any, Final

import aiohttp
import orjson
from multidict import CIMultiDict

from proxy.budget.plans import CallPlan, plan_for
from proxy.errors import GatewayError
from proxy.http.credentials import credential_id
from proxy.hubspot.urls import api_path
from proxy.reads.counters import count_value
from proxy.reads.index_loader import Urgency
from proxy.rules.holder import RulesHolder
from proxy.rules.loader import CounterRule
from proxy.store.rule_store import RuleRedis, Unavailable
from proxy.store.vault import TokenVault
from proxy.upstream.admitted import AdmittedCaller
from proxy.upstream.transport import Outgoing

log = logging.getLogger("proxy.own_calls")

BACKGROUND_WAIT_S: Final = 60.0  # a load may wait behind interactive traffic, within reason


class OwnCalls:
    def __init__(
        self,
        rules: RulesHolder,
        caller: AdmittedCaller,
        vault: TokenVault | None,
        store: RuleRedis,
        credential_key: bytes,
    ) -> None:
        self.rules = rules
        self.caller = caller
        self.vault = vault
        self.store = store
        self._key = credential_key

    async def remember_token(self, cred: str, token: str) -> bool:
        vault = self.vault
        if vault is None:
            return False

        async def keep(_: Any) -> None:
            await vault.remember(cred, token)

        return not isinstance(await self.store.run("vault", keep), Unavailable)

    async def search(
        self, owner: str, object_type: str, body: dict[str, Any], urgency: Urgency
    ) -> Any:
        """A search with the token stored for `owner` (a credential, or a portal whose indexes
        its tokens share), queued as `urgency` says (a scope load a client waits for goes at that
        client's priority); None when it failed. The budget spent is the token's."""
        vault = self.vault
        token = None
        if vault is not None:
            got = await self.store.run("vault", lambda _: vault.token_for(owner))
            token = None if isinstance(got, Unavailable) else got
        if token is None:
            return None
        path = api_path("crm", "v3", "objects", object_type, "search")
        wait_s = BACKGROUND_WAIT_S
        if urgency.deadline is not None:
            wait_s = max(0.0, urgency.deadline - time.monotonic())
        plan = plan_for(
            self.rules.current,
            self.credential_of(token),
            "POST",
            path,
            priority=urgency.priority,
            wait_s=wait_s,
        )
        return await self.json_call(plan, "POST", path, token, body)

    def credential_of(self, token: str) -> str:
        """The credential (and budget) a stored token belongs to."""
        return credential_id(token, self._key)

    async def counts(
        self, cred: str, rule: CounterRule, object_id: str, token: str
    ) -> tuple[int | None, int | None] | None:
        """HubSpot's (count, capacity) of one counter object, to seed Redis."""
        props = [rule.property, *([rule.capacity_property] if rule.capacity_property else [])]
        query = {"properties": props}
        path = api_path("crm", "v3", "objects", rule.object_type, object_id, query=query)
        plan = plan_for(self.rules.current, cred, "GET", path)
        answer = await self.json_call(plan, "GET", path, token, None)
        found = answer.get("properties") if isinstance(answer, dict) else None
        if not isinstance(found, dict):
            return None
        return count_value(found.get(rule.property)), count_value(
            found.get(rule.capacity_property or "")
        )

    async def json_call(
        self, plan: CallPlan, method: str, path_qs: str, token: str, body: Any
    ) -> Any:
        """HubSpot's 200 answer parsed, or None (any failure: the caller does without)."""
        headers = CIMultiDict({"Authorization": f"Bearer {token}", "Accept": "application/json"})
        if body is not None:
            headers["Content-Type"] = "application/json"
        out_body = orjson.dumps(body) if body is not None else b""
        try:
            resp = await self.caller.send(plan, Outgoing(method, path_qs, headers, out_body))
        except GatewayError as exc:
            log.warning("own call failed: %s", exc.proxy_error)
            return None
        try:
            return await _json_answer(resp)
        finally:
            resp.release()


async def _json_answer(resp: aiohttp.ClientResponse) -> Any:
    raw = await resp.read()
    if resp.status != 200:
        return None
    try:
        if resp.headers.get("Content-Encoding", "").lower() == "gzip":
            raw = gzip.decompress(raw)
        return orjson.loads(raw)
    except (OSError, EOFError, zlib.error, orjson.JSONDecodeError):
        return None

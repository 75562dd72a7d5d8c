"""HubSpot calls the rules runtime makes on its own: scope loads and counter seeds.

They go through the one `BackgroundClient`, so they are inside the budget like any other call.
Scope loads use the token kept in the TokenVault: a first load runs at the priority of the
client waiting for it, a refresh at background priority (nobody waits for it).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

from proxy.budget.model import Priority
from proxy.errors import GatewayError
from proxy.http.credentials import credential_id
from proxy.hubspot.urls import api_path
from proxy.reads.counters import count_value
from proxy.reads.index_loader import Urgency
from proxy.rules.loader import CounterRule
from proxy.store.rule_store import IMPATIENT, Patience, RuleRedis, Unavailable
from proxy.store.vault import TokenVault
from proxy.upstream.background import BackgroundClient, json_body

log = logging.getLogger("proxy.own_calls")

BACKGROUND_WAIT_S: Final = 60.0  # a load may wait behind interactive traffic, within reason


class OwnCalls:
    def __init__(
        self,
        client: BackgroundClient,
        vault: TokenVault | None,
        store: RuleRedis,
        credential_key: bytes,
    ) -> None:
        self.client = client
        self.vault = vault
        self.store = store
        self._key = credential_key

    async def remember_token(self, cred: str, token: str, patience: Patience = IMPATIENT) -> bool:
        vault = self.vault
        if vault is None:
            return False

        async def keep(_: Any) -> None:
            await vault.remember(cred, token)

        kept = await self.store.run("vault", keep, patience=patience)
        return not isinstance(kept, Unavailable)

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
        return await self._json(
            self.credential_of(token), token, "POST", path, json_body(body),
            priority=urgency.priority, wait_s=wait_s,
        )  # fmt: skip

    def credential_of(self, token: str) -> str:
        """The credential (and budget) a stored token belongs to."""
        return credential_id(token, self._key)

    async def counts(
        self, cred: str, rule: CounterRule, object_id: str, token: str
    ) -> tuple[int | None, int | None] | None:
        """HubSpot's (count, capacity) of one counter object, to seed Redis: the client waits
        for it, so it goes at the route's own priority."""
        props = [rule.property, *([rule.capacity_property] if rule.capacity_property else [])]
        query = {"properties": props}
        path = api_path("crm", "v3", "objects", rule.object_type, object_id, query=query)
        answer = await self.get(cred, path, token)
        found = answer.get("properties") if isinstance(answer, dict) else None
        if not isinstance(found, dict):
            return None
        return count_value(found.get(rule.property)), count_value(
            found.get(rule.capacity_property or "")
        )

    async def get(self, cred: str, path: str, token: str) -> Any:
        """HubSpot's 200 answer to a GET at the route's own priority, or None."""
        return await self._json(cred, token, "GET", path, b"", priority=None, wait_s=None)

    async def _json(
        self,
        cred: str,
        token: str,
        method: str,
        path: str,
        body: bytes,
        *,
        priority: Priority | None,
        wait_s: float | None,
    ) -> Any:
        """HubSpot's 200 answer parsed, or None (any failure: the caller does without)."""
        try:
            answer = await self.client.call(
                cred, token, method, path, body, priority=priority, wait_s=wait_s
            )
        except GatewayError as exc:
            log.warning("own call failed: %s", exc.proxy_error)
            return None
        return answer.json() if answer.status == 200 else None

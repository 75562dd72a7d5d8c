"""Whose state a search index or counter keeps: the credential's own, or its portal's.

By default every token has its own (invariant 4: an answer comes only from data fetched with
the same token). A `search_index` or `counter` rule with `shared_by: portal` lets the tokens of
one HubSpot portal share it: two tokens of one account (a rotation, a second backend) then see
the same truth, a create through either teaches both, and a seat taken with either counts once.
Jobs and loads serve a shared state with the token last kept for it (the vault holds one under
the portal's id), and spend that token's budget. The portal (hub id) of a token is asked
of HubSpot once, `GET /account-info/v3/details` -> `portalId`, and kept in Redis for every
replica (`hubspot:{cred}:portal`) and in-process. Until it is known, or when HubSpot cannot
say, the credential keeps its own index: the safe side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, TypeVar

import redis.asyncio as aioredis

from proxy.hubspot.urls import api_path
from proxy.rules.loader import CounterRule, SearchIndexRule
from proxy.runtime.own_calls import OwnCalls
from proxy.store.keys import key
from proxy.store.rule_store import RuleRedis, Unavailable, s

ACCOUNT_INFO: Final = api_path("account-info", "v3", "details")
SharedRule = SearchIndexRule | CounterRule  # the rules whose state may be a portal's
R = TypeVar("R", SearchIndexRule, CounterRule)
PORTAL_TTL_S: Final = 30 * 86_400
MEMORY_MAX: Final = 10_000
PORTAL_PREFIX: Final = "portal-"


def portal_key(cred: str) -> str:
    return key(cred, "portal")


def owner_of_portal(portal: str) -> str:
    return f"{PORTAL_PREFIX}{portal}"


def is_portal(owner: str) -> bool:
    """A portal's shared state, not one credential's (credentials are 16 hex digits)."""
    return owner.startswith(PORTAL_PREFIX)


class Portals:
    def __init__(self, own: OwnCalls, store: RuleRedis) -> None:
        self._own = own
        self._store = store
        self._known: dict[str, str] = {}

    async def owner(self, cred: str, rule: SharedRule, token: str | None) -> str:
        """The id `rule`'s state is kept under for this credential. Without a token (a job),
        only a portal already learned is used."""
        if rule.shared_by != "portal":
            return cred
        portal = self._known.get(cred)
        if portal is None:
            found = await self._stored(cred)
            if found is None and token is None:
                return cred
            if found is None and token is not None:
                found = await self._ask(cred, token)
            # "" remembers that HubSpot could not say, so it is not asked on every call.
            portal = found or ""
            if len(self._known) >= MEMORY_MAX:
                self._known.clear()
            self._known[cred] = portal
        return owner_of_portal(portal) if portal else cred

    async def _stored(self, cred: str) -> str | None:
        got = await self._store.run("portals", lambda r: r.get(portal_key(cred)))
        return None if isinstance(got, Unavailable) else s(got)

    async def _ask(self, cred: str, token: str) -> str | None:
        answer = await self._own.get(cred, ACCOUNT_INFO, token)
        portal = answer.get("portalId") if isinstance(answer, dict) else None
        if not isinstance(portal, int) or isinstance(portal, bool) or portal <= 0:
            return None

        async def keep(r: aioredis.Redis) -> None:
            await r.set(portal_key(cred), str(portal), ex=PORTAL_TTL_S)

        await self._store.run("portals", keep)
        return str(portal)

    async def grouped(self, cred: str, rules: Sequence[R], token: str | None) -> dict[str, list[R]]:
        """`rules` by the id their state is kept under."""
        groups: dict[str, list[R]] = {}
        for rule in rules:
            groups.setdefault(await self.owner(cred, rule, token), []).append(rule)
        return groups

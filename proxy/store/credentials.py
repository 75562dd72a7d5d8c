"""Which credentials HubSpot has accepted: only those get Redis state and metric labels.

Anyone can send a random bearer token. Until HubSpot has answered that token with anything but
401 the gateway keeps nothing for it that outlives the call: a stream of made-up tokens must not
grow Redis, the label set of /metrics, or the work of the jobs. An accepted credential is
marked in Redis (`hubspot:{cred}:accepted`, so every replica knows) and remembered in-process.
Redis is asked through the rules' store: bounded in time, and not at all while it rests.

Labels are bounded too: the first `label_max` credentials this process saw accepted keep
their own `credential` label, every later one is reported as `other`.
"""

from __future__ import annotations

from typing import Final

from proxy.store.keys import key
from proxy.store.rule_store import RuleRedis, Unavailable

ACCEPTED_TTL_S: Final = 90 * 86_400  # as long as a counter lives: the jobs serve it that long
OTHER: Final = "other"
MEMORY_MAX: Final = 100_000  # accepted credentials remembered in-process (then re-asked)


def accepted_key(credential: str) -> str:
    return key(credential, "accepted")


def accepts(status: int) -> bool:
    """HubSpot authenticated the token: anything but 401 that is not a server failure."""
    return status != 401 and status < 500


class KnownCredentials:
    def __init__(self, store: RuleRedis | None, *, label_max: int = 20) -> None:
        self._store = store
        self._label_max = label_max
        self._accepted: dict[str, None] = {}  # insertion-ordered set, oldest dropped first
        self._labelled: set[str] = set()

    def seen(self, credential: str) -> bool:
        """Accepted, as far as this process knows without asking Redis."""
        return credential in self._accepted

    async def is_accepted(self, credential: str) -> bool:
        """Accepted by HubSpot, through any replica; Redis trouble answers False (unknown)."""
        if credential in self._accepted:
            return True
        if self._store is None:
            return False
        found = await self._store.run("credentials", lambda r: r.exists(accepted_key(credential)))
        if isinstance(found, Unavailable) or not found:
            return False
        self._remember(credential)
        return True

    async def accepted(self, credential: str) -> None:
        """HubSpot accepted the token: mark it for every replica (once per process)."""
        if credential in self._accepted:
            return
        self._remember(credential)
        if self._store is not None:
            # Best effort: a replica that does not see the mark treats the token as new (safe).
            await self._store.run(
                "credentials", lambda r: r.set(accepted_key(credential), "1", ex=ACCEPTED_TTL_S)
            )

    def label(self, credential: str) -> str | None:
        """The `credential` label value, or None: a credential never accepted gets no label."""
        if credential not in self._accepted:
            return None
        if credential in self._labelled:
            return credential
        if len(self._labelled) < self._label_max:
            self._labelled.add(credential)
            return credential
        return OTHER

    def _remember(self, credential: str) -> None:
        self._accepted[credential] = None
        if len(self._accepted) > MEMORY_MAX:
            del self._accepted[next(iter(self._accepted))]

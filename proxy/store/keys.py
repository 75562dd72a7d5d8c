"""Every Redis key of the gateway starts here: one prefix, one hash-tag layout.

`hubspot:{tag}:...`: the `{tag}` (a credential hash, or `writes` / `jobs`) keeps a family of
keys in one Redis Cluster slot, so one Lua script or MULTI may touch them all. The one
exception is the PRD's `hubspot:rate_limits:{cred}` hash, read by dashboards as it is.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

PREFIX: Final = "hubspot"


def tagged(tag: str, *parts: str, prefix: str = PREFIX) -> str:
    return ":".join((prefix, "{" + tag + "}", *parts))


def key(cred: str, *parts: str) -> str:
    """A key of one credential: `hubspot:{cred}:...`."""
    return tagged(cred, *parts)


def any_credential(*parts: str) -> str:
    """A SCAN pattern over every credential's keys of one kind."""
    return ":".join((PREFIX, "{*}", *parts))


def part(value: str) -> str:
    """A key segment from any text: ':' and '{' can never split or re-tag a key."""
    return quote(value, safe="-_.@")


def rate_limits_key(credential: str) -> str:
    return f"{PREFIX}:rate_limits:{{{credential}}}"

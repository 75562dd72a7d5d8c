"""Paths of the calls the gateway makes on its own (pure).

Object ids, object types and property names reach these paths from client input, rules and
HubSpot's answers. Each one is percent-quoted as one path segment, so no value can add a
segment, climb out with `..`, start a query (`?`) or cut the path (`#`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final
from urllib.parse import quote, urlencode

# HubSpot's record ids are positive integers (up to 64 bits); object type ids look like 2-123.
_RECORD_ID: Final = re.compile(r"[1-9][0-9]{0,19}")
_DOT_SEGMENTS: Final = frozenset({"", ".", ".."})


def api_path(*segments: str, query: Mapping[str, str | Iterable[str]] | None = None) -> str:
    """`/a/b/c?x=1`: every segment quoted whole; a list value in `query` is comma-joined."""
    for segment in segments:
        if segment in _DOT_SEGMENTS:
            raise ValueError(f"not a path segment: {segment!r}")
    path = "/" + "/".join(quote(segment, safe="") for segment in segments)
    if not query:
        return path
    flat = {k: v if isinstance(v, str) else ",".join(v) for k, v in query.items()}
    return path + "?" + urlencode(flat, safe=",")


def is_record_id(value: str) -> bool:
    """HubSpot's own record id: digits only, no sign, no leading zero."""
    return _RECORD_ID.fullmatch(value) is not None

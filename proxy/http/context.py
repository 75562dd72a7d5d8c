"""What the gateway knows about one client request once it has been read and classified."""

from __future__ import annotations

from dataclasses import dataclass, field

from multidict import CIMultiDict


@dataclass
class RequestContext:
    request_id: str
    method: str
    path_qs: str
    path: str
    headers: CIMultiDict[str]
    body: bytes
    credential: str
    has_token: bool
    route: str = "forward"
    outcome: str = "forwarded"
    upstream_status: int | None = None
    waited_s: float = 0.0
    cache: str | None = None
    extra_log: dict[str, object] = field(default_factory=dict)

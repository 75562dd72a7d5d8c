"""The one pooled, keep-alive connection to HubSpot, and what crosses it.

Only the configured upstream is ever contacted (invariant 9): the destination is built from the
settings, and the client's request line contributes nothing but a checked path and query.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from proxy.config import Settings
from proxy.errors import BadRequest, UpstreamNotReached, UpstreamTimeout, UpstreamUnreachable

# RFC 9110 section 7.6.1 plus the Proxy-* family; never forwarded in either direction.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
    }
)


def _connection_listed(headers: Mapping[str, str]) -> set[str]:
    listed = headers.get("Connection", "")
    return {name.strip().lower() for name in listed.split(",") if name.strip()}


def end_to_end(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> CIMultiDict[str]:
    """Headers minus hop-by-hop ones, including any the Connection header names."""
    return without(headers, HOP_BY_HOP)


def without(
    headers: CIMultiDictProxy[str] | CIMultiDict[str], drop: frozenset[str]
) -> CIMultiDict[str]:
    """A copy of `headers` minus the lower-case names in `drop` (HOP_BY_HOP or a superset),
    the Proxy-* family and any the Connection header names, in one pass: the request path
    copies headers once each way."""
    if "Connection" in headers:
        drop = drop | _connection_listed(headers)
    return CIMultiDict(
        [
            (k, v)
            for k, v in headers.items()
            if (name := k.lower()) not in drop and not name.startswith("proxy-")
        ]
    )


def safe_path_qs(raw_target: str) -> str:
    """The path and query of a request target, refusing anything that could leave the API's tree.

    Absolute-form targets (`GET http://elsewhere/x`) keep only their path; dot segments, plain
    or percent-encoded, are refused rather than resolved.
    """
    if not raw_target.startswith("/"):
        parsed = URL(raw_target, encoded=True)
        raw_target = parsed.raw_path_qs if parsed.absolute else "/" + raw_target
    path, _, _query = raw_target.partition("?")
    if "%" not in path and "/." not in path and "\\" not in path and "\x00" not in path:
        # What is refused below needs one of these: a dot segment starts with "/.", and an
        # encoded dot, slash, backslash or NUL needs "%".
        return raw_target
    for segment in path.split("/"):
        decoded = unquote(unquote(segment))
        if decoded in {".", ".."} or "/" in decoded or "\\" in decoded:
            raise BadRequest(f"Path segment {segment!r} is not allowed")
    if "\x00" in unquote(path):
        raise BadRequest("NUL in path is not allowed")
    return raw_target


@dataclass(frozen=True)
class Outgoing:
    method: str
    path_qs: str
    headers: CIMultiDict[str]
    body: bytes


class Upstream:
    """Pooled client for the configured upstream. One per process."""

    def __init__(self, settings: Settings) -> None:
        self.base = settings.upstream_url
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        s = self._settings
        connector = aiohttp.TCPConnector(limit=s.pool_size, keepalive_timeout=30, ttl_dns_cache=300)
        timeout = aiohttp.ClientTimeout(
            total=None, connect=s.connect_timeout_s, sock_read=s.read_timeout_s
        )
        # auto_decompress=False: gzip passes through to the client byte for byte.
        # DummyCookieJar: HubSpot's Set-Cookie is the client's; a jar would keep it and send it
        # with every later call, whatever its token (and look it up on each call).
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url_for(self, path_qs: str) -> URL:
        base_path = self.base.raw_path.rstrip("/")
        url = URL(f"{self.base.origin()}{base_path}{path_qs}", encoded=True)
        if url.origin() != self.base.origin():
            raise BadRequest("Request target would leave the configured upstream")
        return url

    async def send(self, out: Outgoing) -> aiohttp.ClientResponse:
        """Send one request; the caller owns (and must release) the response."""
        if self._session is None:
            raise RuntimeError("Upstream.start() was not awaited")
        headers = out.headers
        if "Host" in headers:
            # Never the client's: aiohttp writes the Host of the URL, the configured upstream.
            headers = CIMultiDict(headers)
            del headers["Host"]
        try:
            return await self._session.request(
                out.method,
                self.url_for(out.path_qs),
                headers=headers,
                data=out.body or None,
                allow_redirects=False,
            )
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout("HubSpot did not answer in time") from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamNotReached(f"HubSpot could not be reached: {type(exc).__name__}") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachable(
                f"HubSpot could not be reached: {type(exc).__name__}"
            ) from exc


# Set by the gateway's own server when it answers: length and framing are its job.
NOT_RELAYED: Final = HOP_BY_HOP | {"content-length", "date", "server"}


def response_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """Upstream headers to give back to the client (a copy)."""
    return without(upstream, NOT_RELAYED)

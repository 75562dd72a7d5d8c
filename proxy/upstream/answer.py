"""An upstream answer read whole and decoded: the one read-and-inflate policy of the gateway.

The transport never decompresses (streamed answers go back to clients byte for byte), so every
caller that reads an answer whole reads it here. What is read is capped at MAX_BUFFERED_BYTES,
before and after inflating (`http.inflate`: gzip and deflate, in bounded steps): a 300 KB gzip
answer can inflate to gigabytes. An answer that cannot be inflated, or inflates past the cap, is
kept as it came, with its `Content-Encoding`, and marked not `parsable`: the client still gets
HubSpot's bytes and no rule reads them. An answer whose raw bytes pass the cap is not read
further (`Unread`): the caller relays the rest as it comes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from multidict import CIMultiDict

from proxy.errors import UpstreamCutShort, UpstreamTimeout
from proxy.http.inflate import InflatedTooLarge, InflateError, inflatable, inflate
from proxy.hubspot.protocol import parse_json
from proxy.upstream.transport import response_headers

READ_CHUNK: Final = 64 * 1024
# Far above any HubSpot answer a rule parses (a 200-result search page is well under 1 MiB).
MAX_BUFFERED_BYTES: Final = 8 * 1024 * 1024


@dataclass
class Answer:
    """Status, end-to-end headers and the whole body: the identity body when `parsable`."""

    status: int
    reason: str | None
    headers: CIMultiDict[str]
    body: bytes
    parsable: bool = True

    def json(self) -> Any:
        """The body as JSON; None when it is empty, not JSON, or not to be parsed."""
        return parse_json(self.body) if self.parsable else None


@dataclass(frozen=True)
class Unread:
    """The answer passed the cap: `head` is what was read; the rest is still in the response."""

    head: bytes


async def read_answer(resp: aiohttp.ClientResponse) -> Answer | Unread:
    """Read and decode `resp` within the cap; the caller releases it."""
    try:
        raw, whole = await _read_capped(resp)
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout("HubSpot did not finish its answer in time") from exc
    if not whole:
        return Unread(raw)
    as_it_came = response_headers(resp.headers)
    headers = CIMultiDict(as_it_came)
    body = await _decoded(headers, raw)
    if body is None:
        return Answer(resp.status, resp.reason, as_it_came, raw, parsable=False)
    return Answer(resp.status, resp.reason, headers, body)


async def _read_capped(resp: aiohttp.ClientResponse) -> tuple[bytes, bool]:
    """The body up to just past MAX_BUFFERED_BYTES, and whether that was all of it."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in resp.content.iter_chunked(READ_CHUNK):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_BUFFERED_BYTES:
                return b"".join(chunks), False
    except aiohttp.ClientPayloadError as exc:
        raise UpstreamCutShort("HubSpot's answer ended before its declared end") from exc
    return b"".join(chunks), True


async def _decoded(headers: CIMultiDict[str], raw: bytes) -> bytes | None:
    """The identity body, or None when it inflates past the cap; data that cannot be inflated
    is passed on as it came, with its encoding."""
    if not inflatable(headers.get("Content-Encoding", "")):
        return raw
    try:
        body = await inflate(raw, MAX_BUFFERED_BYTES)
    except InflateError:
        return raw
    except InflatedTooLarge:
        return None
    headers.popall("Content-Encoding", None)
    return body

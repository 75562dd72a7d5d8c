"""An upstream answer read whole and decoded: the one gzip policy of the gateway.

The transport never decompresses (streamed answers go back to clients byte for byte), so every
caller that reads an answer whole gets it decoded here: gzip is gunzipped up to a size cap; an
answer that cannot be gunzipped, or would grow past the cap, is passed on as it came, with its
`Content-Encoding`, so the client still gets HubSpot's bytes and no rule parses them.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from multidict import CIMultiDict

from proxy.hubspot.protocol import parse_json
from proxy.upstream.transport import response_headers

# A decoded answer larger than this is not parsed: HubSpot's largest pages are a few MB.
MAX_DECODED_BYTES: Final = 32 * 1024 * 1024
_GZIP_WBITS: Final = 16 + zlib.MAX_WBITS


@dataclass
class Answer:
    """Status, end-to-end headers and the identity body (unless it could not be decoded)."""

    status: int
    reason: str | None
    headers: CIMultiDict[str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON; None when it is empty or not JSON."""
        return parse_json(self.body)


def gunzipped(raw: bytes, limit: int = MAX_DECODED_BYTES) -> bytes | None:
    """The gunzipped body, or None when it is not valid gzip or would exceed `limit`."""
    inflater = zlib.decompressobj(_GZIP_WBITS)
    try:
        body = inflater.decompress(raw, limit)
    except zlib.error:
        return None
    if inflater.unconsumed_tail or not inflater.eof:
        return None
    return body


def decoded(headers: CIMultiDict[str], raw: bytes) -> bytes:
    """The identity body; drops `Content-Encoding` only when the body was decoded."""
    if headers.get("Content-Encoding", "").strip().lower() != "gzip":
        return raw
    body = gunzipped(raw)
    if body is None:
        return raw
    headers.popall("Content-Encoding", None)
    return body


async def read_answer(resp: aiohttp.ClientResponse) -> Answer:
    """Read, decode and release `resp`."""
    try:
        raw = await resp.read()
    finally:
        resp.release()
    headers = CIMultiDict(response_headers(resp.headers))
    return Answer(resp.status, resp.reason, headers, decoded(headers, raw))

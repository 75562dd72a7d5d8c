"""Forwarding one request to HubSpot within budget and streaming the answer back unchanged.

`forward_buffered` is the other path, for calls a rule learns from or rewrites: the answer is
read whole (inflated, since it must be parsed) and sent back by `buffered_response`. What is
read whole is capped at MAX_BUFFERED_BYTES, before and after inflating: a 300 KB gzip answer can
inflate to gigabytes. An answer past the cap goes to the client as it came, and no rule learns
from it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from proxy.budget.plans import CallPlan
from proxy.errors import UpstreamCutShort, UpstreamTooLarge
from proxy.http.context import RequestContext
from proxy.http.inflate import InflatedTooLarge, InflateError, inflatable, inflate
from proxy.upstream.admitted import AdmittedCaller
from proxy.upstream.transport import Outgoing, end_to_end, response_headers

log = logging.getLogger("proxy.forward")

STREAM_CHUNK = 64 * 1024
# Far above any HubSpot answer a rule parses (a 200-result search page is well under 1 MiB).
MAX_BUFFERED_BYTES = 8 * 1024 * 1024


def outgoing_for(request: web.BaseRequest, ctx: RequestContext) -> Outgoing:
    # The context's headers: a decoded body has lost its Content-Encoding there.
    headers = end_to_end(ctx.headers)
    headers.popall("Host", None)
    headers.popall("Content-Length", None)
    headers.popall("X-HubSpot-Proxy-Max-Wait-Ms", None)
    forwarded_for = headers.get("X-Forwarded-For")
    peer = request.remote or "unknown"
    headers["X-Forwarded-For"] = f"{forwarded_for}, {peer}" if forwarded_for else peer
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Request-Id"] = ctx.request_id
    return Outgoing(method=ctx.method, path_qs=ctx.path_qs, headers=headers, body=ctx.body)


async def stream_back(
    request: web.BaseRequest,
    upstream_resp: aiohttp.ClientResponse,
    request_id: str,
    *,
    already_read: bytes = b"",
) -> web.StreamResponse:
    """Relay status, headers and body (`already_read`, then the rest); the body is streamed,
    never buffered whole."""
    response = web.StreamResponse(status=upstream_resp.status, reason=upstream_resp.reason)
    for name, value in response_headers(upstream_resp.headers):
        response.headers.add(name, value)
    response.headers["X-Request-Id"] = request_id
    if upstream_resp.content_length is not None:
        response.content_length = upstream_resp.content_length
    await response.prepare(request)
    if already_read:
        await response.write(already_read)
    try:
        async for chunk in upstream_resp.content.iter_chunked(STREAM_CHUNK):
            await response.write(chunk)
    except aiohttp.ClientPayloadError as exc:
        # The status is out already: cutting the connection is the only way to tell the client.
        log.warning("HubSpot's answer ended early; the client's connection is cut")
        raise ConnectionResetError("HubSpot's answer ended early") from exc
    await response.write_eof()
    return response


async def forward(
    request: web.BaseRequest,
    ctx: RequestContext,
    caller: AdmittedCaller,
    plan: CallPlan,
    *,
    admitted: bool = False,
) -> web.StreamResponse:
    try:
        upstream_resp = await caller.send(plan, outgoing_for(request, ctx), admitted=admitted)
    finally:
        ctx.waited_s += plan.trace.waited_s
    ctx.upstream_status = upstream_resp.status
    try:
        return await stream_back(request, upstream_resp, ctx.request_id)
    finally:
        upstream_resp.release()


@dataclass
class Buffered:
    """An upstream answer read whole; `body` is decoded when `Content-Encoding` was gzip."""

    status: int
    reason: str | None
    headers: CIMultiDict[str]
    body: bytes


async def _decoded(headers: CIMultiDict[str], raw: bytes) -> bytes | None:
    """The identity body, or None when it inflates past the cap; undecodable data is passed on
    as it came, with its encoding."""
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


async def _read_capped(upstream_resp: aiohttp.ClientResponse) -> tuple[bytes, bool]:
    """The body up to just past MAX_BUFFERED_BYTES, and whether that was all of it."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in upstream_resp.content.iter_chunked(STREAM_CHUNK):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_BUFFERED_BYTES:
                return b"".join(chunks), False
    except aiohttp.ClientPayloadError as exc:
        raise UpstreamCutShort("HubSpot's answer ended before its declared end") from exc
    return b"".join(chunks), True


async def forward_buffered(
    request: web.BaseRequest,
    ctx: RequestContext,
    caller: AdmittedCaller,
    plan: CallPlan,
    *,
    admitted: bool = False,
) -> Buffered | web.StreamResponse:
    """The answer read whole for the rules; past the cap, the answer already relayed as it came.

    `admitted`: the call's slot is already reserved (it was to ride in a batch, then went alone)."""
    upstream_resp = await caller.send(plan, outgoing_for(request, ctx), admitted=admitted)
    ctx.upstream_status = upstream_resp.status
    try:
        raw, whole = await _read_capped(upstream_resp)
        if not whole:
            return await stream_back(request, upstream_resp, ctx.request_id, already_read=raw)
    finally:
        upstream_resp.release()
    answer = await _buffered(upstream_resp, raw)
    if answer is None:
        as_it_came = CIMultiDict(response_headers(upstream_resp.headers))
        answer = Buffered(upstream_resp.status, upstream_resp.reason, as_it_came, raw)
        return buffered_response(answer, ctx.request_id)
    return answer


async def read_whole(upstream_resp: aiohttp.ClientResponse) -> Buffered:
    """The answer read whole, inflated and released, for the gateway to take apart (a batch
    answer split among its callers); one past the cap cannot be split, so it is a 502."""
    try:
        raw, whole = await _read_capped(upstream_resp)
    finally:
        upstream_resp.release()
    answer = await _buffered(upstream_resp, raw) if whole else None
    if answer is None:
        raise UpstreamTooLarge(f"HubSpot's answer is larger than {MAX_BUFFERED_BYTES} bytes")
    return answer


async def _buffered(upstream_resp: aiohttp.ClientResponse, raw: bytes) -> Buffered | None:
    """The answer with its identity body, or None when it inflates past the cap."""
    headers = CIMultiDict(response_headers(upstream_resp.headers))
    body = await _decoded(headers, raw)
    if body is None:
        return None
    return Buffered(upstream_resp.status, upstream_resp.reason, headers, body)


def buffered_response(answer: Buffered, request_id: str) -> web.Response:
    """The answer with its (possibly rewritten) body; the length is computed, never copied."""
    response = web.Response(status=answer.status, reason=answer.reason, body=answer.body)
    for name, value in answer.headers.items():
        response.headers.add(name, value)
    response.headers["X-Request-Id"] = request_id
    return response

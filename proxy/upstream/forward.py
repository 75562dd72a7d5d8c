"""Forwarding one request to HubSpot within budget and streaming the answer back unchanged.

`forward_buffered` is the other path, for calls a rule learns from or rewrites: the answer is
read whole (gunzipped, since it must be parsed) and sent back by `buffered_response`.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from proxy.budget.plans import CallPlan
from proxy.http.context import RequestContext
from proxy.upstream.admitted import AdmittedCaller
from proxy.upstream.transport import Outgoing, end_to_end, response_headers

STREAM_CHUNK = 64 * 1024


def outgoing_for(request: web.BaseRequest, ctx: RequestContext) -> Outgoing:
    headers = end_to_end(CIMultiDict(request.headers))
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
    request: web.BaseRequest, upstream_resp: aiohttp.ClientResponse, request_id: str
) -> web.StreamResponse:
    """Relay status, headers and body; the body is streamed, never buffered whole."""
    response = web.StreamResponse(status=upstream_resp.status, reason=upstream_resp.reason)
    for name, value in response_headers(upstream_resp.headers):
        response.headers.add(name, value)
    response.headers["X-Request-Id"] = request_id
    if upstream_resp.content_length is not None:
        response.content_length = upstream_resp.content_length
    await response.prepare(request)
    async for chunk in upstream_resp.content.iter_chunked(STREAM_CHUNK):
        await response.write(chunk)
    await response.write_eof()
    return response


async def forward(
    request: web.BaseRequest, ctx: RequestContext, caller: AdmittedCaller, plan: CallPlan
) -> web.StreamResponse:
    try:
        upstream_resp = await caller.send(plan, outgoing_for(request, ctx))
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


def _decoded(headers: CIMultiDict[str], raw: bytes) -> bytes:
    """The identity body; undecodable gzip is passed on as it came, with its encoding."""
    if headers.get("Content-Encoding", "").strip().lower() != "gzip":
        return raw
    try:
        body = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error):
        return raw
    headers.popall("Content-Encoding", None)
    return body


async def forward_buffered(
    request: web.BaseRequest, ctx: RequestContext, caller: AdmittedCaller, plan: CallPlan
) -> Buffered:
    upstream_resp = await caller.send(plan, outgoing_for(request, ctx))
    ctx.upstream_status = upstream_resp.status
    return await read_whole(upstream_resp)


async def read_whole(upstream_resp: aiohttp.ClientResponse) -> Buffered:
    """The answer read whole and released."""
    try:
        raw = await upstream_resp.read()
    finally:
        upstream_resp.release()
    headers = CIMultiDict(response_headers(upstream_resp.headers))
    return Buffered(upstream_resp.status, upstream_resp.reason, headers, _decoded(headers, raw))


def buffered_response(answer: Buffered, request_id: str) -> web.Response:
    """The answer with its (possibly rewritten) body; the length is computed, never copied."""
    response = web.Response(status=answer.status, reason=answer.reason, body=answer.body)
    for name, value in answer.headers.items():
        response.headers.add(name, value)
    response.headers["X-Request-Id"] = request_id
    return response

"""Forwarding one client request to HubSpot within budget.

`forward` streams the answer back unchanged; `forward_buffered` is the other path, for calls a
rule learns from or rewrites: the answer is read whole and decoded (`upstream.answer`), and sent
back by `answer_response`. An answer past the size cap is relayed as it came, and no rule
learns from it.
"""

from __future__ import annotations

import logging
from typing import Final

import aiohttp
from aiohttp import web

from proxy.budget.plans import MAX_WAIT_HEADER, CallPlan
from proxy.http.context import ClientRequest
from proxy.upstream.admitted import AdmittedCaller
from proxy.upstream.answer import Answer, Unread, read_answer
from proxy.upstream.transport import HOP_BY_HOP, Outgoing, response_headers, without

log = logging.getLogger("proxy.forward")

STREAM_CHUNK = 64 * 1024


# Besides hop-by-hop headers: the client's Host and length (the session writes the upstream's),
# and the gateway's own max-wait header.
NOT_FORWARDED: Final = HOP_BY_HOP | {"host", "content-length", MAX_WAIT_HEADER.lower()}


def outgoing_for(req: ClientRequest) -> Outgoing:
    # The request's own headers: a decoded body has lost its Content-Encoding there.
    headers = without(req.headers, NOT_FORWARDED)
    forwarded_for = headers.get("X-Forwarded-For")
    peer = req.web.remote or "unknown"
    headers["X-Forwarded-For"] = f"{forwarded_for}, {peer}" if forwarded_for else peer
    headers["X-Forwarded-Proto"] = req.web.scheme
    headers["X-Request-Id"] = req.request_id
    return Outgoing(method=req.method, path_qs=req.path_qs, headers=headers, body=req.body)


async def stream_back(
    request: web.BaseRequest,
    upstream_resp: aiohttp.ClientResponse,
    request_id: str,
    *,
    already_read: bytes = b"",
) -> web.StreamResponse:
    """Relay status, headers and body (`already_read`, then the rest); the body is streamed,
    never buffered whole, unless all of it has arrived already (a small answer comes in the
    packet of its headers): then it leaves in one write, as it would have anyway."""
    headers = response_headers(upstream_resp.headers)
    headers["X-Request-Id"] = request_id
    status, reason = upstream_resp.status, upstream_resp.reason
    if upstream_resp.content.is_eof():
        body = already_read + await upstream_resp.read()
        return web.Response(status=status, reason=reason, body=body, headers=headers)
    response = web.StreamResponse(status=status, reason=reason, headers=headers)
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
    req: ClientRequest,
    caller: AdmittedCaller,
    *,
    admitted: bool = False,
    plan: CallPlan | None = None,
) -> web.StreamResponse:
    """`admitted`: the slot it leaves in is already reserved (a coalescer's call sent alone);
    `plan`: the call's own plan when not `req.plan` (a rider's, without its admission)."""
    out = outgoing_for(req)
    async with caller.stream(plan or req.plan, out, admitted=admitted) as upstream_resp:
        req.upstream_status = upstream_resp.status
        return await stream_back(req.web, upstream_resp, req.request_id)


async def forward_buffered(
    req: ClientRequest,
    caller: AdmittedCaller,
    *,
    admitted: bool = False,
    plan: CallPlan | None = None,
) -> Answer | web.StreamResponse:
    """The answer read whole for the rules; past the cap, the answer already relayed as it came.
    `admitted` and `plan` as for `forward`."""
    out = outgoing_for(req)
    async with caller.stream(plan or req.plan, out, admitted=admitted) as upstream_resp:
        req.upstream_status = upstream_resp.status
        got = await read_answer(upstream_resp)
        if isinstance(got, Unread):
            return await stream_back(req.web, upstream_resp, req.request_id, already_read=got.head)
        return got


def answer_response(answer: Answer, request_id: str) -> web.Response:
    """The answer with its (possibly rewritten) body; the length is computed, never copied."""
    response = web.Response(status=answer.status, reason=answer.reason, body=answer.body)
    for name, value in answer.headers.items():
        response.headers.add(name, value)
    response.headers["X-Request-Id"] = request_id
    return response

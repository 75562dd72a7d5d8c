"""`/__sim/echo`, `/__sim/large` and `/__sim/slow`: targets for the proxy's forwarding tests."""

from __future__ import annotations

import base64
from typing import Final

from aiohttp import web

from .gate import maybe_gzip
from .responses import json_response
from .state import state_of

# 64 bytes, so any multiple-of-64 chunk size streams the same bytes as `large_body(n)`.
PATTERN: Final = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-\n"
DEFAULT_CHUNK: Final = 64 * 1024


def large_body(n: int) -> bytes:
    """The exact bytes `GET /__sim/large?bytes=n` streams."""
    return (PATTERN * (n // len(PATTERN) + 1))[:n]


async def echo(request: web.Request) -> web.Response:
    """Everything received, so forwarding tests can assert byte-for-byte fidelity.

    `?status=NNN` picks the status; each `?set_header=Name:Value` adds a response header.
    """
    raw = await request.read()
    body: dict[str, object] = {
        "method": request.method,
        "path": request.path,
        "raw_path": request.raw_path,
        "query_string": request.query_string,
        "query": [[k, v] for k, v in request.query.items()],
        "headers": [[k, v] for k, v in request.headers.items()],
        "body_length": len(raw),
    }
    try:
        body["body_text"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        body["body_b64"] = base64.b64encode(raw).decode()
    headers: dict[str, str] = {}
    for spec in request.query.getall("set_header", []):
        name, _, value = spec.partition(":")
        headers[name.strip()] = value.strip()
    status = int(request.query.get("status", "200"))
    return json_response(body, status=status, headers=headers)


async def large(request: web.Request) -> web.StreamResponse:
    """Stream `?bytes=N` of `PATTERN` in `?chunk=` pieces, `?delay_ms=` apart (chunked)."""
    total = int(request.query.get("bytes", "1048576"))
    chunk = max(len(PATTERN), int(request.query.get("chunk", DEFAULT_CHUNK)))
    chunk -= chunk % len(PATTERN)
    delay = float(request.query.get("delay_ms", "0")) / 1000
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    if total > state_of(request).config.gzip_min_bytes:
        maybe_gzip(request, response, 0)
    await response.prepare(request)
    block = large_body(chunk)
    sent = 0
    while sent < total:
        piece = block[: min(chunk, total - sent)]
        await response.write(piece)
        sent += len(piece)
        if delay and sent < total:
            await state_of(request).sleep(delay)
    await response.write_eof()
    return response


async def slow(request: web.Request) -> web.Response:
    ms = float(request.query.get("ms", "1000"))
    await state_of(request).sleep(ms / 1000)
    return json_response({"slept_ms": ms})

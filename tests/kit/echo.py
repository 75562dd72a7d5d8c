"""A scripted upstream that records every request it receives: what the gateway sent, exactly."""

from __future__ import annotations

import asyncio
import gzip
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict


class EchoUpstream:
    """A scripted upstream that records every request it receives."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.release_stream = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gzip", self.gzipped)
        app.router.add_get("/stream", self.stream)
        app.router.add_get("/slow", self.slow)
        app.router.add_route("*", "/{tail:.*}", self.echo)
        self.server = TestServer(app)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    async def echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append(
            {
                "method": request.method,
                "raw_path": request.raw_path,
                "headers": CIMultiDict(request.headers),
                "header_names": [k.lower() for k in request.headers],
                "body": body,
            }
        )
        status = int(request.query.get("status", "200"))
        return web.Response(
            status=status,
            body=orjson.dumps({"status": "error", "message": "nope"} if status >= 400 else {}),
            content_type="application/json",
            headers={
                "X-HubSpot-RateLimit-Max": "100",
                "X-HubSpot-RateLimit-Remaining": "99",
                "X-HubSpot-Correlation-Id": "abc",
                "Set-Cookie": "a=b",
            },
        )

    async def gzipped(self, request: web.Request) -> web.Response:
        self.seen.append(
            {"method": "GET", "raw_path": "/gzip", "headers": CIMultiDict(request.headers)}
        )
        return web.Response(
            body=gzip.compress(b'{"big": "' + b"x" * 5000 + b'"}', mtime=0),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"a" * 65536)
        # The test releases the rest only after it has read the first chunk: a gateway that
        # buffered whole answers would deadlock here.
        await asyncio.wait_for(self.release_stream.wait(), 10)
        for _ in range(80):
            await response.write(b"b" * 65536)
        await response.write_eof()
        return response

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

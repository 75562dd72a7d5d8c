"""Transparent forwarding: what reaches the upstream, what comes back, and what never leaves."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from tests.conftest import AUTH, GatewayFactory

pytestmark = pytest.mark.timeout(30)


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


@pytest.fixture
async def upstream() -> AsyncIterator[EchoUpstream]:
    echo = EchoUpstream()
    await echo.server.start_server()
    yield echo
    await echo.server.close()


async def test_methods_paths_bodies_and_headers_reach_upstream(
    upstream: EchoUpstream, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(upstream.url)
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"):
        body = b'{"properties":{"a":"1"}}' if method in {"POST", "PUT", "PATCH"} else b""
        resp = await gw.request(
            method,
            "/crm/v3/objects/contacts/1?properties=a,b&archived=false",
            data=body or None,
            headers={**AUTH, "X-Custom": "kept", "Content-Type": "application/json"},
        )
        assert resp.status == 200
        seen = upstream.seen[-1]
        assert seen["method"] == method
        assert seen["raw_path"] == "/crm/v3/objects/contacts/1?properties=a,b&archived=false"
        assert seen["body"] == body
        assert seen["headers"]["Authorization"] == AUTH["Authorization"]
        assert seen["headers"]["X-Custom"] == "kept"
        assert seen["headers"]["Host"] == upstream.url.split("//")[1]
        assert seen["headers"]["X-Forwarded-For"] == "127.0.0.1"
        assert seen["headers"]["X-Forwarded-Proto"] == "http"


async def test_hop_by_hop_headers_are_stripped(
    upstream: EchoUpstream, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(upstream.url)
    await gw.get(
        "/crm/v3/objects/contacts",
        headers={
            **AUTH,
            "Connection": "keep-alive, X-Private",
            "X-Private": "secret-hop",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Trailer": "X-T",
            "Upgrade": "h2c",
            "Proxy-Authorization": "Basic abc",
            "Proxy-Foo": "1",
        },
    )
    names = upstream.seen[-1]["header_names"]
    for hop in ("x-private", "keep-alive", "te", "trailer", "upgrade", "proxy-authorization"):
        assert hop not in names
    assert "proxy-foo" not in names


async def test_status_headers_and_error_bodies_come_back_unchanged(
    upstream: EchoUpstream, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(upstream.url)
    resp = await gw.get("/crm/v3/objects/contacts/9?status=404", headers=AUTH)
    assert resp.status == 404
    assert await resp.json() == {"status": "error", "message": "nope"}
    assert resp.headers["X-HubSpot-RateLimit-Max"] == "100"
    assert resp.headers["X-HubSpot-RateLimit-Remaining"] == "99"
    assert resp.headers["X-HubSpot-Correlation-Id"] == "abc"
    assert resp.headers["Set-Cookie"] == "a=b"


async def test_gzip_passes_through_without_reencoding(
    upstream: EchoUpstream, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(upstream.url)
    resp = await gw.get("/gzip", headers={**AUTH, "Accept-Encoding": "gzip"}, auto_decompress=False)
    raw = await resp.read()
    assert resp.headers["Content-Encoding"] == "gzip"
    assert raw == gzip.compress(b'{"big": "' + b"x" * 5000 + b'"}', mtime=0)
    assert upstream.seen[-1]["headers"]["Accept-Encoding"] == "gzip"


async def test_large_answers_are_streamed_not_buffered(
    upstream: EchoUpstream, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(upstream.url)
    resp = await gw.get("/stream", headers=AUTH)
    first = await resp.content.readexactly(65536)
    assert first == b"a" * 65536
    upstream.release_stream.set()
    rest = await resp.read()
    assert len(rest) == 80 * 65536


async def test_request_id_is_honoured_or_made(
    upstream: EchoUpstream, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(upstream.url)
    resp = await gw.get("/crm/v3/objects/contacts", headers={**AUTH, "X-Request-Id": "req-42"})
    assert resp.headers["X-Request-Id"] == "req-42"
    assert upstream.seen[-1]["headers"]["X-Request-Id"] == "req-42"
    resp = await gw.get("/crm/v3/objects/contacts", headers=AUTH)
    made = resp.headers["X-Request-Id"]
    assert len(made) == 36
    assert upstream.seen[-1]["headers"]["X-Request-Id"] == made


async def test_oversized_body_gets_413_and_upstream_is_not_called(
    upstream: EchoUpstream, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(upstream.url, max_body_bytes=1000)
    resp = await gw.post("/crm/v3/objects/notes", data=b"x" * 1001, headers=AUTH)
    assert resp.status == 413
    body = await resp.json()
    assert body["status"] == "error" and body["category"] == "VALIDATION_ERROR"
    assert body["correlationId"]
    assert resp.headers["X-HubSpot-Proxy-Error"] == "body-too-large"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"y" * 400

    resp = await gw.post("/crm/v3/objects/notes", data=chunks(), headers=AUTH)
    assert resp.status == 413
    assert upstream.seen == []


async def test_upstream_unreachable_gives_502(gateway_factory: GatewayFactory) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gw = await gateway_factory(f"http://127.0.0.1:{port}")
    resp = await gw.get("/crm/v3/objects/contacts", headers=AUTH)
    assert resp.status == 502
    assert resp.headers["X-HubSpot-Proxy-Error"] == "upstream-unreachable"
    body = await resp.json()
    assert set(body) >= {"status", "message", "correlationId", "category"}


async def test_upstream_slow_gives_504(
    upstream: EchoUpstream, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(upstream.url, read_timeout_s=0.3)
    resp = await gw.get("/slow", headers=AUTH)
    assert resp.status == 504
    assert resp.headers["X-HubSpot-Proxy-Error"] == "upstream-timeout"
    assert (await resp.json())["category"] == "GATEWAY_TIMEOUT"


async def test_health_endpoints_are_not_forwarded(
    upstream: EchoUpstream, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(upstream.url)
    assert (await gw.get("/healthz")).status == 200
    assert (await gw.get("/readyz")).status in {200, 503}
    assert (await gw.get("/metrics")).status == 200
    assert upstream.seen == []


async def _raw_request(port: int, payload: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize(
    ("request_line", "expected_status", "expected_path"),
    [
        (
            b"GET http://evil.example/crm/v3/objects/contacts?a=1 HTTP/1.1",
            200,
            "/crm/v3/objects/contacts?a=1",
        ),
        (b"GET //evil.example/crm HTTP/1.1", 200, "//evil.example/crm"),
        (b"CONNECT evil.example:443 HTTP/1.1", 405, None),
        (b"GET /crm/v3/../../admin HTTP/1.1", 400, None),
        (b"GET /crm/v3/%2e%2e/%2E%2E/admin HTTP/1.1", 400, None),
        (b"GET /crm/v3/%252e%252e/admin HTTP/1.1", 400, None),
        (b"GET /crm/v3/..%2fadmin HTTP/1.1", 400, None),
    ],
)
async def test_open_proxy_attempts_never_change_the_destination(
    upstream: EchoUpstream,
    gateway_factory: GatewayFactory,
    request_line: bytes,
    expected_status: int,
    expected_path: str | None,
) -> None:
    gw = await gateway_factory(upstream.url)
    port = gw.server.port
    assert port is not None
    payload = (
        request_line
        + b"\r\nHost: evil.example\r\nAuthorization: Bearer t\r\nConnection: close\r\n\r\n"
    )
    status, body = await _raw_request(port, payload)
    assert status == expected_status
    if expected_path is None:
        assert upstream.seen == []
        assert orjson.loads(body)["status"] == "error"
    else:
        seen = upstream.seen[-1]
        assert seen["raw_path"] == expected_path
        assert seen["headers"]["Host"] == upstream.url.split("//")[1]


async def test_client_host_header_does_not_pick_the_destination(
    upstream: EchoUpstream, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(upstream.url)
    resp = await gw.get("/crm/v3/objects/contacts", headers={**AUTH, "Host": "evil.example"})
    assert resp.status == 200
    assert upstream.seen[-1]["headers"]["Host"] == upstream.url.split("//")[1]


async def test_unknown_gateway_route_is_hubspot_shaped(
    upstream: EchoUpstream, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(upstream.url)
    resp = await gw.get("/proxy/v1/nothing-here", headers=AUTH)
    assert resp.status == 404
    body = await resp.json()
    assert body["category"] == "OBJECT_NOT_FOUND" and body["status"] == "error"
    assert upstream.seen == []


async def test_connection_reuse_uses_one_pool(
    upstream: EchoUpstream, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(upstream.url)
    results = await asyncio.gather(
        *(gw.get(f"/crm/v3/objects/contacts?after={i}", headers=AUTH) for i in range(50))
    )  # distinct pages: identical concurrent reads would share one call (singleflight)
    assert all(r.status == 200 for r in results)
    assert len(upstream.seen) == 50
    assert isinstance(gw.app, aiohttp.web.Application)

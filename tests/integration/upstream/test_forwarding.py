"""Transparent forwarding: what reaches the upstream, what comes back, and what never leaves."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator

import pytest

from tests.kit.echo import EchoUpstream
from tests.kit.harness import AUTH, GatewayFactory

pytestmark = pytest.mark.timeout(30)

POOL = 4  # upstream connections the gateway may hold open


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


async def test_hubspots_cookies_are_relayed_never_kept_for_the_next_caller(
    upstream: EchoUpstream, gateway_factory: GatewayFactory
) -> None:
    # By host name: aiohttp's cookie jar keeps no cookie of a bare IP address.
    gw = await gateway_factory(upstream.url.replace("127.0.0.1", "localhost"))
    first = await gw.get("/crm/v3/objects/contacts/1", headers=AUTH)
    assert first.headers["Set-Cookie"] == "a=b"  # the client's to keep, or not
    gw.session.cookie_jar.clear()  # this client keeps none: what the gateway sends is its own
    await gw.get("/crm/v3/objects/contacts/2", headers={"Authorization": "Bearer other"})
    assert "Cookie" not in upstream.seen[-1]["headers"]
    gw.session.cookie_jar.clear()
    await gw.get("/crm/v3/objects/contacts/3", headers={**AUTH, "Cookie": "mine=1"})
    assert upstream.seen[-1]["headers"].getall("Cookie") == ["mine=1"]


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


async def test_connection_reuse_uses_one_pool(
    upstream: EchoUpstream, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(upstream.url, pool_size=POOL)
    for round_ in range(2):
        results = await asyncio.gather(
            *(
                gw.get(f"/crm/v3/objects/contacts?after={round_ * 25 + i}", headers=AUTH)
                for i in range(25)
            )
        )  # distinct pages: identical concurrent reads would share one call (singleflight)
        assert all(r.status == 200 for r in results)
    assert len(upstream.seen) == 50
    assert upstream.server.runner is not None and upstream.server.runner.server is not None
    open_connections = upstream.server.runner.server.connections
    # 50 calls, 25 at a time, went over at most POOL connections, all kept alive: one pool.
    assert 1 <= len(open_connections) <= POOL

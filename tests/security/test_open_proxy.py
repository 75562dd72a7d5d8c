"""Not an open proxy: only the configured upstream is ever contacted (invariant 9)."""

from __future__ import annotations

import pytest

from tests.kit.echo import EchoUpstream
from tests.kit.harness import AUTH, GatewayFactory
from tests.kit.raw_http import raw_exchange

pytestmark = pytest.mark.timeout(30)


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
    answer = await raw_exchange(port, payload)
    assert answer.status == expected_status
    if expected_path is None:
        assert upstream.seen == []
        body = answer.json()
        assert isinstance(body, dict) and body["status"] == "error"
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

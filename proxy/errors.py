"""The gateway's own error types; one outermost middleware turns each into a HubSpot answer."""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """An error the gateway answers itself, in HubSpot's error shape.

    `proxy_error` goes out in the `X-HubSpot-Proxy-Error` header so operators and clients can
    tell the gateway's own answers from HubSpot's.
    """

    status: int = 500
    category: str = "INTERNAL_ERROR"
    proxy_error: str = "internal"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def body_extra(self) -> dict[str, Any]:
        return {}


class BadRequest(GatewayError):
    status = 400
    category = "VALIDATION_ERROR"
    proxy_error = "bad-request"


class BadEncoding(BadRequest):
    proxy_error = "bad-encoding"


class RequestTimeout(GatewayError):
    status = 408
    category = "TIMEOUT"
    proxy_error = "body-timeout"


class Unauthorized(GatewayError):
    status = 401
    category = "INVALID_AUTHENTICATION"
    proxy_error = "unauthorized"


class NotFound(GatewayError):
    status = 404
    category = "OBJECT_NOT_FOUND"
    proxy_error = "not-found"


class MethodNotAllowed(GatewayError):
    status = 405
    category = "VALIDATION_ERROR"
    proxy_error = "method-not-allowed"


class Conflict(GatewayError):
    status = 409
    category = "CONFLICT"
    proxy_error = "conflict"


class PayloadTooLarge(GatewayError):
    status = 413
    category = "VALIDATION_ERROR"
    proxy_error = "body-too-large"


class UpstreamUnreachable(GatewayError):
    status = 502
    category = "BAD_GATEWAY"
    proxy_error = "upstream-unreachable"


class UpstreamCutShort(UpstreamUnreachable):
    proxy_error = "upstream-cut-short"


class UpstreamTooLarge(UpstreamUnreachable):
    proxy_error = "upstream-too-large"


class ServiceUnavailable(GatewayError):
    status = 503
    category = "SERVICE_UNAVAILABLE"
    proxy_error = "unavailable"


class UpstreamTimeout(GatewayError):
    status = 504
    category = "GATEWAY_TIMEOUT"
    proxy_error = "upstream-timeout"

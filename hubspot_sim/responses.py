"""JSON answers in HubSpot's shapes (the shapes themselves live in `proxy.hubspot`)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from proxy.hubspot.protocol import error_body

from .store import iso_now


class ApiError(Exception):
    """Raised by handlers; the gate turns it into HubSpot's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        category: str,
        *,
        context: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.category = category
        self.context = context

    def response(self) -> web.Response:
        body = error_body(self.message, self.category, context=self.context)
        return json_response(body, status=self.status)


def validation_error(message: str) -> ApiError:
    return ApiError(400, message, "VALIDATION_ERROR")


def not_found(message: str = "resource not found") -> ApiError:
    return ApiError(404, message, "OBJECT_NOT_FOUND")


def json_response(
    body: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


async def read_json(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise validation_error(f"Invalid input JSON: {exc}") from exc


async def read_object(request: web.Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise validation_error("the request body must be a JSON object")
    return body


def batch_item_error(
    status: str, category: str, message: str, context: dict[str, list[str]]
) -> dict[str, Any]:
    # The Python SDK's StandardError rejects a missing `links` or `errors`, so both are sent.
    return {
        "status": status,
        "category": category,
        "message": message,
        "context": context,
        "links": {},
        "errors": [],
    }


def batch_response(
    results: list[dict[str, Any]],
    started_at: str,
    errors: list[dict[str, Any]] | None = None,
    *,
    ok_status: int = 200,
) -> web.Response:
    """HubSpot's batch envelope: `ok_status` when all went well, 207 with `errors` otherwise."""
    body: dict[str, Any] = {
        "status": "COMPLETE",
        "results": results,
        "startedAt": started_at,
        "completedAt": iso_now(),
    }
    if errors:
        body["numErrors"] = len(errors)
        body["errors"] = errors
        return json_response(body, status=207)
    return json_response(body, status=ok_status)

"""The middleware every HubSpot-path request passes: auth, limits, latency, faults, headers.

Order matters: limits are decided at arrival (before latency), as HubSpot's edge does, so the
call log's timestamps are the times the limiter saw. Faulted calls were admitted, so they count
toward the windows (the conservative reading for a client that must never exceed them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from proxy.hubspot.protocol import error_body, rate_limit_body

from .config import FAULT_STATUSES
from .limits import KIND_GENERAL, KIND_SEARCH
from .responses import ApiError, json_response
from .state import SimState, state_of
from .stats import token_hash

SIM_PREFIX: Final = "/__sim/"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HANDLER_KINDS: web.AppKey[dict[Any, str]] = web.AppKey("hubspot_sim_kinds", dict)

AUTH_MESSAGE: Final = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you "
    "can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)
_FAULT_CATEGORIES: Final = {
    502: "BAD_GATEWAY",
    503: "SERVICE_UNAVAILABLE",
    504: "GATEWAY_TIMEOUT",
}


def bearer_token(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def maybe_gzip(request: web.Request, response: web.StreamResponse, min_bytes: int) -> None:
    """Compress bodies over `min_bytes` when the client accepts gzip (as HubSpot does)."""
    if response.prepared or "gzip" not in request.headers.get("Accept-Encoding", "").lower():
        return
    if isinstance(response, web.Response):
        body = response.body
        if not isinstance(body, bytes | bytearray) or len(body) <= min_bytes:
            return
    response.enable_compression(web.ContentCoding.gzip)


async def _sleep_latency(state: SimState) -> None:
    lo, hi = state.config.latency_ms
    if hi > 0:
        await state.sleep(state.rng.uniform(lo, hi) / 1000)


def _fault_response(state: SimState) -> web.Response:
    status = state.rng.choice(FAULT_STATUSES)
    body = error_body(f"Simulated upstream failure ({status})", _FAULT_CATEGORIES[status])
    return json_response(body, status=status)


async def _fault(state: SimState) -> tuple[web.Response | None, str]:
    """A made-up failure before the call is applied, or None and the fault due after it.

    After: "" (none), "5xx" (applied, then a 5xx) or "timeout" (applied, then a hang).
    """
    cfg = state.config
    if sum(cfg.fault_rates) <= 0:
        return None, ""  # no draw, so enabling faults later leaves the latency sequence alone
    roll = state.rng.random()
    if roll < cfg.fault_5xx_rate:
        return _fault_response(state), ""
    roll -= cfg.fault_5xx_rate
    if roll < cfg.fault_423_rate:
        body = error_body("The record is locked by another operation; retry later", "LOCKED")
        return json_response(body, status=423), ""
    roll -= cfg.fault_423_rate
    if roll < cfg.fault_timeout_rate:
        # The call still completes afterwards: a client that gave up never learns a write landed.
        await state.sleep(cfg.timeout_s)
        return None, ""
    roll -= cfg.fault_timeout_rate
    if roll < cfg.fault_5xx_after_rate:
        return None, "5xx"
    if roll - cfg.fault_5xx_after_rate < cfg.fault_timeout_after_rate:
        return None, "timeout"
    return None, ""


async def _serve(request: web.Request, handler: Handler) -> tuple[web.StreamResponse, bool]:
    """(response, faulted): the handler's answer, or an injected fault."""
    state = state_of(request)
    await _sleep_latency(state)
    faulted, after = await _fault(state)
    if faulted is not None:
        return faulted, True
    try:
        response: web.StreamResponse = await handler(request)
    except ApiError as exc:
        response = exc.response()
    except web.HTTPException as exc:
        category = "OBJECT_NOT_FOUND" if exc.status == 404 else "VALIDATION_ERROR"
        response = json_response(error_body(exc.reason, category), status=exc.status)
    if after == "5xx":
        return _fault_response(state), True
    if after == "timeout":
        await state.sleep(state.config.timeout_s)
    return response, False


def _refusal(state: SimState, policy: str, headers: dict[str, str]) -> web.Response:
    group = f"publicapi:private-app:{state.config.portal_id}"
    return json_response(rate_limit_body(policy, group_name=group), status=429, headers=headers)


@web.middleware
async def hubspot_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = state_of(request)
    if request.path.startswith(SIM_PREFIX):
        response = await handler(request)
        maybe_gzip(request, response, state.config.gzip_min_bytes)
        return response
    token = bearer_token(request)
    if token is None:
        state.stats.unauthenticated += 1
        return json_response(error_body(AUTH_MESSAGE, "INVALID_AUTHENTICATION"), status=401)
    hashed, cfg, now = token_hash(token), state.config, state.clock()
    kind = request.app[HANDLER_KINDS].get(request.match_info.handler, KIND_GENERAL)
    budget, stats = state.budget(hashed), state.stats.for_hash(hashed)
    policy = budget.admit(kind, now, cfg)
    # Search answers carry no rate-limit headers; all others describe the general policy.
    headers = {} if kind == KIND_SEARCH else budget.headers(now, cfg)
    if policy is not None:
        stats.answered(kind, 429, policy)
        await _sleep_latency(state)
        return _refusal(state, policy, headers)
    windows = (cfg.general_window_s, cfg.search_window_s)
    record = stats.admitted(kind, now, request.method, request.path, windows)
    response, faulted = await _serve(request, handler)
    if not faulted:
        response.headers.update(headers)
    record.status = response.status
    stats.answered(kind, response.status)
    maybe_gzip(request, response, cfg.gzip_min_bytes)
    return response

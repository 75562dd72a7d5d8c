"""Sending one call to HubSpot inside the budget: admit, send, and absorb what HubSpot refuses.

The client sees a 429 only when its own deadline cannot be met (invariant 2); HubSpot's own 429s
pause the bucket for every replica and are retried (invariant 3).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Coroutine
from typing import Any

import aiohttp
import orjson

from proxy.budget.limiter import Limiter
from proxy.budget.model import Admission, BudgetExceeded, ProcessBehind
from proxy.budget.plans import CallPlan
from proxy.errors import (
    GatewayError,
    UpstreamNotReached,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnreachable,
)
from proxy.hubspot import protocol as hubspot
from proxy.metrics import Metrics
from proxy.store.credentials import accepts
from proxy.upstream.answer import MAX_BUFFERED_BYTES, Answer, Unread, read_answer
from proxy.upstream.rate_headers import RateLimitRecorder, RateLimitSnapshot, parse_headers
from proxy.upstream.transport import Outgoing, Upstream, response_headers

log = logging.getLogger("proxy.admission")

LOCKED_WAIT_S = 2.0
RETRYABLE_5XX = frozenset({502, 503, 504, 524})
MAX_5XX_ATTEMPTS = 3
POLICY_BUCKET = {
    hubspot.POLICY_TEN_SECONDLY: "general",
    hubspot.POLICY_SECONDLY: "search",
    hubspot.POLICY_DAILY: "daily",
}


class RateLimited(GatewayError):
    """The call's deadline cannot be met: HubSpot's own 429 shape, with an exact Retry-After."""

    status = 429
    category = "RATE_LIMIT"
    proxy_error = "budget-deadline"

    def __init__(self, policy: str, retry_after_s: float, *, behind: bool = False) -> None:
        self.policy = policy
        self.retry_after_s = retry_after_s
        if behind:  # a new flow turned away by a saturated process, not by the budget
            self.proxy_error = "behind"
        super().__init__(
            hubspot.POLICY_MESSAGES.get(policy, "You have reached your rate limit."),
            headers={"Retry-After": str(max(1, math.ceil(retry_after_s)))},
        )

    def body_extra(self) -> dict[str, object]:
        body = hubspot.rate_limit_body(self.policy)
        del body["correlationId"], body["status"], body["message"]
        return {**body, "category": "RATE_LIMIT"}


def _pause_seconds(headers: dict[str, str], policy: str, window_ms: int | None) -> float:
    retry_after = headers.get("retry-after")
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            pass
    if policy == hubspot.POLICY_SECONDLY:
        return 1.0
    if policy == hubspot.POLICY_DAILY:
        return 3600.0
    # Until the rolling window frees: every call in it is then behind us.
    return (window_ms or 10_000) / 1000


class AdmittedCaller:
    """Admit -> send -> record -> retry policy: the one way out to HubSpot.

    `fetch` gives the answer read whole and decoded; `stream` gives the live response for
    relaying. The time spent waiting for admission is added to `plan.trace.waited_s` here, and
    nowhere else.
    """

    def __init__(
        self,
        limiter: Limiter,
        upstream: Upstream,
        recorder: RateLimitRecorder,
        metrics: Metrics,
    ) -> None:
        self._limiter = limiter
        self._upstream = upstream
        self._recorder = recorder
        self._metrics = metrics
        self._last_learned: dict[str, float] = {}

    async def _admit(self, plan: CallPlan) -> Admission:
        started = time.monotonic()
        try:
            admission = await self._limiter.acquire(
                plan.credential,
                plan.buckets,
                priority=plan.priority,
                max_wait_s=max(0.0, plan.deadline - started),
                daily_reset_ms=plan.daily_reset_ms,
            )
        except BudgetExceeded as exc:
            self._metrics.rejected.labels(exc.bucket, plan.priority.label).inc()
            behind = isinstance(exc, ProcessBehind)
            raise RateLimited(exc.policy, exc.retry_after_s, behind=behind) from exc
        waited = time.monotonic() - started
        priority = plan.priority.label
        self._metrics.queue_wait.labels(plan.bucket_label, priority).observe(waited)
        self._metrics.admitted.labels(priority).inc()
        plan.trace.waited_s += waited
        plan.trace.attempts += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "admitted",
                extra={
                    "request_id": plan.trace.request_id,
                    "credential": plan.credential,
                    "bucket": plan.bucket_label,
                    "priority": priority,
                    "wait_s": round(waited, 4),
                    "attempt": plan.trace.attempts,
                },
            )
        return admission

    async def try_admit(self, plan: CallPlan) -> bool:
        """Admit `plan` only if a slot is free now; False (nothing reserved) under pressure."""
        try:
            await self._limiter.acquire(
                plan.credential,
                plan.buckets,
                priority=plan.priority,
                max_wait_s=0.0,
                daily_reset_ms=plan.daily_reset_ms,
            )
        except BudgetExceeded:
            return False
        self._metrics.admitted.labels(plan.priority.label).inc()
        plan.trace.attempts += 1
        return True

    async def admit(self, plan: CallPlan) -> None:
        """Wait for `plan`'s slot; RateLimited when its deadline cannot be met."""
        await self._admit(plan)

    async def fetch(self, plan: CallPlan, out: Outgoing, *, admitted: bool = False) -> Answer:
        """The answer to `out`, sent within budget, read whole and decoded (past the size cap:
        what was read, not `parsable`). `admitted`: the first attempt's slot is reserved."""
        async with self.stream(plan, out, admitted=admitted) as resp:
            try:
                got = await read_answer(resp)
            except aiohttp.ClientError as exc:
                raise UpstreamUnreachable(
                    f"HubSpot's answer broke off: {type(exc).__name__}"
                ) from exc
            if isinstance(got, Unread):
                headers = response_headers(resp.headers)
                return Answer(resp.status, resp.reason, headers, got.head, parsable=False)
            return got

    async def fetch_entire(
        self, plan: CallPlan, out: Outgoing, *, admitted: bool = False
    ) -> Answer:
        """`fetch` for an answer the gateway must take apart (a batch answer split among its
        callers): one past the cap cannot be, so it is a 502."""
        answer = await self.fetch(plan, out, admitted=admitted)
        if not answer.parsable:
            raise UpstreamTooLarge(f"HubSpot's answer is larger than {MAX_BUFFERED_BYTES} bytes")
        return answer

    def stream(self, plan: CallPlan, out: Outgoing, *, admitted: bool = False) -> _Live:
        """The live answer to `out`, sent within budget, for relaying; released on exit."""
        return _Live(self._send(plan, out, admitted=admitted))

    async def _send(
        self, plan: CallPlan, out: Outgoing, *, admitted: bool
    ) -> aiohttp.ClientResponse:
        failures_5xx = 0
        while True:
            # A slot reserved by `try_admit` or `admit` (the coalescer's) is not given back here.
            admission = None if admitted else await self._admit(plan)
            admitted = False
            try:
                resp = await self._upstream.send(out)
            except (UpstreamTimeout, UpstreamUnreachable) as exc:
                if isinstance(exc, UpstreamNotReached) and admission is not None:
                    self._limiter.give_back(plan.credential, plan.buckets, admission)
                failures_5xx += 1
                delay = _backoff_delay(failures_5xx)
                if not self._may_retry(plan, failures_5xx, delay):
                    raise
                self._metrics.upstream_retries.labels("unreachable").inc()
                await asyncio.sleep(delay)
                continue
            self._metrics.upstream_calls.labels(plan.bucket_label, str(resp.status)).inc()
            await self._judge_token(plan.credential, resp.status)
            snapshot = parse_headers(resp.headers)
            self._recorder.record(plan.credential, snapshot)
            if resp.status == 429:
                await self._pause_after_429(plan, resp, snapshot.interval_ms)
                continue
            if resp.status == 423 and time.monotonic() + LOCKED_WAIT_S < plan.deadline:
                resp.release()
                self._metrics.upstream_retries.labels("locked").inc()
                await asyncio.sleep(LOCKED_WAIT_S)
                continue
            if resp.status in RETRYABLE_5XX:
                failures_5xx += 1
                delay = _backoff_delay(failures_5xx)
                if self._may_retry(plan, failures_5xx, delay):
                    resp.release()
                    self._metrics.upstream_retries.labels(str(resp.status)).inc()
                    await asyncio.sleep(delay)
                    continue
            await self._report_upstream_count(plan, snapshot)
            return resp

    async def _judge_token(self, credential: str, status: int) -> None:
        """Learn that HubSpot accepts a credential; forget one it refuses and never accepted."""
        known = self._recorder.credentials
        if accepts(status):
            if not known.seen(credential):  # once per process: no coroutine on later calls
                await known.accepted(credential)
        elif status == 401 and not await known.is_accepted(credential):
            await self._limiter.forget(credential)

    async def _pause_after_429(
        self, plan: CallPlan, resp: aiohttp.ClientResponse, window_ms: int | None
    ) -> None:
        raw = await resp.read()
        resp.release()
        try:
            policy = str(orjson.loads(raw).get("policyName", hubspot.POLICY_TEN_SECONDLY))
        except (orjson.JSONDecodeError, AttributeError):
            policy = hubspot.POLICY_TEN_SECONDLY
        self._metrics.upstream_429.labels(policy).inc()
        bucket = POLICY_BUCKET.get(policy, "general")
        pause_s = _pause_seconds({k.lower(): v for k, v in resp.headers.items()}, policy, window_ms)
        log.warning(
            "HubSpot answered 429; pausing bucket",
            extra={"credential": plan.credential, "policy": policy, "pause_s": pause_s},
        )
        await self._limiter.pause(plan.credential, bucket, pause_s)
        self._metrics.upstream_retries.labels("429").inc()

    async def _report_upstream_count(self, plan: CallPlan, snapshot: RateLimitSnapshot) -> None:
        """Tell the limiter what HubSpot counted; at most once a second per credential."""
        if snapshot.max is None or snapshot.remaining is None:
            return
        now = time.monotonic()
        if now - self._last_learned.get(plan.credential, 0.0) < 1.0:
            return  # the common case, decided before looking for the bucket
        general = next((b for b in plan.buckets if b.name == "general"), None)
        if general is None:
            return
        self._last_learned[plan.credential] = now
        window_ms = snapshot.interval_ms or general.window_ms
        await self._limiter.learn(
            plan.credential, "general", snapshot.max, snapshot.remaining, window_ms
        )

    @staticmethod
    def _may_retry(plan: CallPlan, attempt: int, delay: float) -> bool:
        return (
            plan.idempotent
            and attempt < MAX_5XX_ATTEMPTS
            and time.monotonic() + delay < plan.deadline
        )


class _Live:
    """`async with caller.stream(...) as resp`: the answer, released on exit (a class, not an
    `asynccontextmanager`, whose generator costs more on every forwarded call)."""

    __slots__ = ("_resp", "_sending")

    def __init__(self, sending: Coroutine[Any, Any, aiohttp.ClientResponse]) -> None:
        self._sending = sending
        self._resp: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> aiohttp.ClientResponse:
        self._resp = await self._sending
        return self._resp

    async def __aexit__(self, *exc_info: object) -> None:
        if self._resp is not None:
            self._resp.release()


def _backoff_delay(attempt: int) -> float:
    """Exponential backoff with jitter, so replicas retrying together do not stay in step."""
    return min(4.0, 0.2 * 2.0**attempt) * random.uniform(0.5, 1.0)

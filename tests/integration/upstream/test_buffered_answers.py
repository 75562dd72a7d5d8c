"""Answers read whole for the rules: capped in size, and a truncated one is a 502, not a 500."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.upstream.answer import MAX_BUFFERED_BYTES
from tests.kit.harness import AUTH, GatewayFactory

pytestmark = pytest.mark.timeout(60)

EXAMS = "/crm/v3/objects/mock_exams"
SMALL_EXAM = {"id": "1", "properties": {"capacity": "10", "total_bookings": "0"}}
# Inflates to twice the cap: padding in a property HubSpot would never send this large.
HUGE_EXAM = gzip.compress(
    orjson.dumps({"id": "2", "properties": {"pad": "x" * (2 * MAX_BUFFERED_BYTES)}}), mtime=0
)


class ExamUpstream:
    """Mock exam GETs: one small, one that inflates past the cap, one cut short."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        app = web.Application()
        app.router.add_get(EXAMS + "/{id}", self.exam)
        app.router.add_get("/files/v3/files/{id}", self.cut_short)
        self.server = TestServer(app)

    async def exam(self, request: web.Request) -> web.StreamResponse:
        exam_id = request.match_info["id"]
        self.calls[exam_id] = self.calls.get(exam_id, 0) + 1
        if exam_id == "1":
            return web.json_response(SMALL_EXAM)
        if exam_id == "2":
            return web.Response(
                body=HUGE_EXAM,
                headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
            )
        return await self.cut_short(request)

    async def cut_short(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 1000
        await response.prepare(request)
        await response.write(b'{"id": "3", ')
        assert request.transport is not None
        request.transport.close()
        return response


@pytest.fixture
async def exams() -> AsyncIterator[ExamUpstream]:
    upstream = ExamUpstream()
    await upstream.server.start_server()
    yield upstream
    await upstream.server.close()


def _url(upstream: ExamUpstream) -> str:
    return str(upstream.server.make_url("")).rstrip("/")


async def test_an_answer_inflating_past_the_cap_is_relayed_as_it_came_and_not_cached(
    exams: ExamUpstream, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(_url(exams))
    headers = {**AUTH, "Accept-Encoding": "gzip"}
    for _ in range(2):
        resp = await gw.get(f"{EXAMS}/2", headers=headers, auto_decompress=False)
        assert resp.status == 200
        assert resp.headers["Content-Encoding"] == "gzip"
        assert await resp.read() == HUGE_EXAM
    assert exams.calls["2"] == 2  # nothing cached
    for _ in range(2):
        resp = await gw.get(f"{EXAMS}/1", headers=headers)
        assert (await resp.json())["id"] == "1"
    assert exams.calls["1"] == 1  # the small answer was cached: the cap is what kept "2" out


async def test_a_buffered_answer_cut_short_is_a_502(
    exams: ExamUpstream, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(_url(exams))
    resp = await gw.get(f"{EXAMS}/3", headers=AUTH)
    assert resp.status == 502
    assert resp.headers["X-HubSpot-Proxy-Error"] == "upstream-cut-short"
    body = await resp.json()
    assert body["status"] == "error" and body["category"] == "BAD_GATEWAY"


async def test_a_streamed_answer_cut_short_cuts_the_client_connection(
    exams: ExamUpstream, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(_url(exams))
    # Not a CRM read: no rule learns from it and singleflight does not share it, so it streams.
    resp = await gw.get("/files/v3/files/3", headers=AUTH)
    assert resp.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()

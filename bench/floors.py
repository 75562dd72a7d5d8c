"""The Python floors the gateway is measured against: `python -m bench.floors static PORT` (a
minimal aiohttp server answering static HubSpot-shaped JSON), `python -m bench.floors proxy
PORT UPSTREAM` (a minimal aiohttp reverse proxy: one pooled session, the body relayed whole),
and each of them after one EVALSHA of a tiny script on a Redis, through redis-py asyncio:
`static-redis PORT REDIS_URL` (the one round trip a cache hit needs) and `proxy-redis PORT
UPSTREAM REDIS_URL` (the one round trip a forwarded call's admission needs).

Each is about as little as aiohttp can do for the same request, in one process with uvloop as
the gateway has: what is left between them and the gateway is the gateway's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Callable

import redis.asyncio as aioredis
from aiohttp import ClientSession, TCPConnector, web
from aiohttp.typedefs import Handler

from bench.env import run_async

EXAM = (
    b'{"id":"1001","properties":{"capacity":"500","total_bookings":"12",'
    b'"exam_date":"2030-03-01","hs_object_id":"1001"},'
    b'"createdAt":"2025-01-17T09:00:00.000Z","updatedAt":"2025-01-17T09:00:00.000Z",'
    b'"archived":false}'
)
EMPTY_SEARCH = b'{"total":0,"results":[]}'
# What HubSpot sends with every answer, so a gateway in front records them as it would live.
RATE_HEADERS = {
    "X-HubSpot-RateLimit-Max": "190",
    "X-HubSpot-RateLimit-Remaining": "189",
    "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
}
SESSION = web.AppKey("session", ClientSession)
REDIS = web.AppKey("redis", aioredis.Redis)
# As small as a script gets while still reading a key: one GET inside Redis.
TINY_SCRIPT = "return redis.call('GET', KEYS[1])"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def static_app() -> web.Application:
    async def answer(request: web.Request) -> web.Response:
        body = EMPTY_SEARCH if request.method == "POST" else EXAM
        if request.can_read_body:
            await request.read()
        return web.Response(body=body, content_type="application/json", headers=RATE_HEADERS)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


def one_round_trip_first(app: web.Application, redis_url: str) -> web.Application:
    """`app`, each answer after one EVALSHA of a tiny script (loaded once at startup) on
    `redis_url`: the one round trip a cache hit, or a forwarded call's admission, needs."""
    sha = ""

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        nonlocal sha
        app[REDIS] = aioredis.from_url(redis_url)
        sha = await app[REDIS].script_load(TINY_SCRIPT)
        yield
        await app[REDIS].aclose()

    @web.middleware
    async def round_trip(request: web.Request, handler: Handler) -> web.StreamResponse:
        await request.app[REDIS].evalsha(sha, 1, "bench:floor")
        return await handler(request)

    app.cleanup_ctx.append(redis_ctx)
    app.middlewares.append(round_trip)
    return app


def proxy_app(upstream: str) -> web.Application:
    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        app[SESSION] = ClientSession(upstream, connector=TCPConnector(limit=0))
        yield
        await app[SESSION].close()

    async def relay(request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read() if request.can_read_body else None
        async with request.app[SESSION].request(
            request.method, request.rel_url, headers=headers, data=body
        ) as answer:
            payload = await answer.read()
            out = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(status=answer.status, body=payload, headers=out)

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", relay)
    return app


async def _serve(app: web.Application, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    try:
        await asyncio.Event().wait()  # until the bench stops the process
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floors")
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("port", type=int)
    parser.add_argument("urls", nargs="*", help="proxy: the upstream, then Redis for -redis kinds")
    ns = parser.parse_args()
    build, wanted = KINDS[ns.kind]
    if len(ns.urls) != wanted:
        sys.exit(f"{ns.kind} takes {wanted} URL(s): {KINDS_HELP}")
    run_async(_serve(build(*ns.urls), ns.port))


KINDS: dict[str, tuple[Callable[..., web.Application], int]] = {
    "static": (static_app, 0),
    "static-redis": (lambda redis: one_round_trip_first(static_app(), redis), 1),
    "proxy": (proxy_app, 1),
    "proxy-redis": (lambda up, redis: one_round_trip_first(proxy_app(up), redis), 2),
}
KINDS_HELP = "static; static-redis REDIS; proxy UPSTREAM; proxy-redis UPSTREAM REDIS"


if __name__ == "__main__":
    main()

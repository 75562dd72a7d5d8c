"""Running the gateway as a process: embedded Redis, signals, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import replace

from aiohttp import web

from proxy.app import SERVICES, create_app
from proxy.config import Settings
from proxy.http.edge import EdgeRunner
from proxy.logs import configure_logging
from proxy.store.embedded import embedded_valkey

log = logging.getLogger("proxy.server")


async def _serve_app(settings: Settings) -> int:
    app = create_app(settings)
    # handler_cancellation: a client that disconnects leaves the budget queue at once.
    runner = EdgeRunner(
        app,
        settings,
        shutdown_timeout=settings.shutdown_timeout_s,
        access_log=None,
        handler_cancellation=True,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
    await site.start()
    log.info(
        "hubspot-proxy listening on http://%s:%d",
        settings.host,
        settings.port,
        extra={"upstream": settings.upstream, "rules": settings.rules_path},
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, app[SERVICES].rules.reload)
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
    return 0


async def serve(settings: Settings) -> int:
    configure_logging(settings.log_level)
    if settings.redis_url:
        return await _serve_app(settings)
    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(embedded_valkey())
        return await _serve_app(replace(settings, redis_url=url))
    return 0

"""Running the gateway as a process: embedded Redis, signals, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import replace
from pathlib import Path

from aiohttp import web

from proxy.app import SERVICES, create_app
from proxy.config import Settings, credential_key_status
from proxy.http.edge import EdgeRunner
from proxy.logs import configure_logging
from proxy.store.embedded import default_data_dir, embedded_valkey
from proxy.store.keyfile import load_or_create_key

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
        return await _serve_app(replace(settings, data_dir=None))
    data_dir = Path(settings.data_dir) if settings.data_dir else default_data_dir()
    if not settings.credential_key:
        log.warning(credential_key_status(settings)[1])
        settings = replace(settings, credential_key=load_or_create_key(data_dir))
    async with embedded_valkey(data_dir) as url:
        return await _serve_app(replace(settings, redis_url=url, data_dir=str(data_dir)))

"""Running the gateway as a process: embedded Redis, signals, graceful shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
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

# Allocations (less deallocations) between two collections of the GC's young generation.
YOUNG_GC_THRESHOLD = 7000
# Descriptors besides client, upstream and Redis connections: logs, the rules file, Valkey's pipes.
SPARE_FILES = 64


def open_files_needed(settings: Settings) -> int:
    return (
        settings.max_connections + settings.pool_size + settings.redis_max_connections + SPARE_FILES
    )


def raised_soft_limit(needed: int, soft: int, hard: int) -> int | None:
    """The soft open-file limit to set for `needed` descriptors, or None to leave it be."""
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None
    return needed if hard == resource.RLIM_INFINITY else min(hard, needed)


def allow_open_files(settings: Settings) -> None:
    """Raise this process's soft open-file limit towards what its connection settings need.

    A soft limit of 1024 (common outside containers) would make accepts fail with EMFILE near
    1,000 clients, long before `max_connections` answers its own 503; the hard limit is the
    ceiling a process may raise itself to, and what stays short of the need is logged.
    """
    needed = open_files_needed(settings)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = raised_soft_limit(needed, soft, hard)
    if target is None:
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        log.warning(
            "open-file limit %d is below the %d the connection settings need; lower "
            "HUBSPOT_PROXY_MAX_CONNECTIONS or raise the hard limit (ulimit -Hn)",
            target,
            needed,
        )


async def _serve_app(settings: Settings) -> int:
    allow_open_files(settings)
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
    site = web.TCPSite(
        runner,
        settings.host,
        settings.port,
        reuse_address=True,
        backlog=settings.listen_backlog,
    )
    await site.start()
    # What startup made (rules, clients, modules) lives as long as the process: out of the
    # cyclic GC's sight, each collection scans only what requests make (A/B CPU per call,
    # 64 connections: cache hit -8%, pass-through -12%). Refcounting still frees it. A request
    # leaves little for the GC but churns many objects, which at Python's threshold (700) ran a
    # young collection every ~40 requests (8% of CPU); at 7000, one every ~2 s of ~5 ms, well
    # inside the limiter's guard for late sends (`plans.guarded_window_ms`: 100 ms on search's
    # second). 50,000 (tried before) paused long enough for the 3-replica test to see 429s.
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])
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

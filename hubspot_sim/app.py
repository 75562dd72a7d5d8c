"""Build the simulator's aiohttp application and run it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from . import assoc_api, batch_api, fixtures_api, introspection, objects_api
from .config import SimConfig
from .gate import HANDLER_KINDS, Handler, hubspot_gate
from .limits import KIND_ASSOC_BATCH, KIND_SEARCH
from .state import STATE, SimState

log = logging.getLogger("hubspot_sim")

_VERSION: Final = r"{version:\d{4}-\d{2}}"
# Each family has a v3/v4 path and a date-versioned one (HUBSPOT.md): both are served.
OBJECT_PREFIXES: Final = ("/crm/v3/objects", f"/crm/objects/{_VERSION}")
ASSOC_RECORD_PREFIXES: Final = ("/crm/v4/objects", f"/crm/objects/{_VERSION}")
ASSOC_BATCH_PREFIXES: Final = ("/crm/v4/associations", f"/crm/associations/{_VERSION}")
MAX_REQUEST_BYTES: Final = 64 * 1024 * 1024


def _object_routes(router: web.UrlDispatcher) -> None:
    batch = {
        "read": batch_api.batch_read,
        "create": batch_api.batch_create,
        "update": batch_api.batch_update,
        "upsert": batch_api.batch_upsert,
        "archive": batch_api.batch_archive,
    }
    for prefix in OBJECT_PREFIXES:
        base = prefix + "/{type}"
        router.add_post(base + "/search", objects_api.search_objects)
        for action, handler in batch.items():
            router.add_post(f"{base}/batch/{action}", handler)
        router.add_post(base, objects_api.create_object)
        router.add_get(base, objects_api.list_objects)
        router.add_get(base + "/{id}", objects_api.get_object)
        router.add_patch(base + "/{id}", objects_api.update_object)
        router.add_delete(base + "/{id}", objects_api.archive_object)


_ASSOC_BATCH: Final[dict[str, Handler]] = {
    "associate/default": assoc_api.batch_associate_default,
    "create": assoc_api.batch_create,
    "read": assoc_api.batch_read,
    "archive": assoc_api.batch_archive,
}


def _association_routes(router: web.UrlDispatcher) -> None:
    for prefix in ASSOC_RECORD_PREFIXES:
        base = prefix + "/{from}/{fromId}/associations"
        router.add_put(base + "/default/{to}/{toId}", assoc_api.put_default)
        router.add_put(base + "/{to}/{toId}", assoc_api.put_labeled)
        router.add_delete(base + "/{to}/{toId}", assoc_api.delete_pair)
        router.add_get(base + "/{to}", assoc_api.list_for_record)
    for prefix in ASSOC_BATCH_PREFIXES:
        for action, handler in _ASSOC_BATCH.items():
            router.add_post(f"{prefix}/{{from}}/{{to}}/batch/{action}", handler)


def _sim_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/__sim/health", _health)
    router.add_get("/__sim/stats", introspection.get_stats)
    router.add_get("/__sim/calls", introspection.get_calls)
    router.add_post("/__sim/reset", introspection.post_reset)
    router.add_post("/__sim/seed", introspection.post_seed)
    router.add_post("/__sim/spend", introspection.post_spend)
    router.add_get("/__sim/config", introspection.get_config)
    router.add_post("/__sim/config", introspection.post_config)
    router.add_get("/__sim/objects/{type}", introspection.get_objects)
    router.add_get("/__sim/associations/{from}/{fromId}/{to}", introspection.get_associations)
    router.add_route("*", "/__sim/echo", fixtures_api.echo)
    router.add_route("*", "/__sim/echo/{tail:.*}", fixtures_api.echo)
    router.add_get("/__sim/large", fixtures_api.large)
    router.add_route("*", "/__sim/slow", fixtures_api.slow)


async def _health(_: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def create_app(
    config: SimConfig | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> web.Application:
    """A fresh simulator (its own data, counters and random stream) as an aiohttp app.

    `clock` and `sleep` let tests move the simulator's time by hand instead of waiting.
    """
    app = web.Application(middlewares=[hubspot_gate], client_max_size=MAX_REQUEST_BYTES)
    app[STATE] = SimState(config or SimConfig(), clock, sleep)
    kinds: dict[Any, str] = {objects_api.search_objects: KIND_SEARCH}
    kinds.update({h: KIND_ASSOC_BATCH for h in _ASSOC_BATCH.values()})
    app[HANDLER_KINDS] = kinds
    _object_routes(app.router)
    _association_routes(app.router)
    _sim_routes(app.router)
    return app


async def serve(host: str, port: int, config: SimConfig, stop: asyncio.Event) -> None:
    """Serve until `stop` is set; logs the listening address once the socket is bound."""
    runner = web.AppRunner(create_app(config), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        log.info("hubspot-sim listening on http://%s:%d", host, bound)
        await stop.wait()
    finally:
        await runner.cleanup()


def run(host: str = "127.0.0.1", port: int = 8090, config: SimConfig | None = None) -> None:
    """Blocking entry point (CLI and `hubspot-proxy sim`); stops on SIGINT/SIGTERM."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    log.setLevel(logging.INFO)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await serve(host, port, config or SimConfig(), stop)

    asyncio.run(main())

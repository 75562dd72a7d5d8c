"""`hubspot-proxy run | sim | check`: a thin layer over the package's own entry points."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from proxy.config import SettingsError, credential_key_status, load_settings, masked


def _run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="start the gateway")
    run.add_argument("--host", help="listen address (HUBSPOT_PROXY_HOST, default 127.0.0.1)")
    run.add_argument("--port", type=int, help="listen port (HUBSPOT_PROXY_PORT, default 8080)")
    run.add_argument("--upstream", help="HubSpot base URL (HUBSPOT_PROXY_UPSTREAM)")
    run.add_argument("--rules", dest="rules_path", help="rules file (HUBSPOT_PROXY_RULES)")
    run.add_argument("--redis-url", help="Redis URL (REDIS_URL); embedded Valkey when unset")
    run.add_argument(
        "--redis-cluster",
        action="store_const",
        const=True,
        help="REDIS_URL is a node of a Redis Cluster (HUBSPOT_PROXY_REDIS_CLUSTER)",
    )
    run.add_argument(
        "--header-timeout",
        type=float,
        dest="header_timeout_s",
        help="seconds a request head may take to arrive (HUBSPOT_PROXY_HEADER_TIMEOUT_S, 10)",
    )
    run.add_argument(
        "--body-timeout",
        type=float,
        dest="body_timeout_s",
        help="seconds a request body may take to arrive (HUBSPOT_PROXY_BODY_TIMEOUT_S, 30)",
    )
    run.add_argument(
        "--max-connections",
        type=int,
        help="open client connections served at once (HUBSPOT_PROXY_MAX_CONNECTIONS, 4096)",
    )
    run.add_argument(
        "--listen-backlog",
        type=int,
        help="connections the kernel queues before they are accepted "
        "(HUBSPOT_PROXY_LISTEN_BACKLOG, 2048; capped by net.core.somaxconn)",
    )
    run.add_argument(
        "--data-dir",
        help="embedded Valkey's data and generated key (HUBSPOT_PROXY_DATA_DIR, "
        "default $XDG_STATE_HOME/hubspot-proxy or ~/.local/state/hubspot-proxy)",
    )
    run.add_argument("--print-config", action="store_true", help="print effective settings, exit")


RUN_FLAGS = (
    "host",
    "port",
    "upstream",
    "rules_path",
    "redis_url",
    "redis_cluster",
    "header_timeout_s",
    "body_timeout_s",
    "max_connections",
    "listen_backlog",
    "data_dir",
)


def build_parser() -> argparse.ArgumentParser:
    from hubspot_sim import build_arg_parser as sim_arguments

    parser = argparse.ArgumentParser(prog="hubspot-proxy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    sim = sub.add_parser("sim", help="start the HubSpot simulator", add_help=False)
    sim_arguments(sim)
    check = sub.add_parser("check", help="validate a rules file and the environment's settings")
    check.add_argument("file")
    return parser


def _command_run(ns: argparse.Namespace) -> int:
    from proxy.server import serve

    overrides = {k: getattr(ns, k) for k in RUN_FLAGS}
    settings = load_settings(overrides)
    if ns.print_config:
        print(json.dumps(masked(settings), indent=2))
        return 0
    return run_loop(serve(settings))


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """uvloop where it exists (a faster event loop for the server and the upstream client)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _command_check(ns: argparse.Namespace) -> int:
    from proxy.rules.loader import check_file

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"environment: {exc}", file=sys.stderr)
        return 2
    usable, key_status = credential_key_status(settings)
    if not settings.credential_key:
        print(f"environment: {key_status}", file=sys.stderr)
    return max(check_file(ns.file), 0 if usable else 2)


def main(argv: Sequence[str] | None = None) -> int:
    from proxy.rules.loader import RulesError, format_problems

    ns = build_parser().parse_args(argv)
    try:
        if ns.command == "run":
            return _command_run(ns)
        if ns.command == "check":
            return _command_check(ns)
        from hubspot_sim import config_from_args, run

        run(ns.host, ns.port, config_from_args(ns))
        return 0
    except SettingsError as exc:
        print(f"hubspot-proxy: {exc}", file=sys.stderr)
        return 2
    except RulesError as exc:
        print(format_problems(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

"""Command line: `python -m hubspot_sim --port 8090 --tier starter ...`; reused by the proxy CLI."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence

from .app import run
from .config import TIER_LIMITS, SimConfig


def _latency(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition(",")
    try:
        low = float(lo)
        return (low, float(hi) if hi else low)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected LO,HI in ms, got {text!r}") from exc


def build_arg_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add the simulator's options to `parser` (a fresh one when None), e.g. a subcommand's."""
    p = parser or argparse.ArgumentParser(prog="hubspot-sim", description="HubSpot API simulator")
    # A subcommand parser made with add_help=False (e.g. `hubspot-proxy sim`) still gets -h.
    with contextlib.suppress(argparse.ArgumentError):
        p.add_argument("-h", "--help", action="help", help="show this help message and exit")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090, help="0 picks a free port (see the log)")
    p.add_argument("--tier", choices=sorted(TIER_LIMITS), default="starter")
    p.add_argument("--latency-ms", type=_latency, default=(0.0, 0.0), metavar="LO,HI")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--general-limit", type=int, default=None, help="default: the tier's")
    p.add_argument("--general-window-s", type=float, default=10.0)
    p.add_argument("--search-limit", type=int, default=5)
    p.add_argument("--search-window-s", type=float, default=1.0)
    p.add_argument("--daily-limit", type=int, default=None, help="default: the tier's")
    p.add_argument("--daily-window-s", type=float, default=86_400.0)
    p.add_argument("--fault-5xx-rate", type=float, default=0.0)
    p.add_argument("--fault-timeout-rate", type=float, default=0.0)
    p.add_argument("--fault-423-rate", type=float, default=0.0)
    p.add_argument("--fault-5xx-after-rate", type=float, default=0.0, help="5xx after applying")
    p.add_argument(
        "--fault-timeout-after-rate", type=float, default=0.0, help="hang after applying"
    )
    p.add_argument("--timeout-s", type=float, default=30.0, help="sleep of a timeout fault")
    p.add_argument(
        "--omit-trace-ids",
        action="store_true",
        help="batch answers carry no objectWriteTraceId (as HubSpot's reference example)",
    )
    p.add_argument("--shuffle-batch-results", action="store_true")
    p.add_argument(
        "--reject-whole-batch",
        action="store_true",
        help="one invalid input fails the whole batch with 400 instead of a 207",
    )
    p.add_argument("--search-index-delay-s", type=float, default=0.0)
    return p


def config_from_args(ns: argparse.Namespace) -> SimConfig:
    return SimConfig(
        tier=ns.tier,
        general_limit=ns.general_limit,
        general_window_s=ns.general_window_s,
        search_limit=ns.search_limit,
        search_window_s=ns.search_window_s,
        daily_limit=ns.daily_limit,
        daily_window_s=ns.daily_window_s,
        latency_ms=ns.latency_ms,
        seed=ns.seed,
        fault_5xx_rate=ns.fault_5xx_rate,
        fault_timeout_rate=ns.fault_timeout_rate,
        fault_423_rate=ns.fault_423_rate,
        fault_5xx_after_rate=ns.fault_5xx_after_rate,
        fault_timeout_after_rate=ns.fault_timeout_after_rate,
        timeout_s=ns.timeout_s,
        echo_trace_ids=not ns.omit_trace_ids,
        shuffle_batch_results=ns.shuffle_batch_results,
        reject_whole_batch=ns.reject_whole_batch,
        search_index_delay_s=ns.search_index_delay_s,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_arg_parser()
    ns = parser.parse_args(argv)
    try:
        config = config_from_args(ns)
    except ValueError as exc:
        parser.error(str(exc))
    run(ns.host, ns.port, config)

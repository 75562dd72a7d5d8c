"""A HubSpot API simulator: CRM objects v3, associations v4 and HubSpot's exact rate limits.

No real HubSpot is reachable from the project's tests, so this is what the proxy is measured
against: limits enforced with sliding logs, HubSpot-shaped bodies and headers, injectable
latency and faults, and `/__sim/*` introspection of everything it saw.
"""

from __future__ import annotations

from .app import create_app, run, serve
from .cli import build_arg_parser, config_from_args, main
from .config import TIER_LIMITS, SimConfig
from .stats import token_hash

__all__ = [
    "TIER_LIMITS",
    "SimConfig",
    "build_arg_parser",
    "config_from_args",
    "create_app",
    "main",
    "run",
    "serve",
    "token_hash",
]

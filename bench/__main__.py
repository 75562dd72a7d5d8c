"""`python -m bench [--quick] [--scenario NAME]...` (scenarios: see bench/__init__.py)."""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import budget, overhead, peak, portals, scaleout
from bench.env import RESULTS, machine_facts, run_async

Scenario = Callable[[bool, dict[str, Any], Path], Awaitable[dict[str, Any]]]
SCENARIOS: dict[str, Scenario] = {
    "peak": peak.run,
    "overhead": overhead.run,
    "scaleout": scaleout.run,
    "budget": budget.run,
    "portals": portals.run,
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "--quick",
        action="store_true",
        help="small, time-scaled runs (under 2 minutes); results go to bench/results/quick/",
    )
    p.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="run only this scenario (repeatable); default: all",
    )
    p.add_argument("--results", type=Path, default=None, help="output directory")
    return p


async def _main(names: list[str], quick: bool, results: Path) -> int:
    facts = machine_facts()
    failed = 0
    for name in names:
        started = time.monotonic()
        print(f"[bench] scenario {name}{' (quick)' if quick else ''}", flush=True)
        try:
            await SCENARIOS[name](quick, facts, results)
        except Exception:  # report and go on: one scenario's failure must not hide the others
            failed += 1
            traceback.print_exc()
        print(f"[bench] scenario {name} took {time.monotonic() - started:.0f} s", flush=True)
    return 1 if failed else 0


def main() -> None:
    ns = _parser().parse_args()
    names = ns.scenario or list(SCENARIOS)
    results = ns.results or (RESULTS / "quick" if ns.quick else RESULTS)
    sys.exit(run_async(_main(names, ns.quick, results)))


if __name__ == "__main__":
    main()

"""Numbers to files: `bench/results/<scenario>.json` (everything) and `.md` (the table)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.env import RESULTS


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} ms" if value < 10 else f"{value:.0f} ms"


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write(
    scenario: str, data: dict[str, Any], markdown: str, results: Path = RESULTS, echo: bool = True
) -> None:
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{scenario}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (results / f"{scenario}.md").write_text(markdown.rstrip() + "\n")
    if echo:
        print(markdown.rstrip() + "\n", flush=True)


def header(title: str, facts: dict[str, Any], notes: Sequence[str]) -> str:
    machine = (
        f"{facts['date']} · commit {facts['commit']} · {facts['cpu_count']} CPU "
        f"({facts['cpu_model']}) · Python {facts['python']} · load avg at start "
        f"{', '.join(str(x) for x in facts['loadavg_at_start'])}"
    )
    out = [f"## {title}", "", machine, ""]
    out += [f"- {n}" for n in notes]
    return "\n".join(out) + ("\n" if notes else "")

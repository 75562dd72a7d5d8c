"""Rules files the scenarios run with: the portal's own, time-scaled copies, and high limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bench.env import REPO
from proxy.rules.reader import parse_duration

DEFAULT_RULES = REPO / "rules" / "default.yaml"
EXAM_TYPE = "2-50158913"
BOOKING_TYPE = "2-50158914"


def _scaled(text: str, factor: float) -> str:
    return f"{max(1, round(parse_duration(text) * factor))}ms"


def scaled_default(factor: float, directory: Path) -> Path:
    """rules/default.yaml on a faster clock: windows, waits and holds times `factor`, counts kept.

    With factor 1 the file itself is used. Cache and index TTLs are left alone (they only
    need to outlive the run).
    """
    if factor == 1:
        return DEFAULT_RULES
    doc: dict[str, Any] = yaml.safe_load(DEFAULT_RULES.read_text())
    for bucket in ("general", "search", "associations", "admissions"):
        spec = doc.get("limits", {}).get(bucket)
        if isinstance(spec, dict) and "window" in spec:
            spec["window"] = _scaled(str(spec["window"]), factor)
    for holder in [doc.get("defaults", {}), *doc.get("routes", [])]:
        if isinstance(holder, dict) and "max_wait" in holder:
            holder["max_wait"] = _scaled(str(holder["max_wait"]), factor)
        coalesce = holder.get("coalesce") if isinstance(holder, dict) else None
        if isinstance(coalesce, dict) and "max_hold" in coalesce:
            coalesce["max_hold"] = _scaled(str(coalesce["max_hold"]), factor)
    path = directory / f"default-x{factor:g}.yaml"
    header = f"# rules/default.yaml with windows and max_wait scaled by {factor:g} (bench)\n"
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False))
    return path


def high_limits(cache: bool) -> str:
    """Limits so high the budget never waits; with `cache`, an object_cache on mock exams."""
    text = (
        "version: 1\n"
        "limits:\n"
        "  safety_margin: 1.0\n"
        "  general: {limit: 100000000, window: 10s}\n"
        "  search: {limit: 100000000, window: 1s}\n"
        "  daily: {limit: 100000000000}\n"
        "defaults: {priority: interactive, max_wait: 5s}\n"
    )
    return text + (cache_rule() if cache else "")


def cache_rule() -> str:
    return (
        "rules:\n"
        "  - name: exam-cache\n"
        "    type: object_cache\n"
        f'    object_type: "{EXAM_TYPE}"\n'
        "    ttl: 1h\n"
    )


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def answering_rules() -> str:
    """High limits, and the rules that answer without HubSpot: the exam object cache with the
    exam counter overlaid on its hits (the booking flow's exam read), and the unused
    enrollment search answered by a `respond` rule (PRD 1A)."""
    return high_limits(cache=True) + (
        "  - name: exam-counter\n"
        "    type: counter\n"
        f'    object_type: "{EXAM_TYPE}"\n'
        "    property: total_bookings\n"
        "    capacity_property: capacity\n"
        f'    source: {{association: {{from_type: "{BOOKING_TYPE}", to_type: "{EXAM_TYPE}"}}}}\n'
        f'    booking_object_type: "{BOOKING_TYPE}"\n'
        "    ttl: 1d\n"
        "  - name: enrollments-unused\n"
        "    type: respond\n"
        '    match: {method: POST, path: "/crm/v3/objects/enrollments/search"}\n'
        "    status: 200\n"
        "    body: {total: 0, results: []}\n"
    )

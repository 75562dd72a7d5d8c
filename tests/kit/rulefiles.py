"""Variants of the shipped rules that tests run with."""

from __future__ import annotations

from pathlib import Path

SHIPPED = Path(__file__).resolve().parent.parent.parent / "rules" / "default.yaml"
_NOTES_RULE = '    enabled: {}\n    match: {{method: POST, path: "/crm/v3/objects/notes"}}'


def notes_written_behind(directory: Path) -> Path:
    """rules/default.yaml with the opt-in `notes-async` write-behind turned on."""
    shipped = SHIPPED.read_text()
    opted_in = shipped.replace(_NOTES_RULE.format("false"), _NOTES_RULE.format("true"))
    if opted_in == shipped:
        raise ValueError("rules/default.yaml no longer has a notes-async rule turned off")
    path = directory / "notes-written-behind.yaml"
    path.write_text(opted_in)
    return path

"""Reading a positioned YAML mapping field by field, collecting every problem (pure).

Validation never stops at the first mistake: ops fix a rules file in one pass when `check` lists
everything, each at its line. A field that is wrong reads as None and the caller carries on.
"""

from __future__ import annotations

import difflib
import re
import zoneinfo
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from proxy.rules.paths import (
    HTTP_METHODS,
    Match,
    canonical_type,
    compile_template,
    is_object_type_id,
    template_problems,
)
from proxy.rules.yamlpos import BROKEN, Problem, YList, YMap, child_path

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")  # `ms` before `m`: longest unit first
_UNIT_MS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}
_UNIT_ORDER = ("d", "h", "m", "s", "ms")
_MISSING: Any = object()
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # names become metric label values


def parse_duration(text: str) -> int:
    """`500ms`, `10s`, `3h`, `90d`, `1h30m`, `1.5s` -> milliseconds (> 0). Raises ValueError."""
    hint = "use e.g. 500ms, 10s, 3h, 90d or 1h30m"
    s = text.strip()
    if not s:
        raise ValueError(f"empty duration ({hint})")
    pos, total, last = 0, 0.0, -1
    while pos < len(s):
        part = _DURATION_PART.match(s, pos)
        if part is None:
            raise ValueError(f"invalid duration {text!r} ({hint})")
        rank = _UNIT_ORDER.index(part.group(2))
        if rank <= last:  # `10s5m` or `1h1h` is a typo more often than a meaning
            raise ValueError(f"invalid duration {text!r}: units go d, h, m, s, ms, each once")
        last = rank
        total += float(part.group(1)) * _UNIT_MS[part.group(2)]
        pos = part.end()
    ms = round(total)
    if ms <= 0:
        raise ValueError(f"duration must be greater than 0 (got {text!r})")
    return ms


def timezone_problem(name: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        close = difflib.get_close_matches(name, sorted(zoneinfo.available_timezones()), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else " (use an IANA name like 'UTC')"
        return f"unknown time zone {name!r}{hint}"
    return None


def suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (expected one of: {', '.join(choices)})"


def kind(value: Any) -> str:
    if isinstance(value, YMap):
        return "a mapping"
    if isinstance(value, YList):
        return "a list"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if value is None:
        return "nothing (null)"
    return f"{value!r}"


@dataclass
class Sink:
    file: str
    problems: list[Problem] = field(default_factory=list)

    def add(self, line: int, path: str, message: str) -> None:
        self.problems.append(Problem(self.file, line, path, message))


class Reader:
    """One mapping of the file: unknown keys are reported on construction, fields on reading."""

    def __init__(self, sink: Sink, node: YMap, path: str, known: Sequence[str]) -> None:
        self.sink, self.node, self.path = sink, node, path
        for key in node.items:
            if key not in known:
                line = node.key_lines[key]
                sink.add(line, child_path(path, key), "unknown key" + suggest(key, known))

    def field(self, key: str) -> str:
        return child_path(self.path, key)

    def line(self, key: str) -> int:
        """Where to point for a field: a scalar's value, a mapping's or list's key (the value of
        `ttl:` starts on the next line), or, when missing, the mapping that should hold it."""
        if key not in self.node.items:
            return self.node.line
        if isinstance(self.node.items[key], YMap | YList):
            return self.node.key_lines[key]
        return self.node.value_lines[key]

    def has(self, key: str) -> bool:
        return key in self.node.items and self.node.items[key] is not BROKEN

    def problem(self, key: str, message: str) -> None:
        self.sink.add(self.line(key), self.field(key), message)

    def raw(self, key: str, required: bool = False) -> Any:
        if self.node.items.get(key) is BROKEN:
            return _MISSING  # already reported by the YAML reader
        if key not in self.node.items:
            if required:
                self.problem(key, "required")
            return _MISSING
        return self.node.items[key]

    def text(self, key: str, *, required: bool = False, default: str | None = None) -> str | None:
        value = self.raw(key, required)
        if value is _MISSING:
            return default
        if not isinstance(value, str) or not value.strip():
            hint = " (quote it: YAML reads yes/no/on/off as true/false)" * isinstance(value, bool)
            self.problem(key, f"expected non-empty text, got {kind(value)}{hint}")
            return None
        return value

    def integer(self, key: str, *, default: int | None = None, minimum: int = 1) -> int | None:
        value = self.raw(key)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(key, f"expected a whole number, got {kind(value)}")
            return None
        if value < minimum:
            self.problem(key, f"must be at least {minimum} (got {value})")
            return None
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.problem(key, f"expected true or false, got {kind(value)}")
            return default
        return value

    def choice(self, key: str, choices: Sequence[str], *, default: str | None = None) -> str | None:
        value = self.text(key, required=default is None, default=default)
        if value is not None and value not in choices:
            self.problem(key, f"invalid value {value!r}" + suggest(value, choices))
            return None
        return value

    def duration(
        self, key: str, *, required: bool = False, default: int | None = None
    ) -> int | None:
        value = self.raw(key, required)
        if value is _MISSING:
            return default
        return self.duration_value(value, key)

    def duration_value(self, value: Any, key: str) -> int | None:
        if not isinstance(value, str):
            # A bare number is ambiguous (seconds? milliseconds?), so a unit is mandatory.
            self.problem(key, f"expected a duration with a unit like 10s, got {kind(value)}")
            return None
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.problem(key, str(exc))
            return None

    def timezone(self, key: str, default: str) -> str | None:
        name = self.text(key, default=default)
        if name is not None and (message := timezone_problem(name)) is not None:
            self.problem(key, message)
            return None
        return name

    def _mapping(self, key: str, required: bool) -> YMap | None:
        """The key's mapping, or None when it is absent or (a problem reported) not a mapping."""
        value = self.raw(key, required)
        if value is _MISSING:
            return None
        if not isinstance(value, YMap):
            self.problem(key, f"expected a mapping, got {kind(value)}")
            return None
        return value

    def sub(self, key: str, known: Sequence[str], *, required: bool = False) -> Reader | None:
        value = self._mapping(key, required)
        return None if value is None else Reader(self.sink, value, self.field(key), known)

    def items(self, key: str, *, required: bool = False) -> Iterator[tuple[Any, int, str]] | None:
        """(value, line, field) of each list entry, or None when the key is absent or not a list."""
        value = self.raw(key, required)
        if value is _MISSING:
            return None
        if not isinstance(value, YList):
            self.problem(key, f"expected a list, got {kind(value)}")
            return None
        path = self.field(key)
        pairs = enumerate(value.pairs())
        return ((v, ln, child_path(path, i)) for i, (v, ln) in pairs if v is not BROKEN)

    def strings(self, key: str, *, required: bool = False) -> tuple[str, ...] | None:
        entries = self.items(key, required=required)
        if entries is None:
            return None
        out: list[str] = []
        ok = True
        for value, line, path in entries:
            if not isinstance(value, str) or not value:
                self.sink.add(line, path, f"expected non-empty text, got {kind(value)}")
                ok = False
            elif value in out:
                self.sink.add(line, path, f"{value!r} is listed twice")
                ok = False
            else:
                out.append(value)
        return tuple(out) if ok else None

    def entries(
        self, key: str, *, required: bool = False
    ) -> list[tuple[str, Any, int, str]] | None:
        """(key, value, line, field) of each entry of a free-form mapping (`when`, `headers`)."""
        value = self._mapping(key, required)
        if value is None:
            return None
        path = self.field(key)
        lines, items = value.value_lines, value.items.items()
        return [(k, v, lines[k], child_path(path, k)) for k, v in items if v is not BROKEN]


def read_name(r: Reader, seen: dict[str, int]) -> str | None:
    name = r.text("name", required=True)
    if name is None:
        return None
    if not _NAME.match(name):
        r.problem("name", f"{name!r}: use letters, digits, '_', '.' and '-' (it labels metrics)")
        return None
    if name in seen:
        r.problem("name", f"duplicate name {name!r} (first at line {seen[name]})")
        return None
    seen[name] = r.line("name")
    return name


def read_match(r: Reader, aliases: Mapping[str, str], *, required: bool = True) -> Match | None:
    m = r.sub("match", ("method", "path"), required=required)
    if m is None:
        return None
    ok, methods = _methods(m)
    path = m.text("path", required=True)
    problems = template_problems(path) if path is not None else ["missing"]
    if path is not None:
        for message in problems:
            m.problem("path", message)
    if not ok or problems or path is None:
        return None
    return Match(compile_template(path, aliases), methods)


def _methods(m: Reader) -> tuple[bool, frozenset[str] | None]:
    """(valid, methods); None methods means any, spelled `*` or left out."""
    value = m.raw("method")
    if not m.has("method"):
        return True, None
    if isinstance(value, str):
        pairs = [(value, m.line("method"), m.field("method"))]
    elif isinstance(value, YList) and value.items:
        pairs = list(m.items("method") or ())
    else:
        m.problem("method", f"expected a method, a list of methods or '*', got {kind(value)}")
        return False, None
    ok, methods = True, set()
    for item, line, path in pairs:
        upper = item.upper() if isinstance(item, str) else kind(item)
        if upper == "*":
            return ok, None
        if upper not in HTTP_METHODS:
            m.sink.add(line, path, f"unknown HTTP method {upper!r}" + suggest(upper, HTTP_METHODS))
            ok = False
        methods.add(upper)
    return ok, frozenset(methods)


def read_object_type(
    r: Reader, key: str, aliases: Mapping[str, str], *, required: bool = True
) -> str | None:
    """An object type by id; names (`contacts`, or ones declared in `object_types`) become ids."""
    name = r.text(key, required=required)
    if name is None:
        return None
    type_id = canonical_type(name, aliases)
    if not is_object_type_id(type_id):
        r.problem(key, f"unknown object type {name!r}: write its id (like 2-12345) "
                  "or declare the name under object_types")  # fmt: skip
        return None
    return type_id

"""YAML with positions: every mapping key and value keeps the line it was written on (pure).

Ops edit the rules file by hand, so every problem must point at a line. PyYAML's constructed
objects forget their marks; this module composes the node graph (which has them) and turns it into
plain values wrapped in `YMap`/`YList` that remember where each entry came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {f"{_TAG}{name}" for name in ("str", "int", "float", "bool", "null", "timestamp")}


class _Broken:
    """Stands in for a node already reported as unusable, so it is not reported twice."""

    def __repr__(self) -> str:
        return "<broken>"


BROKEN: Any = _Broken()


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file, formatted as editors and CI logs link it: `file:line: ...`."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: "
        return f"{where}{self.field}: {self.message}" if self.field else where + self.message


@dataclass
class YMap:
    """A mapping with the line of its start, of each key and of each value (1-based)."""

    line: int
    items: dict[str, Any] = field(default_factory=dict)
    key_lines: dict[str, int] = field(default_factory=dict)
    value_lines: dict[str, int] = field(default_factory=dict)


@dataclass
class YList:
    line: int
    items: list[Any] = field(default_factory=list)
    item_lines: list[int] = field(default_factory=list)

    def pairs(self) -> list[tuple[Any, int]]:
        return list(zip(self.items, self.item_lines, strict=True))


def child_path(parent: str, key: str | int) -> str:
    """`rules` + 2 -> `rules[2]`; `rules[2]` + `ttl` -> `rules[2].ttl`."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def plain(value: Any) -> Any:
    """Strip positions: what `yaml.safe_load` would have returned (dates stay strings)."""
    if isinstance(value, YMap):
        return {k: plain(v) for k, v in value.items.items()}
    if isinstance(value, YList):
        return [plain(v) for v in value.items]
    return value


def load(text: str, filename: str) -> tuple[Any, list[Problem]]:
    """Parse one YAML document. Returns (tree or None, problems); never raises for bad input."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        return None, [_syntax_problem(exc, text, filename)]
    except yaml.YAMLError as exc:  # e.g. a control character the reader refuses
        return None, [Problem(filename, 1, "", f"YAML error: {exc}")]
    if root is None:
        return None, [Problem(filename, 1, "", "the file is empty")]
    builder = _Builder(filename)
    return builder.build(root, "", frozenset()), builder.problems


def _syntax_problem(exc: yaml.MarkedYAMLError, text: str, filename: str) -> Problem:
    message = exc.problem or "invalid YAML"
    mark, context = exc.problem_mark, exc.context_mark
    if context is not None and exc.context:
        message += f" ({exc.context} started at line {context.line + 1})"
    # An unclosed bracket is found at the end of the file; the line that opened it is more useful.
    if mark is None or (mark.line >= len(text.splitlines()) and context is not None):
        mark = context
    line = mark.line + 1 if mark is not None else 1
    return Problem(filename, line, "", f"YAML syntax error: {message}")


class _Builder:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.problems: list[Problem] = []
        self._constructor = SafeConstructor()

    def _problem(self, node: Node, path: str, message: str) -> None:
        self.problems.append(Problem(self.filename, node.start_mark.line + 1, path, message))

    def build(self, node: Node, path: str, active: frozenset[int]) -> Any:
        # An alias may point back at its own ancestor; following it would never end.
        if id(node) in active:
            self._problem(node, path, "recursive alias")
            return BROKEN
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if isinstance(node, SequenceNode) and node.tag == f"{_TAG}seq":
            out = YList(node.start_mark.line + 1)
            for i, item in enumerate(node.value):
                out.items.append(self.build(item, child_path(path, i), active | {id(node)}))
                out.item_lines.append(item.start_mark.line + 1)
            return out
        if isinstance(node, MappingNode) and node.tag == f"{_TAG}map":
            return self._mapping(node, path, active | {id(node)})
        self._problem(node, path, f"unsupported YAML tag {node.tag}")
        return BROKEN

    def _scalar(self, node: ScalarNode, path: str) -> Any:
        if node.tag not in _SCALAR_TAGS:
            self._problem(node, path, f"unsupported YAML tag {node.tag}")
            return BROKEN
        # Dates stay text: `exam_date: 2026-03-15` is compared with HubSpot's strings, and a
        # datetime object would not survive into a JSON body either.
        if node.tag in (f"{_TAG}str", f"{_TAG}timestamp"):
            return node.value
        try:
            return self._constructor.construct_object(node)
        except (yaml.YAMLError, ValueError) as exc:
            self._problem(node, path, f"invalid value {node.value!r}: {exc}")
            return BROKEN

    def _mapping(self, node: MappingNode, path: str, active: frozenset[int]) -> YMap:
        own = {id(key) for key, _ in node.value if key.tag != f"{_TAG}merge"}
        try:
            self._constructor.flatten_mapping(node)  # `<<: *anchor` merges, as safe_load does
        except yaml.YAMLError as exc:
            self._problem(node, path, f"bad merge key: {exc}")
        out = YMap(node.start_mark.line + 1)
        written: set[str] = set()  # keys written in this mapping (merged ones may be overridden)
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, ScalarNode) else None
            if key_node.tag != f"{_TAG}str" or not isinstance(key, str):
                shown = key if key is not None else key_node.id
                hint = " (quote it: YAML reads on/off/yes/no as true/false)"
                hint = hint if key_node.tag == f"{_TAG}bool" else ""
                self._problem(key_node, path, f"keys must be text, got {shown!r}{hint}")
                continue
            if id(key_node) in own:
                if key in written:
                    first = out.key_lines[key]
                    message = f"duplicate key (first at line {first})"
                    self._problem(key_node, child_path(path, key), message)
                    continue
                written.add(key)
            out.items[key] = self.build(value_node, child_path(path, key), active)
            out.key_lines[key] = key_node.start_mark.line + 1
            out.value_lines[key] = value_node.start_mark.line + 1
        return out

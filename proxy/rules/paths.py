"""Path templates and request paths in one canonical form, so one rule covers every spelling (pure).

HubSpot serves one endpoint under several paths, and names an object type by name or id
(`contacts` = `0-1`). Families treated as one:

    /crm/v3/objects/X/...                    = /crm/objects/2026-03/X/...
    /crm/v4/objects/X/{id}/associations/...  = /crm/objects/2026-03/X/{id}/associations/...
                                             (and /crm/associations/2026-03/X/{id}/associations/...)
    /crm/v4/associations/A/B/...             = /crm/associations/2026-03/A/B/...
    /crm/v3/properties/X (and pipelines)     = /crm/properties/2026-03/X

The v3 object-association paths (`/crm/v3/objects/X/{id}/associations/Y/{id}/{type}`) stay apart:
their dated successor is the v4 shape, with a different body. Templates and requests are both
reduced to canonical segments, so matching is a segment comparison and placeholder values come
out canonical (an `{objectType}` is always an id).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from proxy.hubspot.protocol import canonical_object_type

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

_DATE_VERSION = re.compile(r"^\d{4}-\d{2}$")
_PLACEHOLDER = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_OBJECT_TYPE_ID = re.compile(r"^\d+-\d+$")

# Family markers cannot collide with a real segment: HubSpot never puts '@' in a CRM path.
_OBJECTS = "objects@"
_OBJECT_ASSOCIATIONS = "object-associations@"
_ASSOCIATIONS = "associations@"
_TYPED_FAMILIES = ("properties", "pipelines")


def canonical_type(name: str, aliases: Mapping[str, str]) -> str:
    """An object type by id: built-in names via HubSpot's table, custom ones via `object_types`."""
    return aliases.get(name.lower()) or canonical_object_type(name)


def is_object_type_id(text: str) -> bool:
    return bool(_OBJECT_TYPE_ID.match(text))


def canonical_segments(path: str, aliases: Mapping[str, str]) -> tuple[str, ...]:
    """`/crm/objects/2026-03/contacts/5` -> ('crm', 'objects@', '0-1', '5')."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    if len(path) > 1:
        path = path.rstrip("/")
    segs = path.split("/")[1:]
    head, rest = _family(segs)
    if head is None:
        return tuple(segs)
    for i in _type_positions(head, rest):
        rest[i] = canonical_type(rest[i], aliases)
    return (*head, *rest)


def _family(segs: list[str]) -> tuple[tuple[str, ...] | None, list[str]]:
    if len(segs) < 3 or segs[0] != "crm":
        return None, segs
    first, second, rest = segs[1], segs[2], segs[3:]
    dated = bool(_DATE_VERSION.match(second))
    object_form = rest[2:3] == ["associations"]  # X/{id}/associations/...
    if (first, second) == ("v3", "objects"):
        return ("crm", _OBJECTS), rest
    if (first, second) == ("v4", "objects") or (
        first in ("objects", "associations") and dated and object_form
    ):
        return ("crm", _OBJECT_ASSOCIATIONS), rest
    if first == "objects" and dated:
        return ("crm", _OBJECTS), rest
    if (first, second) == ("v4", "associations") or (first == "associations" and dated):
        return ("crm", _ASSOCIATIONS), rest
    if first == "v3" and second in _TYPED_FAMILIES:
        return ("crm", second + "@"), rest
    if first in _TYPED_FAMILIES and dated:
        return ("crm", first + "@"), rest
    if first == "v3" and second in ("associations", "schemas"):
        return ("crm", "v3", second), rest
    return None, segs


def _type_positions(head: tuple[str, ...], rest: list[str]) -> tuple[int, ...]:
    """Which segments after the family prefix name an object type."""
    family = head[-1]
    if family == _OBJECTS:  # X/..., or v3's X/{id}/associations/Y/...
        return (0, 3) if rest[2:3] == ["associations"] and len(rest) > 3 else (0,)
    if family == _OBJECT_ASSOCIATIONS:  # X/{id}/associations/[default/]Y/{id}
        to = 4 if rest[3:4] == ["default"] else 3
        return (0, to) if len(rest) > to else (0,)
    if family in (_ASSOCIATIONS, "associations"):  # A/B/batch/..., A/B/labels
        return tuple(i for i in (0, 1) if i < len(rest))
    return (0,) if rest else ()


def primary_object_type(segs: tuple[str, ...]) -> str | None:
    """The object type a canonical CRM path is about (the `from` type of association paths)."""
    families = (
        ("crm", _OBJECTS),
        ("crm", _OBJECT_ASSOCIATIONS),
        ("crm", _ASSOCIATIONS),
        ("crm", "v3", "associations"),
    )
    for head in families:
        if segs[: len(head)] == head and len(segs) > len(head):
            return segs[len(head)]
    return None


@dataclass(frozen=True)
class PathTemplate:
    """A compiled template: canonical segments, with `None` where a placeholder captures one."""

    source: str
    segments: tuple[str, ...]
    names: tuple[str | None, ...]

    def match(self, segs: tuple[str, ...]) -> dict[str, str] | None:
        if len(segs) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for want, name, got in zip(self.segments, self.names, segs, strict=True):
            if name is not None:
                if not got:
                    return None
                params[name] = got
            elif want != got:
                return None
        return params


def template_problems(template: str) -> list[str]:
    """Why a template can never match a request the gateway forwards (empty: it is fine)."""
    if not template.startswith("/"):
        return [f"must start with '/' (got {template!r})"]
    problems: list[str] = []
    if "?" in template or "#" in template:
        problems.append("query strings and fragments are not matched: remove what follows '?'/'#'")
    if any(c.isspace() for c in template):
        problems.append("contains whitespace")
    body = template.split("?", 1)[0].split("#", 1)[0]
    body = body.rstrip("/") if len(body) > 1 else body
    seen: set[str] = set()
    for seg in body.split("/")[1:] if body != "/" else []:
        problems.extend(_segment_problems(seg, seen))
    return problems


def _segment_problems(seg: str, seen: set[str]) -> list[str]:
    if seg == "":
        return ["empty segment ('//')"]
    if seg in (".", ".."):
        return [f"'{seg}' segment: requests are normalised, so it can never match"]
    if "{" not in seg and "}" not in seg:
        return []
    found = _PLACEHOLDER.match(seg)
    if found:
        name = found.group(1)
        if name in seen:
            return [f"duplicate placeholder {{{name}}}"]
        seen.add(name)
        return []
    if not _balanced(seg):
        return [f"unbalanced braces in {seg!r}"]
    if seg == "{}":
        return ["empty placeholder '{}'"]
    if re.fullmatch(r"\{[^{}]*\}", seg):
        return [f"invalid placeholder name in {seg!r} (letters, digits and '_')"]
    return [f"a placeholder must fill a whole segment (found {seg!r})"]


def _balanced(seg: str) -> bool:
    depth = 0
    for c in seg:
        depth += 1 if c == "{" else -1 if c == "}" else 0
        if depth < 0 or depth > 1:
            return False
    return depth == 0


def compile_template(template: str, aliases: Mapping[str, str]) -> PathTemplate:
    """Compile a template that `template_problems` accepted."""
    segs = canonical_segments(template, aliases)
    names = tuple(m.group(1) if (m := _PLACEHOLDER.match(s)) else None for s in segs)
    return PathTemplate(template, segs, names)


@dataclass(frozen=True)
class Match:
    """Methods (None: any) + template; `require` pins placeholders (implicit rule endpoints)."""

    template: PathTemplate
    methods: frozenset[str] | None = None
    require: Mapping[str, str] = field(default_factory=dict)

    def params(self, method: str, segs: tuple[str, ...]) -> dict[str, str] | None:
        if self.methods is not None and method not in self.methods:
            return None
        found = self.template.match(segs)
        if found is None or any(found.get(k) != v for k, v in self.require.items()):
            return None
        return found

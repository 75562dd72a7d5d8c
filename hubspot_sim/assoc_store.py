"""Associations between records, kept in both directions like HubSpot's v4 API shows them."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Final

from proxy.hubspot.protocol import (
    DEFAULT_ASSOCIATION_TYPES,
    HUBSPOT_DEFINED,
    USER_DEFINED,
    canonical_object_type,
)

_LABELS: Final[dict[int, str]] = {1: "Primary"}


@dataclass(frozen=True)
class AssocType:
    category: str
    type_id: int
    label: str | None = None

    def spec(self) -> dict[str, object]:
        return {"associationCategory": self.category, "associationTypeId": self.type_id}

    def with_label(self) -> dict[str, object]:
        return {"category": self.category, "typeId": self.type_id, "label": self.label}


def default_type(from_type: str, to_type: str) -> AssocType:
    """The unlabeled type for a pair; custom pairs get a stable made-up USER_DEFINED id."""
    pair = (canonical_object_type(from_type), canonical_object_type(to_type))
    known = DEFAULT_ASSOCIATION_TYPES.get(pair)
    if known is not None:
        return AssocType(HUBSPOT_DEFINED, known)
    return AssocType(USER_DEFINED, 1000 + zlib.crc32(f"{pair[0]}>{pair[1]}".encode()) % 9000)


def labeled_type(category: str, type_id: int) -> AssocType:
    return AssocType(category, type_id, _LABELS.get(type_id))


def _mirror(kind: AssocType, from_type: str, to_type: str) -> AssocType:
    # Only the default type has a known inverse; labels are mirrored with their own id.
    if kind == default_type(from_type, to_type):
        return default_type(to_type, from_type)
    return kind


_Key = tuple[str, str, str]


class AssociationStore:
    def __init__(self) -> None:
        # (from_type, from_id, to_type) -> to_id -> association types
        self._edges: dict[_Key, dict[str, list[AssocType]]] = {}

    def clear(self) -> None:
        self._edges.clear()

    def _slot(self, from_type: str, from_id: str, to_type: str) -> dict[str, list[AssocType]]:
        key = (canonical_object_type(from_type), from_id, canonical_object_type(to_type))
        return self._edges.setdefault(key, {})

    def _add_one(
        self, from_type: str, from_id: str, to_type: str, to_id: str, kinds: list[AssocType]
    ) -> None:
        current = self._slot(from_type, from_id, to_type).setdefault(to_id, [])
        for kind in kinds:
            if kind not in current:  # associating twice leaves one association
                current.append(kind)

    def associate(
        self, from_type: str, from_id: str, to_type: str, to_id: str, kinds: list[AssocType]
    ) -> None:
        """Add `kinds` between two records, and their mirror images the other way."""
        self._add_one(from_type, from_id, to_type, to_id, kinds)
        mirrored = [_mirror(k, from_type, to_type) for k in kinds]
        self._add_one(to_type, to_id, from_type, from_id, mirrored)

    def set_labels(
        self, from_type: str, from_id: str, to_type: str, to_id: str, kinds: list[AssocType]
    ) -> None:
        """HubSpot's labeled PUT replaces the labels between the pair."""
        self.remove(from_type, from_id, to_type, to_id)
        self.associate(from_type, from_id, to_type, to_id, kinds)

    def remove(self, from_type: str, from_id: str, to_type: str, to_id: str) -> bool:
        forward = self._slot(from_type, from_id, to_type).pop(to_id, None)
        backward = self._slot(to_type, to_id, from_type).pop(from_id, None)
        return forward is not None or backward is not None

    def targets(
        self, from_type: str, from_id: str, to_type: str
    ) -> list[tuple[str, list[AssocType]]]:
        slot = self._slot(from_type, from_id, to_type)
        ordered = sorted(slot.items(), key=lambda kv: (len(kv[0]), kv[0]))
        return [(to_id, list(kinds)) for to_id, kinds in ordered if kinds]

    def count(self) -> int:
        """Associations counted once per direction."""
        return sum(len(slot) for slot in self._edges.values())

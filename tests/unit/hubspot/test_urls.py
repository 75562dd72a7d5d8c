"""The one quoting helper of the gateway's own upstream paths (issue 13, 8)."""

from __future__ import annotations

import pytest

from proxy.hubspot.urls import api_path, is_record_id


def test_each_value_stays_one_segment() -> None:
    path = api_path("crm", "v3", "objects", "2-1", "../../oauth/v1/x?a=1#b")
    assert path == "/crm/v3/objects/2-1/..%2F..%2Foauth%2Fv1%2Fx%3Fa%3D1%23b"
    assert path.count("/") == 5 and "?" not in path and "#" not in path


def test_query_values_are_encoded_and_lists_comma_joined() -> None:
    path = api_path("crm", "v3", "objects", "2-1", "7", query={"properties": ["a", "b&c=d"]})
    assert path == "/crm/v3/objects/2-1/7?properties=a,b%26c%3Dd"


@pytest.mark.parametrize("segment", ["", ".", ".."])
def test_dot_and_empty_segments_are_refused(segment: str) -> None:
    with pytest.raises(ValueError):
        api_path("crm", "v3", "objects", segment)


@pytest.mark.parametrize(
    ("value", "ok"),
    [("1", True), ("123456789012", True), ("0", False), ("01", False), ("-1", False),
     ("1.0", False), ("1 ", False), ("\uff11", False), ("1" * 21, False), ("", False)],
)  # fmt: skip
def test_record_ids_are_digits(value: str, ok: bool) -> None:
    assert is_record_id(value) is ok

"""The hold grows with the share of HubSpot's window already spent (pure)."""

from __future__ import annotations

import pytest

from proxy.upstream.coalesce.pacing import hold_s
from proxy.upstream.rate_headers import RateLimitSnapshot


def seen(remaining: int, maximum: int = 100) -> RateLimitSnapshot:
    return RateLimitSnapshot({"max": maximum, "remaining": remaining})


@pytest.mark.parametrize(
    ("remaining", "expected"), [(100, 0.0), (75, 0.125), (10, 0.45), (0, 0.5), (-3, 0.5)]
)
def test_the_hold_is_the_spent_share_of_max_hold(remaining: int, expected: float) -> None:
    assert hold_s(0.5, seen(remaining)) == pytest.approx(expected)


def test_before_any_answer_or_without_headers_the_whole_hold_applies() -> None:
    assert hold_s(0.5, None) == 0.5
    assert hold_s(0.5, RateLimitSnapshot({"daily": 10})) == 0.5

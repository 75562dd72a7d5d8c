"""Sliding-log limits, peak-window tracking and settings of the HubSpot simulator."""

from __future__ import annotations

import pytest

from hubspot_sim import SimConfig
from hubspot_sim.limits import KIND_ASSOC_BATCH, KIND_GENERAL, KIND_SEARCH, SlidingLog, TokenBudget
from hubspot_sim.stats import WindowMax, token_hash


def test_sliding_log_counts_only_the_half_open_window() -> None:
    log = SlidingLog()
    log.add(0.0)
    log.add(0.5, 2)
    assert log.count(0.9, 1.0) == 3
    assert log.count(1.0, 1.0) == 2  # the call at 0.0 left the window (t - W, t]
    assert log.count(1.5, 1.0) == 0


def test_general_limit_is_exact_and_rolling() -> None:
    cfg = SimConfig(general_limit=3, general_window_s=10)
    budget = TokenBudget(origin=0.0)
    assert [budget.admit(KIND_GENERAL, t, cfg) for t in (0.0, 1.0, 9.0)] == [None] * 3
    assert budget.admit(KIND_GENERAL, 9.9, cfg) == "TEN_SECONDLY_ROLLING"
    # A fixed window would reset at 10.0; the rolling one frees exactly one slot then.
    assert budget.admit(KIND_GENERAL, 10.0, cfg) is None
    assert budget.admit(KIND_GENERAL, 10.5, cfg) == "TEN_SECONDLY_ROLLING"


def test_refused_calls_are_not_recorded() -> None:
    cfg = SimConfig(general_limit=1, general_window_s=1)
    budget = TokenBudget(origin=0.0)
    assert budget.admit(KIND_GENERAL, 0.0, cfg) is None
    for t in (0.1, 0.2, 0.9):
        assert budget.admit(KIND_GENERAL, t, cfg) == "TEN_SECONDLY_ROLLING"
    assert budget.admit(KIND_GENERAL, 1.0, cfg) is None


def test_search_and_association_batches_skip_the_general_bucket() -> None:
    cfg = SimConfig(general_limit=1, search_limit=2, search_window_s=1, daily_limit=100)
    budget = TokenBudget(origin=0.0)
    assert budget.admit(KIND_GENERAL, 0.0, cfg) is None
    assert budget.admit(KIND_GENERAL, 0.1, cfg) == "TEN_SECONDLY_ROLLING"
    assert budget.admit(KIND_ASSOC_BATCH, 0.1, cfg) is None
    assert budget.admit(KIND_SEARCH, 0.1, cfg) is None
    assert budget.admit(KIND_SEARCH, 0.2, cfg) is None
    assert budget.admit(KIND_SEARCH, 0.3, cfg) == "SECONDLY"
    assert budget.usage(0.3, cfg) == {"general": 1, "search": 2, "daily": 4}


def test_daily_quota_counts_every_kind_and_resets_per_period() -> None:
    cfg = SimConfig(daily_limit=3, daily_window_s=100)
    budget = TokenBudget(origin=0.0)
    kinds = (KIND_GENERAL, KIND_SEARCH, KIND_ASSOC_BATCH)
    assert [budget.admit(k, 1.0, cfg) for k in kinds] == [None] * 3
    assert budget.admit(KIND_SEARCH, 2.0, cfg) == "DAILY"
    assert budget.admit(KIND_GENERAL, 100.0, cfg) is None


def test_spend_fills_windows_like_another_integration() -> None:
    cfg = SimConfig(general_limit=5, daily_limit=10)
    budget = TokenBudget(origin=0.0)
    budget.spend("general", 5, 0.0, cfg)
    assert budget.admit(KIND_GENERAL, 0.1, cfg) == "TEN_SECONDLY_ROLLING"
    budget.spend("daily", 5, 0.1, cfg)
    assert budget.admit(KIND_ASSOC_BATCH, 0.2, cfg) == "DAILY"
    with pytest.raises(ValueError, match="unknown bucket"):
        budget.spend("nope", 1, 0.0, cfg)


def test_rate_limit_headers_describe_the_general_policy() -> None:
    cfg = SimConfig(general_limit=20, general_window_s=2, daily_limit=1000)
    budget = TokenBudget(origin=0.0)
    budget.admit(KIND_GENERAL, 0.0, cfg)
    assert budget.headers(0.0, cfg) == {
        "X-HubSpot-RateLimit-Max": "20",
        "X-HubSpot-RateLimit-Remaining": "19",
        "X-HubSpot-RateLimit-Interval-Milliseconds": "2000",
        "X-HubSpot-RateLimit-Daily": "1000",
        "X-HubSpot-RateLimit-Daily-Remaining": "999",
    }


def test_window_max_finds_the_busiest_rolling_window() -> None:
    peak = WindowMax()
    for t in (0.0, 0.4, 0.8, 1.3, 1.35, 1.39, 2.5):
        peak.add(t, 1.0)
    assert peak.peak == 5  # (0.39, 1.39] holds 0.4, 0.8, 1.3, 1.35 and 1.39


@pytest.mark.parametrize(
    ("tier", "burst", "daily"),
    [
        ("starter", 100, 250_000),
        ("professional", 190, 625_000),
        ("enterprise", 190, 1_000_000),
        ("addon", 250, 2_000_000),
    ],
)
def test_tier_defaults(tier: str, burst: int, daily: int) -> None:
    cfg = SimConfig(tier=tier)
    assert (cfg.general_max, cfg.daily_max, cfg.general_window_s) == (burst, daily, 10.0)
    assert (cfg.search_limit, cfg.search_window_s) == (5, 1.0)


def test_overrides_and_validation() -> None:
    cfg = SimConfig(tier="enterprise", general_limit=20, general_window_s=2)
    assert cfg.general_max == 20
    assert cfg.replace({"latency_ms": [1, 2]}).latency_ms == (1.0, 2.0)
    with pytest.raises(ValueError, match="unknown config keys"):
        cfg.replace({"bogus": 1})
    with pytest.raises(ValueError, match="tier"):
        SimConfig(tier="gold")
    with pytest.raises(ValueError, match="fault rates"):
        SimConfig(fault_5xx_rate=0.7, fault_423_rate=0.7)


def test_token_hash_is_a_short_sha256() -> None:
    assert token_hash("secret") == "2bb80d537b1d"
    assert len(token_hash("x")) == 12

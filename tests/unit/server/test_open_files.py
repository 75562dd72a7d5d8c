"""The gateway raises its own open-file limit to what its connection settings need."""

from __future__ import annotations

import resource

from proxy.config import Settings
from proxy.server import SPARE_FILES, open_files_needed, raised_soft_limit

INFINITY = resource.RLIM_INFINITY


def test_the_need_counts_clients_upstream_and_redis_connections() -> None:
    settings = Settings(max_connections=4096, pool_size=100, redis_max_connections=512)
    assert open_files_needed(settings) == 4096 + 100 + 512 + SPARE_FILES


def test_a_low_soft_limit_is_raised_to_the_need() -> None:
    assert raised_soft_limit(4800, soft=1024, hard=524288) == 4800
    assert raised_soft_limit(4800, soft=1024, hard=INFINITY) == 4800


def test_the_hard_limit_is_the_ceiling() -> None:
    assert raised_soft_limit(4800, soft=1024, hard=4096) == 4096


def test_a_soft_limit_that_suffices_is_left_alone() -> None:
    assert raised_soft_limit(4800, soft=65536, hard=65536) is None
    assert raised_soft_limit(4800, soft=INFINITY, hard=INFINITY) is None

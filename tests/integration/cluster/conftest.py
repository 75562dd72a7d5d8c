"""A cluster of the test's own: the failover tests kill one of its primaries."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kit.cluster import ValkeyCluster, start_cluster


@pytest.fixture
def own_cluster() -> Iterator[ValkeyCluster]:
    cluster = start_cluster()
    yield cluster
    cluster.stop()

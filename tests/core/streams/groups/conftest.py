"""Fixtures of the consumer-group tests.

``coordinator``: a :class:`GroupCoordinator` over a fresh offset store in ``tmp_path``, on the
test's virtual ``clock`` (from ``tests/core/conftest.py``), with a 100 ms initial rebalance
delay; closed, with its snapshots written, when the test ends.
"""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.core.streams.groups.coordinator import GroupCoordinator
from wharf.core.streams.offsets import OffsetStore
from wharf.testing.clock import VirtualClock


@pytest.fixture
async def coordinator(tmp_path: Path, clock: VirtualClock) -> AsyncIterator[GroupCoordinator]:
    config = BrokerConfig(group_initial_rebalance_delay_ms=100, group_min_session_timeout_ms=100)
    store = OffsetStore.open(tmp_path, fsync=FsyncPolicy.ALWAYS)
    store.start()
    coord = GroupCoordinator(config, clock, store)
    try:
        yield coord
    finally:
        coord.close()
        await coord.wait_persisted()
        await store.close()

"""Fixtures shared by the core tests.

``clock``: the :class:`VirtualClock` the registries of a test run on.
``registry_config``: the :class:`BrokerConfig` ``open_registry`` uses when not given one; a
module overrides this fixture to change its default.
``open_registry(config=None)``: opens the test's :class:`VhostRegistry` on ``tmp_path / "q"``,
closing the one opened before (so a second call is a restart, with a fresh user store that the
saved definitions restore, as a broker's would be); the last one is closed when the test ends.
``vhost``: the default virtual host of a registry opened with the defaults.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from queue_helpers import Opener

from wharf.core.config import BrokerConfig
from wharf.core.queues.registry import VhostRegistry
from wharf.core.queues.vhost import VirtualHost
from wharf.core.users import UserStore
from wharf.testing.clock import VirtualClock


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def registry_config() -> BrokerConfig:
    return BrokerConfig()


@pytest.fixture
async def open_registry(
    tmp_path: Path, clock: VirtualClock, registry_config: BrokerConfig
) -> AsyncIterator[Opener]:
    opened: list[VhostRegistry] = []

    async def opener(
        config: BrokerConfig | None = None, users: UserStore | None = None
    ) -> VhostRegistry:
        for r in opened:
            await r.close()
        opened.clear()
        reg = await VhostRegistry.open(
            tmp_path / "q",
            config or registry_config,
            clock,
            users if users is not None else UserStore.with_defaults(),
            start_timer=False,
        )
        opened.append(reg)
        return reg

    yield opener
    for r in opened:
        await r.close()


@pytest.fixture
async def vhost(open_registry: Opener) -> VirtualHost:
    return (await open_registry())["/"]

"""The shared log conformance suite, run against the disk log and the memory log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from wharf.storage.interface import LogLike
from wharf.storage.log import Log, LogConfig
from wharf.storage.memory_log import MemoryLog
from wharf.testing.clock import VirtualClock
from wharf.testing.log_conformance import LogConformance, LogFactory


class TestDiskLog(LogConformance):
    @pytest.fixture
    def make_log(self, tmp_path: Path) -> Iterator[LogFactory]:
        opened: list[Log] = []

        def factory(config: LogConfig, clock: VirtualClock) -> LogLike:
            log = Log.open(tmp_path / f"log{len(opened)}", config, clock_ms=clock.now_ms)
            opened.append(log)
            return log

        yield factory
        for log in opened:
            log.close()


class TestMemoryLog(LogConformance):
    @pytest.fixture
    def make_log(self) -> LogFactory:
        def factory(config: LogConfig, clock: VirtualClock) -> LogLike:
            return MemoryLog(config, clock_ms=clock.now_ms)

        return factory

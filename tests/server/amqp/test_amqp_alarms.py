"""The resource alarm that blocks AMQP publishers."""

from __future__ import annotations

from pathlib import Path

from wharf.core.config import BrokerConfig
from wharf.server.amqp.alarms import ResourceAlarm, free_disk_bytes, resident_bytes


def test_alarm_raised_and_cleared_by_the_limits(tmp_path: Path) -> None:
    config = BrokerConfig(disk_free_limit_bytes=0, memory_high_watermark_bytes=None)
    alarm = ResourceAlarm(config, tmp_path)
    assert alarm.check() is False and alarm.reason is None
    config.memory_high_watermark_bytes = 1  # any running process is above one byte
    assert alarm.check() is True and alarm.reason == "low on memory"
    config.disk_free_limit_bytes = 1 << 62
    assert alarm.check() is True and alarm.reason == "low on memory and low on disk"
    assert alarm.check() is False  # unchanged
    config.memory_high_watermark_bytes = None
    config.disk_free_limit_bytes = 0
    assert alarm.check() is True and alarm.reason is None


def test_readings_are_plausible(tmp_path: Path) -> None:
    rss = resident_bytes()
    assert rss is not None and rss > 1 << 20
    free = free_disk_bytes(tmp_path)
    assert free is not None and free > 0
    assert free_disk_bytes(tmp_path / "missing") is None

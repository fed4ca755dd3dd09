"""Resource alarms for AMQP publishers: memory above its high watermark, disk below its limit.

How it works: :class:`ResourceAlarm` is polled once a second by the AMQP listener (a timer on
the broker's clock). It reads the process's resident memory (``/proc/self/statm``) and the free
space of the data directory's file system, and compares them with
``memory_high_watermark_bytes`` and ``disk_free_limit_bytes`` from the broker configuration
(read at every check, so a changed setting takes effect). The listener passes a change of state
to every connection (Connection.Blocked / Unblocked, see
:meth:`~wharf.protocol.amqp.connection.AMQPConnection.set_alarm`).
"""

from __future__ import annotations

import os
from pathlib import Path

from wharf.core.config import BrokerConfig

__all__ = ["ResourceAlarm"]

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int | None:
    """Resident set size of this process, or None where /proc is unavailable."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


def free_disk_bytes(path: Path) -> int | None:
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


class ResourceAlarm:
    """Decides whether publishers must be blocked, and why."""

    def __init__(self, config: BrokerConfig, data_dir: Path) -> None:
        self.config = config
        self.data_dir = data_dir
        self.reason: str | None = None

    def check(self) -> bool:
        """Re-evaluate; True if the alarm state changed (``reason`` holds the new state)."""
        reasons = []
        limit = self.config.memory_high_watermark_bytes
        if limit is not None:
            rss = resident_bytes()
            if rss is not None and rss > limit:
                reasons.append("low on memory")
        free = free_disk_bytes(self.data_dir)
        if free is not None and free < self.config.disk_free_limit_bytes:
            reasons.append("low on disk")
        reason = " and ".join(reasons) or None
        changed = reason != self.reason
        self.reason = reason
        return changed

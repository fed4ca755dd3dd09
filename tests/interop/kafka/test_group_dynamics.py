"""Consumer-group membership over the wire: rebalances, eviction of a dead member."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def wait_for(condition, timeout_s: float, what: str) -> float:  # noqa: ANN001
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - start


def members(admin: KafkaAdminClient, group: str) -> list:
    description = admin.describe_groups([group])[group]
    return list(description["members"]) if description["group_state"] == "Stable" else []


def test_second_member_rebalances_and_killed_member_is_evicted(
    bootstrap: str, topic_name: str, group_name: str
) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic_name, 4, 1)])
    # The member under observation polls with 1 s timeouts: with very short ones (100 ms)
    # kafka-python 3.0.12 was seen to finish a join without applying the assignment it got.
    first = KafkaConsumer(
        topic_name,
        bootstrap_servers=bootstrap,
        group_id=group_name,
        session_timeout_ms=3000,
        heartbeat_interval_ms=300,
    )
    child = None
    try:
        wait_for(
            lambda: (first.poll(timeout_ms=1000) is not None) and len(first.assignment()) == 4,
            30,
            "first member assigned",
        )

        # A second member in another process: the group rebalances to two members.
        script = textwrap.dedent(
            f"""
            from kafka import KafkaConsumer
            c = KafkaConsumer({topic_name!r}, bootstrap_servers={bootstrap!r},
                              group_id={group_name!r}, session_timeout_ms=3000,
                              heartbeat_interval_ms=300)
            while True:
                c.poll(timeout_ms=200)
            """
        )
        child = subprocess.Popen([sys.executable, "-c", script])
        started = time.monotonic()
        wait_for(
            lambda: (first.poll(timeout_ms=1000) is not None) and len(first.assignment()) == 2,
            60,
            "rebalance to two members",
        )
        print(f"rebalance to two members took {time.monotonic() - started:.2f} s")
        assert len(members(admin, group_name)) == 2

        # SIGKILL the second member: no LeaveGroup, so only its session timeout removes it.
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        killed = time.monotonic()
        wait_for(
            lambda: (first.poll(timeout_ms=1000) is not None) and len(first.assignment()) == 4,
            60,
            "eviction of the killed member",
        )
        evicted_after = time.monotonic() - killed
        print(f"killed member evicted after {evicted_after:.2f} s (session timeout 3 s)")
        assert evicted_after >= 2.0  # not before its session could have expired
        assert len(members(admin, group_name)) == 1
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        first.close()
        admin.close()

"""Consumer-group membership over the wire: rebalances, eviction of a dead member, and the
record a killed member held but never committed going to the member after it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

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


# A member with manual commits (aiokafka): each record is appended to "seen" and committed after
# it; the first "stall" record hangs it (it is killed there) and a later one writes "done".
HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.structs import OffsetAndMetadata
    bootstrap, topic, group, state = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
    async def main():
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
            auto_offset_reset="earliest", session_timeout_ms=6000, heartbeat_interval_ms=1000)
        await consumer.start()
        async for record in consumer:
            with (state / "seen").open("a") as seen:
                seen.write(record.value.decode() + "\\n")
            if record.value == b"stall" and not (state / "stalled").exists():
                (state / "stalled").write_text("")
                await asyncio.sleep(3600)
            partition = TopicPartition(record.topic, record.partition)
            await consumer.commit({partition: OffsetAndMetadata(record.offset + 1, "")})
            if record.value == b"stall":
                (state / "done").write_text("")
    asyncio.run(main())
    """
)


def test_a_killed_members_uncommitted_record_goes_to_the_next_member(
    bootstrap: str, topic_name: str, group_name: str, tmp_path: Path
) -> None:
    from kafka import KafkaProducer

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic_name, 2, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    words = ["apple", "fig", "apple", "lime", "apple", "fig", "pear"]

    def send(*values: str) -> None:
        for value in values:
            producer.send(topic_name, value.encode(), key=value.encode()).get(30)

    def seen() -> list[str]:
        path = tmp_path / "seen"
        return path.read_text().splitlines() if path.exists() else []

    argv = [sys.executable, "-c", HOLDER, bootstrap, topic_name, group_name, str(tmp_path)]
    holders: list[subprocess.Popen[bytes]] = []
    try:
        send(*words)
        holders.append(subprocess.Popen(argv, start_new_session=True))
        wait_for(lambda: len(seen()) == len(words), 60, "the first member taking every word")
        send("stall")
        wait_for(lambda: (tmp_path / "stalled").exists(), 60, "the first member taking stall")
        os.killpg(holders[0].pid, signal.SIGKILL)
        holders[0].wait()
        holders.append(subprocess.Popen(argv, start_new_session=True))
        wait_for(lambda: (tmp_path / "done").exists(), 60, "the next member taking stall")
        # every word once (each was committed), then stall twice: once per member
        assert sorted(seen()[: len(words)]) == sorted(words)
        assert seen()[len(words) :] == ["stall", "stall"]
    finally:
        producer.close()
        for holder in holders:
            if holder.poll() is None:
                os.killpg(holder.pid, signal.SIGKILL)
                holder.wait()

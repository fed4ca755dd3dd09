"""Partition assignors of real clients working through Wharf's group coordinator.

The broker never computes assignments: it elects a protocol (assignor) every member supports,
hands the leader everyone's metadata for it, and passes the leader's assignments on. These tests
check that the clients' range, roundrobin and (cooperative-)sticky assignors end up with the
distribution each promises, that every partition has exactly one owner, and that records
produced once the group is settled are each consumed exactly once across the group.

Each member of a synchronous client polls in its own thread (a member whose join is parked at
the broker must not keep another member from rejoining); aiokafka members are tasks of the test's
event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.coordinator.assignors.range import (
    RangePartitionAssignor as AioRangePartitionAssignor,
)
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as CkTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer
from kafka import TopicPartition as KpTopicPartition
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from kafka.errors import InconsistentGroupProtocolError

pytestmark = [pytest.mark.interop, pytest.mark.slow]

PARTITIONS = 6
RECORDS_PER_PARTITION = 10
ALL = frozenset(range(PARTITIONS))
DEADLINE_S = 45.0
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_MS = 250
MAX_POLL_INTERVAL_MS = 30000  # the rebalance timeout of the synchronous clients

Partitions = frozenset[int]


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def create_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(timeout=30)


def produce(bootstrap: str, topic: str) -> list[str]:
    """Write RECORDS_PER_PARTITION records to every partition; returns their values."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    failures: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    values = []
    for partition in range(PARTITIONS):
        for i in range(RECORDS_PER_PARTITION):
            value = f"{partition}-{i}"
            producer.produce(topic, value.encode(), partition=partition, on_delivery=delivered)
            values.append(value)
    assert producer.flush(30) == 0
    assert failures == []
    return values


class Member(threading.Thread):
    """One group member polling its client in a thread; records what it owns and reads."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._assignment: Partitions = frozenset()
        self._records: list[tuple[int, str]] = []
        self.events: list[tuple[str, Partitions]] = []  # ("assign" | "revoke" | "lost", ...)
        self.errors: list[str] = []
        self.failure: BaseException | None = None

    # implemented per client, all called from the member's thread
    def open(self) -> None:
        raise NotImplementedError

    def poll_once(self) -> tuple[Partitions, list[tuple[int, str]]]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        try:
            self.open()
            try:
                while not self._stop_event.is_set():
                    assignment, records = self.poll_once()
                    with self._lock:
                        self._assignment = assignment
                        self._records.extend(records)
            finally:
                self.close()
        except BaseException as exc:  # reported by stop() in the test's thread
            self.failure = exc

    def event(self, kind: str, partitions: Iterable[int]) -> None:
        with self._lock:
            self.events.append((kind, frozenset(partitions)))

    @property
    def assignment(self) -> Partitions:
        if self.failure is not None:  # end the test's waits at once
            raise AssertionError(f"{self.name} failed") from self.failure
        with self._lock:
            return self._assignment

    @property
    def records(self) -> list[tuple[int, str]]:
        with self._lock:
            return list(self._records)

    def request_stop(self) -> None:
        self._stop_event.set()

    def stop(self) -> None:
        self.request_stop()
        self.join(60)
        assert not self.is_alive(), f"{self.name} did not stop"
        if self.failure is not None:
            raise AssertionError(f"{self.name} failed") from self.failure


class ConfluentMember(Member):
    def __init__(self, name: str, bootstrap: str, topic: str, group: str, strategy: str) -> None:
        super().__init__(name)
        self._config = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": name,
            "partition.assignment.strategy": strategy,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": HEARTBEAT_MS,
            "max.poll.interval.ms": MAX_POLL_INTERVAL_MS,
        }
        self._topic = topic

    def open(self) -> None:
        self._consumer = Consumer(self._config)

        def on_assign(_c: Consumer, partitions: list[CkTopicPartition]) -> None:
            self.event("assign", (tp.partition for tp in partitions))

        def on_revoke(_c: Consumer, partitions: list[CkTopicPartition]) -> None:
            self.event("revoke", (tp.partition for tp in partitions))

        def on_lost(_c: Consumer, partitions: list[CkTopicPartition]) -> None:
            self.event("lost", (tp.partition for tp in partitions))

        self._consumer.subscribe(
            [self._topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost
        )

    def poll_once(self) -> tuple[Partitions, list[tuple[int, str]]]:
        records = []
        for msg in self._consumer.consume(num_messages=100, timeout=0.2):
            error = msg.error()
            if error is not None:
                self.errors.append(str(error))
                continue
            value = msg.value()
            assert isinstance(value, bytes)
            records.append((msg.partition(), value.decode()))
        return frozenset(tp.partition for tp in self._consumer.assignment()), records

    def close(self) -> None:
        self._consumer.close()


class _Listener(ConsumerRebalanceListener):
    def __init__(self, member: Member) -> None:
        self._member = member

    def on_partitions_revoked(self, revoked: Iterable[KpTopicPartition]) -> None:
        self._member.event("revoke", (tp.partition for tp in revoked))

    def on_partitions_assigned(self, assigned: Iterable[KpTopicPartition]) -> None:
        self._member.event("assign", (tp.partition for tp in assigned))

    def on_partitions_lost(self, lost: Iterable[KpTopicPartition]) -> None:
        self._member.event("lost", (tp.partition for tp in lost))


class KafkaPythonMember(Member):
    def __init__(
        self, name: str, bootstrap: str, topic: str, group: str, assignors: Sequence[type]
    ) -> None:
        super().__init__(name)
        self._args = (bootstrap, topic, group, tuple(assignors))

    def open(self) -> None:
        bootstrap, topic, group, assignors = self._args
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            client_id=self.name,
            partition_assignment_strategy=assignors,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_MS,
            max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
        )
        self._consumer.subscribe([topic], listener=_Listener(self))

    def poll_once(self) -> tuple[Partitions, list[tuple[int, str]]]:
        # 1 s polls: with 100 ms ones kafka-python 3.0.12 was seen to finish a join without
        # applying the assignment it got (see test_group_dynamics.py)
        batches = self._consumer.poll(timeout_ms=1000)
        records = [(r.partition, r.value.decode()) for batch in batches.values() for r in batch]
        return frozenset(tp.partition for tp in self._consumer.assignment()), records

    def close(self) -> None:
        self._consumer.close()


def settled(members: Sequence[Member], sizes: Sequence[int]) -> bool:
    """Every partition owned by exactly one member, each member owning as many as expected."""
    owned = [m.assignment for m in members]
    return sorted(len(a) for a in owned) == sorted(sizes) and frozenset().union(*owned) == ALL


def check_incremental(first: Member, second: Member) -> None:
    """The rebalance callbacks of a cooperative rebalance from ``first`` alone to both members."""
    kept, moved = first.assignment, second.assignment
    # the first member gave up only what moved, never everything it owned
    revoked = [p for kind, p in first.events if kind == "revoke" and p]
    assert revoked and all(p != ALL for p in revoked), first.events
    assert frozenset().union(*revoked) == moved
    assert not kept & moved
    assert not any(kind == "lost" for kind, _ in first.events + second.events)
    # callbacks name only the partitions added: the first member got partitions only once
    assigned_first = [p for kind, p in first.events if kind == "assign" and p]
    assert assigned_first == [ALL], first.events
    assert [kind for kind, p in second.events if p] == ["assign"], second.events
    assert frozenset().union(*(p for _, p in second.events)) == moved


def check_exactly_once(bootstrap: str, topic: str, members: Sequence[Member]) -> None:
    """Produce to the settled group; every record is read once, by the owner of its partition."""
    owners = {m.name: m.assignment for m in members}
    values = produce(bootstrap, topic)
    wait_for(
        lambda: sum(len(m.records) for m in members) >= len(values),
        "every produced record to be consumed",
    )
    counts: Counter[str] = Counter()
    for member in members:
        for partition, value in member.records:
            assert partition in owners[member.name], (member.name, partition, owners)
            assert value.startswith(f"{partition}-")
            counts[value] += 1
    assert counts == Counter(values)
    # no rebalance happened behind the test's back
    assert {m.name: m.assignment for m in members} == owners
    for member in members:
        assert member.errors == [], (member.name, member.errors)


def start(member: Member, started: list[Member]) -> Member:
    started.append(member)
    member.start()
    return member


def stop_all(members: Iterable[Member]) -> None:
    members = list(members)
    for member in members:
        member.request_stop()
    for member in members:
        member.stop()


def group_protocol(bootstrap: str, group: str) -> tuple[str, str, int]:
    """(state, protocol, member count) of the group as DescribeGroups reports it."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        description = admin.describe_groups([group])[group]
    finally:
        admin.close()
    return description["group_state"], description["protocol_data"], len(description["members"])


# ---------------------------------------------------------------------------- confluent-kafka


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("range", {frozenset({0, 1, 2}), frozenset({3, 4, 5})}),
        ("roundrobin", {frozenset({0, 2, 4}), frozenset({1, 3, 5})}),
    ],
)
def test_confluent_eager_assignors(
    bootstrap: str, topic_name: str, group_name: str, strategy: str, expected: set[Partitions]
) -> None:
    create_topic(bootstrap, topic_name)
    members: list[Member] = []
    try:
        first = start(ConfluentMember("ck-a", bootstrap, topic_name, group_name, strategy), members)
        wait_for(lambda: first.assignment == ALL, "the first member to own every partition")
        start(ConfluentMember("ck-b", bootstrap, topic_name, group_name, strategy), members)
        wait_for(lambda: settled(members, [3, 3]), "the group to settle on two members")
        assert {m.assignment for m in members} == expected
        assert group_protocol(bootstrap, group_name) == ("Stable", strategy, 2)
        check_exactly_once(bootstrap, topic_name, members)
        # eager callbacks: the first member gave up everything before the new assignment
        assert ("revoke", ALL) in members[0].events, members[0].events
    finally:
        stop_all(members)


def test_confluent_cooperative_sticky_keeps_partitions_while_rebalancing(
    bootstrap: str, topic_name: str, group_name: str
) -> None:
    create_topic(bootstrap, topic_name)
    strategy = "cooperative-sticky"
    members: list[ConfluentMember] = []
    try:
        first = ConfluentMember("ck-a", bootstrap, topic_name, group_name, strategy)
        start(first, members)
        wait_for(lambda: first.assignment == ALL, "the first member to own every partition")
        second = ConfluentMember("ck-b", bootstrap, topic_name, group_name, strategy)
        start(second, members)
        wait_for(lambda: settled(members, [3, 3]), "the group to settle on two members")
        check_incremental(first, second)
        assert group_protocol(bootstrap, group_name) == ("Stable", strategy, 2)
        check_exactly_once(bootstrap, topic_name, members)
    finally:
        stop_all(members)


# ---------------------------------------------------------------------------- kafka-python


@pytest.mark.parametrize(
    ("assignor", "expected"),
    [
        (RangePartitionAssignor, {frozenset({0, 1, 2}), frozenset({3, 4, 5})}),
        (RoundRobinPartitionAssignor, {frozenset({0, 2, 4}), frozenset({1, 3, 5})}),
    ],
    ids=["range", "roundrobin"],
)
def test_kafka_python_assignors(
    bootstrap: str, topic_name: str, group_name: str, assignor: type, expected: set[Partitions]
) -> None:
    create_topic(bootstrap, topic_name)
    members: list[Member] = []
    try:
        first = start(
            KafkaPythonMember("kp-a", bootstrap, topic_name, group_name, [assignor]), members
        )
        wait_for(lambda: first.assignment == ALL, "the first member to own every partition")
        start(KafkaPythonMember("kp-b", bootstrap, topic_name, group_name, [assignor]), members)
        wait_for(lambda: settled(members, [3, 3]), "the group to settle on two members")
        assert {m.assignment for m in members} == expected
        assert group_protocol(bootstrap, group_name) == ("Stable", assignor.name, 2)
        check_exactly_once(bootstrap, topic_name, members)
    finally:
        stop_all(members)


def test_kafka_python_sticky_assignor_keeps_owners_when_a_third_member_joins(
    bootstrap: str, topic_name: str, group_name: str
) -> None:
    create_topic(bootstrap, topic_name)
    members: list[Member] = []

    def member(name: str) -> Member:
        return start(
            KafkaPythonMember(name, bootstrap, topic_name, group_name, [StickyPartitionAssignor]),
            members,
        )

    try:
        first = member("kp-a")
        wait_for(lambda: first.assignment == ALL, "the first member to own every partition")
        member("kp-b")
        wait_for(lambda: settled(members, [3, 3]), "the group to settle on two members")
        before = {m.name: m.assignment for m in members}
        member("kp-c")
        wait_for(lambda: settled(members, [2, 2, 2]), "the group to settle on three members")
        # sticky: the two earlier members each keep two of their three partitions
        for m in members[:2]:
            assert m.assignment <= before[m.name], (m.name, m.assignment, before)
        assert group_protocol(bootstrap, group_name) == ("Stable", "sticky", 3)
        check_exactly_once(bootstrap, topic_name, members)
    finally:
        stop_all(members)


def test_kafka_python_cooperative_sticky_keeps_partitions_while_rebalancing(
    bootstrap: str, topic_name: str, group_name: str
) -> None:
    create_topic(bootstrap, topic_name)
    members: list[Member] = []

    def member(name: str) -> Member:
        return start(
            KafkaPythonMember(name, bootstrap, topic_name, group_name, [CooperativeStickyAssignor]),
            members,
        )

    try:
        first = member("kp-a")
        wait_for(lambda: first.assignment == ALL, "the first member to own every partition")
        second = member("kp-b")
        wait_for(lambda: settled(members, [3, 3]), "the group to settle on two members")
        check_incremental(first, second)
        assert group_protocol(bootstrap, group_name) == ("Stable", "cooperative-sticky", 2)
        check_exactly_once(bootstrap, topic_name, members)
    finally:
        stop_all(members)


# ---------------------------------------------------------------------------- aiokafka


@pytest.mark.parametrize(
    ("assignors", "expected"),
    [
        ((AioRangePartitionAssignor,), {frozenset({0, 1, 2}), frozenset({3, 4, 5})}),
        ((), {frozenset({0, 2, 4}), frozenset({1, 3, 5})}),  # aiokafka's default: roundrobin
    ],
    ids=["range", "default-roundrobin"],
)
async def test_aiokafka_assignors(
    bootstrap: str,
    topic_name: str,
    group_name: str,
    assignors: tuple[type, ...],
    expected: set[Partitions],
) -> None:
    await asyncio.to_thread(create_topic, bootstrap, topic_name)
    strategy = {"partition_assignment_strategy": assignors} if assignors else {}
    consumers = [
        AIOKafkaConsumer(
            topic_name,
            bootstrap_servers=bootstrap,
            group_id=group_name,
            client_id=f"aio-{n}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_MS,
            **strategy,
        )
        for n in range(2)
    ]
    read: list[list[tuple[int, str]]] = [[], []]
    stop = asyncio.Event()

    async def consume(n: int) -> None:
        consumer = consumers[n]
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            read[n].extend((r.partition, r.value.decode()) for b in batches.values() for r in b)

    def assignment(n: int) -> Partitions:
        return frozenset(tp.partition for tp in consumers[n].assignment())

    async def until(condition: Callable[[], bool], what: str) -> None:
        async with asyncio.timeout(DEADLINE_S):
            while not condition():
                await asyncio.sleep(0.05)
        assert condition(), what

    tasks: list[asyncio.Task[None]] = []
    started: list[AIOKafkaConsumer] = []
    try:
        await consumers[0].start()
        started.append(consumers[0])
        tasks.append(asyncio.create_task(consume(0)))
        await until(lambda: assignment(0) == ALL, "the first member to own every partition")
        await consumers[1].start()
        started.append(consumers[1])
        tasks.append(asyncio.create_task(consume(1)))
        await until(
            lambda: {assignment(0), assignment(1)} == expected, "the expected two-way split"
        )
        owners = [assignment(0), assignment(1)]
        state = await asyncio.to_thread(group_protocol, bootstrap, group_name)
        assert state == ("Stable", "range" if assignors else "roundrobin", 2)

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        values = []
        try:
            for partition in range(PARTITIONS):
                for i in range(RECORDS_PER_PARTITION):
                    values.append(f"{partition}-{i}")
                    await producer.send(topic_name, values[-1].encode(), partition=partition)
            await producer.flush()
        finally:
            await producer.stop()
        await until(lambda: len(read[0]) + len(read[1]) >= len(values), "every record consumed")
        for n in range(2):
            assert all(p in owners[n] for p, _ in read[n]), (n, owners, read[n])
        assert Counter(v for r in read for _, v in r) == Counter(values)
        assert [assignment(0), assignment(1)] == owners
    finally:
        stop.set()
        for task in tasks:
            await task
        for consumer in started:
            await consumer.stop()


# ---------------------------------------------------------------------------- mixed strategies


def test_members_with_different_strategy_lists_agree_on_the_common_one(
    bootstrap: str, topic_name: str, group_name: str
) -> None:
    """kafka-python prefers sticky, confluent-kafka range; roundrobin is the only common one."""
    create_topic(bootstrap, topic_name)
    members: list[Member] = []
    try:
        first = start(
            KafkaPythonMember(
                "kp-mixed",
                bootstrap,
                topic_name,
                group_name,
                [StickyPartitionAssignor, RoundRobinPartitionAssignor],
            ),
            members,
        )
        wait_for(lambda: first.assignment == ALL, "the first member to own every partition")
        start(
            ConfluentMember("ck-mixed", bootstrap, topic_name, group_name, "range,roundrobin"),
            members,
        )
        wait_for(lambda: settled(members, [3, 3]), "the group to settle on two members")
        assert {m.assignment for m in members} == {frozenset({0, 2, 4}), frozenset({1, 3, 5})}
        assert group_protocol(bootstrap, group_name) == ("Stable", "roundrobin", 2)

        admin = AdminClient({"bootstrap.servers": bootstrap})
        described = admin.describe_consumer_groups([group_name])[group_name].result(timeout=30)
        assert described.partition_assignor == "roundrobin"
        assert len(described.members) == 2
        check_exactly_once(bootstrap, topic_name, members)
    finally:
        stop_all(members)


def test_member_without_a_common_strategy_is_refused(
    bootstrap: str, topic_name: str, group_name: str
) -> None:
    """A roundrobin-only consumer cannot join a range-only group; the group carries on."""
    create_topic(bootstrap, topic_name)
    members: list[Member] = []
    stranger = KafkaConsumer(
        topic_name,
        bootstrap_servers=bootstrap,
        group_id=group_name,
        partition_assignment_strategy=(RoundRobinPartitionAssignor,),
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_MS,
    )
    try:
        first = start(
            KafkaPythonMember("kp-a", bootstrap, topic_name, group_name, [RangePartitionAssignor]),
            members,
        )
        wait_for(lambda: first.assignment == ALL, "the first member to own every partition")
        with pytest.raises(InconsistentGroupProtocolError):
            deadline = time.monotonic() + DEADLINE_S
            while time.monotonic() < deadline:
                stranger.poll(timeout_ms=1000)
        assert stranger.assignment() == set()
        assert group_protocol(bootstrap, group_name) == ("Stable", "range", 1)
        check_exactly_once(bootstrap, topic_name, members)
    finally:
        stranger.close()
        stop_all(members)

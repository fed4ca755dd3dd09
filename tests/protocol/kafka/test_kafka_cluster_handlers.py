"""The Kafka handlers over a cluster's topics: each node answers for topics and partitions the
other just made, serves what the other produced, long-polls on the other's commits, and
serves DeleteRecords, whose new log start the other node sees at once."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

from kio.schema.delete_records.v2 import request as delete_records_v2
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v12 import request as fetch_v12
from kio.schema.list_offsets.v6 import request as list_offsets_v6
from kio.schema.metadata.v12 import request as metadata_v12
from kio.schema.produce.v9 import request as produce_v9

from wharf.core.broker import Broker
from wharf.protocol.kafka.codec import KafkaRequest
from wharf.protocol.kafka.context import KafkaContext
from wharf.protocol.kafka.handlers import handle
from wharf.storage.record_batch import RecordInput, build_batch, decode_records

BOUND_S = 30.0


def context(broker: Broker) -> KafkaContext:
    return KafkaContext(broker=broker, advertised_host="127.0.0.1", advertised_port=9092)


def fetch(topic: str, partition: int, offset: int, *, max_wait_ms: int = 0) -> KafkaRequest:
    body = fetch_v12.FetchRequest(
        max_wait=datetime.timedelta(milliseconds=max_wait_ms),
        min_bytes=1,
        max_bytes=1 << 20,
        topics=(
            fetch_v12.FetchTopic(
                topic=topic,
                partitions=(
                    fetch_v12.FetchPartition(
                        partition=partition, fetch_offset=offset, partition_max_bytes=1 << 20
                    ),
                ),
            ),
        ),
        forgotten_topics_data=(),
    )
    return KafkaRequest(1, 12, 1, "test", body, 0)


def produce(topic: str, partition: int, values: list[bytes]) -> KafkaRequest:
    body = produce_v9.ProduceRequest(
        transactional_id=None,
        acks=-1,
        timeout=datetime.timedelta(seconds=10),
        topic_data=(
            produce_v9.TopicProduceData(
                name=topic,
                partition_data=(
                    produce_v9.PartitionProduceData(
                        index=partition,
                        records=build_batch([RecordInput(None, v) for v in values]),
                    ),
                ),
            ),
        ),
    )
    return KafkaRequest(0, 9, 1, "test", body, 0)


def list_offsets(topic: str, partition: int, timestamp: int) -> KafkaRequest:
    body = list_offsets_v6.ListOffsetsRequest(
        replica_id=-1,
        isolation_level=0,
        topics=(
            list_offsets_v6.ListOffsetsTopic(
                name=topic,
                partitions=(
                    list_offsets_v6.ListOffsetsPartition(
                        partition_index=partition, timestamp=timestamp
                    ),
                ),
            ),
        ),
    )
    return KafkaRequest(2, 6, 1, "test", body, 0)


def values(part: Any) -> list[bytes | None]:
    return [r.value for r in decode_records(bytes(part.records))] if part.records else []


async def test_each_node_serves_what_the_other_created_and_produced(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await one.create_topic("t", 1)
    produced = await handle(context(two), produce("t", 0, [b"a", b"b"]))
    answer = produced.responses[0].partition_responses[0]
    assert (answer.error_code, answer.base_offset) == (ErrorCode.none, 0)

    got = (await handle(context(one), fetch("t", 0, 0))).responses[0].partitions[0]
    assert got.error_code == ErrorCode.none
    assert (got.high_watermark, got.log_start_offset) == (2, 0)
    assert values(got) == [b"a", b"b"]

    await two.topics.add_partitions("t", 3)
    produced = await handle(context(one), produce("t", 2, [b"c"]))
    assert produced.responses[0].partition_responses[0].error_code == ErrorCode.none
    latest = (await handle(context(two), list_offsets("t", 2, -1))).topics[0].partitions[0]
    assert (latest.error_code, latest.offset) == (ErrorCode.none, 1)

    beyond = (await handle(context(two), fetch("t", 0, 9))).responses[0].partitions[0]
    assert beyond.error_code == ErrorCode.offset_out_of_range
    assert beyond.high_watermark == 2
    missing = (await handle(context(two), fetch("t", 7, 0))).responses[0].partitions[0]
    assert missing.error_code == ErrorCode.unknown_topic_or_partition


async def test_metadata_without_auto_creation_finds_a_topic_the_other_node_just_created(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    # two hears of catalogue changes no more (as when a notification is late): only a re-read
    # on the miss can find the topic before the next periodic refresh
    await two.topics._listener.close()
    await one.create_topic("fresh", 2)
    body = metadata_v12.MetadataRequest(
        topics=(metadata_v12.MetadataRequestTopic(topic_id=None, name="fresh"),),
        allow_auto_topic_creation=False,
        include_topic_authorized_operations=False,
    )
    answer = (await handle(context(two), KafkaRequest(3, 12, 1, "test", body, 0))).topics[0]
    assert (answer.error_code, len(answer.partitions)) == (ErrorCode.none, 2)


async def test_a_fetch_parked_on_one_node_wakes_on_the_others_produce(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await one.create_topic("tail", 1)
    parked = asyncio.create_task(handle(context(two), fetch("tail", 0, 0, max_wait_ms=60_000)))
    await asyncio.sleep(0.05)
    assert not parked.done()
    await handle(context(one), produce("tail", 0, [b"news"]))
    got = (await asyncio.wait_for(parked, BOUND_S)).responses[0].partitions[0]
    assert (got.error_code, values(got)) == (ErrorCode.none, [b"news"])


def delete_records(topic: str, partition: int, offset: int) -> KafkaRequest:
    body = delete_records_v2.DeleteRecordsRequest(
        topics=(
            delete_records_v2.DeleteRecordsTopic(
                name=topic,
                partitions=(
                    delete_records_v2.DeleteRecordsPartition(
                        partition_index=partition, offset=offset
                    ),
                ),
            ),
        ),
        timeout=datetime.timedelta(seconds=5),
    )
    return KafkaRequest(21, 2, 1, "test", body, 0)


async def test_delete_records_on_one_node_is_seen_on_the_other(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await one.create_topic("trimmed", 1)
    await handle(context(two), produce("trimmed", 0, [b"a", b"b", b"c", b"d", b"e"]))

    deleted = (await handle(context(one), delete_records("trimmed", 0, 3))).topics[0]
    assert (deleted.partitions[0].error_code, deleted.partitions[0].low_watermark) == (
        ErrorCode.none,
        3,
    )
    earliest = (await handle(context(two), list_offsets("trimmed", 0, -2))).topics[0]
    assert (earliest.partitions[0].error_code, earliest.partitions[0].offset) == (
        ErrorCode.none,
        3,
    )
    below = (await handle(context(two), fetch("trimmed", 0, 0))).responses[0].partitions[0]
    assert (below.error_code, below.log_start_offset) == (ErrorCode.offset_out_of_range, 3)
    kept = (await handle(context(two), fetch("trimmed", 0, 3))).responses[0].partitions[0]
    assert kept.error_code == ErrorCode.none
    # the log start cuts the one batch: it comes whole, and clients skip what lies below
    visible = [r.value for r in decode_records(bytes(kept.records)) if r.offset >= 3]
    assert visible == [b"d", b"e"]

    again = (await handle(context(two), delete_records("trimmed", 0, 1))).topics[0]
    assert (again.partitions[0].error_code, again.partitions[0].low_watermark) == (
        ErrorCode.none,
        3,
    )
    past = (await handle(context(two), delete_records("trimmed", 0, 6))).topics[0]
    assert past.partitions[0].error_code == ErrorCode.offset_out_of_range
    everything = (await handle(context(one), delete_records("trimmed", 0, -1))).topics[0]
    assert everything.partitions[0].low_watermark == 5

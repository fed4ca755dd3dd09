"""ServerCodec and encode_response against bytes written by kafka-python's own encoders."""

from __future__ import annotations

import struct

import pytest
from kafka.protocol.consumer import FetchRequest
from kafka.protocol.metadata import ApiVersionsRequest, MetadataRequest
from kafka.protocol.metadata import ApiVersionsResponse as KpApiVersionsResponse
from kafka.protocol.metadata import MetadataResponse as KpMetadataResponse
from kafka.protocol.producer import ProduceRequest
from kafka.record.memory_records import MemoryRecordsBuilder
from kio.schema.errors import ErrorCode

from wharf.protocol.kafka.codec import (
    ApiVersionsFallback,
    KafkaRequest,
    ServerCodec,
    encode_response,
)
from wharf.protocol.kafka.errors import (
    TruncatedRequestError,
    UnknownApiKeyError,
    UnsupportedVersionError,
)
from wharf.protocol.kafka.framing import NEED_DATA, frame
from wharf.protocol.kafka.handlers.api_versions import api_versions_response
from wharf.protocol.kafka.responses import NO_THROTTLE, builder


def encoded(request: object, correlation_id: int = 7) -> bytes:
    request.with_header(correlation_id=correlation_id, client_id="test-client")  # type: ignore[attr-defined]
    return bytes(request.encode(header=True, framed=True))  # type: ignore[attr-defined]


def record_batch() -> bytes:
    builder_ = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20)
    builder_.append(timestamp=1_700_000_000_000, key=b"k", value=b"v", headers=[("h", b"1")])
    builder_.close()
    return bytes(builder_.buffer())


def metadata_v9() -> bytes:
    return encoded(
        MetadataRequest(
            topics=[MetadataRequest.MetadataRequestTopic(name="events")],
            allow_auto_topic_creation=True,
            version=9,
        )
    )


def produce_v7(records: bytes) -> bytes:
    topic = ProduceRequest.TopicProduceData(
        name="events",
        partition_data=[
            ProduceRequest.TopicProduceData.PartitionProduceData(index=0, records=records)
        ],
    )
    return encoded(
        ProduceRequest(
            transactional_id=None, acks=-1, timeout_ms=1000, topic_data=[topic], version=7
        ),
        correlation_id=42,
    )


def events(codec: ServerCodec) -> list[KafkaRequest | ApiVersionsFallback]:
    out = []
    while (event := codec.next_event()) is not NEED_DATA:
        assert not isinstance(event, type(NEED_DATA))
        out.append(event)
    return out


def test_flexible_metadata_request_whole() -> None:
    codec = ServerCodec()
    codec.receive_data(metadata_v9())
    [request] = events(codec)
    assert isinstance(request, KafkaRequest)
    assert (request.api_key, request.api_version, request.correlation_id) == (3, 9, 7)
    assert request.client_id == "test-client"
    assert [t.name for t in request.body.topics] == ["events"]
    assert request.body.allow_auto_topic_creation is True


def test_produce_records_stay_raw_bytes_byte_by_byte() -> None:
    batch = record_batch()
    data = produce_v7(batch) + metadata_v9()
    codec = ServerCodec()
    got = []
    for i in range(len(data)):
        codec.receive_data(data[i : i + 1])
        got.extend(events(codec))
    assert [r.api_key for r in got if isinstance(r, KafkaRequest)] == [0, 3]
    produce = got[0]
    assert isinstance(produce, KafkaRequest)
    records = produce.body.topic_data[0].partition_data[0].records
    assert bytes(records) == batch
    assert produce.correlation_id == 42


def test_trailing_bytes_wait_for_the_next_frame() -> None:
    data = metadata_v9()
    codec = ServerCodec()
    codec.receive_data(data + data[:6])
    assert len(events(codec)) == 1
    codec.receive_data(data[6:])
    assert len(events(codec)) == 1


def test_truncated_body_inside_a_whole_frame() -> None:
    payload = metadata_v9()[4:]
    codec = ServerCodec()
    codec.receive_data(frame(payload[:-3]))
    with pytest.raises(TruncatedRequestError) as info:
        codec.next_event()
    assert info.value.code == ErrorCode.corrupt_message


def test_header_shorter_than_its_fixed_part() -> None:
    codec = ServerCodec()
    codec.receive_data(frame(b"\x00\x03\x00"))
    with pytest.raises(TruncatedRequestError):
        codec.next_event()


def test_unknown_api_key() -> None:
    codec = ServerCodec()
    codec.receive_data(frame(struct.pack(">hhi", 9999, 0, 1) + b"\xff\xff"))
    with pytest.raises(UnknownApiKeyError) as info:
        codec.next_event()
    assert info.value.code == ErrorCode.invalid_request


def test_unsupported_version_of_a_known_api() -> None:
    codec = ServerCodec()
    codec.receive_data(frame(struct.pack(">hhi", 1, 99, 1) + b"\xff\xff"))
    with pytest.raises(UnsupportedVersionError) as info:
        codec.next_event()
    assert info.value.code == ErrorCode.unsupported_version


def test_newer_api_versions_request_becomes_a_fallback_answered_with_v0() -> None:
    codec = ServerCodec()
    codec.receive_data(frame(struct.pack(">hhih", 18, 77, 5, 2) + b"me" + b"\x00junk"))
    [event] = events(codec)
    assert event == ApiVersionsFallback(api_version=77, correlation_id=5, client_id="me")
    response = api_versions_response(0, ErrorCode.unsupported_version)
    data = encode_response(5, response)
    decoded = KpApiVersionsResponse.decode(data, version=77 % 5, header=True, framed=True)
    assert decoded.error_code == ErrorCode.unsupported_version
    keys = {k.api_key: (k.min_version, k.max_version) for k in decoded.api_keys}
    assert keys[18] == (0, 4)


def test_api_versions_v3_round_trip_through_kafka_python() -> None:
    codec = ServerCodec()
    codec.receive_data(
        encoded(
            ApiVersionsRequest(
                client_software_name="kafka-python", client_software_version="3", version=3
            ),
            correlation_id=3,
        )
    )
    [request] = events(codec)
    assert isinstance(request, KafkaRequest)
    assert request.body.client_software_name == "kafka-python"
    data = encode_response(3, api_versions_response(3, ErrorCode.none))
    # ApiVersions responses use header v0 even for flexible versions: no tagged-field byte.
    assert data[4:8] == struct.pack(">i", 3)
    decoded = KpApiVersionsResponse.decode(data, version=3, header=True, framed=True)
    assert decoded.error_code == 0
    assert {k.api_key for k in decoded.api_keys} >= {0, 1, 3, 18}


def test_flexible_response_has_header_v1_and_no_default_tagged_fields() -> None:
    build = builder(3, 12)
    response = build(
        "MetadataResponse",
        throttle_time=NO_THROTTLE,
        brokers=(
            build("MetadataResponseBroker", node_id=0, host="127.0.0.1", port=9092, rack=None),
        ),
        cluster_id="wharf",
        controller_id=0,
        topics=(),
    )
    data = encode_response(11, response)
    assert data[4:9] == struct.pack(">ib", 11, 0)  # correlation id, empty header tags
    assert data.endswith(b"\x01\x00")  # empty topics array (compact length 0 + 1), no tags
    decoded = KpMetadataResponse.decode(data, version=12, header=True, framed=True)
    assert decoded.brokers[0].port == 9092
    assert decoded.cluster_id == "wharf"


def test_fetch_request_v11_from_kafka_python() -> None:
    request = FetchRequest(
        replica_id=-1,
        max_wait_ms=500,
        min_bytes=1,
        max_bytes=1 << 20,
        isolation_level=0,
        session_id=0,
        session_epoch=-1,
        topics=[
            FetchRequest.FetchTopic(
                topic="events",
                partitions=[
                    FetchRequest.FetchTopic.FetchPartition(
                        partition=0,
                        current_leader_epoch=-1,
                        fetch_offset=12,
                        log_start_offset=-1,
                        partition_max_bytes=65536,
                    )
                ],
            )
        ],
        forgotten_topics_data=[],
        rack_id="",
        version=11,
    )
    codec = ServerCodec()
    codec.receive_data(encoded(request))
    [decoded] = events(codec)
    assert isinstance(decoded, KafkaRequest)
    assert decoded.body.max_wait.total_seconds() == 0.5
    assert decoded.body.topics[0].partitions[0].fetch_offset == 12


@pytest.mark.parametrize(
    "payload",
    [
        # Metadata v1: topics array announcing 2**31-1 entries, none present
        struct.pack(">hhihb", 3, 1, 1, 1, ord("c")) + struct.pack(">i", 0x7FFFFFFF),
        # Metadata v9 (flexible): compact array length as a 5-byte varint
        struct.pack(">hhihb", 3, 9, 1, 1, ord("c")) + b"\x00" + b"\xff\xff\xff\xff\x07",
        # Produce v7: records field announcing 2 GiB
        struct.pack(">hhihb", 0, 7, 1, 1, ord("c"))
        + struct.pack(">hhi", -1, -1, 1000)
        + struct.pack(">ih", 1, 1)
        + b"t"
        + struct.pack(">iii", 1, 0, 0x7FFFFFFF),
    ],
    ids=["legacy-array", "compact-array", "records"],
)
def test_announced_lengths_beyond_the_frame_are_refused(payload: bytes) -> None:
    codec = ServerCodec()
    codec.receive_data(frame(payload))
    with pytest.raises(TruncatedRequestError):
        codec.next_event()

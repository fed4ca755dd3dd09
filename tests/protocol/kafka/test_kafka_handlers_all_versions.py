"""Every handler at every advertised version, against a real embedded broker.

For each API key and version a request is built with one element in every array and a value
in every field (names "x", numbers 0, empty bytes), so that every nested response entry is
built. The handler must answer with that version's response type (or nothing, for
acks=0 Produce), and the answer must survive encoding and decoding with kio.
"""

from __future__ import annotations

import dataclasses
import datetime
import types
import typing
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kio.index import load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader

from wharf.core.broker import Broker
from wharf.core.config import BrokerConfig
from wharf.protocol.kafka.codec import KafkaRequest, encode_response
from wharf.protocol.kafka.context import KafkaContext
from wharf.protocol.kafka.handlers import handle
from wharf.protocol.kafka.versions import SUPPORTED_VERSIONS
from wharf.storage.record_batch import RecordInput, build_batch

CASES = [
    (key, version)
    for key, (low, high) in sorted(SUPPORTED_VERSIONS.items())
    for version in range(low, high + 1)
]


# Produce carries one real batch; every other bytes field gets the same bytes.
RECORDS = build_batch([RecordInput(b"k", b"v", (("h", b"1"),), 1_700_000_000_000)])


def sample(hint: Any) -> Any:  # noqa: C901 - one branch per kind of field
    """A value of type ``hint`` with every optional part present."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        [inner] = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return sample(inner)
    if origin is tuple:
        return (sample(typing.get_args(hint)[0]),)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return build(hint)
    if isinstance(hint, type):
        if issubclass(hint, ErrorCode):
            return ErrorCode.none
        if issubclass(hint, bool):
            return False
        if issubclass(hint, int):
            return 0
        if issubclass(hint, float):
            return 0.0
        if issubclass(hint, str):
            return "x"
        if issubclass(hint, bytes):
            return RECORDS
        if issubclass(hint, datetime.timedelta):
            return datetime.timedelta(0)
        if issubclass(hint, datetime.datetime):
            return datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
        if issubclass(hint, uuid.UUID):
            return uuid.UUID(int=0)
    raise TypeError(f"no sample for {hint!r}")


def build(cls: type[Any]) -> Any:
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: sample(hints[f.name]) for f in dataclasses.fields(cls)})


@pytest.fixture
async def context(tmp_path: Path) -> AsyncIterator[KafkaContext]:
    async with Broker.open(tmp_path / "data", BrokerConfig()) as broker:
        await broker.topics.create("x", 1)
        yield KafkaContext(broker=broker, advertised_host="127.0.0.1", advertised_port=9092)


@pytest.mark.parametrize(("api_key", "version"), CASES)
async def test_handler_answers_in_the_request_version(
    context: KafkaContext, api_key: int, version: int
) -> None:
    body = build(load_request_schema(api_key, version))
    if api_key == 0:
        body = dataclasses.replace(body, acks=-1)  # acks=0 gets no response at all
    request = KafkaRequest(api_key, version, 7, "test", body, 0)
    response = await handle(context, request)
    expected = load_response_schema(api_key, version)
    assert type(response) is expected
    frame = encode_response(7, response)
    header_size = 4 + 4 + (1 if expected.__header_schema__.__flexible__ else 0)
    decoded, size = entity_reader(expected)(frame, header_size)
    assert decoded == response
    assert header_size + size == len(frame)
    if api_key == 0:  # the sample batch is valid: it must be stored
        [part] = response.responses[0].partition_responses
        assert part.error_code == ErrorCode.none
        assert part.base_offset >= 0


async def test_produce_with_acks_zero_sends_no_response(context: KafkaContext) -> None:
    body = dataclasses.replace(build(load_request_schema(0, 9)), acks=0)
    assert await handle(context, KafkaRequest(0, 9, 1, "test", body, 0)) is None
    assert context.broker.topics.partition("x", 0).log_end_offset == 1


async def test_produce_with_invalid_acks_stores_nothing(context: KafkaContext) -> None:
    body = dataclasses.replace(build(load_request_schema(0, 9)), acks=2)
    response = await handle(context, KafkaRequest(0, 9, 1, "test", body, 0))
    [part] = response.responses[0].partition_responses
    assert part.error_code == ErrorCode.invalid_required_acks
    assert context.broker.topics.partition("x", 0).log_end_offset == 0

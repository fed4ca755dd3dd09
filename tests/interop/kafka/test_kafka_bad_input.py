"""Malformed input closes only the offending connection; other clients carry on."""

from __future__ import annotations

import socket
import struct

import pytest
from kafka import KafkaProducer

from helpers.broker_process import WharfProcess

pytestmark = pytest.mark.interop

TLS_CLIENT_HELLO = bytes.fromhex(
    "16030100c4010000c00303" + "ab" * 32 + "00" + "0002c02f" + "0100" + "0095" + "00" * 0x95
)


def closed_after(port: int, data: bytes) -> bool:
    """Send ``data`` and report whether the server closed the connection without answering."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(data)
        try:
            reply = sock.recv(1024)
        except ConnectionResetError:
            return True
        return reply == b""


@pytest.mark.parametrize(
    ("case", "data", "reason"),
    [
        ("garbage", struct.pack(">i", 12) + b"\xde\xad\xbe\xef" * 3, "UnknownApiKeyError"),
        ("oversized", struct.pack(">i", 0x7FFFFFF0), "FrameTooLargeError"),
        ("negative", struct.pack(">i", -5) + b"xxxx", "InvalidFrameLengthError"),
        ("truncated", struct.pack(">ihhih", 12, 3, 9, 1, 2) + b"id", "TruncatedRequestError"),
        ("tls", TLS_CLIENT_HELLO, "TlsOnPlainPortError"),
    ],
)
def test_bad_input_closes_only_that_connection(
    kafka_server: WharfProcess, topic_name: str, case: str, data: bytes, reason: str
) -> None:
    port = kafka_server.kafka_port
    assert port is not None
    healthy = KafkaProducer(bootstrap_servers=kafka_server.kafka_bootstrap)
    try:
        healthy.send(topic_name, b"before").get(timeout=30)
        assert closed_after(port, data), case
        assert healthy.send(topic_name, b"after").get(timeout=30).offset == 1
    finally:
        healthy.close()
    kafka_server.wait_for_log(reason)
    assert kafka_server.running

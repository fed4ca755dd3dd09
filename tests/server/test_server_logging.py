"""Log formats and the per-connection log lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from wharf.server.logging_setup import ConnectionLog, configure_logging, log_fields
from wharf.server.settings import LogFormat, LogLevel


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    root = logging.getLogger()
    before = (list(root.handlers), root.level, logging.getLogger("wharf").level)
    yield buffer
    for handler in [h for h in root.handlers if h not in before[0]]:
        root.removeHandler(handler)
    root.setLevel(before[1])
    logging.getLogger("wharf").setLevel(before[2])
    logging.captureWarnings(False)


def test_text_format_puts_fields_after_the_message(stream: io.StringIO) -> None:
    configure_logging(LogFormat.TEXT, LogLevel.INFO, stream)
    logging.getLogger("wharf.test").info(
        "hello %s", "there", extra=log_fields(peer="127.0.0.1:1", note="two words", empty="")
    )
    logging.getLogger("wharf.test").debug("not at info level")
    (line,) = stream.getvalue().splitlines()
    assert line.endswith(' INFO wharf.test: hello there peer=127.0.0.1:1 note="two words" empty=""')


def test_json_format_is_one_object_per_line(stream: io.StringIO) -> None:
    configure_logging(LogFormat.JSON, LogLevel.DEBUG, stream)
    log = logging.getLogger("wharf.test")
    log.debug("first", extra=log_fields(port=9092))
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("second")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "first" and first["level"] == "debug" and first["port"] == 9092
    assert first["logger"] == "wharf.test" and first["time"].endswith("Z")
    assert second["level"] == "error" and "ValueError: boom" in second["exception"]


def test_configuring_twice_keeps_one_handler(stream: io.StringIO) -> None:
    configure_logging(LogFormat.TEXT, LogLevel.INFO, stream)
    configure_logging(LogFormat.JSON, LogLevel.INFO, stream)
    logging.getLogger("wharf.test").info("once")
    assert len(stream.getvalue().splitlines()) == 1


async def test_connection_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wharf.connections")
    logs: list[ConnectionLog] = []

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            logs.append(ConnectionLog("test", transport))

    server = await asyncio.get_running_loop().create_server(Protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for count in (1, 2):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            async with asyncio.timeout(30):
                while len(logs) < count:
                    await asyncio.sleep(0.01)
            local_port = writer.get_extra_info("sockname")[1]
            assert logs[-1].peer == f"127.0.0.1:{local_port}"
            writer.close()
            await writer.wait_closed()
    finally:
        server.close()
    normal, abnormal = logs
    normal.closed()
    abnormal.closed("frame too large", ValueError("4294967295 bytes"))
    abnormal.closed("logged once only")
    records = [r for r in caplog.records if r.name == "wharf.connections"]
    assert [r.levelno for r in records] == [
        logging.INFO,
        logging.INFO,
        logging.INFO,
        logging.WARNING,
    ]
    opened = records[0].getMessage()
    assert opened == f"test connection {normal.id} opened from {normal.peer}"
    assert normal.local == f"127.0.0.1:{port}"
    assert records[2].getMessage() == f"test connection {normal.id} closed"
    assert records[3].getMessage() == (
        f"test connection {abnormal.id} closed abnormally: "
        "frame too large: ValueError: 4294967295 bytes"
    )
    assert records[3].wharf_fields["reason"].startswith("frame too large")


async def test_a_peer_resetting_its_connection_is_an_ordinary_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression: a client that drops its connection (a reset, as when its process exits in
    the middle of a group join) was logged as a warning with the exception spelled out."""
    caplog.set_level(logging.INFO, logger="wharf.connections")
    logs: list[ConnectionLog] = []

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            logs.append(ConnectionLog("test", transport))

    server = await asyncio.get_running_loop().create_server(Protocol, "127.0.0.1", 0)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        async with asyncio.timeout(30):
            while not logs:
                await asyncio.sleep(0.01)
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
    (log,) = logs
    log.closed("connection lost", ConnectionResetError(104, "Connection reset by peer"))
    closing = [r for r in caplog.records if r.name == "wharf.connections"][-1]
    assert closing.levelno == logging.INFO
    assert closing.getMessage() == (
        f"test connection {log.id} closed by the peer: Connection reset by peer"
    )
    assert closing.wharf_fields["reason"] == "closed by the peer: Connection reset by peer"

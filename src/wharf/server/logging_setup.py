"""Structured logging for the server process, and the per-connection log lines.

Every line carries a time, a level, the logger name, a message and optional fields. With
``--log-format text`` (the default) fields follow the message as ``key=value``; with ``json``
each line is one JSON object (``time``, ``level``, ``logger``, ``message``, then the fields).
Attach fields with ``logger.info("...", extra=log_fields(peer="127.0.0.1:5000"))``.

Listeners log connections through :class:`ConnectionLog`: one line when a connection opens and
one when it closes, at warning level with the reason when the close was abnormal (a protocol
error, an internal error, an operator's or the server's shutdown closing it, a reset); the close
line may carry the connection's figures (client id, requests, bytes in and out).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TextIO

from wharf.server.settings import LogFormat, LogLevel

__all__ = [
    "ConnectionLog",
    "JsonFormatter",
    "TextFormatter",
    "configure_logging",
    "format_address",
    "log_fields",
]

_FIELDS_ATTR = "wharf_fields"
_HANDLER_NAME = "wharf-server"


def log_fields(**fields: object) -> dict[str, object]:
    """The ``extra=`` argument that attaches ``fields`` to one log record."""
    return {_FIELDS_ATTR: fields}


def _record_fields(record: logging.LogRecord) -> Mapping[str, object]:
    fields = getattr(record, _FIELDS_ATTR, None)
    return fields if isinstance(fields, Mapping) else {}


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: <message> key=value ...``, one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, f"{record.name}:", record.getMessage()]
        for key, value in _record_fields(record).items():
            text = str(value)
            if not text or any(c.isspace() or c in '"=' for c in text):
                text = json.dumps(text)
            parts.append(f"{key}={text}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, object] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _record_fields(record).items():
            obj.setdefault(key, value)
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)
        return json.dumps(obj, default=str)


def configure_logging(log_format: LogFormat, level: LogLevel, stream: TextIO | None = None) -> None:
    """Send every ``wharf`` (and asyncio) log record to ``stream`` (stderr) in ``log_format``."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if log_format is LogFormat.JSON else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("wharf").setLevel(level.upper())
    logging.captureWarnings(True)


def format_address(address: object) -> str:
    """``host:port`` for an IPv4 socket address, ``[host]:port`` for IPv6, ``str()`` otherwise."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        if ":" in str(host):
            return f"[{host}]:{port}"
        return f"{host}:{port}"
    return str(address)


_connection_ids = itertools.count(1)
_connection_logger = logging.getLogger("wharf.connections")
_PEER_GONE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class ConnectionLog:
    """Logs one line when a connection opens and one when it closes.

    Create it in ``connection_made``; call :meth:`closed` once the connection is gone, with a
    ``reason`` (and the exception, if any) when the close was not a normal client disconnect or
    an orderly protocol close. Later calls to :meth:`closed` are ignored. ``id`` (unique in the
    process) and ``opened_at_ms`` (wall clock) also serve the HTTP API's connection list.
    """

    def __init__(self, protocol: str, transport: asyncio.BaseTransport) -> None:
        self.id = next(_connection_ids)
        self.protocol = protocol
        self.peer = format_address(transport.get_extra_info("peername"))
        self.local = format_address(transport.get_extra_info("sockname"))
        self.opened_at_ms = time.time_ns() // 1_000_000
        self._opened = time.monotonic()
        self._closed = False
        _connection_logger.info(
            "%s connection %d opened from %s",
            protocol,
            self.id,
            self.peer,
            extra=log_fields(conn=self.id, protocol=protocol, peer=self.peer, local=self.local),
        )

    def closed(
        self,
        reason: str | None = None,
        exc: BaseException | None = None,
        *,
        details: Mapping[str, object] | None = None,
    ) -> None:
        """Log the close; ``reason`` set means abnormal (logged as a warning), except a
        connection the peer reset or broke, which is how clients often leave (info).
        ``details`` are extra fields for the line (client id, byte counts)."""
        if self._closed:
            return
        self._closed = True
        fields: dict[str, object] = {
            "conn": self.id,
            "protocol": self.protocol,
            "peer": self.peer,
            "duration_ms": round((time.monotonic() - self._opened) * 1000),
        }
        fields.update(details or {})
        if reason is None and exc is None:
            _connection_logger.info(
                "%s connection %d closed", self.protocol, self.id, extra=log_fields(**fields)
            )
            return
        if isinstance(exc, _PEER_GONE) and reason in (None, "connection lost"):
            # the client went away (its process ended, it reset the connection): ordinary
            fields["reason"] = text = f"closed by the peer: {exc.strerror or exc}"
            _connection_logger.info(
                "%s connection %d %s", self.protocol, self.id, text, extra=log_fields(**fields)
            )
            return
        text = reason or "connection lost"
        if exc is not None:
            text = f"{text}: {type(exc).__name__}: {exc}" if str(exc) else f"{text}: {exc!r}"
        fields["reason"] = text
        _connection_logger.warning(
            "%s connection %d closed abnormally: %s",
            self.protocol,
            self.id,
            text,
            extra=log_fields(**fields),
        )

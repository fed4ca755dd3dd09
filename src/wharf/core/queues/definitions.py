"""Durable definitions (virtual hosts, users, permissions, durable exchanges, queues and their
bindings) in one JSON file, in the spirit of RabbitMQ's definitions export.

The file is rewritten whole after every change: written to a temporary file, fsynced, renamed
over the old one, and the directory fsynced, so a crash leaves either the old or the new
version. Argument tables are stored as base64 AMQP field tables so every value type survives
exactly.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from wharf.core.queues import properties as props
from wharf.errors import StorageError

__all__ = ["decode_arguments", "encode_arguments", "load_definitions", "save_definitions"]

FILE_NAME = "definitions.json"


def _encodable(value: Any) -> Any:
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, dict):
        return {k: _encodable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encodable(v) for v in value]
    return value


def encode_arguments(arguments: dict[str, Any]) -> str:
    return base64.b64encode(props.encode_table(_encodable(arguments))).decode("ascii")


def decode_arguments(text: str) -> dict[str, Any]:
    table = props.decode_table(base64.b64decode(text))
    return {k: bytes(v) if isinstance(v, bytearray) else v for k, v in table.items()}


def save_definitions(directory: Path, data: dict[str, Any]) -> None:
    """Atomically replace ``<directory>/definitions.json``."""
    target = directory / FILE_NAME
    temp = directory / (FILE_NAME + ".tmp")
    payload = json.dumps(data, indent=1, sort_keys=True).encode("utf-8")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise StorageError(f"cannot save definitions: {exc}", errno=exc.errno) from exc


def load_definitions(directory: Path) -> dict[str, Any] | None:
    """The saved definitions, or None for a fresh data directory."""
    try:
        raw = (directory / FILE_NAME).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read definitions: {exc}", errno=exc.errno) from exc
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise StorageError(f"definitions file {directory / FILE_NAME} is damaged: {exc}") from exc
    if not isinstance(data, dict):
        raise StorageError(f"definitions file {directory / FILE_NAME} is damaged")
    return data

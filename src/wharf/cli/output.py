"""Printing command results: rich tables for people, JSON for scripts.

A table column is ``(heading, cell)`` where ``cell`` is the row's field name or a function of
the row.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from wharf.cli.client import WharfClient, reporting_errors

Column = tuple[str, str | Callable[[Any], object]]


def counted(count: int, noun: str) -> str:
    """``1 message``, ``3 messages``: a count with its noun in the right number."""
    return f"{count} {noun if count == 1 else noun + 's'}"


def console() -> Console:
    # Piped output is not cut to 80 columns: names stay whole for grep and friends.
    width = None if sys.stdout.isatty() else 200
    return Console(highlight=False, soft_wrap=True, width=width)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")


def print_table(title: str | None, columns: Sequence[Column], rows: Sequence[Any]) -> None:
    table = Table(title=title, title_justify="left")
    for name, _ in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(_field(row, get)) for _, get in columns))
    console().print(table)


def print_fields(title: str | None, fields: Sequence[tuple[str, object]]) -> None:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in fields:
        table.add_row(name, _cell(value))
    console().print(table)


def show_list(url: str, as_json: bool, path: str, columns: Sequence[Column], **params: Any) -> None:
    """GET the list at ``path`` from the broker and print it: a table, or JSON when asked for."""
    with reporting_errors(), WharfClient(url) as client:
        rows: list[dict[str, Any]] = client.get(path, **params)
    emit(as_json, rows, lambda: print_table(None, columns, rows))


def emit(as_json: bool, value: Any, human: Callable[[], None]) -> None:
    """JSON when asked for, the human rendering otherwise."""
    if as_json:
        print_json(value)
    else:
        human()


def _field(row: Any, get: str | Callable[[Any], object]) -> object:
    return row[get] if isinstance(get, str) else get(row)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)

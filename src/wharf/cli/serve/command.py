"""``wharf serve``: run the broker in the foreground until SIGTERM or SIGINT.

This module is the composition root: it turns flags, ``WHARF_*`` variables and the TOML file
into :class:`~wharf.server.settings.ServerSettings` and hands the server the list of listener
factories (:func:`listener_factories`) — the one place that may import every front end. The
server and the front ends are imported only when the server really starts, so that every other
``wharf`` command (and ``--print-config``) starts in a fraction of the time.

The command line is read by :func:`parse_args` from the table :data:`OPTIONS`, not by typer as
the other commands are: typer converts parameters through pydantic, and the two cost about 50 ms
of the broker's start-up (docs/performance.md, "Start-up and idle memory"). It follows the
conventions of the rest of the CLI (click's): ``--flag VALUE`` or ``--flag=VALUE``, the last
occurrence wins, ``--help`` prints the help and exits, and a usage error prints ``Usage:``, a
hint and one ``Error:`` line and exits with code 2. Its own errors (a bad setting, wherever it
came from) are one ``wharf: error:`` line, also code 2.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import NoReturn

from wharf.core.config import FsyncPolicy
from wharf.errors import WharfError
from wharf.server.listener import ListenerFactory
from wharf.server.logging_setup import configure_logging
from wharf.server.settings import (
    LogFormat,
    LogLevel,
    ServerSettings,
    SettingsError,
    dump_toml,
    load_settings,
)

__all__ = ["OPTIONS", "SUMMARY", "CommandLine", "UsageError", "help_text", "listener_factories",
           "main", "parse_args"]  # fmt: skip

logger = logging.getLogger("wharf.server")

SUMMARY = "Run the broker in the foreground until SIGTERM or SIGINT."
USAGE = "Usage: wharf serve [OPTIONS]"


def listener_factories() -> list[ListenerFactory]:
    """Front ends started by ``wharf serve``, in order (the ready line lists them in this order)."""
    from wharf.cli.serve.http_listener import with_http
    from wharf.server.amqp.listener import create_amqp_listener
    from wharf.server.kafka.listener import KafkaListener

    return with_http([KafkaListener.from_settings, create_amqp_listener])


_DEFAULTS = ServerSettings()
_EXIT_CONFIG = 2  # bad flags, environment or TOML (the same code click uses for bad flags)
_EXIT_RUNTIME = 1  # could not start, or failed while running


class UsageError(Exception):
    """A command line that ``wharf serve`` does not take (the message of its ``Error:`` line)."""


def _integer(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a valid integer.") from None


class _Choice:
    """Converts a word to the member of ``kind`` it names."""

    def __init__(self, kind: type[StrEnum], *, case_sensitive: bool = True) -> None:
        self.kind = kind
        self.case_sensitive = case_sensitive

    @property
    def metavar(self) -> str:
        return f"<{'|'.join(member.value for member in self.kind)}>"

    def __call__(self, raw: str) -> StrEnum:
        word = raw if self.case_sensitive else raw.lower()
        for member in self.kind:
            if word == member.value:
                return member
        names = ", ".join(repr(member.value) for member in self.kind)
        raise ValueError(f"{raw!r} is not one of {names}.")


@dataclass(frozen=True)
class Option:
    """One ``--flag VALUE`` of ``wharf serve``: the setting it overrides (``None``: it is no
    setting), its help line and how its value is converted (a bad value is a usage error)."""

    flag: str
    key: str | None
    help: str
    metavar: str
    convert: Callable[[str], object] = str


def _choice_option(
    flag: str, key: str, help: str, kind: type[StrEnum], *, case_sensitive: bool = True
) -> Option:
    choice = _Choice(kind, case_sensitive=case_sensitive)
    return Option(flag, key, help, choice.metavar, choice)


OPTIONS: tuple[Option, ...] = (
    Option(
        "--data-dir",
        "server.data_dir",
        f"Directory holding the broker's logs and metadata [{_DEFAULTS.data_dir}].",
        "DIR",
        Path,
    ),
    Option("--host", "server.host", f"Address every listener binds [{_DEFAULTS.host}].", "ADDRESS"),
    Option(
        "--advertised-host",
        "server.advertised_host",
        "Host named to Kafka clients and, in a cluster, to the other nodes [--host].",
        "HOST",
    ),
    Option(
        "--kafka-port",
        "server.kafka_port",
        "Kafka protocol port [9092]; 0 picks a free port.",
        "PORT",
        _integer,
    ),
    Option(
        "--amqp-port",
        "server.amqp_port",
        "AMQP 0-9-1 port [5672]; 0 picks a free port.",
        "PORT",
        _integer,
    ),
    Option(
        "--http-port",
        "server.http_port",
        "HTTP API and dashboard port [8080]; 0 picks a free port.",
        "PORT",
        _integer,
    ),
    _choice_option(
        "--fsync",
        "broker.fsync",
        "When appends reach the disk: always (before acknowledging), interval, never "
        f"[{_DEFAULTS.broker.fsync}].",
        FsyncPolicy,
        case_sensitive=False,
    ),
    Option(
        "--cluster",
        "cluster.database",
        "Run as a cluster node on this PostgreSQL: postgresql://USER:PASS@HOST:PORT/DB "
        "[none: a single node].",
        "URL",
    ),
    Option(
        "--object-store",
        "cluster.object_store",
        "The cluster's object store, s3://BUCKET/PREFIX (keys from AWS_* variables).",
        "URL",
    ),
    Option(
        "--object-store-endpoint",
        "cluster.object_store_endpoint",
        "URL of an S3-compatible server [$AWS_ENDPOINT_URL, else AWS].",
        "URL",
    ),
    Option(
        "--config",
        None,
        "TOML settings file (flags and WHARF_* variables override it) [$WHARF_CONFIG].",
        "FILE",
        Path,
    ),
    _choice_option(
        "--log-format",
        "server.log_format",
        "Log lines as plain text or JSON [text].",
        LogFormat,
    ),
    _choice_option(
        "--log-level", "server.log_level", "Least severe level logged [info].", LogLevel
    ),
)
"""The options taking a value, in the order ``--help`` lists them."""

_SWITCHES = {
    "--print-config": "Print the effective settings as TOML and exit.",
    "--help": "Show this message and exit.",
}


@dataclass(frozen=True)
class CommandLine:
    """What a ``wharf serve`` command line asks for."""

    values: dict[str, object]  # the converted value of each option given, by flag
    print_config: bool = False
    help: bool = False


def parse_args(argv: Sequence[str]) -> CommandLine:
    """Read the words after ``wharf serve``, in click's order: every word first (an unknown
    option, or one without its value, is an error at once), then ``--help``, then the values
    in the order of :data:`OPTIONS`, then leftover arguments; raises :class:`UsageError`."""
    by_flag = {option.flag: option for option in OPTIONS}
    raw: dict[str, str] = {}
    switches: set[str] = set()
    extra: list[str] = []
    words = iter(argv)
    for word in words:
        if word == "--":
            extra.extend(words)
            break
        if not word.startswith("-") or word == "-":
            extra.append(word)
            continue
        flag, has_value, value = word.partition("=")
        if flag in _SWITCHES:
            if has_value:
                raise UsageError(f"Option '{flag}' does not take a value.")
            switches.add(flag)
        elif flag in by_flag:
            if not has_value:
                following = next(words, None)
                if following is None:
                    raise UsageError(f"Option '{flag}' requires an argument.")
                value = following
            raw[flag] = value
        else:
            raise UsageError(_no_such_option(flag, [*by_flag, *_SWITCHES]))
    if "--help" in switches:
        return CommandLine({}, help=True)
    values: dict[str, object] = {}
    for option in OPTIONS:
        if option.flag in raw:
            try:
                values[option.flag] = option.convert(raw[option.flag])
            except ValueError as exc:
                raise UsageError(f"Invalid value for '{option.flag}': {exc}") from None
    if extra:
        raise UsageError(f"Got unexpected extra argument(s) ({' '.join(extra)})")
    return CommandLine(values, print_config="--print-config" in switches)


def _no_such_option(flag: str, known: list[str]) -> str:
    from difflib import get_close_matches

    close = get_close_matches(flag, known)
    hint = f" (Possible options: {', '.join(sorted(close))})" if close else ""
    return f"No such option: {flag}{hint}"


def help_text(width: int | None = None) -> str:
    """``wharf serve --help``, laid out as click lays out the other commands' help: wrapped to
    the terminal, at most 78 columns."""
    import shutil
    import textwrap

    if width is None:
        width = max(min(shutil.get_terminal_size().columns, 80) - 2, 50)
    rows = [(f"{option.flag} {option.metavar}", option.help) for option in OPTIONS]
    rows += list(_SWITCHES.items())
    first = min(max(len(term) for term, _ in rows), 30) + 2
    indent = " " * (first + 2)
    lines = [USAGE, "", *textwrap.wrap(SUMMARY, width, initial_indent="  ",
                                       subsequent_indent="  "), "", "Options:"]  # fmt: skip
    for term, text in rows:
        wrapped = textwrap.wrap(text, max(width - first - 2, 10))
        if len(term) <= first - 2:
            lines.append(f"  {term.ljust(first)}{wrapped[0]}")
            wrapped = wrapped[1:]
        else:
            lines.append(f"  {term}")
        lines.extend(indent + line for line in wrapped)
    return "\n".join(lines) + "\n"


def _fail(message: str, code: int) -> NoReturn:
    print(f"wharf: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: Sequence[str]) -> None:
    """Run ``wharf serve`` with the words after ``serve``; returns when the broker stopped,
    raises :class:`SystemExit` with the exit code when it could not run."""
    try:
        command_line = parse_args(argv)
    except UsageError as exc:
        sys.stderr.write(f"{USAGE}\nTry 'wharf serve --help' for help.\n\nError: {exc}\n")
        raise SystemExit(_EXIT_CONFIG) from None
    if command_line.help:
        sys.stdout.write(help_text())
        return
    serve(command_line)


def serve(command_line: CommandLine) -> None:
    """Run the broker as ``command_line`` says, or print its settings."""
    flag_names = {option.key: option.flag for option in OPTIONS if option.key is not None}
    overrides = {
        option.key: command_line.values[option.flag]
        for option in OPTIONS
        if option.key is not None and option.flag in command_line.values
    }
    config = command_line.values.get("--config")
    assert config is None or isinstance(config, Path)
    try:
        settings = load_settings(
            config_file=config, env=os.environ, overrides=overrides, flag_names=flag_names
        )
    except SettingsError as exc:
        _fail(str(exc), _EXIT_CONFIG)
    if command_line.print_config:
        sys.stdout.write(dump_toml(settings))
        return
    configure_logging(settings.log_format, settings.log_level)
    _raise_open_file_limit()
    from wharf.server.app import run

    try:
        run(settings, listener_factories())
    except WharfError as exc:
        logger.error("%s", exc)
        raise SystemExit(_EXIT_RUNTIME) from None
    except Exception:
        logger.exception("wharf stopped on an unexpected error")
        raise SystemExit(_EXIT_RUNTIME) from None


def _raise_open_file_limit() -> None:
    """Lift the soft limit on open files to the hard one, as servers do: connections and
    partition logs each hold one (the default share of it for partition logs is a quarter)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            logger.warning("open-file limit stays at %d: %s", soft, exc)

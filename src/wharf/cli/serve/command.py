"""``wharf serve``: run the broker in the foreground until SIGTERM or SIGINT.

This module is the composition root: it turns flags, ``WHARF_*`` variables and the TOML file
into :class:`~wharf.server.settings.ServerSettings` and hands the server the list of listener
factories (:func:`listener_factories`) — the one place that may import every front end. The
server and the front ends are imported only when the server really starts, so that every other
``wharf`` command (and ``--print-config``) starts in a fraction of the time.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

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

__all__ = ["listener_factories", "serve", "serve_app"]

logger = logging.getLogger("wharf.server")


def listener_factories() -> list[ListenerFactory]:
    """Front ends started by ``wharf serve``, in order (the ready line lists them in this order)."""
    from wharf.cli.serve.http_listener import with_http
    from wharf.server.amqp.listener import create_amqp_listener
    from wharf.server.kafka.listener import KafkaListener

    return with_http([KafkaListener.from_settings, create_amqp_listener])


_DEFAULTS = ServerSettings()
_EXIT_CONFIG = 2  # bad flags, environment or TOML (the same code click uses for bad flags)
_EXIT_RUNTIME = 1  # could not start, or failed while running


def _fail(message: str, code: int) -> NoReturn:
    print(f"wharf: error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def serve(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help=f"Directory holding the broker's logs and metadata [{_DEFAULTS.data_dir}].",
            show_default=False,
            metavar="DIR",
        ),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(
            help=f"Address every listener binds [{_DEFAULTS.host}].",
            show_default=False,
            metavar="ADDRESS",
        ),
    ] = None,
    advertised_host: Annotated[
        str | None,
        typer.Option(
            help="Host named to Kafka clients and, in a cluster, to the other nodes [--host].",
            show_default=False,
            metavar="HOST",
        ),
    ] = None,
    kafka_port: Annotated[
        int | None,
        typer.Option(
            help="Kafka protocol port [9092]; 0 picks a free port.",
            show_default=False,
            metavar="PORT",
        ),
    ] = None,
    amqp_port: Annotated[
        int | None,
        typer.Option(
            help="AMQP 0-9-1 port [5672]; 0 picks a free port.", show_default=False, metavar="PORT"
        ),
    ] = None,
    http_port: Annotated[
        int | None,
        typer.Option(
            help="HTTP API and dashboard port [8080]; 0 picks a free port.",
            show_default=False,
            metavar="PORT",
        ),
    ] = None,
    fsync: Annotated[
        FsyncPolicy | None,
        typer.Option(
            help="When appends reach the disk: always (before acknowledging), interval, never "
            f"[{_DEFAULTS.broker.fsync}].",
            show_default=False,
            case_sensitive=False,
        ),
    ] = None,
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster",
            help="Run as a cluster node on this PostgreSQL: postgresql://USER:PASS@HOST:PORT/DB "
            "[none: a single node].",
            show_default=False,
            metavar="URL",
        ),
    ] = None,
    object_store: Annotated[
        str | None,
        typer.Option(
            "--object-store",
            help="The cluster's object store, s3://BUCKET/PREFIX (keys from AWS_* variables).",
            show_default=False,
            metavar="URL",
        ),
    ] = None,
    object_store_endpoint: Annotated[
        str | None,
        typer.Option(
            "--object-store-endpoint",
            help="URL of an S3-compatible server [$AWS_ENDPOINT_URL, else AWS].",
            show_default=False,
            metavar="URL",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="TOML settings file (flags and WHARF_* variables override it) [$WHARF_CONFIG].",
            show_default=False,
            metavar="FILE",
        ),
    ] = None,
    log_format: Annotated[
        LogFormat | None,
        typer.Option(help="Log lines as plain text or JSON [text].", show_default=False),
    ] = None,
    log_level: Annotated[
        LogLevel | None,
        typer.Option(help="Least severe level logged [info].", show_default=False),
    ] = None,
    print_config: Annotated[
        bool,
        typer.Option("--print-config", help="Print the effective settings as TOML and exit."),
    ] = False,
) -> None:
    """Run the broker in the foreground until SIGTERM or SIGINT."""
    flags: dict[str, tuple[str, object | None]] = {
        "server.data_dir": ("--data-dir", data_dir),
        "server.host": ("--host", host),
        "server.advertised_host": ("--advertised-host", advertised_host),
        "server.kafka_port": ("--kafka-port", kafka_port),
        "server.amqp_port": ("--amqp-port", amqp_port),
        "server.http_port": ("--http-port", http_port),
        "server.log_format": ("--log-format", log_format),
        "server.log_level": ("--log-level", log_level),
        "broker.fsync": ("--fsync", fsync),
        "cluster.database": ("--cluster", cluster),
        "cluster.object_store": ("--object-store", object_store),
        "cluster.object_store_endpoint": ("--object-store-endpoint", object_store_endpoint),
    }
    overrides = {key: value for key, (_, value) in flags.items() if value is not None}
    try:
        settings = load_settings(
            config_file=config,
            env=os.environ,
            overrides=overrides,
            flag_names={key: flag for key, (flag, _) in flags.items()},
        )
    except SettingsError as exc:
        _fail(str(exc), _EXIT_CONFIG)
    if print_config:
        sys.stdout.write(dump_toml(settings))
        return
    configure_logging(settings.log_format, settings.log_level)
    from wharf.server.app import run

    try:
        run(settings, listener_factories())
    except WharfError as exc:
        logger.error("%s", exc)
        raise typer.Exit(_EXIT_RUNTIME) from None
    except Exception:
        logger.exception("wharf stopped on an unexpected error")
        raise typer.Exit(_EXIT_RUNTIME) from None


def serve_app() -> typer.Typer:
    """An app of ``serve`` alone, named ``wharf`` as the whole CLI is, so that ``wharf serve
    --help`` reads the same either way (:mod:`wharf.cli.main` runs it for ``wharf serve``)."""
    app = typer.Typer(
        name="wharf",
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )

    @app.callback()
    def _root() -> None:
        """Wharf: one broker for queues (AMQP 0-9-1) and streams (Kafka protocol)."""

    app.command("serve")(serve)
    return app

"""The ``wharf`` command, every subcommand of it (:mod:`wharf.cli.main` is its entry point).

Each subcommand lives in its own module: ``serve`` in :mod:`wharf.cli.serve.command`; command groups
(``wharf topics ...``) are ``typer.Typer`` apps in ``wharf/cli/<group>.py`` added below with
``app.add_typer(<group>.app, name="<group>")``. ``serve`` reads its command line with a parser of
its own (without typer, for a faster start; :mod:`wharf.cli.main` calls it directly): the app
lists it and hands it every word after ``serve``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from wharf.cli import (
    bench,
    binding,
    cluster,
    consume,
    exchange,
    group,
    produce,
    queue,
    status,
    topic,
    user,
)
from wharf.cli.serve import command as serve

__all__ = ["app"]

app = typer.Typer(
    name="wharf",
    help="Wharf: one broker for queues (AMQP 0-9-1) and streams (Kafka protocol).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain one-line errors ("Error: Invalid value for ...")
)


def _print_version(wanted: bool) -> None:
    if wanted:
        from importlib.metadata import version

        print(f"wharf {version('wharf')}")
        raise typer.Exit(0)


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Wharf: one broker for queues (AMQP 0-9-1) and streams (Kafka protocol)."""


@app.command(
    "serve",
    help=serve.SUMMARY,
    add_help_option=False,  # its --help is its own
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def _serve(ctx: typer.Context) -> None:
    serve.main(ctx.args)


app.command("status")(status.status)
app.add_typer(topic.app, name="topic")
app.add_typer(group.app, name="group")
app.add_typer(queue.app, name="queue")
app.add_typer(exchange.app, name="exchange")
app.add_typer(binding.app, name="binding")
app.add_typer(user.app, name="user")
app.add_typer(cluster.app, name="cluster")
app.command("produce")(produce.produce)
app.command("consume")(consume.consume)
app.command("bench")(bench.bench)

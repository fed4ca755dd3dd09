"""`wharf user ...`: the users AMQP clients and Kafka SASL PLAIN clients log in as."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from wharf.cli.client import (
    DEFAULT_URL,
    JsonOption,
    UrlOption,
    VhostOption,
    WharfClient,
    reporting_errors,
    segment,
)
from wharf.cli.output import emit, show_list

app = typer.Typer(help="Manage users and their permissions.", no_args_is_help=True)


@app.command("list")
def list_users(url: UrlOption = DEFAULT_URL, as_json: JsonOption = False) -> None:
    """List users and the virtual hosts they may use."""
    show_list(
        url,
        as_json,
        "/api/users",
        [
            ("user", "name"),
            ("tags", lambda u: ",".join(u["tags"])),
            ("localhost only", "loopback_only"),
            ("vhosts", lambda u: " ".join(sorted(u["permissions"]))),
        ],
    )


@app.command("add")
def add(
    name: str,
    password: Annotated[
        str | None,
        typer.Option(help="The password; asked for (twice, hidden) when not given on a terminal"),
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="e.g. administrator")] = None,
    loopback_only: Annotated[
        bool, typer.Option("--localhost-only", help="Only logins from this machine")
    ] = False,
    vhost: Annotated[str, typer.Option(help="The virtual host --grant gives access to")] = "/",
    grant: Annotated[
        bool, typer.Option("--grant/--no-grant", help="Give full access to --vhost")
    ] = True,
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Create a user, or replace its password and tags (its permissions stay)."""
    if password is None:
        if not sys.stdin.isatty():
            raise typer.BadParameter(
                "give --password when stdin is not a terminal", param_hint="'--password'"
            )
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    with reporting_errors(), WharfClient(url) as client:
        body = {"password": password, "tags": tag or [], "loopback_only": loopback_only}
        user = client.put(f"/api/users/{segment(name)}", body)
        if grant:
            user = client.put(f"/api/users/{segment(name)}/permissions", {}, vhost=vhost)
    granted = f" with full access to vhost {vhost}" if grant else ""
    emit(as_json, user, lambda: print(f"user {name} saved{granted}"))


@app.command("delete")
def delete(name: str, url: UrlOption = DEFAULT_URL) -> None:
    """Delete a user."""
    with reporting_errors(), WharfClient(url) as client:
        client.delete(f"/api/users/{segment(name)}")
    print(f"deleted user {name}")


@app.command("permit")
def permit(
    name: str,
    configure: Annotated[str, typer.Option(help="Regex of resources it may declare/delete")] = ".*",
    write: Annotated[str, typer.Option(help="Regex of exchanges/queues it may publish to")] = ".*",
    read: Annotated[str, typer.Option(help="Regex of queues it may consume from")] = ".*",
    vhost: VhostOption = "/",
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Grant a user access to a virtual host (replaces what it had there)."""
    with reporting_errors(), WharfClient(url) as client:
        body = {"configure": configure, "write": write, "read": read}
        user = client.put(f"/api/users/{segment(name)}/permissions", body, vhost=vhost)
    emit(as_json, user, lambda: print(f"user {name} may use vhost {vhost}"))


@app.command("revoke")
def revoke(name: str, vhost: VhostOption = "/", url: UrlOption = DEFAULT_URL) -> None:
    """Take away a user's access to a virtual host."""
    with reporting_errors(), WharfClient(url) as client:
        client.delete(f"/api/users/{segment(name)}/permissions", vhost=vhost)
    print(f"user {name} may no longer use vhost {vhost}")

"""``wharf cluster status``: the cluster's nodes, read from its database directly (no node need
be running to answer), with their Kafka broker ids, listeners and leases."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from typing import Annotated, Any

import typer

from wharf.cli.client import JsonOption
from wharf.cli.output import emit, print_table

__all__ = ["app"]

app = typer.Typer(help="Inspect a Wharf cluster.", no_args_is_help=True)

DatabaseOption = Annotated[
    str,
    typer.Option(
        "--cluster",
        envvar="WHARF_CLUSTER_DATABASE",
        help="The cluster's PostgreSQL: postgresql://USER:PASS@HOST:PORT/DB.",
        show_default=False,
    ),
]

_CLUSTER_SCHEMA = 3  # the migration that made the tables read here


class _NoCluster(Exception):
    """The database holds no cluster this command can read."""


def _time(moment: datetime) -> str:
    return moment.astimezone().isoformat(timespec="seconds")


async def _read(url: str) -> dict[str, Any]:
    from wharf.cluster.database import Database, DatabaseSettings
    from wharf.cluster.migrations import schema_version
    from wharf.cluster.nodes import cluster_id, registered_nodes

    settings = DatabaseSettings(min_connections=1, max_connections=1)
    async with await Database.connect(url, settings=settings) as db:
        async with db.transaction("cluster.status") as tx:
            version = await schema_version(tx)
        if version < _CLUSTER_SCHEMA:
            raise _NoCluster(
                f"database {db.name} holds no Wharf cluster yet (schema version {version}); "
                "a node creates it when it starts with --cluster"
            )
        rows = await registered_nodes(db)
        return {
            "database": db.name,
            "cluster_id": await cluster_id(db),
            "nodes": [
                {
                    "node_id": row.info.id,
                    "broker_id": row.broker_id,
                    "epoch": row.info.epoch,
                    "host": row.info.host,
                    "listeners": row.info.listeners,
                    "live": row.live,
                    "started_at": _time(row.info.started_at),
                    "last_heartbeat": _time(row.info.last_heartbeat),
                    "lease_expires_at": _time(row.info.lease_expires_at),
                }
                for row in rows
            ],
        }


@app.command("status")
def status(cluster: DatabaseOption, as_json: JsonOption = False) -> None:
    """List the cluster's nodes: live ones, and dead ones whose rows remain."""
    from wharf.errors import StorageError

    try:
        view = asyncio.run(_read(cluster))
    except (StorageError, _NoCluster) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None

    def human() -> None:
        live = sum(1 for n in view["nodes"] if n["live"])
        print_table(
            f"Cluster {view['cluster_id']} ({view['database']}): {live} of "
            f"{len(view['nodes'])} nodes live",
            [
                ("node", "node_id"),
                ("broker id", "broker_id"),
                ("host", "host"),
                ("listeners", "listeners"),
                ("live", "live"),
                ("started", "started_at"),
                ("last heartbeat", "last_heartbeat"),
                ("lease expires", "lease_expires_at"),
            ],
            view["nodes"],
        )

    emit(as_json, view, human)

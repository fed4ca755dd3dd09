"""Hearing of catalogue changes made by any node: ``LISTEN wharf_catalog``.

The catalogue's writes (:mod:`wharf.cluster.catalog`) send ``pg_notify('wharf_catalog', <topic
name>)`` inside their transactions; :class:`CatalogListener` calls ``on_change()`` for each, and
on every (re)connection, since notifications sent meanwhile are lost (see
:mod:`wharf.cluster.notifications`).
"""

from __future__ import annotations

from collections.abc import Callable

from wharf.cluster.catalog import CHANNEL
from wharf.cluster.database import Database
from wharf.cluster.notifications import NotificationListener

__all__ = ["CatalogListener"]


class CatalogListener(NotificationListener):
    """Calls ``on_change()`` on every catalogue change any node commits."""

    def __init__(
        self, db: Database, on_change: Callable[[], None], retry_interval: float = 1.0
    ) -> None:
        super().__init__(
            db,
            (CHANNEL,),
            lambda _channel, _payload: on_change(),
            on_change,
            what="catalogue",
            retry_interval=retry_interval,
        )

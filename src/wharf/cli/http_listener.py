"""The HTTP listener of ``wharf serve``, wired to a view of the server's other listeners.

How it works: ``wharf.http`` and ``wharf.server`` never import each other, so this module (in
the composition root's layer) joins them. :class:`ListenerRegistry` wraps each listener factory
of ``wharf serve`` so that every listener it creates is recorded along with the addresses its
``start`` bound; the HTTP listener gets the registry as its
:class:`~wharf.http.status.ServerView` and reports those listeners (ready from a successful
start until ``stop_accepting``) and the connections of every listener that offers
``connection_infos()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from wharf.core.broker import Broker
from wharf.http.app import HttpListener
from wharf.http.status import ConnectionView
from wharf.server.listener import Endpoint, Listener, ListenerFactory
from wharf.server.settings import ServerSettings


@dataclass(frozen=True)
class _Bound:
    name: str
    host: str
    port: int
    ready: bool


class _Tracked:
    """A listener that remembers what it bound and whether it still accepts."""

    def __init__(self, inner: Listener) -> None:
        self.inner = inner
        self.endpoints: list[Endpoint] = []
        self.accepting = False

    @property
    def name(self) -> str:
        return self.inner.name

    async def start(self, broker: Broker) -> Sequence[Endpoint]:
        self.endpoints = list(await self.inner.start(broker))
        self.accepting = True
        return self.endpoints

    async def stop_accepting(self) -> None:
        self.accepting = False
        await self.inner.stop_accepting()

    async def close(self, grace_s: float) -> None:
        self.accepting = False
        await self.inner.close(grace_s)


class ListenerRegistry:
    """Listeners of one server run, as the HTTP API's :class:`ServerView`."""

    def __init__(self) -> None:
        self._tracked: list[_Tracked] = []

    def track(self, factory: ListenerFactory) -> ListenerFactory:
        """``factory`` whose listeners are recorded here."""

        def make(settings: ServerSettings) -> Listener:
            tracked = _Tracked(factory(settings))
            self._tracked.append(tracked)
            return tracked

        return make

    def http_factory(self, settings: ServerSettings) -> Listener:
        """The HTTP listener, itself tracked, reporting every tracked listener."""
        return self.track(lambda s: HttpListener(s.host, s.http_port, server=self))(settings)

    def listeners(self) -> Sequence[_Bound]:
        return [
            _Bound(name, host, port, tracked.accepting)
            for tracked in self._tracked
            for name, host, port in tracked.endpoints
        ]

    def connections(self) -> Sequence[ConnectionView]:
        found: list[ConnectionView] = []
        for tracked in self._tracked:
            source: Any = getattr(tracked.inner, "connection_infos", None)
            if callable(source):
                found.extend(source())
        return found

    async def close_connection(self, connection_id: str) -> bool:
        for tracked in self._tracked:
            closer: Any = getattr(tracked.inner, "close_connection", None)
            if callable(closer) and await closer(connection_id):
                return True
        return False


def with_http(factories: Sequence[ListenerFactory]) -> list[ListenerFactory]:
    """``factories`` (tracked) followed by the HTTP listener that reports on them."""
    registry = ListenerRegistry()
    return [*(registry.track(factory) for factory in factories), registry.http_factory]

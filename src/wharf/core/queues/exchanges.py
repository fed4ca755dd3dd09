"""Exchanges and bindings: where a published message goes inside one virtual host.

An exchange maps a message to *destinations*, each a queue or (for exchange-to-exchange
bindings) another exchange; :class:`~wharf.core.queues.vhost.VirtualHost` follows exchange
destinations, applies alternate exchanges and hands the message to the queues. Each exchange
type keeps its bindings in the structure that makes its lookup cheap: a dict for direct, a set
for fanout, a trie for topic (:class:`~wharf.core.queues.matchers.TopicMatcher`), a list for
headers. The x-delayed-message type routes like its ``x-delayed-type`` once a message's delay is
over (the holding is done by :mod:`wharf.core.queues.delayed`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from wharf.core.queues.matchers import TopicMatcher, headers_match
from wharf.core.queues.message import Message
from wharf.errors import InvalidArgumentError, PreconditionError

__all__ = [
    "EXCHANGE_TYPES",
    "Binding",
    "DestKind",
    "Destination",
    "Exchange",
    "ExchangeType",
    "UnknownExchangeTypeError",
    "make_exchange",
]


class ExchangeType(StrEnum):
    DIRECT = "direct"
    FANOUT = "fanout"
    TOPIC = "topic"
    HEADERS = "headers"
    DELAYED = "x-delayed-message"


EXCHANGE_TYPES = frozenset(t.value for t in ExchangeType)


class UnknownExchangeTypeError(InvalidArgumentError):
    """exchange.declare named a type this broker does not have (AMQP 503 COMMAND_INVALID)."""


class DestKind(StrEnum):
    QUEUE = "queue"
    EXCHANGE = "exchange"


Destination = tuple[DestKind, str]


def _args_key(args: Mapping[str, Any]) -> str:
    return repr(sorted(args.items()))


@dataclass(frozen=True, slots=True)
class Binding:
    """source exchange -> destination (queue or exchange) under a routing key and arguments."""

    source: str
    destination: str
    kind: DestKind
    routing_key: str
    arguments: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    args_key: str = ""

    @staticmethod
    def of(
        source: str,
        destination: str,
        kind: DestKind,
        routing_key: str,
        arguments: Mapping[str, Any] | None = None,
    ) -> Binding:
        args = dict(arguments or {})
        return Binding(source, destination, kind, routing_key, args, _args_key(args))

    @property
    def target(self) -> Destination:
        return (self.kind, self.destination)


class Exchange(ABC):
    """Base of every exchange type; subclasses implement the binding index and :meth:`route`.

    Counters (plain ints for metrics): ``messages_in`` (published to this exchange) and
    ``messages_out`` (destinations it produced).
    """

    type: ExchangeType

    def __init__(
        self,
        name: str,
        *,
        durable: bool = True,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments: dict[str, Any] = dict(arguments or {})
        self.bindings: dict[Binding, None] = {}  # insertion-ordered set
        self.messages_in = 0
        self.messages_out = 0

    @property
    def alternate_exchange(self) -> str | None:
        value = self.arguments.get("alternate-exchange")
        return value if isinstance(value, str) else None

    def bind(self, binding: Binding) -> bool:
        """Add a binding; False if it existed already."""
        if binding in self.bindings:
            return False
        self.bindings[binding] = None
        self._index_add(binding)
        return True

    def unbind(self, binding: Binding) -> bool:
        """Remove a binding; False if it did not exist."""
        if binding not in self.bindings:
            return False
        del self.bindings[binding]
        self._index_remove(binding)
        return True

    @abstractmethod
    def route(self, message: Message) -> set[Destination]:
        """Implemented by each exchange type."""

    @abstractmethod
    def _index_add(self, binding: Binding) -> None:
        """Implemented by each exchange type."""

    @abstractmethod
    def _index_remove(self, binding: Binding) -> None:
        """Implemented by each exchange type."""

    def same_declaration(
        self,
        type_: str,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: Mapping[str, Any],
    ) -> bool:
        """Whether a redeclare with these settings is equivalent (RabbitMQ's check)."""
        return (
            self.type.value == type_
            and self.durable == durable
            and self.auto_delete == auto_delete
            and self.internal == internal
            and _args_key(self.arguments) == _args_key(arguments)
        )


class DirectExchange(Exchange):
    type = ExchangeType.DIRECT

    def __init__(self, name: str, **kw: Any) -> None:
        super().__init__(name, **kw)
        self._by_key: dict[str, dict[Destination, int]] = {}

    def _index_add(self, binding: Binding) -> None:
        dests = self._by_key.setdefault(binding.routing_key, {})
        dests[binding.target] = dests.get(binding.target, 0) + 1

    def _index_remove(self, binding: Binding) -> None:
        dests = self._by_key[binding.routing_key]
        dests[binding.target] -= 1
        if dests[binding.target] == 0:
            del dests[binding.target]
        if not dests:
            del self._by_key[binding.routing_key]

    def route(self, message: Message) -> set[Destination]:
        return set(self._by_key.get(message.routing_key, ()))


class FanoutExchange(Exchange):
    type = ExchangeType.FANOUT

    def __init__(self, name: str, **kw: Any) -> None:
        super().__init__(name, **kw)
        self._all: dict[Destination, int] = {}

    def _index_add(self, binding: Binding) -> None:
        self._all[binding.target] = self._all.get(binding.target, 0) + 1

    def _index_remove(self, binding: Binding) -> None:
        self._all[binding.target] -= 1
        if self._all[binding.target] == 0:
            del self._all[binding.target]

    def route(self, message: Message) -> set[Destination]:
        return set(self._all)


class TopicExchange(Exchange):
    type = ExchangeType.TOPIC

    def __init__(self, name: str, **kw: Any) -> None:
        super().__init__(name, **kw)
        self._matcher: TopicMatcher[Binding] = TopicMatcher()

    def _index_add(self, binding: Binding) -> None:
        self._matcher.add(binding.routing_key, binding)

    def _index_remove(self, binding: Binding) -> None:
        self._matcher.remove(binding.routing_key, binding)

    def route(self, message: Message) -> set[Destination]:
        return {b.target for b in self._matcher.match(message.routing_key)}


class HeadersExchange(Exchange):
    type = ExchangeType.HEADERS

    def _index_add(self, binding: Binding) -> None:
        pass  # the bindings dict is the index

    def _index_remove(self, binding: Binding) -> None:
        pass

    def route(self, message: Message) -> set[Destination]:
        if not self.bindings:
            return set()
        headers = message.headers
        return {b.target for b in self.bindings if headers_match(b.arguments, headers)}


class DelayedExchange(Exchange):
    """x-delayed-message: routes like ``x-delayed-type`` once a message's x-delay is over."""

    type = ExchangeType.DELAYED

    def __init__(self, name: str, **kw: Any) -> None:
        super().__init__(name, **kw)
        inner_type = self.arguments.get("x-delayed-type")
        if not isinstance(inner_type, str) or inner_type not in (
            ExchangeType.DIRECT,
            ExchangeType.FANOUT,
            ExchangeType.TOPIC,
            ExchangeType.HEADERS,
        ):
            raise PreconditionError(
                "Invalid argument, 'x-delayed-type' must be an existing exchange type"
            )
        self.inner: Exchange = _CLASSES[ExchangeType(inner_type)](name)

    def _index_add(self, binding: Binding) -> None:
        self.inner.bind(binding)

    def _index_remove(self, binding: Binding) -> None:
        self.inner.unbind(binding)

    def route(self, message: Message) -> set[Destination]:
        return self.inner.route(message)


_CLASSES: dict[ExchangeType, type[Exchange]] = {
    ExchangeType.DIRECT: DirectExchange,
    ExchangeType.FANOUT: FanoutExchange,
    ExchangeType.TOPIC: TopicExchange,
    ExchangeType.HEADERS: HeadersExchange,
    ExchangeType.DELAYED: DelayedExchange,
}


def make_exchange(
    name: str,
    type_: str,
    *,
    durable: bool = True,
    auto_delete: bool = False,
    internal: bool = False,
    arguments: Mapping[str, Any] | None = None,
) -> Exchange:
    """An exchange of the named type (raises :class:`UnknownExchangeTypeError`)."""
    try:
        cls = _CLASSES[ExchangeType(type_)]
    except ValueError:
        raise UnknownExchangeTypeError(f"unknown exchange type '{type_}'") from None
    return cls(
        name, durable=durable, auto_delete=auto_delete, internal=internal, arguments=arguments
    )

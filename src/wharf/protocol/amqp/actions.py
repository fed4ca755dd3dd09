"""What an AMQP connection asks its adapter to do: the sans-I/O connection's side effects.

How it works
------------
:class:`~wharf.protocol.amqp.connection.AMQPConnection` never touches a socket, a timer, a
thread or an event loop. Each of its entry points (``receive_data``, ``wait_done``,
``durable``, ``set_alarm``, ``close_from_server``, ...) returns a sequence of the actions below,
to be carried out in order; the bytes to send are collected separately by
``data_to_send()`` (the connection calls the ``wakeup`` callback it was given when there are
some). Every action is a small dataclass:

* :class:`CheckPassword`: run ``check()`` off the event loop (a password hash costs
  milliseconds of CPU), then call ``conn.wait_done(result)``;
* :class:`AwaitCore`: await ``awaitable`` (a coroutine of the broker core: queue deletion, a
  transaction's durability, ...), then call ``conn.wait_done(result)`` or
  ``conn.wait_failed(exc)``;
* :class:`AwaitDurable` (publisher confirms): await ``wait_durable()`` of each result that is
  not None, in order, then call ``conn.durable(action, failed)`` with the indexes of those that
  raised :class:`~wharf.errors.StorageError` or :class:`~wharf.errors.BrokerError`;
* :class:`RunInBackground`: run ``awaitable`` to its end; nothing waits for it (the exclusive
  queues of a closed connection are deleted this way);
* :class:`HandshakeComplete`: Open-Ok was sent: stop the handshake timer; with a heartbeat
  interval, call ``conn.heartbeat_due()`` after half of it without output and drop the socket
  after two of them without input;
* :class:`AwaitCloseOk`: we sent Connection.Close: stop the heartbeat and handshake timers and
  drop the socket if Close-Ok does not come within a grace period;
* :class:`PauseReading`, :class:`ResumeReading`: stop or resume reading the socket (too much
  unparsed input, or a resource alarm blocks this publisher);
* :class:`CloseTransport`: send what ``data_to_send()`` still holds, then close the socket.

While a :class:`CheckPassword` or :class:`AwaitCore` is outstanding the connection reads no
further frame (it keeps buffering them), so methods still take effect in the order the client
sent them; :class:`AwaitDurable` does not hold anything up, and several may be outstanding at
once (the connection puts the confirms back in publish order).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wharf.core.queues.router import PublishResult
    from wharf.protocol.amqp.confirms import PublisherConfirms

__all__ = [
    "AWAIT_CLOSE_OK",
    "CLOSE_TRANSPORT",
    "PAUSE_READING",
    "RESUME_READING",
    "Action",
    "AwaitCloseOk",
    "AwaitCore",
    "AwaitDurable",
    "CheckPassword",
    "CloseTransport",
    "HandshakeComplete",
    "PauseReading",
    "ResumeReading",
    "RunInBackground",
]


@dataclass(slots=True, eq=False)
class CheckPassword:
    """Run ``check`` on a worker thread, then ``conn.wait_done(its result)``."""

    check: Callable[[], bool]


@dataclass(slots=True, eq=False)
class AwaitCore:
    """Await ``awaitable``, then ``conn.wait_done(result)`` or ``conn.wait_failed(exc)``."""

    awaitable: Coroutine[Any, Any, Any]


@dataclass(slots=True, eq=False)
class AwaitDurable:
    """Publishes of one channel in confirm mode, numbered ``first_seq`` on, in order.

    ``results[i]`` is None when there is nothing to wait for (a queue refused the message: it
    will be nacked). The adapter reports back with ``conn.durable(self, failed)``.
    """

    channel: int
    first_seq: int
    results: list[PublishResult | None]
    confirms: PublisherConfirms = field(repr=False)
    #: perf_counter() of each publish, when publishes are timed (else empty)
    started: list[float] = field(default_factory=list, repr=False)
    #: set by ``conn.durable``: indexes of the results that could not be stored
    failed: tuple[int, ...] | None = field(default=None, repr=False)


@dataclass(slots=True, eq=False)
class RunInBackground:
    """Run ``awaitable`` to its end; log a failure, report nothing back."""

    awaitable: Coroutine[Any, Any, None]


@dataclass(slots=True, frozen=True)
class HandshakeComplete:
    """The connection is open; ``heartbeat_s`` is the negotiated interval (0: none)."""

    heartbeat_s: int


@dataclass(slots=True, frozen=True)
class AwaitCloseOk:
    """We sent Connection.Close and wait for the client's Close-Ok."""


@dataclass(slots=True, frozen=True)
class PauseReading:
    """Stop reading from the socket."""


@dataclass(slots=True, frozen=True)
class ResumeReading:
    """Read from the socket again."""


@dataclass(slots=True, frozen=True)
class CloseTransport:
    """Send what is pending, then close the socket."""


AWAIT_CLOSE_OK = AwaitCloseOk()
PAUSE_READING = PauseReading()
RESUME_READING = ResumeReading()
CLOSE_TRANSPORT = CloseTransport()

Action = (
    CheckPassword
    | AwaitCore
    | AwaitDurable
    | RunInBackground
    | HandshakeComplete
    | AwaitCloseOk
    | PauseReading
    | ResumeReading
    | CloseTransport
)

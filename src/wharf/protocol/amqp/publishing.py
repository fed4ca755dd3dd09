"""The publishing half of an AMQP channel: Basic.Publish and the content that follows it.

How it works
------------
A published message arrives as three or more frames on one channel: Basic.Publish, a content
header (its properties and body size), then body frames until the body is complete. The
connection hands them to :meth:`Publishing.content` one by one under the content table of
:mod:`wharf.protocol.amqp.state`, or, when the header and every body frame are already
buffered, the whole content at once to :meth:`Publishing.whole_content` (the hot path: one call
per message). Everything here is synchronous: a publish never waits.

The completed message is routed by the virtual host (``publish_nowait``). A ``mandatory``
message that reached no queue goes back to the client as Basic.Return (312 NO_ROUTE). On a
channel in confirm mode the core's result is handed to
:class:`~wharf.protocol.amqp.confirms.PublisherConfirms`, which numbers it and decides its
Basic.Ack or Basic.Nack once the adapter has waited for it to be stored. In a transaction
(tx.select) messages are kept here until Tx.Commit.

A message whose ``reply-to`` is ``amq.rabbitmq.reply-to`` gets the channel's direct reply-to
address instead (:mod:`wharf.protocol.amqp.direct_reply`), or is refused with 406.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pamqp import commands

from wharf.core.queues.direct_reply import asks_direct_reply
from wharf.core.queues.message import Message
from wharf.core.queues.router import PublishResult
from wharf.errors import BrokerError, StorageError
from wharf.protocol.amqp.confirms import PublisherConfirms
from wharf.protocol.amqp.direct_reply import name_reply_address
from wharf.protocol.amqp.errors import (
    AMQPChannelError,
    AMQPConnectionError,
    ReplyCode,
    with_method,
)
from wharf.protocol.amqp.frames import (
    BASIC_CLASS,
    ContentBodyFrame,
    ContentHeaderFrame,
    PublishFrame,
)
from wharf.protocol.amqp.state import ContentInput, ContentState, content_transition

if TYPE_CHECKING:
    from wharf.protocol.amqp.channel import Channel

__all__ = ["MAX_BODY_SIZE", "Publishing"]

#: Largest message body accepted (RabbitMQ's default max_message_size is 128 MiB).
MAX_BODY_SIZE = 128 << 20

_PUBLISH = commands.Basic.Publish()


class Publishing:
    """Content assembly, routing, returns and the confirm hand-off of one channel."""

    __slots__ = (
        "_body",
        "_body_size",
        "_channel",
        "_content",
        "_properties",
        "_publish",
        "_received",
        "confirms",
        "tx_publishes",
    )

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._content = ContentState.IDLE
        self._publish: PublishFrame | None = None
        self._properties = b""
        self._body_size = 0
        self._body: list[bytes] = []
        self._received = 0
        self.confirms: PublisherConfirms | None = None  # set by confirm.select
        self.tx_publishes: list[tuple[Message, bool]] = []  # (message, mandatory) until commit

    def reading(self, publish: PublishFrame) -> bool:
        """Whether the message ``publish`` began is still being read (its content is not
        whole yet, and no other message began since)."""
        return self._content is not ContentState.IDLE and self._publish is publish

    # -- frames --------------------------------------------------------------------------------

    def content(self, event: PublishFrame | ContentHeaderFrame | ContentBodyFrame) -> None:
        """A frame of a published message."""
        if type(event) is ContentBodyFrame:
            self._on_content_body(event)
        elif type(event) is PublishFrame:
            self._content = content_transition(self._content, ContentInput.PUBLISH)
            if event.immediate:  # removed from RabbitMQ 3.0 on; clients do not send it
                raise AMQPConnectionError(
                    ReplyCode.NOT_IMPLEMENTED, "immediate=true", class_id=60, method_id=40
                )
            self._publish = event
        else:
            assert type(event) is ContentHeaderFrame
            self._on_content_header(event)

    def whole_content(self, properties: bytes, body: bytes) -> None:
        """The content header and every body frame of the message just announced by
        Basic.Publish, read in one step (AWAIT_HEADER --HEADER--> AWAIT_BODY --LAST_BODY-->
        IDLE, or --LAST_BODY--> IDLE for an empty body)."""
        assert self._content is ContentState.AWAIT_HEADER
        self._content = ContentState.IDLE
        self._properties = properties
        self._complete_publish(body)

    def method_received(self) -> None:
        """A method frame other than Basic.Publish: legal only between messages."""
        self._content = content_transition(self._content, ContentInput.METHOD)

    def _on_content_header(self, frame: ContentHeaderFrame) -> None:
        if frame.class_id != BASIC_CLASS:
            raise AMQPConnectionError(
                ReplyCode.UNEXPECTED_FRAME, f"content header for class {frame.class_id}"
            )
        if frame.body_size == 0:
            self._content = content_transition(self._content, ContentInput.LAST_BODY)
            self._properties = frame.properties
            self._complete_publish(b"")
            return
        self._content = content_transition(self._content, ContentInput.HEADER)
        if frame.body_size > MAX_BODY_SIZE:
            # Keep reading the body frames (they are bounded by frame_max) but refuse it.
            raise AMQPChannelError(
                ReplyCode.PRECONDITION_FAILED,
                f"message size {frame.body_size} is larger than max size {MAX_BODY_SIZE}",
                class_id=60,
                method_id=40,
            )
        self._properties = frame.properties
        self._body_size = frame.body_size
        self._body = []
        self._received = 0

    def _on_content_body(self, frame: ContentBodyFrame) -> None:
        if self._content is not ContentState.AWAIT_BODY:
            content_transition(self._content, ContentInput.BODY)  # raises UNEXPECTED_FRAME
        self._received += len(frame.payload)
        if self._received > self._body_size:
            raise AMQPConnectionError(
                ReplyCode.FRAME_ERROR,
                f"body frames carry {self._received} bytes, header announced {self._body_size}",
            )
        self._body.append(frame.payload)
        if self._received < self._body_size:
            return  # AWAIT_BODY --BODY--> AWAIT_BODY
        self._content = content_transition(self._content, ContentInput.LAST_BODY)
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body = []
        self._complete_publish(body)

    # -- routing -------------------------------------------------------------------------------

    def _complete_publish(self, body: bytes) -> None:
        publish = self._publish
        assert publish is not None
        self._publish = None
        channel = self._channel
        try:
            message = Message(publish.exchange, publish.routing_key, self._properties, body)
            if asks_direct_reply(self._properties):
                message = name_reply_address(channel, message)
            if channel.tx_mode:
                channel.vhost.get_exchange(publish.exchange)  # 404 now, not at commit
                self.tx_publishes.append((message, publish.mandatory))
                return
            result = channel.vhost.publish_nowait(message)
        except BrokerError as exc:
            raise with_method(exc, _PUBLISH) from exc
        except StorageError:
            # A queue's log could not take it (disk full, with a full batch already waiting):
            # in confirm mode that is a nack, as for a write that fails later; without
            # confirms the connection is closed with the error.
            if self.confirms is None:
                raise
            self.confirms.published(PublishResult(routed=True, rejected=True))
            return
        if publish.mandatory and not result.routed:
            self.return_unroutable(message)
        if self.confirms is not None:
            self.confirms.published(result)

    def return_unroutable(self, message: Message) -> None:
        """Basic.Return (312 NO_ROUTE) with the message, to its publisher."""
        channel = self._channel
        owner = channel.owner
        owner.send_raw(
            owner.writer.basic_return(
                channel.number,
                int(ReplyCode.NO_ROUTE),
                "NO_ROUTE",
                message.exchange,
                message.routing_key,
                message.properties,
                message.body,
            )
        )

    # -- confirm mode and transactions ---------------------------------------------------------

    def select_confirms(self) -> None:
        """confirm.select: number every publish from now on (idempotent)."""
        if self.confirms is None:
            self.confirms = self._channel.owner.confirms_for(self._channel.number)

    def commit(self) -> list[PublishResult]:
        """Tx.Commit: publish the messages kept since the last commit, in order."""
        publishes, self.tx_publishes = self.tx_publishes, []
        vhost = self._channel.vhost
        results: list[PublishResult] = []
        for message, mandatory in publishes:
            result = vhost.publish_nowait(message)
            if mandatory and not result.routed:
                self.return_unroutable(message)
            results.append(result)
        return results

    def release(self) -> None:
        """The channel is closing: forget uncommitted messages and pending confirms."""
        self.tx_publishes.clear()
        if self.confirms is not None:
            self.confirms.close()

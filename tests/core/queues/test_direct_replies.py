"""Direct reply-to in the core: addresses, routing to their consumers, the reply-to rewrite."""

from __future__ import annotations

import pytest

from wharf.core.queues import properties as props
from wharf.core.queues.direct_reply import (
    REPLY_PREFIX,
    REPLY_QUEUE,
    DirectReplies,
    asks_direct_reply,
    reply_broker,
    with_reply_address,
)
from wharf.core.queues.message import Message
from wharf.core.queues.vhost import VirtualHost


class Taker:
    """A reply consumer that keeps what it is given (or refuses it, when closing)."""

    def __init__(self, *, open_: bool = True) -> None:
        self.open = open_
        self.got: list[Message] = []

    def deliver_reply(self, message: Message) -> bool:
        if self.open:
            self.got.append(message)
        return self.open


def test_addresses_are_random_distinct_and_forgotten() -> None:
    replies = DirectReplies()
    takers = [Taker() for _ in range(200)]
    addresses = [replies.register(t) for t in takers]
    assert len(set(addresses)) == 200 and len(replies) == 200
    assert all(a.startswith(REPLY_PREFIX) and len(a) == len(REPLY_PREFIX) + 24 for a in addresses)
    assert replies.exists(REPLY_QUEUE) and replies.exists(addresses[0])
    replies.unregister(addresses[0])
    replies.unregister(addresses[0])  # twice: nothing left to forget
    assert not replies.exists(addresses[0]) and len(replies) == 199
    assert not replies.exists(REPLY_PREFIX + "made-up")


def test_deliver_reaches_the_live_consumer_only() -> None:
    replies = DirectReplies()
    taker, closing = Taker(), Taker(open_=False)
    address, closing_address = replies.register(taker), replies.register(closing)
    message = Message.build("", address, b"pong")
    assert replies.deliver(address, message) and taker.got == [message]
    assert not replies.deliver(closing_address, message)
    replies.unregister(address)
    assert not replies.deliver(address, message) and taker.got == [message]


@pytest.mark.parametrize(
    ("reply_to", "asks"),
    [
        (REPLY_QUEUE, True),
        (None, False),
        ("my-queue", False),
        (REPLY_QUEUE + ".abc", False),
        ("x" + REPLY_QUEUE, False),
    ],
)
def test_asks_direct_reply_only_for_the_exact_name(reply_to: str | None, asks: bool) -> None:
    message = Message.build("", "q", b"", reply_to=reply_to, correlation_id=REPLY_QUEUE)
    assert asks_direct_reply(message.properties) is asks


def test_the_rewrite_replaces_reply_to_and_keeps_every_other_byte() -> None:
    fields = {
        "content_type": "application/json",
        "headers": {"h": 1},
        "correlation_id": "c-1",
        "message_id": "m-1",
        "timestamp": 1700000000,
        "app_id": "app",
    }
    message = Message.build("", "q", b"body", persistent=True, reply_to=REPLY_QUEUE, **fields)
    address = REPLY_PREFIX + "t" * 24
    rewritten = with_reply_address(message, address)
    expected = props.encode_properties(delivery_mode=2, reply_to=address, **fields)
    assert rewritten.properties == expected
    assert (rewritten.exchange, rewritten.routing_key, rewritten.body) == ("", "q", b"body")
    assert rewritten.persistent and rewritten.headers == {"h": 1}


def test_field_span_finds_fields_after_others() -> None:
    data = props.encode_properties(content_type="t", priority=3, reply_to="r", app_id="a")
    span = props.field_span(data, props.FLAG_REPLY_TO)
    assert span is not None and data[span[0] : span[1]] == b"\x01r"
    assert props.field_span(data, props.FLAG_EXPIRATION) is None
    app = props.field_span(data, props.FLAG_APP_ID)
    assert app is not None and data[app[0] : app[1]] == b"\x01a"


async def test_the_default_exchange_routes_reply_addresses(vhost: VirtualHost) -> None:
    taker = Taker()
    address = vhost.router.replies.register(taker)
    result = vhost.publish_nowait(Message.build("", address, b"pong"))
    assert result.routed and result.queues == [] and not result.must_wait
    assert [m.body for m in taker.got] == [b"pong"]
    vhost.router.replies.unregister(address)
    assert not vhost.publish_nowait(Message.build("", address, b"late")).routed
    # only the default exchange knows addresses: a direct exchange routes by its bindings
    vhost.router.replies.register(taker)
    assert not vhost.publish_nowait(Message.build("amq.direct", address, b"x")).routed
    assert vhost.unroutable == 2


def test_a_cluster_nodes_addresses_name_its_broker() -> None:
    replies = DirectReplies()
    replies.node_prefix = "n7."
    address = replies.register(Taker())
    assert address.startswith("amq.rabbitmq.reply-to.n7.")
    assert reply_broker(address) == 7
    assert reply_broker(DirectReplies().register(Taker())) is None  # one node's: no broker
    for other in ("amq.rabbitmq.reply-to", "amq.rabbitmq.reply-to.nx.abc", "q", "n7.abc"):
        assert reply_broker(other) is None

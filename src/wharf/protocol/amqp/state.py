"""Every state transition of an AMQP 0-9-1 connection and its channels, in three tables.

Two rules, as the specification states them:

1. The connection handshake is strictly ordered: protocol header, Start/Start-Ok, Tune/Tune-Ok,
   Open/Open-Ok. Until Open-Ok only channel 0 is in use; a frame that does not fit the current
   state is a hard error (COMMAND_INVALID during the handshake, UNEXPECTED_FRAME afterwards).
2. Closing is a handshake too. The side that sends Close discards every frame except Close and
   Close-Ok until the Close-Ok arrives; this holds for the connection and for each channel.

Content (Basic.Publish followed by a content header and body frames) follows a third table per
channel; any other frame in the middle of a message is UNEXPECTED_FRAME.

The tables are plain data so that a reader can check them against the specification; the
functions below only look them up.
"""

from __future__ import annotations

from enum import Enum, IntEnum, auto

from wharf.protocol.amqp.errors import AMQPConnectionError, ReplyCode


class ConnState(Enum):
    AWAIT_HEADER = auto()  # nothing received yet
    AWAIT_START_OK = auto()  # we sent Connection.Start
    AWAIT_TUNE_OK = auto()  # authenticated, we sent Connection.Tune
    AWAIT_OPEN = auto()  # tuned, waiting for Connection.Open
    OPEN = auto()  # Open-Ok sent; channels may be used
    CLOSING = auto()  # we sent Connection.Close, waiting for Close-Ok
    CLOSED = auto()  # Close-Ok sent or received: the socket is to be closed


class ConnInput(Enum):
    """What drives the connection table: frames received and closes we initiate."""

    PROTOCOL_HEADER = auto()
    START_OK = auto()
    TUNE_OK = auto()
    OPEN = auto()
    CLOSE = auto()  # Connection.Close received
    CLOSE_OK = auto()  # Connection.Close-Ok received
    SEND_CLOSE = auto()  # we send Connection.Close (error or shutdown)


CONNECTION_TRANSITIONS: dict[tuple[ConnState, ConnInput], ConnState] = {
    (ConnState.AWAIT_HEADER, ConnInput.PROTOCOL_HEADER): ConnState.AWAIT_START_OK,
    (ConnState.AWAIT_START_OK, ConnInput.START_OK): ConnState.AWAIT_TUNE_OK,
    (ConnState.AWAIT_TUNE_OK, ConnInput.TUNE_OK): ConnState.AWAIT_OPEN,
    (ConnState.AWAIT_OPEN, ConnInput.OPEN): ConnState.OPEN,
    # A client may give up at any point after Start; we answer Close with Close-Ok.
    (ConnState.AWAIT_TUNE_OK, ConnInput.CLOSE): ConnState.CLOSED,
    (ConnState.AWAIT_OPEN, ConnInput.CLOSE): ConnState.CLOSED,
    (ConnState.OPEN, ConnInput.CLOSE): ConnState.CLOSED,
    # Server-initiated close, from any state in which the client can understand it.
    (ConnState.AWAIT_START_OK, ConnInput.SEND_CLOSE): ConnState.CLOSING,
    (ConnState.AWAIT_TUNE_OK, ConnInput.SEND_CLOSE): ConnState.CLOSING,
    (ConnState.AWAIT_OPEN, ConnInput.SEND_CLOSE): ConnState.CLOSING,
    (ConnState.OPEN, ConnInput.SEND_CLOSE): ConnState.CLOSING,
    (ConnState.CLOSING, ConnInput.CLOSE_OK): ConnState.CLOSED,
    (ConnState.CLOSING, ConnInput.CLOSE): ConnState.CLOSED,  # both sides closed at once
}

#: States in which frames other than Close / Close-Ok are silently dropped.
DISCARDING_STATES = frozenset({ConnState.CLOSING, ConnState.CLOSED})


def connection_transition(state: ConnState, event: ConnInput) -> ConnState:
    """The connection state after ``event``; raises the right hard error if it is illegal."""
    try:
        return CONNECTION_TRANSITIONS[(state, event)]
    except KeyError:
        code = ReplyCode.UNEXPECTED_FRAME if state is ConnState.OPEN else ReplyCode.COMMAND_INVALID
        raise AMQPConnectionError(
            code, f"{event.name.lower()} is not allowed in state {state.name.lower()}"
        ) from None


class ChannelState(Enum):
    OPEN = auto()
    CLOSING = auto()  # we sent Channel.Close, waiting for Close-Ok
    CLOSED = auto()


class ChannelInput(Enum):
    CLOSE = auto()  # Channel.Close received (we answer Close-Ok)
    CLOSE_OK = auto()  # Channel.Close-Ok received
    SEND_CLOSE = auto()  # we send Channel.Close (a channel error)


CHANNEL_TRANSITIONS: dict[tuple[ChannelState, ChannelInput], ChannelState] = {
    (ChannelState.OPEN, ChannelInput.CLOSE): ChannelState.CLOSED,
    (ChannelState.OPEN, ChannelInput.SEND_CLOSE): ChannelState.CLOSING,
    (ChannelState.CLOSING, ChannelInput.CLOSE_OK): ChannelState.CLOSED,
    (ChannelState.CLOSING, ChannelInput.CLOSE): ChannelState.CLOSED,  # both closed at once
}


def channel_transition(state: ChannelState, event: ChannelInput) -> ChannelState:
    try:
        return CHANNEL_TRANSITIONS[(state, event)]
    except KeyError:
        raise AMQPConnectionError(
            ReplyCode.CHANNEL_ERROR,
            f"channel {event.name.lower()} is not allowed in state {state.name.lower()}",
        ) from None


class ContentState(IntEnum):  # IntEnum: hashed in C, looked up once per frame
    IDLE = auto()  # between messages: method frames expected
    AWAIT_HEADER = auto()  # Basic.Publish received, content header next
    AWAIT_BODY = auto()  # header received, body frames until body_size bytes


class ContentInput(IntEnum):
    METHOD = auto()  # any method frame except Basic.Publish
    PUBLISH = auto()
    HEADER = auto()
    BODY = auto()  # a body frame that leaves more bytes to come
    LAST_BODY = auto()  # a body frame completing the message (or a header with body_size 0)


CONTENT_TRANSITIONS: dict[tuple[ContentState, ContentInput], ContentState] = {
    (ContentState.IDLE, ContentInput.METHOD): ContentState.IDLE,
    (ContentState.IDLE, ContentInput.PUBLISH): ContentState.AWAIT_HEADER,
    (ContentState.AWAIT_HEADER, ContentInput.HEADER): ContentState.AWAIT_BODY,
    (ContentState.AWAIT_HEADER, ContentInput.LAST_BODY): ContentState.IDLE,
    (ContentState.AWAIT_BODY, ContentInput.BODY): ContentState.AWAIT_BODY,
    (ContentState.AWAIT_BODY, ContentInput.LAST_BODY): ContentState.IDLE,
}


def content_transition(state: ContentState, event: ContentInput) -> ContentState:
    try:
        return CONTENT_TRANSITIONS[(state, event)]
    except KeyError:
        raise AMQPConnectionError(
            ReplyCode.UNEXPECTED_FRAME,
            f"{event.name.lower()} frame received while {state.name.lower()}",
        ) from None

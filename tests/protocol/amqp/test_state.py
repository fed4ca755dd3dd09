"""The AMQP state tables: legal transitions pass, illegal ones raise the right reply code."""

from __future__ import annotations

import itertools

import pytest

from wharf.protocol.amqp.errors import AMQPConnectionError, ReplyCode
from wharf.protocol.amqp.state import (
    CHANNEL_TRANSITIONS,
    CONNECTION_TRANSITIONS,
    CONTENT_TRANSITIONS,
    ChannelInput,
    ChannelState,
    ConnInput,
    ConnState,
    ContentInput,
    ContentState,
    channel_transition,
    connection_transition,
    content_transition,
)


def test_handshake_in_order() -> None:
    state = ConnState.AWAIT_HEADER
    for event in (ConnInput.PROTOCOL_HEADER, ConnInput.START_OK, ConnInput.TUNE_OK, ConnInput.OPEN):
        state = connection_transition(state, event)
    assert state is ConnState.OPEN
    assert connection_transition(state, ConnInput.CLOSE) is ConnState.CLOSED
    closing = connection_transition(ConnState.OPEN, ConnInput.SEND_CLOSE)
    assert connection_transition(closing, ConnInput.CLOSE_OK) is ConnState.CLOSED


@pytest.mark.parametrize("state,event", list(itertools.product(ConnState, ConnInput)))
def test_every_connection_pair_is_in_the_table_or_refused(state, event) -> None:
    if (state, event) in CONNECTION_TRANSITIONS:
        assert connection_transition(state, event) is CONNECTION_TRANSITIONS[(state, event)]
        return
    with pytest.raises(AMQPConnectionError) as info:
        connection_transition(state, event)
    expected = ReplyCode.UNEXPECTED_FRAME if state is ConnState.OPEN else ReplyCode.COMMAND_INVALID
    assert info.value.reply_code == expected


@pytest.mark.parametrize("state,event", list(itertools.product(ChannelState, ChannelInput)))
def test_every_channel_pair(state, event) -> None:
    if (state, event) in CHANNEL_TRANSITIONS:
        assert channel_transition(state, event) is CHANNEL_TRANSITIONS[(state, event)]
        return
    with pytest.raises(AMQPConnectionError) as info:
        channel_transition(state, event)
    assert info.value.reply_code == ReplyCode.CHANNEL_ERROR


@pytest.mark.parametrize("state,event", list(itertools.product(ContentState, ContentInput)))
def test_every_content_pair(state, event) -> None:
    if (state, event) in CONTENT_TRANSITIONS:
        assert content_transition(state, event) is CONTENT_TRANSITIONS[(state, event)]
        return
    with pytest.raises(AMQPConnectionError) as info:
        content_transition(state, event)
    assert info.value.reply_code == ReplyCode.UNEXPECTED_FRAME


def test_a_method_in_the_middle_of_a_message_is_unexpected() -> None:
    state = content_transition(ContentState.IDLE, ContentInput.PUBLISH)
    with pytest.raises(AMQPConnectionError):
        content_transition(state, ContentInput.METHOD)
    state = content_transition(state, ContentInput.HEADER)
    state = content_transition(state, ContentInput.BODY)
    assert content_transition(state, ContentInput.LAST_BODY) is ContentState.IDLE

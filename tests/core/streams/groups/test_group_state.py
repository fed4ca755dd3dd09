"""The transition table: each legal transition is accepted, every other one refused."""

import itertools

import pytest

from wharf.core.streams.groups.group import Group
from wharf.core.streams.groups.state import (
    TRANSITIONS,
    GroupState,
    IllegalTransitionError,
    check_transition,
)

LEGAL = sorted((old, new) for old, targets in TRANSITIONS.items() for new in targets)
ILLEGAL = sorted(
    (old, new)
    for old, new in itertools.product(GroupState, repeat=2)
    if new not in TRANSITIONS[old]
)


def test_the_table_covers_every_state_and_matches_the_diagram() -> None:
    assert set(TRANSITIONS) == set(GroupState)
    assert set(LEGAL) == {
        (GroupState.EMPTY, GroupState.PREPARING_REBALANCE),
        (GroupState.EMPTY, GroupState.DEAD),
        (GroupState.PREPARING_REBALANCE, GroupState.COMPLETING_REBALANCE),
        (GroupState.PREPARING_REBALANCE, GroupState.EMPTY),
        (GroupState.PREPARING_REBALANCE, GroupState.DEAD),
        (GroupState.COMPLETING_REBALANCE, GroupState.STABLE),
        (GroupState.COMPLETING_REBALANCE, GroupState.PREPARING_REBALANCE),
        (GroupState.STABLE, GroupState.PREPARING_REBALANCE),
    }
    assert TRANSITIONS[GroupState.DEAD] == frozenset()  # Dead is final


@pytest.mark.parametrize(("old", "new"), LEGAL)
def test_a_legal_transition_is_accepted(old: GroupState, new: GroupState) -> None:
    check_transition("g", old, new)
    group = Group("g", state=old, state_since_ms=1)
    group.move_to(new, 42)
    assert (group.state, group.state_since_ms) == (new, 42)


@pytest.mark.parametrize(("old", "new"), ILLEGAL)
def test_an_illegal_transition_is_refused(old: GroupState, new: GroupState) -> None:
    with pytest.raises(IllegalTransitionError) as refused:
        check_transition("g", old, new)
    assert (refused.value.group_id, refused.value.current, refused.value.new) == ("g", old, new)
    group = Group("g", state=old, state_since_ms=1)
    with pytest.raises(IllegalTransitionError, match=f"from {old} to {new}"):
        group.move_to(new, 42)
    assert (group.state, group.state_since_ms) == (old, 1)  # unchanged


def test_no_state_moves_to_itself() -> None:
    assert all((state, state) in ILLEGAL for state in GroupState)

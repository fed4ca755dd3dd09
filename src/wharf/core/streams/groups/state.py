"""The states of a consumer group and every transition between them, in one table.

The coordinator changes a group's state only through :func:`check_transition` (via
:meth:`~wharf.core.streams.groups.group.Group.move_to`), so a transition missing from
:data:`TRANSITIONS` is a bug that raises :class:`IllegalTransitionError` at the point where it
happens instead of leaving a group in a state its members cannot get out of.

A group is created Empty (or restored Stable from its snapshot after a restart); ``Dead`` is
final: a deleted group leaves the coordinator, and a new group with the same id starts Empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

__all__ = ["TRANSITIONS", "GroupState", "IllegalTransitionError", "check_transition"]


class GroupState(StrEnum):
    """Group states, spelled as Kafka reports them in DescribeGroups and ListGroups."""

    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


_S = GroupState

# state -> the states it may move to, and why
TRANSITIONS: Mapping[GroupState, frozenset[GroupState]] = {
    _S.EMPTY: frozenset(
        {
            _S.PREPARING_REBALANCE,  # the first member joins
            _S.DEAD,  # deleted (only a group without members can be)
        }
    ),
    _S.PREPARING_REBALANCE: frozenset(
        {
            _S.COMPLETING_REBALANCE,  # every member rejoined, or the join phase timed out
            _S.EMPTY,  # the join phase ended with nobody left
            _S.DEAD,  # deleted during the first join phase's delay, after every member left
        }
    ),
    _S.COMPLETING_REBALANCE: frozenset(
        {
            _S.STABLE,  # the leader sent the assignments
            _S.PREPARING_REBALANCE,  # a member joined, left, changed metadata or expired
        }
    ),
    _S.STABLE: frozenset(
        {
            _S.PREPARING_REBALANCE,  # a member joined, left, changed metadata or expired
        }
    ),
    _S.DEAD: frozenset(),
}


class IllegalTransitionError(RuntimeError):
    """A group was asked to move between two states the table does not connect."""

    def __init__(self, group_id: str, current: GroupState, new: GroupState) -> None:
        super().__init__(f"group {group_id!r} cannot move from {current} to {new}")
        self.group_id = group_id
        self.current = current
        self.new = new


def check_transition(group_id: str, current: GroupState, new: GroupState) -> None:
    """Raise :class:`IllegalTransitionError` unless ``current -> new`` is in the table."""
    if new not in TRANSITIONS[current]:
        raise IllegalTransitionError(group_id, current, new)

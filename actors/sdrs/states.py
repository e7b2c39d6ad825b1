"""The life cycle of an sDRS protection group as a transition table (REFERENCE "Storage
disaster recovery": the group states, the actions and the states they are allowed from).

`ACTIONS[action]` says which states accept the action, the state while its job runs,
and the state after the job succeeds or fails. The table is pure data: the
`DisasterRecovery` actor decides when an action happens and does the I/O around it.

Where REFERENCE is silent, our choices: `error` is a failed creation; delete is allowed
while the group does not protect (available, error, error-starting, error-stopping,
error-deleting; its job stops any pair still running) and ends in `deleted`; servers
are added and removed only while available; drills leave the state as it is.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

import attrs

from runtime.errors import InvalidTransition


class GroupState(enum.Enum):
    CREATING = "creating"
    AVAILABLE = "available"
    PROTECTED = "protected"
    DELETING = "deleting"
    STARTING = "starting"
    STOPPING = "stopping"
    REPROTECTING = "reprotecting"
    REVERSING = "reversing"
    FAILING_OVER = "failing-over"
    FAILED_OVER = "failed-over"
    ERROR = "error"
    ERROR_STARTING = "error-starting"
    ERROR_STOPPING = "error-stopping"
    ERROR_REPROTECTING = "error-reprotecting"
    ERROR_REVERSING = "error-reversing"
    ERROR_FAILING_OVER = "error-failing-over"
    ERROR_DELETING = "error-deleting"
    DELETED = "deleted"  # terminal: the group is gone (GetGroup answers NotFound)


class GroupAction(enum.Enum):
    CREATE = "create"  # internal: the creation job
    ADD_SERVER = "add-server"
    REMOVE_SERVER = "remove-server"
    START_PROTECTION = "start-protection"
    STOP_PROTECTION = "stop-protection"
    CREATE_DRILL = "create-drill"
    DELETE_DRILL = "delete-drill"
    FAILOVER = "failover"
    REVERSE = "reverse"  # planned switchover
    REPROTECT = "reprotect"
    DELETE = "delete"


@attrs.frozen
class Rule:
    """An action: the states it is allowed from, the state while its job runs, and the
    state after it succeeds or fails (None: the state does not change)."""

    allowed_from: frozenset[GroupState]
    during: GroupState | None
    done: GroupState | None
    failed: GroupState | None


_S, _A = GroupState, GroupAction
_ERRORS = frozenset({_S.ERROR, _S.ERROR_STARTING, _S.ERROR_STOPPING, _S.ERROR_REPROTECTING, _S.ERROR_REVERSING,
                     _S.ERROR_FAILING_OVER, _S.ERROR_DELETING})
_DRILL_FROM = frozenset({_S.AVAILABLE, _S.PROTECTED, _S.FAILED_OVER}) | (_ERRORS - {_S.ERROR_DELETING})

ACTIONS: Mapping[GroupAction, Rule] = MappingProxyType({
    _A.CREATE: Rule(frozenset({_S.CREATING}), _S.CREATING, _S.AVAILABLE, _S.ERROR),
    _A.ADD_SERVER: Rule(frozenset({_S.AVAILABLE}), None, None, None),
    _A.REMOVE_SERVER: Rule(frozenset({_S.AVAILABLE}), None, None, None),
    _A.START_PROTECTION: Rule(frozenset({_S.AVAILABLE, _S.ERROR_STARTING}), _S.STARTING, _S.PROTECTED,
                              _S.ERROR_STARTING),
    _A.STOP_PROTECTION: Rule(frozenset({_S.PROTECTED, _S.ERROR_STOPPING}), _S.STOPPING, _S.AVAILABLE,
                             _S.ERROR_STOPPING),
    _A.CREATE_DRILL: Rule(_DRILL_FROM, None, None, None),
    _A.DELETE_DRILL: Rule(_DRILL_FROM, None, None, None),
    _A.FAILOVER: Rule(frozenset({_S.PROTECTED, _S.ERROR_FAILING_OVER, _S.ERROR_REVERSING}), _S.FAILING_OVER,
                      _S.FAILED_OVER, _S.ERROR_FAILING_OVER),
    _A.REVERSE: Rule(frozenset({_S.PROTECTED, _S.ERROR_REVERSING}), _S.REVERSING, _S.PROTECTED, _S.ERROR_REVERSING),
    _A.REPROTECT: Rule(frozenset({_S.FAILED_OVER, _S.ERROR_REPROTECTING}), _S.REPROTECTING, _S.PROTECTED,
                       _S.ERROR_REPROTECTING),
    _A.DELETE: Rule(frozenset({_S.AVAILABLE, _S.ERROR, _S.ERROR_STARTING, _S.ERROR_STOPPING, _S.ERROR_DELETING}),
                    _S.DELETING, _S.DELETED, _S.ERROR_DELETING),
})


def allowed(state: GroupState) -> list[GroupAction]:
    """The user actions `state` accepts, in table order."""
    return [a for a, rule in ACTIONS.items() if a is not _A.CREATE and state in rule.allowed_from]


def begin(group: str, state: GroupState, action: GroupAction) -> GroupState:
    """The state while `action` runs, or `InvalidTransition` naming the allowed actions."""
    rule = ACTIONS[action]
    if state not in rule.allowed_from:
        raise InvalidTransition("protection group", group, state.value, action.value, [a.value for a in allowed(state)])
    return rule.during or state

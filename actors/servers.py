"""The ECS server life cycle (ECS-1, ECS-4) as an explicit transition table.

`TRANSITIONS[state][action]` is the state a server moves to; an action missing from a
state's row is refused with `InvalidTransition`. The table is pure data: the server
actor decides when an action happens and does the I/O around it.

User actions (ECS-1):
    START   shutoff -> active
    STOP    active -> shutoff
    REBOOT  active -> rebooting
    RESIZE  shutoff -> resizing (the server must be stopped first, as on the provider
            and the Hypervisor port; it stays stopped afterwards)
    DELETE  any state but deleted -> deleted (DELETED is terminal)

Internal events (reported by the control plane, never requested by users):
    BUILT          building -> active
    DONE           the reboot or resize finished: rebooting -> active, resizing -> shutoff
    FAILED         the operation in progress failed: building, rebooting, resizing -> error;
                   a failed recovery leaves the server recovering -> down, on its dead host
    HOST_FAILED    its host failed: active, shutoff, rebooting, resizing, recovering -> down;
                   building -> error (the server never ran, there is nothing to recover)
    RECOVER        auto-recovery starts rebuilding it on another host: down -> recovering
    RECOVERED      the clone runs on the new host: recovering -> active
    HOST_RETURNED  its host came back and the control plane restarted it: down -> active
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

from runtime.errors import InvalidTransition


class ServerState(enum.Enum):
    BUILDING = "building"
    ACTIVE = "active"
    SHUTOFF = "shutoff"
    RESIZING = "resizing"
    REBOOTING = "rebooting"
    RECOVERING = "recovering"
    DOWN = "down"
    ERROR = "error"
    DELETED = "deleted"


class Action(enum.Enum):
    START = "start"
    STOP = "stop"
    REBOOT = "reboot"
    RESIZE = "resize"
    DELETE = "delete"
    BUILT = "built"
    DONE = "done"
    FAILED = "failed"
    HOST_FAILED = "host_failed"
    RECOVER = "recover"
    RECOVERED = "recovered"
    HOST_RETURNED = "host_returned"


USER_ACTIONS: frozenset[Action] = frozenset({Action.START, Action.STOP, Action.REBOOT, Action.RESIZE, Action.DELETE})
INTERNAL_EVENTS: frozenset[Action] = frozenset(Action) - USER_ACTIONS

_S, _A = ServerState, Action
_DELETE = {_A.DELETE: _S.DELETED}

TRANSITIONS: Mapping[ServerState, Mapping[Action, ServerState]] = MappingProxyType(
    {
        state: MappingProxyType(row)
        for state, row in {
            _S.BUILDING: {_A.BUILT: _S.ACTIVE, _A.FAILED: _S.ERROR, _A.HOST_FAILED: _S.ERROR, **_DELETE},
            _S.ACTIVE: {_A.STOP: _S.SHUTOFF, _A.REBOOT: _S.REBOOTING, _A.HOST_FAILED: _S.DOWN, **_DELETE},
            _S.SHUTOFF: {_A.START: _S.ACTIVE, _A.RESIZE: _S.RESIZING, _A.HOST_FAILED: _S.DOWN, **_DELETE},
            _S.REBOOTING: {_A.DONE: _S.ACTIVE, _A.FAILED: _S.ERROR, _A.HOST_FAILED: _S.DOWN, **_DELETE},
            _S.RESIZING: {_A.DONE: _S.SHUTOFF, _A.FAILED: _S.ERROR, _A.HOST_FAILED: _S.DOWN, **_DELETE},
            _S.RECOVERING: {_A.RECOVERED: _S.ACTIVE, _A.FAILED: _S.DOWN, _A.HOST_FAILED: _S.DOWN, **_DELETE},
            _S.DOWN: {_A.RECOVER: _S.RECOVERING, _A.HOST_RETURNED: _S.ACTIVE, **_DELETE},
            _S.ERROR: {**_DELETE},
            _S.DELETED: {},
        }.items()
    }
)


def allowed(state: ServerState) -> frozenset[Action]:
    """The actions `state` accepts."""
    return frozenset(TRANSITIONS[state])


def transition(server_id: str, state: ServerState, action: Action) -> ServerState:
    """The state after `action`, or `InvalidTransition` naming the allowed actions.

    A refused user action lists only the user actions allowed (internal events mean
    nothing to a user); a refused internal event lists every allowed action.
    """
    row = TRANSITIONS[state]
    try:
        return row[action]
    except KeyError:
        pass
    shown = [a for a in row if action not in USER_ACTIONS or a in USER_ACTIONS]
    raise InvalidTransition("server", server_id, state.value, action.value, [a.value for a in shown])

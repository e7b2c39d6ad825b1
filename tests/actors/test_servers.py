"""The server life cycle table (ECS-1, ECS-4)."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.servers import (
    INTERNAL_EVENTS,
    TRANSITIONS,
    USER_ACTIONS,
    Action,
    ServerState,
    allowed,
    transition,
)
from runtime.errors import InvalidRequest, InvalidTransition

S, A = ServerState, Action

# The whole table written out once more, so that any change to it is deliberate.
EXPECTED: dict[tuple[ServerState, Action], ServerState] = {
    (S.BUILDING, A.BUILT): S.ACTIVE,
    (S.BUILDING, A.FAILED): S.ERROR,
    (S.BUILDING, A.HOST_FAILED): S.ERROR,
    (S.BUILDING, A.DELETE): S.DELETED,
    (S.ACTIVE, A.STOP): S.SHUTOFF,
    (S.ACTIVE, A.REBOOT): S.REBOOTING,
    (S.ACTIVE, A.HOST_FAILED): S.DOWN,
    (S.ACTIVE, A.DELETE): S.DELETED,
    (S.SHUTOFF, A.START): S.ACTIVE,
    (S.SHUTOFF, A.RESIZE): S.RESIZING,
    (S.SHUTOFF, A.HOST_FAILED): S.DOWN,
    (S.SHUTOFF, A.DELETE): S.DELETED,
    (S.REBOOTING, A.DONE): S.ACTIVE,
    (S.REBOOTING, A.FAILED): S.ERROR,
    (S.REBOOTING, A.HOST_FAILED): S.DOWN,
    (S.REBOOTING, A.DELETE): S.DELETED,
    (S.RESIZING, A.DONE): S.SHUTOFF,
    (S.RESIZING, A.FAILED): S.ERROR,
    (S.RESIZING, A.HOST_FAILED): S.DOWN,
    (S.RESIZING, A.DELETE): S.DELETED,
    (S.RECOVERING, A.RECOVERED): S.ACTIVE,
    (S.RECOVERING, A.FAILED): S.DOWN,
    (S.RECOVERING, A.HOST_FAILED): S.DOWN,
    (S.RECOVERING, A.DELETE): S.DELETED,
    (S.DOWN, A.RECOVER): S.RECOVERING,
    (S.DOWN, A.HOST_RETURNED): S.ACTIVE,
    (S.DOWN, A.DELETE): S.DELETED,
    (S.ERROR, A.DELETE): S.DELETED,
}


def test_table_is_exactly_the_documented_one_ECS_1() -> None:
    assert set(TRANSITIONS) == set(ServerState)
    actual = {(state, action): target for state, row in TRANSITIONS.items() for action, target in row.items()}
    assert actual == EXPECTED


@pytest.mark.parametrize(("state", "action"), [(s, a) for s in ServerState for a in Action])
def test_transition_follows_the_table_or_refuses(state: ServerState, action: Action) -> None:
    target = EXPECTED.get((state, action))
    if target is not None:
        assert transition("srv-1", state, action) is target
    else:
        with pytest.raises(InvalidTransition):
            transition("srv-1", state, action)


def test_values_are_lower_case_strings() -> None:
    for member in [*ServerState, *Action]:
        assert member.value == member.name.lower()


def test_user_actions_are_the_ECS_1_ones_and_partition_with_internal_events() -> None:
    assert {a.value for a in USER_ACTIONS} == {"start", "stop", "reboot", "resize", "delete"}
    assert USER_ACTIONS | INTERNAL_EVENTS == set(Action)
    assert not USER_ACTIONS & INTERNAL_EVENTS


@pytest.mark.parametrize("state", [s for s in ServerState if s is not S.DELETED])
def test_delete_is_allowed_from_every_state_but_deleted_ECS_1(state: ServerState) -> None:
    assert transition("srv-1", state, A.DELETE) is S.DELETED


@pytest.mark.parametrize("action", list(Action))
def test_deleted_is_terminal(action: Action) -> None:
    with pytest.raises(InvalidTransition) as info:
        transition("srv-1", S.DELETED, action)
    assert info.value.allowed == ()
    assert "allowed in this state: none" in str(info.value)


@pytest.mark.parametrize("state", [S.ACTIVE, S.SHUTOFF, S.REBOOTING, S.RESIZING, S.RECOVERING])
def test_host_failure_takes_a_placed_server_down_ECS_4(state: ServerState) -> None:
    assert transition("srv-1", state, A.HOST_FAILED) is S.DOWN


def test_host_failure_during_build_is_a_failed_build() -> None:
    assert transition("srv-1", S.BUILDING, A.HOST_FAILED) is S.ERROR


def test_auto_recovery_goes_down_recovering_active_ECS_4() -> None:
    state = S.ACTIVE
    for action in (A.HOST_FAILED, A.RECOVER, A.RECOVERED):
        state = transition("srv-1", state, action)
    assert state is S.ACTIVE
    assert transition("srv-1", S.DOWN, A.RECOVER) is S.RECOVERING


def test_failed_recovery_leaves_the_server_down_until_its_host_returns_ECS_4() -> None:
    state = transition("srv-1", S.RECOVERING, A.FAILED)
    assert state is S.DOWN
    assert transition("srv-1", state, A.HOST_RETURNED) is S.ACTIVE


def test_resize_needs_a_stopped_server_and_leaves_it_stopped_ECS_1() -> None:
    with pytest.raises(InvalidTransition):
        transition("srv-1", S.ACTIVE, A.RESIZE)
    state = transition("srv-1", S.SHUTOFF, A.RESIZE)
    assert transition("srv-1", state, A.DONE) is S.SHUTOFF


def test_refused_user_action_names_state_and_allowed_user_actions_only() -> None:
    with pytest.raises(InvalidTransition) as info:
        transition("srv-9", S.ACTIVE, A.RESIZE)
    err = info.value
    assert (err.kind, err.ident, err.state, err.action) == ("server", "srv-9", "active", "resize")
    assert err.allowed == ("delete", "reboot", "stop")
    assert str(err) == "cannot resize server srv-9 in state active; allowed in this state: delete, reboot, stop"
    assert isinstance(err, InvalidRequest)
    assert isinstance(err, ValueError)


def test_refused_internal_event_lists_every_allowed_action() -> None:
    with pytest.raises(InvalidTransition) as info:
        transition("srv-9", S.DOWN, A.BUILT)
    assert info.value.allowed == ("delete", "host_returned", "recover")


def test_allowed_matches_the_table() -> None:
    for state in ServerState:
        assert allowed(state) == frozenset(a for (s, a) in EXPECTED if s is state)


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        TRANSITIONS[S.ACTIVE] = {}  # type: ignore[index]
    with pytest.raises(TypeError):
        TRANSITIONS[S.ACTIVE][A.START] = S.ACTIVE  # type: ignore[index]


def _reachable(start: ServerState) -> set[ServerState]:
    seen, todo = {start}, deque([start])
    while todo:
        for target in TRANSITIONS[todo.popleft()].values():
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_every_state_is_reachable_from_building_and_can_reach_deleted() -> None:
    assert _reachable(S.BUILDING) == set(ServerState)
    for state in ServerState:
        assert S.DELETED in _reachable(state)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list(Action)), max_size=30))
def test_any_sequence_of_actions_stays_in_the_table(actions: list[Action]) -> None:
    state = S.BUILDING
    for action in actions:
        before = state
        try:
            state = transition("srv-1", state, action)
        except InvalidTransition as err:
            assert action not in TRANSITIONS[before]
            assert err.state == before.value
            assert set(err.allowed) <= {a.value for a in TRANSITIONS[before]}
        else:
            assert state is TRANSITIONS[before][action]

"""Support plans, priorities and tickets (SLA-2, SLA-4, SLA-5, SLA-6; seed §7): response
deadlines on each clock across weekends, French public holidays and DST changes, the GTR,
auto-closure, named contacts and plan changes."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.support import (
    AUTO_CLOSE,
    PLANS,
    WORKING_DAY,
    Clock,
    DowngradeTooEarly,
    Impact,
    NamedContacts,
    Objective,
    Outcome,
    Plan,
    Priority,
    Subscription,
    auto_close_at,
    classify,
    open_ticket,
    plan_named,
    repair_due,
    response_due,
)
from actors.working_hours import WorkingHours
from runtime.errors import ConfigError, Conflict, InvalidRequest, InvalidTransition

PARIS = ZoneInfo("Europe/Paris")
UTC = dt.UTC
H = dt.timedelta(hours=1)
P1, P2, P3, P4 = Priority.P1, Priority.P2, Priority.P3, Priority.P4
BASIC, STANDARD, BUSINESS = PLANS["Basic"], PLANS["Standard"], PLANS["Business"]
EUROPE, PREMIUM, PLATINUM = PLANS["Business Europe"], PLANS["Premium"], PLANS["Platinum"]


def paris(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=PARIS)


def impact(kind: str = "loss", affected: float = 1.0, plane: str = "data", service: str = "ECS",
           stranded: bool = False) -> Impact:
    return Impact(service, plane, "eu-west-0a", kind, affected, paris(2026, 3, 2, 10), tenant_stranded=stranded)


# SLA-2: classification

@pytest.mark.parametrize(("case", "expected"), [
    (impact("loss", 0.6), P1),                                 # complete loss for more than 50% of users
    (impact("loss", 1.0, plane="api", service="ECS"), P1),     # the ECS API totally unavailable
    (impact("loss", 0.01, stranded=True), P1),                 # all of one tenant's instances and volumes, no new ones
    (impact("loss", 0.5), P2),                                 # exactly 50% is not "more than 50%"
    (impact("loss", 0.05), P2),                                # loss for 5 to 50%
    (impact("degraded", 1.0), P2),                             # cannot start new instances, existing ones run
    (impact("degraded", 0.05, plane="api", service="IAM"), P2),
    (impact("loss", 1 / 200), P3),                             # a hypervisor restart: less than 5%
    (impact("loss", 0.049), P3),
    (impact("degraded", 0.01), P3),                            # minor, e.g. cannot rename a VM
    (impact("loss", 0.0), P4),                                 # nobody affected: not an incident
])
def test_sla2_classification(case: Impact, expected: Priority) -> None:
    assert classify(case) == expected


def test_sla2_bad_impacts_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="fraction of users from 0 to 1"):
        impact(affected=1.5)
    with pytest.raises(InvalidRequest, match="plane 'control' is not valid; valid: api, data"):
        impact(plane="control")
    with pytest.raises(InvalidRequest, match="kind 'slow' is not valid; valid: loss, degraded"):
        impact(kind="slow")
    with pytest.raises(InvalidRequest, match="timezone-aware"):
        Impact("ECS", "api", "eu-west-0", "loss", 1.0, dt.datetime(2026, 3, 2))
    with pytest.raises(InvalidRequest, match="ends .* before it starts"):
        Impact("ECS", "api", "eu-west-0", "loss", 1.0, paris(2026, 3, 2, 10), paris(2026, 3, 2, 9))


def test_sla5_impact_names_its_api_only_on_the_api_plane() -> None:
    assert impact(plane="api", service="OBS").api == "OBS"
    assert impact(plane="data", service="OBS").api is None


# SLA-4: response objectives on each clock

def test_sla4_standard_p1_is_12_working_hours_across_a_weekend() -> None:
    """Friday 15:00: 4 h on Friday, 8 h on Monday."""
    assert response_due(STANDARD, P1, paris(2026, 11, 27, 15)) == paris(2026, 11, 30, 17)


def test_sla4_standard_working_day_across_armistice_day() -> None:
    """1 working day = 10 working hours; Wednesday 11 November 2026 is a public holiday."""
    assert WORKING_DAY == 10 * H
    assert response_due(STANDARD, P2, paris(2026, 11, 10, 15)) == paris(2026, 11, 12, 15)


def test_sla4_standard_working_day_across_the_spring_dst_change() -> None:
    """Friday 27 March 2026 14:00 CET + 10 working hours: Monday 30 March 14:00 CEST, 71 h later."""
    opened = paris(2026, 3, 27, 14)
    due = response_due(STANDARD, P3, opened)
    assert due == paris(2026, 3, 30, 14)
    assert due is not None and due - opened == 71 * H


def test_sla4_business_europe_p3_12_working_hours_across_may_day() -> None:
    """Thursday 30 April 2026 17:00: 2 h that day, Friday 1 May is a holiday, 10 h on Monday 4 May."""
    assert response_due(EUROPE, P3, paris(2026, 4, 30, 17)) == paris(2026, 5, 4, 19)


def test_sla4_business_p1_runs_24_7_but_p3_in_working_hours() -> None:
    """Friday 18:30: P1 due in 1 h of elapsed time, P3 in one working day (0.5 h Friday, 9.5 h Monday)."""
    opened = paris(2026, 11, 27, 18, 30)
    assert response_due(BUSINESS, P1, opened) == paris(2026, 11, 27, 19, 30)
    assert response_due(BUSINESS, P2, opened) == paris(2026, 11, 27, 20, 30)
    assert response_due(BUSINESS, P3, opened) == paris(2026, 11, 30, 18, 30)


def test_sla4_24_7_objectives_count_elapsed_time_across_dst_changes() -> None:
    """Spring: 01:30 CET + 1 h is 03:30 CEST. Autumn: Saturday 22:00 CEST + 8 h is 05:00 CET."""
    assert response_due(BUSINESS, P1, paris(2026, 3, 29, 1, 30)) == paris(2026, 3, 29, 3, 30)
    assert response_due(PREMIUM, P3, paris(2026, 10, 24, 22)) == paris(2026, 10, 25, 5)


def test_sla4_24_7_objectives_run_over_holidays_and_weekends() -> None:
    assert response_due(PREMIUM, P1, paris(2026, 11, 11, 12)) == paris(2026, 11, 11, 12, 15)
    assert response_due(EUROPE, P2, paris(2026, 5, 1, 23)) == paris(2026, 5, 2, 1)


def test_sla4_p4_only_for_premium_and_platinum_basic_has_none() -> None:
    opened = paris(2026, 3, 2, 10)
    assert response_due(PREMIUM, P4, opened) == opened + 24 * H
    assert response_due(PLATINUM, P4, opened) == opened + 24 * H  # Platinum: Premium's objectives (inferred)
    for plan in (BASIC, STANDARD, BUSINESS, EUROPE):
        assert response_due(plan, P4, opened) is None
    assert all(response_due(BASIC, p, opened) is None for p in Priority)


def test_sla4_the_plans_table() -> None:
    expected = {  # (P1, P2, P3, P4) durations; "wh": working hours
        "Standard": ((12, "wh"), (10, "wh"), (10, "wh"), None),
        "Business": ((1, "24/7"), (2, "24/7"), (10, "wh"), None),
        "Business Europe": ((1, "24/7"), (2, "24/7"), (12, "wh"), None),
        "Premium": ((0.25, "24/7"), (1, "24/7"), (8, "24/7"), (24, "24/7")),
    }
    for name, row in expected.items():
        for priority, cell in zip(Priority, row, strict=True):
            objective = PLANS[name].response.get(priority)
            if cell is None:
                assert objective is None
            else:
                clock = Clock.WORKING_HOURS if cell[1] == "wh" else Clock.ROUND_THE_CLOCK
                assert objective == Objective(cell[0] * H, clock), (name, priority)
    assert {n: p.named_contacts for n, p in PLANS.items()} == {
        "Basic": 0, "Standard": 2, "Business": 5, "Business Europe": 5, "Premium": None, "Platinum": None}


# SLA-5: the 4 h guaranteed restoration time

@pytest.mark.parametrize(("plan", "priority", "api", "gtr"), [
    (BUSINESS, P1, "ECS", True),
    (BUSINESS, P2, "OBS", True),
    (EUROPE, P1, "iam", True),
    (PREMIUM, P2, "RDS", True),
    (PLATINUM, P1, "MRS", True),
    (BUSINESS, P3, "ECS", False),       # P3: no GTR
    (BUSINESS, P1, None, False),        # a data-plane incident: no GTR
    (PREMIUM, P1, "AS", False),         # not one of the nine APIs
    (STANDARD, P1, "ECS", False),       # Standard has no GTR
    (BASIC, P1, "ECS", False),
])
def test_sla5_gtr_only_for_p1_p2_api_incidents_on_business_premium_europe(
        plan: Plan, priority: Priority, api: str | None, gtr: bool) -> None:
    opened = paris(2026, 11, 27, 18)  # a Friday evening: the GTR counts elapsed time
    due = repair_due(plan, priority, opened, api)
    assert due == (opened + 4 * H if gtr else None)


# SLA-6: tickets, auto-closure, named contacts

def contacts(plan: str = "Business", *names: str) -> NamedContacts:
    return NamedContacts("acme", PLANS[plan], frozenset(names or ("alice",)))


def test_sla6_auto_closure_after_5_working_days_across_a_holiday() -> None:
    """Resolved Thursday 5 November 2026 12:00; 50 working hours, skipping Armistice Day: Friday 13, 12:00."""
    assert AUTO_CLOSE == 50 * H
    assert auto_close_at(paris(2026, 11, 5, 12)) == paris(2026, 11, 13, 12)
    assert auto_close_at(paris(2026, 10, 1, 12)) == paris(2026, 10, 8, 12)  # no holiday: 5 working days


def test_sla4_sla5_sla6_a_ticket_through_its_life() -> None:
    t = open_ticket("T1", contacts(), "alice", P1, paris(2026, 3, 2, 10), incident="I1", api="ECS")
    assert (t.tenant, t.plan, t.incident, t.status) == ("acme", BUSINESS, "I1", "open")
    assert (t.response_due, t.repair_due) == (paris(2026, 3, 2, 11), paris(2026, 3, 2, 14))
    assert t.response_outcome() is Outcome.PENDING
    assert t.response_outcome(now=paris(2026, 3, 2, 11, 0, 1)) is Outcome.MISSED
    t = t.respond(paris(2026, 3, 2, 10, 40))
    assert t.response_outcome() is Outcome.MET
    t = t.resolve(paris(2026, 3, 2, 14, 0, 1))
    assert t.repair_outcome() is Outcome.MISSED
    assert t.resolved is not None
    t = t.close(auto_close_at(t.resolved))
    assert t.closed == paris(2026, 3, 9, 14, 0, 1)
    assert t.status == "closed"


def test_sla4_objectives_met_exactly_at_the_due_instant_and_none_without_objective() -> None:
    t = open_ticket("T2", contacts("Standard"), "alice", P1, paris(2026, 3, 2, 10))
    assert t.repair_due is None and t.repair_outcome() is Outcome.NO_OBJECTIVE
    assert t.respond(paris(2026, 3, 2, 22)).response_outcome() is Outcome.MET  # 12 working hours: Tue 12:00
    assert t.respond(paris(2026, 3, 3, 12)).response_outcome() is Outcome.MET
    assert t.respond(paris(2026, 3, 3, 12, 0, 1)).response_outcome() is Outcome.MISSED


def test_sla6_ticket_transitions_are_checked() -> None:
    t = open_ticket("T3", contacts(), "alice", P2, paris(2026, 3, 2, 10))
    with pytest.raises(InvalidTransition, match="cannot close ticket T3 in state open"):
        t.close(paris(2026, 3, 3, 10))
    with pytest.raises(InvalidRequest, match="before it was opened"):
        t.respond(paris(2026, 3, 2, 9))
    t = t.respond(paris(2026, 3, 2, 10, 30))
    with pytest.raises(InvalidTransition, match="allowed in this state: resolve"):
        t.respond(paris(2026, 3, 2, 11))
    t = t.resolve(paris(2026, 3, 2, 12))
    with pytest.raises(InvalidRequest, match="before it was resolved"):
        t.close(paris(2026, 3, 2, 11))


def test_sla6_named_contact_limits() -> None:
    assert len(contacts("Standard", "a", "b").names) == 2
    with pytest.raises(InvalidRequest, match="plan Standard allows at most 2 named contacts"):
        contacts("Standard", "a", "b", "c")
    assert len(contacts("Business", *"abcde").names) == 5
    with pytest.raises(InvalidRequest, match="plan Business allows at most 5 named contacts, tenant acme named 6"):
        contacts("Business", *"abcdef")
    with pytest.raises(InvalidRequest, match="at most 5"):
        contacts("Business Europe", *"abcdef")
    assert len(contacts("Premium", *(f"p{i}" for i in range(100))).names) == 100  # unlimited
    with pytest.raises(InvalidRequest, match="Basic includes no technical support"):
        contacts("Basic", "a")


def test_sla6_only_a_named_contact_opens_a_ticket() -> None:
    with pytest.raises(InvalidRequest, match="'mallory' is not a named contact of tenant acme"):
        open_ticket("T4", contacts("Business", "alice", "bob"), "mallory", P1, paris(2026, 3, 2, 10))
    with pytest.raises(InvalidRequest, match="not a named contact"):
        open_ticket("T5", NamedContacts("acme", BASIC, frozenset()), "alice", P1, paris(2026, 3, 2, 10))


# SLA-6: plan subscription and changes

def test_sla6_a_downgrade_inside_the_minimum_is_refused_with_the_date_it_is_allowed() -> None:
    sub = Subscription.start("acme", BUSINESS, dt.date(2026, 1, 1))
    with pytest.raises(DowngradeTooEarly, match="can be requested from 2026-07-01") as info:
        sub.change(STANDARD, paris(2026, 6, 30, 23, 59))
    assert info.value.allowed_from == dt.date(2026, 7, 1)
    later = sub.change(STANDARD, paris(2026, 7, 1, 0, 0))
    assert later.plan_on(dt.date(2026, 7, 31)) == BUSINESS
    assert later.plan_on(dt.date(2026, 8, 1)) == STANDARD


def test_sla6_an_upgrade_takes_effect_next_month_and_restarts_the_minimum() -> None:
    sub = Subscription.start("acme", BUSINESS, dt.date(2026, 1, 1)).change(PREMIUM, paris(2026, 3, 15, 10))
    assert sub.plan_on(dt.date(2026, 3, 31)) == BUSINESS
    assert sub.plan_on(dt.date(2026, 4, 1)) == PREMIUM
    with pytest.raises(DowngradeTooEarly) as info:
        sub.change(BUSINESS, paris(2026, 7, 15, 10))  # past Business's minimum, inside Premium's
    assert info.value.allowed_from == dt.date(2026, 10, 1)
    assert sub.change(BUSINESS, paris(2026, 10, 1, 10)).latest.since == dt.date(2026, 11, 1)


def test_sla6_the_first_of_the_month_is_the_provider_s_calendar() -> None:
    """23:30 on 31 March in Paris is still March (effective 1 April); 00:30 on 1 April is April (1 May)."""
    sub = Subscription.start("acme", STANDARD, dt.date(2026, 1, 1))
    assert sub.change(BUSINESS, dt.datetime(2026, 3, 31, 21, 30, tzinfo=UTC)).latest.since == dt.date(2026, 4, 1)
    assert sub.change(BUSINESS, dt.datetime(2026, 3, 31, 22, 30, tzinfo=UTC)).latest.since == dt.date(2026, 5, 1)


def test_sla6_pending_same_and_unknown_plan_changes_are_refused() -> None:
    sub = Subscription.start("acme", STANDARD, dt.date(2026, 1, 1))
    pending = sub.change(BUSINESS, paris(2026, 3, 15, 10))
    with pytest.raises(Conflict, match="already has a change to Business pending from 2026-04-01"):
        pending.change(PREMIUM, paris(2026, 3, 20, 10))
    with pytest.raises(InvalidRequest, match="already on plan Standard"):
        sub.change(STANDARD, paris(2026, 3, 15, 10))
    with pytest.raises(InvalidRequest, match="no support plan before 2026-01-01"):
        sub.plan_on(dt.date(2025, 12, 31))


def test_sla6_plan_names() -> None:
    assert plan_named("business_europe") == EUROPE
    assert plan_named("PREMIUM") == PREMIUM
    with pytest.raises(ConfigError, match=r"tenants\[0\].support.plan: unknown support plan 'Gold' \(valid: Basic, "
                                          r"Standard, Business, Business Europe, Premium, Platinum\)"):
        plan_named("Gold", "tenants[0].support.plan")


# Properties

instants = st.datetimes(dt.datetime(2025, 1, 1), dt.datetime(2028, 12, 31), timezones=st.just(UTC))


@given(opened=instants, minutes=st.integers(0, 60 * 100))
def test_sla3_sla4_a_working_hours_deadline_is_never_earlier_than_the_24_7_one(opened: dt.datetime,
                                                                               minutes: int) -> None:
    d = dt.timedelta(minutes=minutes)
    assert Objective(d, Clock.WORKING_HOURS).due(opened) >= Objective(d, Clock.ROUND_THE_CLOCK).due(opened)


@given(opened=instants, priority=st.sampled_from(Priority))
def test_sla4_faster_plans_never_answer_later(opened: dt.datetime, priority: Priority) -> None:
    """Premium's deadline is never later than Business's, nor Business's than Standard's (when both have one)."""
    ladder = [response_due(p, priority, opened) for p in (PREMIUM, BUSINESS, STANDARD)]
    known = [d for d in ladder if d is not None]
    assert known == sorted(known)
    assert all(d >= opened for d in known)


def test_sla3_custom_working_hours_are_honoured() -> None:
    """Friday 17:00 + 12 working hours: Monday 19:00 with 09:00-19:00, Tuesday 09:00 with 08:00-18:00."""
    eight_to_six = WorkingHours(opens=dt.time(8), closes=dt.time(18))
    assert response_due(STANDARD, P1, paris(2026, 11, 27, 17)) == paris(2026, 11, 30, 19)
    assert response_due(STANDARD, P1, paris(2026, 11, 27, 17), eight_to_six) == paris(2026, 12, 1, 9)

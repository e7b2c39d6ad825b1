"""The support desk model (SLA-3, SLA-4): staff in working hours, on-call engineers outside
them for 24/7 objectives only, most urgent first, deterministic for a seed."""

from __future__ import annotations

import datetime as dt
import random
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.support import PLANS, NamedContacts, Priority, Ticket, open_ticket
from actors.topology import DEFAULTS
from actors.working_hours import WorkingHours
from runtime.errors import ConfigError
from sim.support_desk import DeskSettings, respond

PARIS = ZoneInfo("Europe/Paris")
MEAN = 900.0


def paris(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=PARIS)


def ticket(ident: str, opened: dt.datetime, priority: Priority = Priority.P1, plan: str = "Business") -> Ticket:
    contacts = NamedContacts(f"tenant-{ident}", PLANS[plan], frozenset({"ops"}))
    return open_ticket(ident, contacts, "ops", priority, opened)


def draws(seed: int, n: int) -> list[dt.timedelta]:
    """The response times the desk draws, in the order it takes tickets."""
    rng = random.Random(seed)
    return [dt.timedelta(seconds=rng.expovariate(1 / MEAN)) for _ in range(n)]


def desk(staff: int = 4, on_call: int = 1) -> DeskSettings:
    return DeskSettings(staff=staff, on_call=on_call, response_mean_s=MEAN)


def test_sla4_one_ticket_in_working_hours_is_answered_after_one_draw() -> None:
    opened = paris(2026, 3, 3, 10)
    (t,) = respond([ticket("a", opened)], desk(), seed=7)
    assert t.responded == opened + draws(7, 1)[0]


def test_sla4_p1_is_answered_before_p3() -> None:
    """One engineer; a P3 opened first and a P1 at the same instant: the P1 is taken first."""
    opened = paris(2026, 3, 3, 10)
    p3, p1 = respond([ticket("p3", opened, Priority.P3), ticket("p1", opened, Priority.P1)], desk(staff=1), seed=3)
    first, second = draws(3, 2)
    assert p1.responded == opened + first
    assert p3.responded == opened + first + second


def test_sla4_a_busy_engineer_takes_the_most_urgent_waiting_ticket_next() -> None:
    """While the only engineer answers A, a P3 then a P2 arrive: the P2 goes before the P3."""
    opened = paris(2026, 3, 3, 10)
    d = draws(5, 3)
    tickets = [ticket("A", opened, Priority.P3), ticket("late-p3", opened + d[0] / 3, Priority.P3),
               ticket("p2", opened + d[0] / 2, Priority.P2)]
    a, late_p3, p2 = respond(tickets, desk(staff=1), seed=5)
    assert a.responded == opened + d[0]
    assert p2.responded == opened + d[0] + d[1]
    assert late_p3.responded == opened + d[0] + d[1] + d[2]


def test_sla3_sla4_outside_working_hours_24_7_tickets_go_to_on_call_others_wait_for_the_opening() -> None:
    """Saturday 28 November 2026 10:00: Business P1 (24/7) is taken by the on-call engineer at once;
    Business P3 (working hours) waits for Monday 30 November 09:00."""
    saturday = paris(2026, 11, 28, 10)
    p1, p3 = respond([ticket("p1", saturday, Priority.P1), ticket("p3", saturday, Priority.P3)], desk(), seed=11)
    first, second = draws(11, 2)
    assert p1.responded == saturday + first
    assert p3.responded == paris(2026, 11, 30, 9) + second


def test_sla3_without_on_call_even_24_7_tickets_wait_and_holidays_are_closed() -> None:
    """Armistice Day (Wednesday 11 November 2026) 12:00, no on-call engineer: Thursday 09:00."""
    (t,) = respond([ticket("p1", paris(2026, 11, 11, 12))], desk(on_call=0), seed=2)
    assert t.responded == paris(2026, 11, 12, 9) + draws(2, 1)[0]


def test_sla3_working_hours_tickets_wait_across_the_autumn_dst_change() -> None:
    """Standard P1 opened Friday 23 October 2026 20:00 CEST: taken Monday 26 October 09:00 CET (08:00 UTC)."""
    (t,) = respond([ticket("s", paris(2026, 10, 23, 20), plan="Standard")], desk(), seed=4)
    assert t.responded == dt.datetime(2026, 10, 26, 8, tzinfo=dt.UTC) + draws(4, 1)[0]


def test_sla4_the_desk_is_deterministic_for_a_seed() -> None:
    start = paris(2026, 3, 2, 8)
    tickets = [ticket(f"t{i}", start + dt.timedelta(minutes=37 * i), Priority((i % 4) + 1),
                      ("Standard", "Business", "Premium")[i % 3]) for i in range(60)]
    once = respond(tickets, desk(staff=2), seed=42)
    assert once == respond(tickets, desk(staff=2), seed=42)
    assert once != respond(tickets, desk(staff=2), seed=43)
    assert [t.id for t in once] == [t.id for t in tickets]


def test_sla4_tickets_already_answered_are_left_alone() -> None:
    done = ticket("done", paris(2026, 3, 3, 10)).respond(paris(2026, 3, 3, 10, 5))
    fresh = ticket("fresh", paris(2026, 3, 3, 10))
    same, answered = respond([done, fresh], desk(staff=1), seed=1)
    assert same == done
    assert answered.responded == fresh.opened + draws(1, 1)[0]  # the engineer was free
    assert respond([], desk(), seed=1) == ()


def test_desk_settings_defaults_and_errors() -> None:
    assert DeskSettings() == DeskSettings(**DEFAULTS["support"])
    assert DeskSettings.from_table({"staff": 2}) == DeskSettings(staff=2)
    with pytest.raises(ConfigError, match=r"scenario.toml: support.engineers: unknown key \(valid: staff, on_call, "
                                          r"response_mean_s\)"):
        DeskSettings.from_table({"engineers": 3}, "scenario.toml: support")
    with pytest.raises(ConfigError, match="support.staff: must be a whole number >= 1, got 0"):
        DeskSettings.from_table({"staff": 0})
    with pytest.raises(ConfigError, match="support.on_call: must be a whole number >= 0, got -1"):
        DeskSettings(on_call=-1)
    with pytest.raises(ConfigError, match="support.response_mean_s: must be a number of seconds > 0, got 0"):
        DeskSettings.from_table({"response_mean_s": 0})


instants = st.datetimes(dt.datetime(2026, 1, 1), dt.datetime(2026, 12, 31), timezones=st.just(dt.UTC))


@given(opened=st.lists(st.tuples(instants, st.sampled_from(Priority),
                                 st.sampled_from(("Standard", "Business", "Business Europe", "Premium"))),
                       min_size=1, max_size=25),
       seed=st.integers(0, 2**32))
def test_sla3_sla4_no_ticket_is_answered_before_the_desk_may_take_it(
        opened: list[tuple[dt.datetime, Priority, str]], seed: int) -> None:
    """Every ticket is answered, after it was opened; a ticket with a working-hours objective (or
    none) is answered only after the next opening of the desk."""
    tickets = [ticket(str(i), at, priority, plan) for i, (at, priority, plan) in enumerate(opened)]
    hours = WorkingHours()
    for t in respond(tickets, desk(staff=2), seed=seed):
        assert t.responded is not None and t.responded > t.opened
        objective = t.plan.response.get(t.priority)
        if objective is None or objective.clock.value == "working hours":
            assert t.responded > hours.add(t.opened, dt.timedelta(0))

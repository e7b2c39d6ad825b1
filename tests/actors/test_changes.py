"""The change calendar (SLA-7; seed §7.7.5, §7.7.7): notice periods per kind of change, the
3-hour monthly budget of urgent interruptions per service, and the maintenance intervals
that are not downtime (seed §7.7.3.3 "scheduled activity")."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.changes import Change, ChangeCalendar, NoticeTooShort, UrgentBudgetExceeded
from runtime.errors import Conflict, InvalidRequest

PARIS = ZoneInfo("Europe/Paris")
UTC = dt.UTC
H = dt.timedelta(hours=1)
S = dt.timedelta(seconds=1)


def paris(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=PARIS)


def change(kind: str, start: dt.datetime, announced: dt.datetime | None = None, interruption: dt.timedelta = H,
           service: str = "ECS", ident: str | None = None) -> Change:
    ident = ident or f"{kind}/{service}@{start.isoformat()}"
    return Change(ident, kind, service, announced or start, start, interruption)


@pytest.mark.parametrize("kind", ["code-release", "corrective-maintenance"])
def test_sla7_minor_releases_and_corrective_maintenance_need_24_hours(kind: str) -> None:
    announced = paris(2026, 3, 2, 10)
    cal = ChangeCalendar()
    with pytest.raises(NoticeTooShort, match=r"needs 24 hours of notice; the earliest allowed start is "
                                             r"2026-03-03T10:00:00\+01:00") as info:
        cal.submit(change(kind, announced + 24 * H - S, announced))
    assert info.value.earliest_start == announced + 24 * H
    assert cal.changes() == ()
    cal.submit(change(kind, announced + 24 * H, announced))
    assert len(cal.changes()) == 1


def test_sla7_a_major_release_needs_10_working_days_across_armistice_day() -> None:
    """Announced Friday 30 October 2026 10:00: 9 h that day, then Monday 2 to Friday 13 November without
    Wednesday 11 (89 h), and 1 h on Monday 16: 10:00."""
    announced = paris(2026, 10, 30, 10)
    cal = ChangeCalendar()
    with pytest.raises(NoticeTooShort, match="it needs 10 working days of notice") as info:
        cal.submit(change("major-release", paris(2026, 11, 16, 9, 59, 59), announced))
    assert info.value.earliest_start == paris(2026, 11, 16, 10)
    cal.submit(change("major-release", paris(2026, 11, 16, 10), announced))


def test_sla7_an_incompatible_api_change_needs_60_days() -> None:
    announced = dt.datetime(2026, 1, 10, 12, tzinfo=UTC)
    cal = ChangeCalendar()
    with pytest.raises(NoticeTooShort, match="60 days of notice") as info:
        cal.submit(change("incompatible-api", dt.datetime(2026, 3, 11, 11, 59, 59, tzinfo=UTC), announced))
    assert info.value.earliest_start == dt.datetime(2026, 3, 11, 12, tzinfo=UTC)
    cal.submit(change("incompatible-api", dt.datetime(2026, 3, 11, 12, tzinfo=UTC), announced))


def test_sla7_urgent_and_standard_changes_need_no_notice_but_cannot_start_before_their_announcement() -> None:
    cal = ChangeCalendar()
    cal.submit(change("urgent", paris(2026, 3, 2, 10)))
    cal.submit(change("standard", paris(2026, 3, 2, 10), interruption=dt.timedelta(0)))
    with pytest.raises(NoticeTooShort, match="earliest allowed start is 2026-03-02T10:00:00\\+01:00"):
        cal.submit(change("urgent", paris(2026, 3, 2, 9), announced=paris(2026, 3, 2, 10)))


def test_sla7_bad_changes_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="a standard change has no impact on production"):
        change("standard", paris(2026, 3, 2, 10), interruption=H)
    with pytest.raises(InvalidRequest, match="change kind 'hotfix' is not valid; valid: urgent, code-release"):
        change("hotfix", paris(2026, 3, 2, 10))
    with pytest.raises(InvalidRequest, match="interruption cannot be negative"):
        change("urgent", paris(2026, 3, 2, 10), interruption=-H)
    with pytest.raises(InvalidRequest, match="timezone-aware"):
        change("urgent", dt.datetime(2026, 3, 2, 10))
    cal = ChangeCalendar()
    cal.submit(change("urgent", paris(2026, 3, 2, 10), ident="C1"))
    with pytest.raises(Conflict, match="change C1 is already in the calendar"):
        cal.submit(change("urgent", paris(2026, 3, 9, 10), ident="C1"))


def test_sla7_urgent_budget_3_hours_exactly_accepted_one_second_more_refused_next_month_fresh() -> None:
    cal = ChangeCalendar()
    cal.submit(change("urgent", paris(2026, 3, 3, 2), interruption=2 * H))
    cal.submit(change("urgent", paris(2026, 3, 10, 2), interruption=1 * H))
    assert cal.urgent_used("ECS", 2026, 3) == 3 * H
    with pytest.raises(UrgentBudgetExceeded, match="ECS has used 3:00:00 of its 3:00:00 of urgent interruptions "
                                                   "in 2026-03, 0:00:00 left, and the change needs 0:00:01") as info:
        cal.submit(change("urgent", paris(2026, 3, 20, 2), interruption=S))
    assert (info.value.service, info.value.month, info.value.used, info.value.left) == ("ECS", "2026-03", 3 * H, 0 * H)
    assert len(cal.changes()) == 2  # the refused change left nothing behind
    cal.submit(change("urgent", paris(2026, 4, 1, 0), interruption=3 * H))  # April: a fresh budget
    cal.submit(change("urgent", paris(2026, 3, 20, 2), interruption=3 * H, service="EVS"))  # per service
    cal.submit(change("code-release", paris(2026, 3, 25, 2), paris(2026, 3, 20), interruption=5 * H))  # not urgent


def test_sla7_an_urgent_change_across_midnight_on_the_first_counts_in_both_months() -> None:
    """31 March 2026 23:00 CEST for 2 h: 1 h in March, 1 h in April (the provider's calendar)."""
    cal = ChangeCalendar()
    cal.submit(change("urgent", paris(2026, 3, 5, 2), interruption=2 * H + 30 * dt.timedelta(minutes=1)))
    with pytest.raises(UrgentBudgetExceeded, match="in 2026-03, 0:30:00 left, and the change needs 1:00:00"):
        cal.submit(change("urgent", paris(2026, 3, 31, 23), interruption=2 * H))
    cal.submit(change("urgent", paris(2026, 3, 31, 23, 30), interruption=2 * H))
    assert cal.urgent_used("ECS", 2026, 3) == 3 * H
    assert cal.urgent_used("ECS", 2026, 4) == 1.5 * H
    cal.submit(change("urgent", dt.datetime(2026, 4, 30, 22, 30, tzinfo=UTC), interruption=2 * H))  # 1 May in Paris
    assert cal.urgent_used("ECS", 2026, 5) == 2 * H


def test_sla7_sla1_maintenance_intervals_per_service() -> None:
    cal = ChangeCalendar()
    cal.submit(change("urgent", paris(2026, 3, 3, 2), interruption=1 * H))
    cal.submit(change("urgent", paris(2026, 3, 3, 2, 30), interruption=1 * H))  # overlaps: merged
    cal.submit(change("code-release", paris(2026, 3, 10, 2), paris(2026, 3, 1), interruption=2 * H))
    cal.submit(change("urgent", paris(2026, 3, 3, 2), interruption=1 * H, service="OBS"))
    cal.submit(change("standard", paris(2026, 3, 4, 2), interruption=0 * H))  # interrupts nothing
    assert cal.maintenance("ECS") == [(paris(2026, 3, 3, 2), paris(2026, 3, 3, 3, 30)),
                                      (paris(2026, 3, 10, 2), paris(2026, 3, 10, 4))]
    assert cal.maintenance("VPC") == []
    assert cal.maintenance_within("ECS", paris(2026, 3, 3, 3), paris(2026, 3, 10, 3)) == 1.5 * H
    assert [c.service for c in cal.changes("OBS")] == ["OBS"]


@given(cuts=st.lists(st.integers(1, 3 * 3600), min_size=1, max_size=8))
def test_sla7_the_urgent_budget_is_never_exceeded(cuts: list[int]) -> None:
    """Whatever urgent changes are submitted, what the calendar accepts in a month stays within 3 h,
    and a change is refused only when it would have gone over."""
    cal = ChangeCalendar()
    for i, seconds in enumerate(cuts):
        before = cal.urgent_used("ECS", 2026, 3)
        try:
            cal.submit(change("urgent", paris(2026, 3, 2 + i, 2), interruption=dt.timedelta(seconds=seconds)))
        except UrgentBudgetExceeded:
            assert before + dt.timedelta(seconds=seconds) > 3 * H
        assert cal.urgent_used("ECS", 2026, 3) <= 3 * H

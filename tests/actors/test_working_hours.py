"""Working time for support objectives (SLA-3..6): 09:00-19:00 Europe/Paris, Monday to
Friday, without French public holidays, across daylight saving time changes."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.working_hours import WorkingHours

PARIS = ZoneInfo("Europe/Paris")
H = dt.timedelta(hours=1)
WH = WorkingHours()


def paris(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=PARIS)


def test_sla_deadline_within_one_day() -> None:
    assert WH.add(paris(2026, 11, 26, 10, 0), 4 * H) == paris(2026, 11, 26, 14, 0)


def test_sla_deadline_across_a_weekend() -> None:
    """Friday 17:00 + 4 working hours: 2 h on Friday, 2 h on Monday."""
    assert WH.add(paris(2026, 11, 27, 17, 0), 4 * H) == paris(2026, 11, 30, 11, 0)


def test_sla_a_ticket_opened_at_night_starts_counting_at_opening() -> None:
    assert WH.add(paris(2026, 11, 26, 22, 30), 1 * H) == paris(2026, 11, 27, 10, 0)
    assert WH.add(paris(2026, 11, 28, 12, 0), 1 * H) == paris(2026, 11, 30, 10, 0)  # a Saturday


def test_sla_deadline_across_a_french_public_holiday() -> None:
    """Armistice Day, Wednesday 11 November 2026, is not a working day."""
    assert not WH.is_working_day(dt.date(2026, 11, 11))
    assert WH.add(paris(2026, 11, 10, 18, 0), 3 * H) == paris(2026, 11, 12, 11, 0)


def test_sla_deadline_across_the_spring_dst_change() -> None:
    """Friday 27 March 2026 18:00 CET (UTC+1) + 4 h: 1 h on Friday, 3 h on Monday 30 March,
    now CEST (UTC+2): 12:00 local, 10:00 UTC: 65 h of wall time, not 66."""
    start = paris(2026, 3, 27, 18, 0)
    due = WH.add(start, 4 * H)
    assert due == paris(2026, 3, 30, 12, 0)
    assert due.astimezone(dt.UTC) == dt.datetime(2026, 3, 30, 10, 0, tzinfo=dt.UTC)
    assert due.astimezone(dt.UTC) - start.astimezone(dt.UTC) == 65 * H


def test_sla_deadline_across_the_autumn_dst_change() -> None:
    """Friday 23 October 2026 18:30 CEST + 2 h: Monday 26 October 10:30 CET (09:30 UTC)."""
    due = WH.add(paris(2026, 10, 23, 18, 30), 2 * H)
    assert due == paris(2026, 10, 26, 10, 30)
    assert due.astimezone(dt.UTC) == dt.datetime(2026, 10, 26, 9, 30, tzinfo=dt.UTC)


def test_sla_between_counts_only_working_time() -> None:
    assert WH.between(paris(2026, 11, 27, 17, 0), paris(2026, 11, 30, 11, 0)) == 4 * H
    assert WH.between(paris(2026, 11, 30, 11, 0), paris(2026, 11, 27, 17, 0)) == dt.timedelta(0)


def test_sla_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        WH.add(dt.datetime(2026, 11, 26, 10, 0), H)
    with pytest.raises(ValueError, match="negative"):
        WH.add(paris(2026, 11, 26, 10, 0), -H)
    with pytest.raises(ValueError, match="open before"):
        WorkingHours(opens=dt.time(19), closes=dt.time(9))


instants = st.datetimes(dt.datetime(2025, 1, 1), dt.datetime(2028, 12, 31), timezones=st.just(dt.UTC))


@given(start=instants, minutes=st.integers(0, 60 * 200))
def test_sla_add_is_the_inverse_of_between(start: dt.datetime, minutes: int) -> None:
    """The deadline is the first instant at which exactly that much working time has passed."""
    duration = dt.timedelta(minutes=minutes)
    due = WH.add(start, duration)
    assert WH.between(start, due) == duration
    if minutes:
        assert WH.between(start, due - dt.timedelta(seconds=1)) < duration

"""The provider's change calendar (SPEC SLA-7; seed §7.7.5, §7.7.7 and its "notification of
change" table).

A change is announced to customers, then starts and may interrupt one service. The calendar
accepts a change only when:
- it was announced early enough for its kind (`NOTICE`): a normal code release or a non-urgent
  corrective maintenance 24 h ahead, a major code release 10 working days ahead, an
  incompatible API change 60 days (60 x 24 h) ahead; an urgent change "as soon as possible"
  and a standard change without notice, both no later than their start;
- for an urgent change, the service's urgent interruptions stay within 3 hours per calendar
  month (provider's time zone); an interruption across midnight on the 1st counts in both
  months, each its own part;
- a standard change interrupts nothing (seed: "technical tasks with no impact on production").

Accepted changes are the announced, scheduled activity the seed excludes from downtime
(§7.7.3.3 "Not covered": "any platform shutdown caused by a scheduled activity, such as
maintenance"); `maintenance` gives their interruption intervals per service, urgent ones
included since they stay inside the interruption the change table allows.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterator, Mapping

import attrs

from actors.support import WORKING_DAY, WORKING_HOURS, Clock, Objective
from actors.working_hours import UTC, WorkingHours
from runtime.errors import Conflict, InvalidRequest

URGENT_BUDGET = dt.timedelta(hours=3)
"""SLA-7: urgent changes interrupt a service at most 3 hours per calendar month."""


class ChangeKind(enum.StrEnum):
    """The kinds of the seed's change table; the values are what config files write."""

    URGENT = "urgent"                                  # urgent code release or corrective maintenance
    CODE_RELEASE = "code-release"                      # normal (minor) code release
    MAJOR_RELEASE = "major-release"                    # major code release
    CORRECTIVE_MAINTENANCE = "corrective-maintenance"  # non-urgent corrective maintenance
    INCOMPATIBLE_API = "incompatible-api"              # an API version incompatible with the previous one
    STANDARD = "standard"                              # pre-approved, no impact on production


_NOW = Objective(dt.timedelta(0), Clock.ROUND_THE_CLOCK)
NOTICE: Mapping[ChangeKind, Objective] = {
    ChangeKind.URGENT: _NOW,
    ChangeKind.CODE_RELEASE: Objective(dt.timedelta(hours=24), Clock.ROUND_THE_CLOCK),
    ChangeKind.MAJOR_RELEASE: Objective(10 * WORKING_DAY, Clock.WORKING_HOURS),
    ChangeKind.CORRECTIVE_MAINTENANCE: Objective(dt.timedelta(hours=24), Clock.ROUND_THE_CLOCK),
    ChangeKind.INCOMPATIBLE_API: Objective(dt.timedelta(days=60), Clock.ROUND_THE_CLOCK),
    ChangeKind.STANDARD: _NOW,
}
"""SLA-7: the least time between a change's announcement and its start, by kind."""


def _change_kind(value: str) -> ChangeKind:
    try:
        return ChangeKind(value)
    except ValueError:
        raise InvalidRequest(f"change kind {value!r} is not valid; valid: "
                             f"{', '.join(k.value for k in ChangeKind)}") from None


@attrs.frozen
class Change:
    id: str
    kind: ChangeKind = attrs.field(converter=_change_kind)
    service: str
    announced: dt.datetime
    start: dt.datetime
    interruption: dt.timedelta = dt.timedelta(0)  # how long the service is down from `start`

    def __attrs_post_init__(self) -> None:
        for name in ("announced", "start"):
            value: dt.datetime = getattr(self, name)
            if value.tzinfo is None:
                raise InvalidRequest(f"change {self.id}: {name} must be a timezone-aware datetime, "
                                     f"got {value.isoformat()}")
        if self.interruption < dt.timedelta(0):
            raise InvalidRequest(f"change {self.id}: interruption cannot be negative, got {self.interruption}")
        if self.kind is ChangeKind.STANDARD and self.interruption:
            raise InvalidRequest(f"change {self.id}: a standard change has no impact on production, so no "
                                 f"interruption; an interrupting change is urgent or normal")

    @property
    def end(self) -> dt.datetime:
        return self.start + self.interruption


class NoticeTooShort(InvalidRequest):
    """SLA-7: the change was announced too late for its start."""

    def __init__(self, change: Change, notice: Objective, earliest_start: dt.datetime) -> None:
        earliest_start = earliest_start.astimezone(change.announced.tzinfo)
        self.change, self.notice, self.earliest_start = change, notice, earliest_start
        super().__init__(f"change {change.id} ({change.kind}) on {change.service} announced at "
                         f"{change.announced.isoformat()} cannot start at {change.start.isoformat()}: it needs "
                         f"{_describe(notice)}; the earliest allowed start is {earliest_start.isoformat()}")


def _describe(notice: Objective) -> str:
    if not notice.duration:
        return "to be announced no later than it starts"
    if notice.clock is Clock.WORKING_HOURS:
        return f"{notice.duration / WORKING_DAY:g} working days of notice"
    hours = notice.duration / dt.timedelta(hours=1)
    return f"{hours / 24:g} days of notice" if hours > 48 else f"{hours:g} hours of notice"


class UrgentBudgetExceeded(InvalidRequest):
    """SLA-7: the urgent change would interrupt its service more than 3 hours in a calendar month."""

    def __init__(self, change: Change, month: str, used: dt.timedelta, requested: dt.timedelta) -> None:
        self.change, self.service, self.month = change, change.service, month
        self.used, self.left, self.requested = used, URGENT_BUDGET - used, requested
        super().__init__(f"urgent change {change.id} refused: {change.service} has used {used} of its "
                         f"{URGENT_BUDGET} of urgent interruptions in {month}, {self.left} left, and the "
                         f"change needs {requested} that month; shorten it or plan it as a normal change")


@attrs.define
class ChangeCalendar:
    """The accepted changes (SLA-7); `submit` refuses what the rules forbid and changes nothing then."""

    hours: WorkingHours = WORKING_HOURS
    _changes: list[Change] = attrs.field(factory=list)

    def submit(self, change: Change) -> Change:
        if any(c.id == change.id for c in self._changes):
            raise Conflict(f"change {change.id} is already in the calendar; give the new change another id")
        notice = NOTICE[change.kind]
        earliest = notice.due(change.announced, self.hours)
        if change.start < earliest:
            raise NoticeTooShort(change, notice, earliest)
        if change.kind is ChangeKind.URGENT:
            for (year, month), spent in self._months(change.start, change.end):
                used = self.urgent_used(change.service, year, month)
                if used + spent > URGENT_BUDGET:
                    raise UrgentBudgetExceeded(change, f"{year:04d}-{month:02d}", used, spent)
        self._changes.append(change)
        return change

    def changes(self, service: str | None = None) -> tuple[Change, ...]:
        """Accepted changes (of one service, or all), by start."""
        return tuple(sorted((c for c in self._changes if service in (None, c.service)),
                            key=lambda c: (c.start, c.id)))

    def urgent_used(self, service: str, year: int, month: int) -> dt.timedelta:
        """Urgent interruption of `service` accepted in that calendar month (provider's time zone)."""
        total = dt.timedelta(0)
        for c in self._changes:
            if c.kind is ChangeKind.URGENT and c.service == service:
                total += sum((d for m, d in self._months(c.start, c.end) if m == (year, month)), dt.timedelta(0))
        return total

    def maintenance(self, service: str) -> list[tuple[dt.datetime, dt.datetime]]:
        """The service's interruptions by accepted changes, merged, by start (UTC): not downtime."""
        merged: list[tuple[dt.datetime, dt.datetime]] = []
        for c in self.changes(service):
            if not c.interruption:
                continue
            start, end = c.start.astimezone(UTC), c.end.astimezone(UTC)
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        return merged

    def maintenance_within(self, service: str, start: dt.datetime, end: dt.datetime) -> dt.timedelta:
        """How much of [start, end) the service spends in accepted changes' interruptions."""
        return sum((max(dt.timedelta(0), min(end, b) - max(start, a)) for a, b in self.maintenance(service)),
                   dt.timedelta(0))

    def _months(self, start: dt.datetime, end: dt.datetime) -> Iterator[tuple[tuple[int, int], dt.timedelta]]:
        """[start, end) cut at the first instant of each calendar month, with each part's length."""
        zone = self.hours.zone
        local = start.astimezone(zone)
        year, month = local.year, local.month
        cursor = start.astimezone(UTC)
        stop = end.astimezone(UTC)
        while True:
            nxt_year, nxt_month = (year + 1, 1) if month == 12 else (year, month + 1)
            boundary = dt.datetime(nxt_year, nxt_month, 1, tzinfo=zone).astimezone(UTC)
            part_end = min(stop, boundary)
            yield (year, month), max(dt.timedelta(0), part_end - cursor)
            if stop <= boundary:
                return
            cursor, year, month = boundary, nxt_year, nxt_month

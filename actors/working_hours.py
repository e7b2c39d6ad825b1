"""Working time (SPEC SLA-3..6, TEN-4): the clock support objectives run on.

An objective "in working hours" only counts time between `opens` and `closes` on a
working day (Monday to Friday, not a public holiday of the provider's country), in the
provider's time zone; it stops over nights, weekends and holidays. Daylight saving time
is the zone's (zoneinfo), so a deadline falls at the right local hour on either side of
a change. Defaults: actors/defaults.toml [working_hours].

Invariant: `add(t, d)` is the earliest instant `u` with `between(t, u) == d`.
"""

from __future__ import annotations

import datetime as dt
import functools
from zoneinfo import ZoneInfo

import attrs
import holidays

from actors.topology import DEFAULTS

UTC = dt.UTC
_W = DEFAULTS["working_hours"]


@functools.cache
def _public_holidays(country: str) -> holidays.HolidayBase:
    return holidays.country_holidays(country)


@attrs.frozen
class WorkingHours:
    timezone: str = _W["timezone"]
    opens: dt.time = dt.time.fromisoformat(_W["opens"])
    closes: dt.time = dt.time.fromisoformat(_W["closes"])
    country: str = _W["holidays"]

    def __attrs_post_init__(self) -> None:
        if self.opens >= self.closes:
            raise ValueError(f"working hours must open before they close, got {self.opens}-{self.closes}")
        ZoneInfo(self.timezone)  # an unknown zone fails here, not at the first deadline

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def is_working_day(self, day: dt.date) -> bool:
        return day.weekday() < 5 and day not in _public_holidays(self.country)

    def _window(self, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
        """The day's working window as UTC instants (its local hours, whatever the offset that day)."""
        zone = self.zone
        return (dt.datetime.combine(day, self.opens, zone).astimezone(UTC),
                dt.datetime.combine(day, self.closes, zone).astimezone(UTC))

    def add(self, start: dt.datetime, duration: dt.timedelta) -> dt.datetime:
        """The instant when `duration` of working time has passed since `start` (aware)."""
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if duration < dt.timedelta(0):
            raise ValueError(f"a duration of working time cannot be negative, got {duration}")
        now = start.astimezone(UTC)
        left = duration
        day = now.astimezone(self.zone).date()
        while True:
            if self.is_working_day(day):
                opens, closes = self._window(day)
                begin = max(now, opens)
                if begin < closes or (begin == closes and not left):
                    if begin + left <= closes:
                        return begin + left
                    left -= closes - begin
            day += dt.timedelta(days=1)

    def between(self, start: dt.datetime, end: dt.datetime) -> dt.timedelta:
        """Working time from `start` to `end` (zero if `end` is not later)."""
        a, b = start.astimezone(UTC), end.astimezone(UTC)
        total = dt.timedelta(0)
        day = a.astimezone(self.zone).date()
        while a < b and day <= b.astimezone(self.zone).date():
            if self.is_working_day(day):
                opens, closes = self._window(day)
                lo, hi = max(a, opens), min(b, closes)
                if lo < hi:
                    total += hi - lo
            day += dt.timedelta(days=1)
        return total

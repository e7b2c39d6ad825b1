"""The provider's support desk as a model: when each ticket gets its response (SPEC SLA-4).

`staff` engineers work during the working hours (SLA-3), `on_call` engineers outside them.
A ticket whose response objective runs 24/7 (Business and Business Europe P1/P2, Premium,
Platinum) is taken by the on-call engineers outside working hours; every other ticket
(working-hours objectives, or no objective) waits for the next opening. A free engineer
takes the most urgent waiting ticket (P1 before P2 ..., then first come first served) and
spends a response time drawn from an exponential law of mean `response_mean_s` before the
customer is notified; an engineer never drops a ticket at the end of a shift.

A pure function of (tickets, settings, seed): the only randomness is one `random.Random(seed)`,
drawn in the deterministic order the tickets are taken. Defaults: actors/defaults.toml [support].
"""

from __future__ import annotations

import datetime as dt
import heapq
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from actors.support import WORKING_HOURS, Clock, Ticket
from actors.topology import DEFAULTS
from actors.working_hours import UTC, WorkingHours
from runtime.errors import ConfigError

_S = DEFAULTS["support"]
_FIELDS = ("staff", "on_call", "response_mean_s")



@attrs.frozen
class DeskSettings:
    staff: int = _S["staff"]
    on_call: int = _S["on_call"]
    response_mean_s: float = _S["response_mean_s"]

    def __attrs_post_init__(self) -> None:
        _check(attrs.asdict(self), "support")

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str = "support") -> DeskSettings:
        """Settings from a config table: missing keys take the defaults; bad ones raise ConfigError."""
        for key in table:
            if key not in _FIELDS:
                raise ConfigError(f"{where}.{key}", "unknown key", ", ".join(_FIELDS))
        values = {**{k: _S[k] for k in _FIELDS}, **table}
        _check(values, where)
        return cls(**values)


def _check(values: Mapping[str, Any], where: str) -> None:
    for key, least in (("staff", 1), ("on_call", 0)):
        value = values[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{where}.{key}", f"must be a whole number >= {least}, got {value!r}")
    mean = values["response_mean_s"]
    if isinstance(mean, bool) or not isinstance(mean, int | float) or not 0 < mean < math.inf:
        raise ConfigError(f"{where}.response_mean_s", f"must be a number of seconds > 0, got {mean!r}")


def _round_the_clock(ticket: Ticket) -> bool:
    objective = ticket.plan.response.get(ticket.priority)
    return objective is not None and objective.clock is Clock.ROUND_THE_CLOCK


def _shift(t: dt.datetime, hours: WorkingHours) -> tuple[bool, dt.datetime]:
    """Whether `t` is in working hours, and the next instant when that changes."""
    day = t.astimezone(hours.zone).date()
    while True:
        if hours.is_working_day(day):
            opens = dt.datetime.combine(day, hours.opens, hours.zone).astimezone(UTC)
            closes = dt.datetime.combine(day, hours.closes, hours.zone).astimezone(UTC)
            if t < opens:
                return False, opens
            if t < closes:
                return True, closes
        day += dt.timedelta(days=1)


def respond(tickets: Sequence[Ticket], settings: DeskSettings = DeskSettings(), seed: int = 0,
            hours: WorkingHours = WORKING_HOURS) -> tuple[Ticket, ...]:
    """The tickets, in the same order, each responded to when the desk gets to it.

    Tickets already responded to (or closed) are returned as they are and take no engineer.
    """
    rng = random.Random(seed)
    todo = sorted((t.opened.astimezone(UTC), i) for i, t in enumerate(tickets)
                  if t.responded is None and t.closed is None)
    if not todo:
        return tuple(tickets)
    arrivals = iter(todo)
    upcoming = next(arrivals, None)
    any_time: list[tuple[int, dt.datetime, int]] = []   # waiting 24/7 tickets: (priority, opened, index)
    day_only: list[tuple[int, dt.datetime, int]] = []   # waiting tickets answered in working hours only
    now = todo[0][0]
    staff = [now] * settings.staff        # heaps of the instants each engineer is free
    on_call = [now] * settings.on_call
    answered: dict[int, dt.datetime] = {}
    while upcoming is not None or any_time or day_only:
        while upcoming is not None and upcoming[0] <= now:
            opened, i = upcoming
            heapq.heappush(any_time if _round_the_clock(tickets[i]) else day_only,
                           (int(tickets[i].priority), opened, i))
            upcoming = next(arrivals, None)
        in_hours, shift_change = _shift(now, hours)
        pool = staff if in_hours else on_call
        queues = [q for q in ((any_time, day_only) if in_hours else (any_time,)) if q]
        while queues and pool and pool[0] <= now:
            queue = min(queues, key=lambda q: q[0])
            _, _, i = heapq.heappop(queue)
            done = now + dt.timedelta(seconds=rng.expovariate(1 / settings.response_mean_s))
            answered[i] = done
            heapq.heapreplace(pool, done)
            queues = [q for q in queues if q]
        later = [upcoming[0]] if upcoming is not None else []
        if any_time or day_only:
            later.append(shift_change)
            if queues and pool:
                later.append(pool[0])
        if not later:  # every ticket is answered
            break
        now = min(later)
    return tuple(t.respond(answered[i]) if i in answered else t for i, t in enumerate(tickets))

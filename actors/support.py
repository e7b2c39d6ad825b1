"""Support plans, incident priorities and tickets (SPEC SLA-2, SLA-4, SLA-5, SLA-6; seed §7).

What this module decides, as pure functions of aware datetimes:
- the priority of an observed impact (`classify`, SLA-2, seed §7.2 and §7.7.3.3);
- each plan's objectives, as one table (`PLANS`): response time per priority and the
  clock it runs on (SLA-4), the 4 h guaranteed restoration time (SLA-5) and the number
  of named contacts (SLA-6);
- a ticket's due instants, its met/missed outcome per objective, and when a resolved
  ticket closes by itself (SLA-6);
- who may open a ticket (named contacts) and how a subscription changes plan (SLA-6).

Clocks: a "24/7" objective counts elapsed time; a "working hours" objective counts only
the provider's working time (SLA-3, `actors.working_hours`). A "working day" is one full
working window, 09:00-19:00 by default: 10 working hours (`WORKING_DAY`), so "1 working
day" from Tuesday 15:00 is Wednesday 15:00, and 5 working days are 50 working hours.
"""

from __future__ import annotations

import calendar
import datetime as dt
import enum
from collections.abc import Mapping

import attrs

from actors.working_hours import UTC, WorkingHours
from runtime.errors import ConfigError, Conflict, InvalidRequest, InvalidTransition

WORKING_HOURS = WorkingHours()
WORKING_DAY = (dt.datetime.combine(dt.date.min, WORKING_HOURS.closes)
               - dt.datetime.combine(dt.date.min, WORKING_HOURS.opens))
"""One working day of working time: the length of the default working window (10 h)."""

AUTO_CLOSE = 5 * WORKING_DAY
"""SLA-6, seed §7.7.3.2: a resolved ticket closes without the customer's confirmation after 5 working days."""

CRITICAL_APIS = frozenset({"ECS", "IMS", "EVS", "VPC", "IAM", "OBS", "CCE", "MRS", "RDS"})
"""Seed §7.7.3.3: the APIs whose total unavailability is a P1 incident, and the APIs covered by
the guaranteed restoration time (the GTR paragraph lists the same nine)."""

MINIMUM_MONTHS = 6
"""SLA-6, seed §7.3.1: a plan is subscribed for at least 6 months; an upgrade restarts them."""


class Priority(enum.IntEnum):
    """SLA-2. Lower is more urgent, so sorting puts P1 first."""

    P1 = 1
    P2 = 2
    P3 = 3
    P4 = 4


class Plane(enum.StrEnum):
    API = "api"    # the service's control plane: its API
    DATA = "data"  # what the tenant runs: instances, volumes, objects, networks


class ImpactKind(enum.StrEnum):
    LOSS = "loss"          # the affected users cannot use the service at all
    DEGRADED = "degraded"  # they can, with difficulties or delays (e.g. no new instances start)


def _plane(value: str) -> Plane:
    try:
        return Plane(value)
    except ValueError:
        raise InvalidRequest(f"impact plane {value!r} is not valid; valid: api, data") from None


def _kind(value: str) -> ImpactKind:
    try:
        return ImpactKind(value)
    except ValueError:
        raise InvalidRequest(f"impact kind {value!r} is not valid; valid: loss, degraded") from None


def _aware(name: str, value: dt.datetime | None) -> None:
    if value is not None and value.tzinfo is None:
        raise InvalidRequest(f"{name} must be a timezone-aware datetime, got {value.isoformat()}")


@attrs.frozen
class Impact:
    """What an incident does to users of one service in one scope (an AZ or a region).

    `affected` is the fraction (0 to 1) of that service's users in that scope who suffer
    it, users being the tenants using the service there. `tenant_stranded` says the impact
    is, for one tenant, all its instances and their volumes unavailable with no way to
    create new ones through the API (seed §7.7.3.3). `end` is None while it lasts.
    """

    service: str
    plane: Plane = attrs.field(converter=_plane)
    scope: str
    kind: ImpactKind = attrs.field(converter=_kind)
    affected: float
    start: dt.datetime
    end: dt.datetime | None = None
    tenant_stranded: bool = False

    def __attrs_post_init__(self) -> None:
        if not 0.0 <= self.affected <= 1.0:
            raise InvalidRequest(f"impact on {self.service}: affected is a fraction of users from 0 to 1, "
                                 f"got {self.affected}")
        _aware("impact start", self.start)
        _aware("impact end", self.end)
        if self.end is not None and self.end < self.start:
            raise InvalidRequest(f"impact on {self.service} ends ({self.end.isoformat()}) before it starts "
                                 f"({self.start.isoformat()})")

    @property
    def api(self) -> str | None:
        """The service whose API the impact hits (what the GTR looks at), None on the data plane."""
        return self.service if self.plane is Plane.API else None


def classify(impact: Impact) -> Priority:
    """The priority of an impact (SLA-2; seed §7.2 and §7.7.3.3).

    - P1: a loss for more than 50% of the users; a critical API totally unavailable is a
      loss for all of its users, so it is P1 by that rule; or one tenant stranded (all its
      instances and volumes down, none can be created).
    - P2: a loss for 5% to 50% of the users, or a degradation for 5% or more (e.g. new
      instances cannot start while existing ones run).
    - P3: a loss or degradation for less than 5% (e.g. a hypervisor restart).
    - P4: nobody affected: not an incident.
    """
    if impact.tenant_stranded:
        return Priority.P1
    share = impact.affected
    if share == 0.0:
        return Priority.P4
    if impact.kind is ImpactKind.LOSS and share > 0.5:
        return Priority.P1
    return Priority.P2 if share >= 0.05 else Priority.P3


class Clock(enum.StrEnum):
    ROUND_THE_CLOCK = "24/7"
    WORKING_HOURS = "working hours"


@attrs.frozen
class Objective:
    """A duration on a clock: 24/7 counts elapsed time, working hours only working time (SLA-3)."""

    duration: dt.timedelta
    clock: Clock

    def due(self, start: dt.datetime, hours: WorkingHours = WORKING_HOURS) -> dt.datetime:
        _aware("start", start)
        if self.clock is Clock.ROUND_THE_CLOCK:
            return start.astimezone(UTC) + self.duration
        return hours.add(start, self.duration)


@attrs.frozen
class Plan:
    """One support plan's commitments. Plans are equal when their names are."""

    name: str
    rank: int = attrs.field(eq=False)  # upgrades go to a higher rank
    response: Mapping[Priority, Objective] = attrs.field(eq=False)  # SLA-4; a missing priority: no objective
    repair: Mapping[Priority, Objective] = attrs.field(eq=False)  # SLA-5; only for incidents of CRITICAL_APIS
    named_contacts: int | None = attrs.field(eq=False)  # SLA-6; None: unlimited

    def __str__(self) -> str:
        return self.name


_H = dt.timedelta(hours=1)
_ANY = Clock.ROUND_THE_CLOCK
_WORK = Clock.WORKING_HOURS
_GTR = {Priority.P1: Objective(4 * _H, _ANY), Priority.P2: Objective(4 * _H, _ANY)}
_PREMIUM = {Priority.P1: Objective(dt.timedelta(minutes=15), _ANY), Priority.P2: Objective(1 * _H, _ANY),
            Priority.P3: Objective(8 * _H, _ANY), Priority.P4: Objective(24 * _H, _ANY)}

PLANS: Mapping[str, Plan] = {plan.name: plan for plan in (
    Plan("Basic", rank=0, response={}, repair={}, named_contacts=0),
    Plan("Standard", rank=1, named_contacts=2, repair={}, response={
        Priority.P1: Objective(12 * _H, _WORK), Priority.P2: Objective(WORKING_DAY, _WORK),
        Priority.P3: Objective(WORKING_DAY, _WORK)}),
    Plan("Business", rank=2, named_contacts=5, repair=_GTR, response={
        Priority.P1: Objective(1 * _H, _ANY), Priority.P2: Objective(2 * _H, _ANY),
        Priority.P3: Objective(WORKING_DAY, _WORK)}),
    Plan("Business Europe", rank=3, named_contacts=5, repair=_GTR, response={
        Priority.P1: Objective(1 * _H, _ANY), Priority.P2: Objective(2 * _H, _ANY),
        Priority.P3: Objective(12 * _H, _WORK)}),
    Plan("Premium", rank=4, named_contacts=None, repair=_GTR, response=_PREMIUM),
    Plan("Platinum", rank=5, named_contacts=None, repair=_GTR, response=_PREMIUM),
)}
"""The support plans table (seed §7.3.1 "Support Plans Table"; SLA-4, SLA-5, SLA-6), lowest first.

- Basic: documentation only; no technical support, so no named contact and no objective.
- Standard: every priority in working hours ("Ticket processing hours: Working day").
- Business, Business Europe: P1 and P2 handled 24/7, P3 in working hours.
- Premium: 24/7, P4 included (the table's "24 hours / 5 working days": the 24 h is the response).
- Platinum is named in the seed (§7.2: P4 commitments "only for Platinum", §7.3.1) but has no
  column in the table: we infer Premium's objectives (P4 included), GTR and unlimited contacts.
- Rank: Business Europe ranks above Business (same objectives but a 12 h P3, plus European
  support and e-mail access) and below Premium (15 min P1); that order is our inference.
- GTR: 4 h, elapsed time (P1 and P2 are handled 24/7 on these plans), for P1 and P2 incidents
  of the `CRITICAL_APIS` (the seed's GTR paragraph names Business and Premium; its table and
  the SPEC add Business Europe).
"""


def plan_named(name: str, field: str = "plan") -> Plan:
    """The plan called `name` (case, `_` and `-` ignored); ConfigError naming `field` otherwise."""
    wanted = name.replace("_", " ").replace("-", " ").casefold() if isinstance(name, str) else None
    for plan in PLANS.values():
        if plan.name.casefold() == wanted:
            return plan
    raise ConfigError(field, f"unknown support plan {name!r}", ", ".join(PLANS))


def response_due(plan: Plan, priority: Priority, opened: dt.datetime,
                 hours: WorkingHours = WORKING_HOURS) -> dt.datetime | None:
    """SLA-4: when the provider must have responded to a ticket opened at `opened`; None: no objective."""
    objective = plan.response.get(priority)
    return None if objective is None else objective.due(opened, hours)


def repair_due(plan: Plan, priority: Priority, opened: dt.datetime, api: str | None,
               hours: WorkingHours = WORKING_HOURS) -> dt.datetime | None:
    """SLA-5: when the incident must be repaired (the GTR), or None when no GTR applies: the plan
    has none, the priority is P3 or P4, or the incident is not one of a `CRITICAL_APIS` API."""
    if api is None or api.upper() not in CRITICAL_APIS:
        return None
    objective = plan.repair.get(priority)
    return None if objective is None else objective.due(opened, hours)


def auto_close_at(resolved: dt.datetime, hours: WorkingHours = WORKING_HOURS) -> dt.datetime:
    """SLA-6: a ticket resolved at `resolved` closes by itself 5 working days later."""
    _aware("resolved", resolved)
    return hours.add(resolved, AUTO_CLOSE)


class Outcome(enum.StrEnum):
    MET = "met"
    MISSED = "missed"
    PENDING = "pending"              # not done yet, and not yet late
    NO_OBJECTIVE = "no objective"


def _outcome(due: dt.datetime | None, done: dt.datetime | None, now: dt.datetime | None) -> Outcome:
    if due is None:
        return Outcome.NO_OBJECTIVE
    if done is not None:
        return Outcome.MET if done <= due else Outcome.MISSED
    if now is not None and now > due:
        return Outcome.MISSED
    return Outcome.PENDING


@attrs.frozen
class Ticket:
    """An incident (or request) ticket and its objectives (SLA-4..6). Immutable: the actions
    return the updated ticket. `respond` and `resolve` are independent (an incident may end
    before the ticket is taken into account); `close` needs a resolution."""

    id: str
    tenant: str
    plan: Plan
    priority: Priority
    opened: dt.datetime
    response_due: dt.datetime | None
    repair_due: dt.datetime | None
    incident: str | None = None
    responded: dt.datetime | None = None
    resolved: dt.datetime | None = None
    closed: dt.datetime | None = None

    def __attrs_post_init__(self) -> None:
        for name in ("opened", "responded", "resolved", "closed"):
            _aware(f"ticket {self.id} {name}", getattr(self, name))

    @property
    def status(self) -> str:
        if self.closed is not None:
            return "closed"
        if self.resolved is not None:
            return "resolved"
        return "responded" if self.responded is not None else "open"

    def _allowed(self) -> list[str]:
        allowed = []
        if self.responded is None and self.closed is None:
            allowed.append("respond")
        if self.resolved is None:
            allowed.append("resolve")
        if self.resolved is not None and self.closed is None:
            allowed.append("close")
        return allowed

    def _check(self, action: str, at: dt.datetime, after: dt.datetime, what: str) -> None:
        if action not in self._allowed():
            raise InvalidTransition("ticket", self.id, self.status, action, self._allowed())
        _aware(f"ticket {self.id} {action} instant", at)
        if at < after:
            raise InvalidRequest(f"cannot {action} ticket {self.id} at {at.isoformat()}, before it was "
                                 f"{what} ({after.isoformat()})")

    def respond(self, at: dt.datetime) -> Ticket:
        """The provider notifies the customer that it has taken the ticket into account (SLA-4)."""
        self._check("respond", at, self.opened, "opened")
        return attrs.evolve(self, responded=at)

    def resolve(self, at: dt.datetime) -> Ticket:
        """The fault is repaired (SLA-5)."""
        self._check("resolve", at, self.opened, "opened")
        return attrs.evolve(self, resolved=at)

    def close(self, at: dt.datetime) -> Ticket:
        """The customer confirms the resolution, or `auto_close_at(resolved)` has come (SLA-6)."""
        self._check("close", at, self.resolved or self.opened, "resolved")
        return attrs.evolve(self, closed=at)

    def response_outcome(self, now: dt.datetime | None = None) -> Outcome:
        """SLA-4: met or missed once responded; without a response, missed once `now` is past due."""
        return _outcome(self.response_due, self.responded, now)

    def repair_outcome(self, now: dt.datetime | None = None) -> Outcome:
        """SLA-5: met or missed once resolved; without a resolution, missed once `now` is past due."""
        return _outcome(self.repair_due, self.resolved, now)


@attrs.frozen
class NamedContacts:
    """SLA-6, seed §7.5: the people of a tenant who alone may open tickets, at most the plan's number."""

    tenant: str
    plan: Plan
    names: frozenset[str] = attrs.field(converter=frozenset)

    def __attrs_post_init__(self) -> None:
        limit = self.plan.named_contacts
        if limit is not None and len(self.names) > limit:
            if limit == 0:
                raise InvalidRequest(f"plan {self.plan} includes no technical support, so tenant {self.tenant} "
                                     f"cannot name contacts; subscribe to Standard or higher")
            raise InvalidRequest(f"plan {self.plan} allows at most {limit} named contacts, tenant {self.tenant} "
                                 f"named {len(self.names)}; remove {len(self.names) - limit} or upgrade the plan")

    def check(self, reporter: str) -> None:
        if reporter not in self.names:
            raise InvalidRequest(f"{reporter!r} is not a named contact of tenant {self.tenant}; only named "
                                 f"contacts may open tickets (they are: {', '.join(sorted(self.names)) or 'none'})")


def open_ticket(ticket_id: str, contacts: NamedContacts, reporter: str, priority: Priority,
                opened: dt.datetime, *, incident: str | None = None, api: str | None = None,
                hours: WorkingHours = WORKING_HOURS) -> Ticket:
    """A ticket opened by `reporter` for `contacts.tenant` on its plan, with its due instants.

    `api` is the service whose API the incident hits (`Impact.api`): it decides the GTR
    (SLA-5). Refused (InvalidRequest) when `reporter` is not a named contact (SLA-6).
    """
    contacts.check(reporter)
    _aware("opened", opened)
    plan = contacts.plan
    return Ticket(ticket_id, contacts.tenant, plan, priority, opened,
                  response_due=response_due(plan, priority, opened, hours),
                  repair_due=repair_due(plan, priority, opened, api, hours), incident=incident)


class DowngradeTooEarly(InvalidRequest):
    """SLA-6: during its minimum period a plan may only be upgraded."""

    def __init__(self, tenant: str, current: Plan, requested: Plan, allowed_from: dt.date) -> None:
        self.tenant, self.current, self.requested, self.allowed_from = tenant, current, requested, allowed_from
        super().__init__(f"tenant {tenant} cannot move from {current} down to {requested} during the "
                         f"{MINIMUM_MONTHS}-month minimum period of {current}; only upgrades are allowed until "
                         f"then; a downgrade can be requested from {allowed_from.isoformat()}")


def add_months(day: dt.date, months: int) -> dt.date:
    """The same day `months` later, or the month's last day when it is shorter (31 Aug + 6 = 28 Feb)."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    return dt.date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


@attrs.frozen
class PlanPeriod:
    plan: Plan
    since: dt.date  # the first day the plan is in effect

    @property
    def minimum_until(self) -> dt.date:
        """The first day after the minimum period: downgrades may be requested from then on."""
        return add_months(self.since, MINIMUM_MONTHS)


@attrs.frozen
class Subscription:
    """A tenant's support plans over time (SLA-6, seed §7.3.1); the last period may start in the future."""

    tenant: str
    periods: tuple[PlanPeriod, ...]

    @classmethod
    def start(cls, tenant: str, plan: Plan, since: dt.date) -> Subscription:
        return cls(tenant, (PlanPeriod(plan, since),))

    @property
    def latest(self) -> PlanPeriod:
        return self.periods[-1]

    def plan_on(self, day: dt.date) -> Plan:
        """The plan in effect on `day` (calendar day in the provider's time zone)."""
        current = [p for p in self.periods if p.since <= day]
        if not current:
            raise InvalidRequest(f"tenant {self.tenant} has no support plan before {self.periods[0].since}")
        return current[-1].plan

    def change(self, plan: Plan, requested: dt.datetime, hours: WorkingHours = WORKING_HOURS) -> Subscription:
        """The subscription after a change to `plan` requested at `requested` (aware).

        It takes effect on the first day of the next calendar month (provider's time zone).
        An upgrade is always allowed and restarts the 6-month minimum on the new plan; a
        downgrade requested before the current plan's minimum ends is refused
        (`DowngradeTooEarly`, with the date from which it is allowed). A change requested
        while another one is pending is a `Conflict`.
        """
        _aware("requested", requested)
        day = requested.astimezone(hours.zone).date()
        latest = self.latest
        if latest.since > day:
            raise Conflict(f"tenant {self.tenant} already has a change to {latest.plan} pending from "
                           f"{latest.since.isoformat()}; request another change once it is in effect")
        if plan == latest.plan:
            raise InvalidRequest(f"tenant {self.tenant} is already on plan {plan}")
        if plan.rank < latest.plan.rank and day < latest.minimum_until:
            raise DowngradeTooEarly(self.tenant, latest.plan, plan, latest.minimum_until)
        effective = add_months(day.replace(day=1), 1)
        return attrs.evolve(self, periods=(*self.periods, PlanPeriod(plan, effective)))

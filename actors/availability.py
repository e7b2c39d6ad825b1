"""Availability and service credits (SPEC SLA-1): downtime intervals in, monthly figures out.

Downtime is a period during which an incident causes a significant malfunction of a
service affecting ALL its users (the seed's definition); partial losses are incidents
(actors/support.py ranks them) but not downtime. Availability per service and calendar
month = 1 - downtime / period, where the period is the part of the month observed (a
run of 30 days starting on the 1st of a 31-day month measures 30 days, not 31: nothing
is known of the rest). Months are the provider's calendar (Europe/Paris, the
`[working_hours]` zone). Scheduled maintenance announced under SLA-7 is not an incident
(seed §7.7.3.3, "any platform shutdown caused by a scheduled activity ... is not
covered"): it is passed as `excluded` and removed from downtime.

Credits: a table of tiers `{below, credit_pct}`; the largest credit whose `below` is
above the month's availability applies, a percentage of that month's charges for the
service (the invoice turns it into a line).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo

import attrs

from actors.topology import DEFAULTS
from actors.usage import Span
from runtime.errors import ConfigError

SERVICES = ("ECS", "EVS", "VPC", "IAM", "OBS")
"""The services whose availability is measured (SLA-1 with SLA-2's API list)."""

PLANES = ("api", "data")



@attrs.frozen
class Downtime:
    """One interval of downtime: `tenant` None means every user of the scope."""

    service: str
    plane: str
    scope: str  # an AZ or the region
    start_s: float
    end_s: float
    tenant: str | None = None


@attrs.frozen
class CreditTier:
    below_pct: float
    credit_pct: float


@attrs.frozen
class SlaTerms:
    """Targets per service (default 99.95%) and the credit tiers (SLA-1: configurable)."""

    target_pct: float = float(DEFAULTS["sla"]["target_pct"])
    targets: Mapping[str, float] = attrs.field(factory=dict)
    credits: tuple[CreditTier, ...] = tuple(CreditTier(float(t["below_pct"]), float(t["credit_pct"]))
                                            for t in DEFAULTS["sla"]["credits"])

    def __attrs_post_init__(self) -> None:
        for service, pct in {"target_pct": self.target_pct, **self.targets}.items():
            if not 0.0 < pct <= 100.0:
                raise ConfigError(f"sla.{service}", f"a target of {pct}% is not a percentage", "0 < target <= 100")
        unknown = sorted(set(self.targets) - set(SERVICES))
        if unknown:
            raise ConfigError(f"sla.targets.{unknown[0]}", "not a measured service", ", ".join(SERVICES))
        for i, tier in enumerate(self.credits):
            if not 0.0 < tier.below_pct <= 100.0 or not 0.0 <= tier.credit_pct <= 100.0:
                raise ConfigError(f"sla.credits[{i}]", f"below = {tier.below_pct}, credit_pct = {tier.credit_pct}",
                                  "0 < below <= 100 and 0 <= credit_pct <= 100")

    def target(self, service: str) -> float:
        return self.targets.get(service, self.target_pct)

    def credit(self, availability_pct: float) -> float:
        """SLA-1 credit tiers: the largest credit among the tiers the month fell below."""
        return max((t.credit_pct for t in self.credits if availability_pct < t.below_pct), default=0.0)


def merge(spans: Iterable[Span]) -> list[Span]:
    """Union of intervals, sorted, overlapping and touching ones joined; empty ones dropped."""
    out: list[Span] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def subtract(spans: Sequence[Span], holes: Sequence[Span]) -> list[Span]:
    """`spans` minus `holes` (both merged)."""
    out: list[Span] = []
    for start, end in spans:
        cursor = start
        for h0, h1 in holes:
            if h1 <= cursor or h0 >= end:
                continue
            if h0 > cursor:
                out.append((cursor, h0))
            cursor = max(cursor, h1)
        if cursor < end:
            out.append((cursor, end))
    return out


def months(epoch: dt.datetime, end_s: float,
           zone: str = DEFAULTS["working_hours"]["timezone"]) -> list[tuple[str, Span]]:
    """The calendar months between virtual 0 (`epoch`) and `end_s`, as ("YYYY-MM", (start_s, end_s))."""
    tz = ZoneInfo(zone)
    origin = epoch.astimezone(dt.UTC)  # aware datetimes sharing a tzinfo subtract as wall clocks: use UTC
    out: list[tuple[str, Span]] = []
    first = epoch.astimezone(tz).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    while True:
        nxt = (first + dt.timedelta(days=32)).replace(day=1)
        start_s = max(0.0, (first.astimezone(dt.UTC) - origin).total_seconds())
        stop_s = min(end_s, (nxt.astimezone(dt.UTC) - origin).total_seconds())
        if start_s >= end_s:
            return out
        out.append((f"{first.year:04d}-{first.month:02d}", (start_s, stop_s)))
        first = nxt


@attrs.frozen
class MonthlyAvailability:
    service: str
    plane: str
    scope: str
    month: str
    period_s: float
    downtime_s: float
    availability_pct: float
    target_pct: float
    tenant: str | None = None

    @property
    def met(self) -> bool:
        return self.availability_pct >= self.target_pct


def monthly(downtime: Sequence[Span], service: str, plane: str, scope: str, calendar: Sequence[tuple[str, Span]],
            terms: SlaTerms, excluded: Sequence[Span] = (), tenant: str | None = None) -> list[MonthlyAvailability]:
    """SLA-1 for one service, plane and scope (and tenant): one figure per month observed."""
    spans = subtract(merge(downtime), merge(excluded))
    out = []
    for month, (m0, m1) in calendar:
        down = sum(min(e, m1) - max(s, m0) for s, e in spans if e > m0 and s < m1)
        period = m1 - m0
        pct = 100.0 * (1.0 - down / period) if period > 0 else 100.0
        if down > 0.0:  # 100% means no downtime at all, however short the downtime is
            pct = min(pct, math.nextafter(100.0, 0.0))
        out.append(MonthlyAvailability(service, plane, scope, month, period, down, pct, terms.target(service), tenant))
    return out


def intersect(a: Sequence[Span], b: Sequence[Span]) -> list[Span]:
    """The common part of two merged interval lists."""
    out: list[Span] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo < hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def all_down(per_member: Mapping[str, Sequence[Span]], members_present: Mapping[str, Sequence[Span]]) -> list[Span]:
    """The spans during which every member that is present is down, and at least one is present.

    `members_present[m]`: when member m exists and is wanted (e.g. a server neither
    stopped by its owner nor deleted); `per_member[m]`: when it is unavailable (within
    its presence). This is SLA-1's "affecting all users" for a scope.
    """
    edges: list[tuple[float, int, int]] = []  # (time, d_present, d_down); ends sort before starts
    for m, spans in members_present.items():
        present_spans = merge(spans)
        for s, e in present_spans:
            edges += [(s, 1, 0), (e, -1, 0)]
        for s, e in intersect(merge(per_member.get(m, ())), present_spans):
            edges += [(s, 0, 1), (e, 0, -1)]
    edges.sort(key=lambda x: (x[0], x[1] + x[2]))
    present = down = 0
    out: list[Span] = []
    opened: float | None = None
    i = 0
    while i < len(edges):
        t = edges[i][0]
        while i < len(edges) and edges[i][0] == t:
            present += edges[i][1]
            down += edges[i][2]
            i += 1
        if present > 0 and down >= present:
            if opened is None:
                opened = t
        elif opened is not None:
            out.append((opened, t))
            opened = None
    return out

"""Invoices (SPEC ECS-2, ECS-7, SDRS-3, SLA-1): usage and reserved instances in, charges out.

`invoice(tenant, start_s, end_s, usage, reserved, prices, epoch)` makes the invoice of
one tenant in one region (the catalogue's) for any period: a month, a day. Amounts are
exact (`Fraction`); they are rounded to cents only when written (`to_json`, `to_csv`):
each line's amount, each subtotal and the total are rounded from the exact values.

Invoices are ADDITIVE: the invoices of the days of a month add up exactly to the
month's, line kind by line kind, because
- each usage record is charged for its part within the period;
- reserved-instance coverage of a month is decided on the whole month's usage (pass the
  usage of every month the period touches: the invoice clips it), even for a day;
- an RI's monthly fee is spread over the seconds of its month: a period pays the share
  of the month it holds (a whole month: the whole fee);
- one-time fees (upfront at subscription, 12% at cancellation) belong to the period
  holding their instant.

ECS-7 coverage: each calendar month, per flavor, the N reserved instances of the tenant
covering that flavor in the region that month cover the N servers (by id, whichever AZ
their copies ran in, sDRS recovery included) with the most hours of that flavor that
month; ties go to the smaller id. A covered server's hours of that flavor that month
cost nothing (the line says which RI covers them); the others pay per use.

Credits (SLA-1): `with_credits` adds, per service, a negative line of a percentage of
the service's charges in the invoice, one-time RI fees excepted.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

import attrs

from actors.billing.catalogue import PriceCatalogue
from actors.billing.meter import BACKUP, COMPUTE, ECS, ECS_SDRS, EVS, SDRS_STORAGE, SDRS_VM, Usage
from actors.billing.reserved import Month, ReservedInstance, aware, instant, months_between, seconds
from runtime.errors import InvalidRequest

RI_UPFRONT, RI_MONTHLY, RI_CANCELLATION, CREDIT = "ri-upfront", "ri-monthly", "ri-cancellation", "credit"
ONE_TIME = (RI_UPFRONT, RI_CANCELLATION)
SERVICE_OF: Mapping[str, str] = {
    ECS: "ECS", RI_UPFRONT: "ECS", RI_MONTHLY: "ECS", RI_CANCELLATION: "ECS", EVS: "EVS", BACKUP: "CBR",
    ECS_SDRS: "SDRS", SDRS_VM: "SDRS", SDRS_STORAGE: "SDRS",
}
SERVICES = ("ECS", "EVS", "CBR", "SDRS", "OBS", "EIP", "VPC", "IAM")
"""Services an invoice may name, in the order subtotals are listed: OBS and EIP have no meter yet,
VPC and IAM are measured for availability (credits) but not billed."""


@attrs.frozen
class Line:
    """One charge: `quantity` `unit`s at `unit_price` (0 when a reserved instance covers
    it) over [start_s, end_s) of virtual time, or at the instant start_s for one-time fees."""

    service: str
    kind: str
    resource: str
    description: str
    start_s: Fraction
    end_s: Fraction
    quantity: Fraction
    unit: str
    unit_price: Fraction
    amount: Fraction


@attrs.frozen
class Invoice:
    tenant: str
    region: str
    currency: str
    start_s: Fraction
    end_s: Fraction
    epoch: dt.datetime
    lines: tuple[Line, ...]

    def subtotals(self) -> dict[str, Fraction]:
        """Per service with lines, in SERVICES order."""
        out = {s: Fraction(0) for s in SERVICES if any(line.service == s for line in self.lines)}
        for line in self.lines:
            out[line.service] += line.amount
        return out

    @property
    def total(self) -> Fraction:
        return sum((line.amount for line in self.lines), Fraction(0))


def _unit_price(prices: PriceCatalogue, u: Usage) -> Fraction:
    if u.kind in COMPUTE:
        price = prices.ecs_hour.get(u.spec)
        if price is None:
            raise InvalidRequest(f"flavor {u.spec!r} of server {u.resource} has no price in {prices.source}")
        return Fraction(price)
    if u.kind == EVS:
        if u.spec not in prices.evs_gb_month:
            raise InvalidRequest(f"volume type {u.spec!r} of volume {u.resource} has no price in {prices.source}")
        return Fraction(prices.evs_gb_month[u.spec])
    if u.kind == BACKUP:
        return Fraction(prices.backup_gb_month)
    if u.kind == SDRS_VM:
        return Fraction(prices.sdrs_protected_vm_hour)
    if u.kind == SDRS_STORAGE:
        return Fraction(prices.sdrs_protection_gb_month)
    raise InvalidRequest(f"usage kind {u.kind!r} has no price")


def _describe(u: Usage, covered_by: str | None) -> str:
    where = f" in {u.az}" if u.az else ""
    text = {
        ECS: f"ECS {u.spec}{where}",
        ECS_SDRS: f"sDRS recovery: ECS {u.spec}{where}",
        EVS: f"EVS {u.spec} volume{where}",
        BACKUP: "server backup (CSBS) storage" if u.spec == "CSBS" else "volume backup (VBS) storage",
        SDRS_VM: f"sDRS protected server, group {u.spec}",
        SDRS_STORAGE: f"sDRS protection storage{where}, group {u.spec}",
    }[u.kind]
    if u.kind in COMPUTE:
        text += f", covered by reserved instance {covered_by}" if covered_by else ", pay-per-use"
    return text


def coverage(usage: Iterable[Usage], reserved: Iterable[ReservedInstance], month: Month,
             epoch: dt.datetime) -> dict[tuple[str, str], str]:
    """ECS-7 for one month: (flavor, server id) -> the RI covering it (see the module docstring)."""
    m0, m1 = month.span(epoch)
    hours: dict[str, dict[str, Fraction]] = {}
    for u in usage:
        if u.kind in COMPUTE:
            part = u.clip(m0, m1)
            if part is not None:
                per_server = hours.setdefault(u.spec, {})
                per_server[u.resource] = per_server.get(u.resource, Fraction(0)) + part.quantity
    out = {}
    for ri in sorted(reserved, key=lambda r: (r.subscribed, r.id)):
        if ri.covers(month):
            flavor = ri.flavor_in(month)
            ranked = sorted(hours.get(flavor, {}).items(), key=lambda kv: (-kv[1], kv[0]))
            free = [sid for sid, _ in ranked if (flavor, sid) not in out]
            if free:
                out[(flavor, free[0])] = ri.id
    return out


def invoice(tenant: str, start_s: Fraction | float, end_s: Fraction | float, usage: Iterable[Usage],
            reserved: Iterable[ReservedInstance], prices: PriceCatalogue, epoch: dt.datetime) -> Invoice:
    """The invoice of `tenant` in `prices.region` for [start_s, end_s) (virtual seconds).

    `usage`: records of every month the period touches (others' and other regions' are
    ignored); `reserved`: the tenant's RIs (others' ignored); `epoch`: virtual time 0."""
    start, end = Fraction(start_s), Fraction(end_s)
    aware(epoch, "epoch")
    if end <= start:
        raise InvalidRequest(f"invoice period [{start_s}, {end_s}) is empty: end must be after start")
    mine = [u for u in usage if u.tenant == tenant and u.region == prices.region]
    ris = [r for r in reserved if r.tenant == tenant and r.region == prices.region]
    groups: dict[tuple[str, str, str, str, str | None], list[Usage]] = {}
    for month in months_between(start, end, epoch):
        m0, m1 = month.span(epoch)
        lo, hi = max(start, m0), min(end, m1)
        covered = coverage(mine, ris, month, epoch) if ris else {}
        for u in mine:
            part = u.clip(lo, hi)
            if part is not None:
                by = covered.get((u.spec, u.resource)) if u.kind in COMPUTE else None
                groups.setdefault((u.kind, u.resource, u.spec, u.az, by), []).append(part)
    lines = []
    for (kind, resource, _, _, by), parts in groups.items():
        price = Fraction(0) if by else _unit_price(prices, parts[0])
        quantity = sum((p.quantity for p in parts), Fraction(0))
        lines.append(Line(SERVICE_OF[kind], kind, resource, _describe(parts[0], by), min(p.start_s for p in parts),
                          max(p.end_s for p in parts), quantity, parts[0].unit, price, quantity * price))
    for ri in ris:
        lines += _ri_lines(ri, start, end, prices, epoch)
    order = {s: i for i, s in enumerate(SERVICES)}
    lines.sort(key=lambda x: (order[x.service], x.kind, x.resource, x.start_s, x.description))
    return Invoice(tenant, prices.region, prices.currency, start, end, epoch, tuple(lines))


def _ri_lines(ri: ReservedInstance, start: Fraction, end: Fraction, prices: PriceCatalogue,
              epoch: dt.datetime) -> list[Line]:
    model = f"{ri.term_years}-year, {'upfront' if ri.upfront else 'no upfront'}{', flexible' if ri.flexible else ''}"
    out = []
    at = seconds(ri.subscribed, epoch)
    if ri.upfront and start <= at < end:
        fee = ri.upfront_fee(prices)
        out.append(Line("ECS", RI_UPFRONT, ri.id, f"reserved instance {ri.flavor} ({model}): upfront fee",
                        at, at, Fraction(1), "fee", fee, fee))
    for month in months_between(start, end, epoch):
        if ri.covers(month):
            m0, m1 = month.span(epoch)
            share = (min(end, m1) - max(start, m0)) / (m1 - m0)
            fee = ri.monthly_fee(month, prices)
            out.append(Line("ECS", RI_MONTHLY, ri.id,
                            f"reserved instance {ri.flavor_in(month)} ({model}): monthly fee {month}",
                            max(start, m0), min(end, m1), share, "month", fee, share * fee))
    if ri.cancelled is not None:
        at = seconds(ri.cancelled, epoch)
        if start <= at < end:
            due = ri.amount_due(prices)
            out.append(Line("ECS", RI_CANCELLATION, ri.id,
                            f"reserved instance {ri.flavor} ({model}): early cancellation, 12% of "
                            f"{_money(due)} due for the initial term (ECS-7)", at, at, Fraction(12, 100), "of due",
                            due, ri.cancellation_fee(prices)))
    return out


def with_credits(inv: Invoice, credits: Mapping[str, float | int | Decimal | Fraction]) -> Invoice:
    """SLA-1: a negative line per service, `percent` of its charges in `inv` (one-time fees excepted)."""
    lines = list(inv.lines)
    for service, percent in credits.items():
        if service not in SERVICES:
            raise InvalidRequest(f"credit for service {service!r}: not a service (valid: {', '.join(SERVICES)})")
        if isinstance(percent, bool) or not isinstance(percent, int | float | Decimal | Fraction) \
                or not 0 <= percent <= 100:
            raise InvalidRequest(f"credit for {service} = {percent!r}: must be a percentage from 0 to 100")
        pct = Fraction(Decimal(str(percent))) if isinstance(percent, float) else Fraction(percent)
        base = sum((x.amount for x in inv.lines if x.service == service and x.kind not in (*ONE_TIME, CREDIT)),
                   Fraction(0))
        if pct and base:
            lines.append(Line(service, CREDIT, service, f"service credit: {_decimal(pct, 2)}% of the {service} "
                              f"charges (SLA-1)", inv.start_s, inv.end_s, pct, "%", -base / 100, -base * pct / 100))
    return attrs.evolve(inv, lines=tuple(lines))


# -- writing -------------------------------------------------------------------------------
def _decimal(x: Fraction, places: int) -> str:
    """`x` rounded half away from zero to `places` decimals (exact arithmetic)."""
    scaled = abs(x) * 10**places
    whole, rest = divmod(scaled.numerator, scaled.denominator)
    if 2 * rest >= scaled.denominator:
        whole += 1
    value = Decimal(-whole if x < 0 else whole).scaleb(-places)
    return str(value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def _money(x: Fraction) -> str:
    return _decimal(x, 2)


def _price(x: Fraction) -> str:
    """A unit price: exact when it has at most 6 decimals (catalogue prices do), else rounded."""
    text = _decimal(x, 6)
    return text.rstrip("0").rstrip(".") if "." in text else text


FIELDS = ("service", "kind", "resource", "description", "start", "end", "quantity", "unit", "unit_price", "amount")


def _row(inv: Invoice, line: Line) -> dict[str, str]:
    return {"service": line.service, "kind": line.kind, "resource": line.resource, "description": line.description,
            "start": instant(line.start_s, inv.epoch).isoformat(), "end": instant(line.end_s, inv.epoch).isoformat(),
            "quantity": _price(line.quantity), "unit": line.unit, "unit_price": _price(line.unit_price),
            "amount": _money(line.amount)}


def to_json(inv: Invoice) -> str:
    """Amounts as decimal strings with 2 decimals (never floats); subtotals and total are
    rounded from the exact sums."""
    doc = {"tenant": inv.tenant, "region": inv.region, "currency": inv.currency,
           "period": {"start": instant(inv.start_s, inv.epoch).isoformat(),
                      "end": instant(inv.end_s, inv.epoch).isoformat()},
           "lines": [_row(inv, line) for line in inv.lines],
           "subtotals": {s: _money(a) for s, a in inv.subtotals().items()},
           "total": _money(inv.total)}
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def to_csv(inv: Invoice) -> str:
    """A header, then one row per line (tenant, region, currency repeated on each)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=("tenant", "region", "currency", *FIELDS), lineterminator="\n")
    writer.writeheader()
    for line in inv.lines:
        writer.writerow({"tenant": inv.tenant, "region": inv.region, "currency": inv.currency, **_row(inv, line)})
    return out.getvalue()


def monthly_invoices(tenants: Sequence[str], usage: Sequence[Usage], reserved: Sequence[ReservedInstance],
                     prices: PriceCatalogue, epoch: dt.datetime, end_s: Fraction | float,
                     start_s: Fraction | float = 0) -> list[tuple[str, str, Invoice]]:
    """(tenant, "YYYY-MM", invoice) for every tenant and every calendar month of
    [start_s, end_s) (a run: the first and last months are partial)."""
    usage_of: dict[str, list[Usage]] = {t: [] for t in tenants}  # each invoice reads its tenant's records only
    for u in usage:
        if u.tenant in usage_of:
            usage_of[u.tenant].append(u)
    out = []
    for month in months_between(start_s, end_s, epoch):
        m0, m1 = month.span(epoch)
        lo, hi = max(Fraction(start_s), m0), min(Fraction(end_s), m1)
        for tenant in tenants:
            out.append((tenant, str(month), invoice(tenant, lo, hi, usage_of[tenant], reserved, prices, epoch)))
    return out

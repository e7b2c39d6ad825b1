"""The contract sections of a run's report: period, availability (SLA-1), incidents and
tickets (SLA-2..6), changes (SLA-7), billing and credits, HDS deletion records (TEN-5)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import Counter, defaultdict
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from actors import support
from actors.availability import months
from actors.billing import Invoice, Meter, monthly_invoices, to_csv, to_json, with_credits
from actors.changes import ChangeCalendar
from actors.hds import DeletionRecord
from actors.usage import ServerLedger
from sim import contracts, service_levels
from sim.scenario import Scenario
from sim.support_desk import DeskSettings


def invoices(scenario: Scenario, meter: Meter, availability: dict[str, Any],
             end_s: float) -> list[tuple[str, str, Invoice]]:
    """Each tenant's invoice of each month of the run, with its SLA-1 credits."""
    prices = scenario.prices
    ris = [ri for t in scenario.tenants for ri in contracts.reserved_instances(t.name, t.contract, prices)]
    credits: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for row in availability["tenants"]:
        if row["credit_pct"]:
            credits[(row["tenant"], row["month"])][row["service"]] = row["credit_pct"]
    usage = meter.usage(0, end_s)
    return [(tenant, month, with_credits(inv, credits.get((tenant, month), {})))
            for tenant, month, inv in monthly_invoices([t.name for t in scenario.tenants], usage, ris, prices,
                                                       scenario.start, end_s)]


def billing_figures(scenario: Scenario, bills: Sequence[tuple[str, str, Invoice]]) -> dict[str, Any]:
    def money(x: Fraction) -> float:
        return float(round(x, 2))

    credit = [sum((x.amount for x in inv.lines if x.kind == "credit"), Fraction(0)) for _, _, inv in bills]
    return {
        "currency": scenario.prices.currency,
        "total": money(sum((inv.total for _, _, inv in bills), Fraction(0))),
        "credits": money(-sum(credit, Fraction(0))),
        "lines": sum(len(inv.lines) for _, _, inv in bills),
        "tenants": [{"tenant": t, "month": m, "total": money(inv.total), "credits": money(-c),
                     "lines": len(inv.lines), **{k.lower(): money(v) for k, v in inv.subtotals().items()}}
                    for (t, m, inv), c in zip(bills, credit, strict=True)],
    }


def write_invoices(out: Path, bills: Sequence[tuple[str, str, Invoice]]) -> list[dict[str, Any]]:
    """invoices/TENANT-YYYY-MM.json and .csv; returns every line as a row (charges.csv)."""
    folder = out / "invoices"
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for tenant, month, inv in bills:
        (folder / f"{tenant}-{month}.json").write_text(to_json(inv))
        text = to_csv(inv)
        (folder / f"{tenant}-{month}.csv").write_text(text)
        rows += [dict(r, month=month) for r in csv.DictReader(io.StringIO(text))]
    return rows


def contract_figures(scenario: Scenario, seed: int, ledger: ServerLedger, outages: service_levels.Outages,
                     calendar: ChangeCalendar, deletions: Sequence[DeletionRecord], end_s: float) -> dict[str, Any]:
    region = scenario.topology.region.name
    azs = list(scenario.topology.region.azs)
    epoch = scenario.start
    ended = {t.name: t.contract.end_s for t in scenario.tenants if t.contract.end_s is not None}
    servers = service_levels.server_spans(ledger, outages, end_s)
    intervals = service_levels.downtime(servers, outages, region, azs, end_s, ended)
    tenants = [t.name for t in scenario.tenants]
    avail = service_levels.availability(intervals, epoch, end_s, scenario.sla, region, azs, tenants, calendar, ended)
    terms = {t.name: service_levels.TenantTerms(support.plan_named(t.contract.support.plan),
                                                 t.contract.support.contacts) for t in scenario.tenants}
    found = service_levels.episodes(servers, outages, region, azs, end_s, ended)
    incidents, tickets = service_levels.incidents(found, epoch, terms, DeskSettings.from_table(scenario.desk),
                                                  seed, end_s)
    by_priority = Counter(i["priority"] for i in incidents)
    end = epoch + dt.timedelta(seconds=end_s)
    return {
        "period": {"start": epoch.isoformat(), "end": end.isoformat(), "months": [m for m, _ in months(epoch, end_s)]},
        "availability": avail,
        "incidents": {"count": len(incidents), **{p: by_priority[p] for p in ("P1", "P2", "P3")},
                      "response_met": sum(1 for t in tickets if t["response_met"] is True),
                      "response_missed": sum(1 for t in tickets if t["response_met"] is False),
                      "repair_met": sum(1 for t in tickets if t["repair_met"] is True),
                      "repair_missed": sum(1 for t in tickets if t["repair_met"] is False),
                      "list": incidents},
        "tickets": {"count": len(tickets), "closed": sum(1 for t in tickets if t["closed_s"] is not None),
                    "list": tickets},
        "changes": {"accepted": len(calendar.changes()), "refused": len(scenario.changes) - len(calendar.changes()),
                    "maintenance_s": avail["maintenance_s"]},
        "deletions": [{"tenant": d.tenant, "contract_end_s": d.contract_end_s, "deadline_s": d.deadline_s,
                       "completed_s": d.completed_s, "items": len(d.items), "left": len(d.left),
                       "within_limit": d.within_limit, "sha256": d.sha256} for d in deletions],
    }

"""What a run means in contract terms: downtime and availability per service, scope and
tenant (SLA-1), incidents ranked P1-P4 (SLA-2) with a ticket per affected tenant whose
plan has objectives, answered by the support desk model and judged against the plan's
response and repair objectives (SLA-4..6), and the planned changes (SLA-7).

Sources, all from the event log: the servers' running intervals (`actors.usage`), the
scenario's faults as injected (the truth of what failed: a storage outage is the block
store of an AZ down; an api-outage is a service's API down) and the changes accepted.

Users, for SLA-2's shares, are servers on the data plane (a hypervisor crash stopping 4
of 1,128 servers touches 0.4% of them: P3, the seed's example) and tenants on the API
(every tenant loses an API that is down: P1).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from actors import support
from actors.availability import SERVICES, SlaTerms, all_down, intersect, merge, monthly, months, subtract
from actors.changes import Change, ChangeCalendar
from actors.usage import ServerLedger, Span
from sim.support_desk import DeskSettings, respond

END = float("inf")


@attrs.define
class ServerSpans:
    """One server: who owns it, where it runs, when it is wanted (exists, not stopped by its
    owner) and when, wanted, it does not run."""

    tenant: str
    az: str
    wanted: list[Span]
    down: list[Span]


class Outages:
    """An event-log sink keeping the truth of faults: API outages per service, block stores
    down per AZ, and the volumes of each tenant per AZ (who an EVS outage touches)."""

    def __init__(self) -> None:
        self.api: dict[str, list[list[float]]] = defaultdict(list)
        self.storage: dict[str, list[list[float]]] = defaultdict(list)
        self.volumes: dict[str, tuple[str, str]] = {}  # volume -> (tenant, az)
        self.tenants_with_volumes: dict[str, set[str]] = defaultdict(set)
        self.owner_stops: dict[str, list[list[float]]] = defaultdict(list)  # server -> stopped by its owner
        self._parked: set[str] = set()

    def __call__(self, time: float, source: str, kind: str, fields: dict[str, Any]) -> None:
        if kind == "FaultInjected":
            fault = fields["fault"]
            if fault == "api-outage":
                self.api[fields["target"]].append([time, END])
            elif fault in ("az-outage", "storage-outage"):
                self.storage[fields["target"]].append([time, END])
        elif kind == "FaultRepaired":
            fault = fields["fault"]
            table = self.api if fault == "api-outage" else self.storage if fault in ("az-outage",
                                                                                      "storage-outage") else None
            if table is not None:
                for span in table[fields["target"]]:
                    if span[1] == END:
                        span[1] = time
                        break
        elif kind == "ServerParked":
            self._parked.add(fields["server"])
        elif kind == "ServerUnparked":
            self._parked.discard(fields["server"])
        elif kind == "ServerStateChanged" and fields["server"] not in self._parked:
            # a stop the owner asked for: the server is not wanted until it is started again
            stops = self.owner_stops[fields["server"]]
            if fields["state"] == "shutoff" and not (stops and stops[-1][1] == END):
                stops.append([time, END])
            elif fields["state"] == "active" and stops and stops[-1][1] == END:
                stops[-1][1] = time
        elif kind == "VolumeCreated":
            az = source.rsplit("volumes-", 1)[-1]
            self.volumes[fields["volume"]] = (fields["tenant"], az)
            self.tenants_with_volumes[az].add(fields["tenant"])

    @staticmethod
    def closed(spans: Iterable[list[float]], end_s: float) -> list[Span]:
        return merge((s, min(e, end_s)) for s, e in spans)


def server_spans(ledger: ServerLedger, outages: Outages, end_s: float) -> dict[str, ServerSpans]:
    """Per server id (its copies under sDRS joined: it is available if any copy runs)."""
    copies: dict[str, list[str]] = defaultdict(list)
    for key, rec in ledger.servers.items():
        copies[rec.server_id].append(key)
    out = {}
    for sid, keys in copies.items():
        first = ledger.servers[keys[0]]
        life = merge(span for k in keys if (span := ledger.existed(k, end_s)) is not None)
        runs = merge(span for k in keys for span in ledger.running(k, end_s))
        wanted = subtract(life, Outages.closed(outages.owner_stops.get(sid, ()), end_s))
        out[sid] = ServerSpans(first.tenant, first.az, wanted, subtract(wanted, runs))
    return out


@attrs.frozen
class Episode:
    """A maximal period during which some users of a service in a scope are hit."""

    service: str
    plane: str
    scope: str
    start_s: float
    end_s: float
    affected: float  # the largest share of users hit at one time
    loss: bool  # users lost the service (not merely degraded)
    tenants: tuple[str, ...]  # the tenants hit


def downtime(servers: Mapping[str, ServerSpans], outages: Outages, region: str, azs: Sequence[str],
             end_s: float, ended: Mapping[str, float]) -> list[dict[str, Any]]:
    """SLA-1 downtime intervals: a scope's service down for ALL its users. A tenant's own
    intervals stop when its contract ends (`ended`: tenant -> contract end)."""
    out: list[dict[str, Any]] = []

    def add(service: str, plane: str, scope: str, spans: Iterable[Span], tenant: str | None = None) -> None:
        out.extend({"service": service, "plane": plane, "scope": scope, "tenant": tenant, "start_s": s, "end_s": e}
                   for s, e in spans)

    api = {svc: Outages.closed(outages.api.get(svc, ()), end_s) for svc in SERVICES}
    for svc in SERVICES:
        add(svc, "api", region, api[svc])
    for az in azs:
        members = {sid: s for sid, s in servers.items() if s.az == az}
        add("ECS", "data", az, all_down({k: s.down for k, s in members.items()},
                                         {k: s.wanted for k, s in members.items()}))
        add("EVS", "data", az, Outages.closed(outages.storage.get(az, ()), end_s))
    add("ECS", "data", region, all_down({k: s.down for k, s in servers.items()},
                                        {k: s.wanted for k, s in servers.items()}))
    for tenant in sorted({s.tenant for s in servers.values()}):
        mine = {sid: s for sid, s in servers.items() if s.tenant == tenant}
        lost = all_down({k: s.down for k, s in mine.items()}, {k: s.wanted for k, s in mine.items()})
        add("ECS", "data", region, intersect(merge([*lost, *api["ECS"], *api["IAM"]]),
                                             [(0.0, ended.get(tenant, end_s))]), tenant)
    for tenant in sorted({t for ts in outages.tenants_with_volumes.values() for t in ts}):
        azs_of = sorted({az for t, az in outages.volumes.values() if t == tenant})
        # all of a tenant's volumes unavailable: every AZ holding them down at once
        spans: list[Span] = [(0.0, end_s)]
        for az in azs_of:
            spans = intersect(spans, Outages.closed(outages.storage.get(az, ()), end_s))
        add("EVS", "data", region, intersect(merge([*spans, *api["EVS"], *api["IAM"]]),
                                             [(0.0, ended.get(tenant, end_s))]), tenant)
    return out


def episodes(servers: Mapping[str, ServerSpans], outages: Outages, region: str, azs: Sequence[str],
             end_s: float, ended: Mapping[str, float]) -> list[Episode]:
    """Everything that hit users, in order of start: the input of incident ranking. A
    tenant whose contract has ended is nobody's user any more."""
    found: list[Episode] = []
    everyone = sorted({s.tenant for s in servers.values()} | {t for ts in outages.tenants_with_volumes.values()
                                                               for t in ts})

    def customers(at: float, among: Iterable[str] = everyone) -> list[str]:
        return [t for t in among if ended.get(t, END) > at]

    for svc in SERVICES:
        for s, e in Outages.closed(outages.api.get(svc, ()), end_s):
            found.append(Episode(svc, "api", region, s, e, 1.0, True, tuple(customers(s))))
    for az in azs:
        for s, e in Outages.closed(outages.storage.get(az, ()), end_s):
            tenants = customers(s)
            hit = customers(s, sorted(outages.tenants_with_volumes.get(az, ())))
            share = len(hit) / len(tenants) if tenants else 0.0
            found.append(Episode("EVS", "data", az, s, e, share, True, tuple(hit)))
        found += _server_episodes(servers, az, end_s)
    return sorted(found, key=lambda x: (x.start_s, x.service, x.scope))


def _server_episodes(servers: Mapping[str, ServerSpans], az: str, end_s: float) -> list[Episode]:
    """Periods when some wanted servers of `az` do not run; the share is of the region's
    wanted servers at the worst moment."""
    edges: list[tuple[float, int, int, str]] = []
    for sid, s in servers.items():
        for a, b in merge(s.wanted):
            edges += [(a, 0, 1, sid), (b, 0, -1, sid)]
        if s.az == az:
            for a, b in intersect(merge(s.down), merge(s.wanted)):
                edges += [(a, 1, 0, sid), (b, -1, 0, sid)]
    edges.sort(key=lambda x: (x[0], x[1] + x[2]))
    out: list[Episode] = []
    down = wanted = 0
    start: float | None = None
    worst = 0.0
    hit: set[str] = set()
    for t, d_down, d_wanted, sid in edges:
        down += d_down
        wanted += d_wanted
        if d_down > 0:
            hit.add(servers[sid].tenant)
        if down > 0:
            if start is None:
                start, worst = t, 0.0
            worst = max(worst, down / max(wanted, 1))
        elif start is not None and t > start:
            out.append(Episode("ECS", "data", az, start, t, min(worst, 1.0), True, tuple(sorted(hit))))
            start, hit = None, set()
        elif start is not None:
            start, hit = None, set()
    if start is not None:
        out.append(Episode("ECS", "data", az, start, end_s, min(worst, 1.0), True, tuple(sorted(hit))))
    return out


@attrs.frozen
class TenantTerms:
    plan: support.Plan
    contacts: tuple[str, ...]


def incidents(found: Sequence[Episode], epoch: dt.datetime, plans: Mapping[str, TenantTerms], desk: DeskSettings,
              seed: int, end_s: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Incidents (one per episode, P4 ones dropped) and their tickets, answered by the desk."""
    def at(s: float) -> dt.datetime:
        return epoch.astimezone(dt.UTC) + dt.timedelta(seconds=s)

    def secs(t: dt.datetime | None) -> float | None:
        return None if t is None else (t - epoch.astimezone(dt.UTC)).total_seconds()

    rows: list[dict[str, Any]] = []
    tickets: list[support.Ticket] = []
    for ep in found:
        impact = support.Impact(ep.service, ep.plane, ep.scope, "loss" if ep.loss else "degraded", ep.affected,
                                at(ep.start_s), at(ep.end_s))
        priority = support.classify(impact)
        if priority is support.Priority.P4:
            continue
        inc = f"INC-{len(rows) + 1}"
        n = 0
        for tenant in ep.tenants:
            terms = plans.get(tenant)
            if terms is None or not terms.plan.response:
                continue  # Basic: no technical support, no ticket
            opened = at(ep.start_s)
            tickets.append(support.Ticket(f"T-{len(tickets) + 1}", tenant, terms.plan, priority, opened,
                                          support.response_due(terms.plan, priority, opened),
                                          support.repair_due(terms.plan, priority, opened, impact.api),
                                          incident=inc))
            n += 1
        rows.append({"id": inc, "priority": priority.name, "service": ep.service, "plane": ep.plane,
                     "scope": ep.scope, "opened_s": ep.start_s, "resolved_s": ep.end_s if ep.end_s < end_s else None,
                     "affected_pct": round(100 * ep.affected, 3), "tenants": len(ep.tenants), "tickets": n})
    resolved_at = {r["id"]: r["resolved_s"] for r in rows}
    answered = respond(tickets, desk, seed)
    end = at(end_s)
    out = []
    for t in answered:
        if t.responded is not None and t.responded > end:
            t = attrs.evolve(t, responded=None)  # the desk answers after the run: not seen
        resolved_s = resolved_at[t.incident or ""]
        if resolved_s is not None:
            t = t.resolve(at(resolved_s))
            closes = support.auto_close_at(at(resolved_s))
            if closes <= end:
                t = t.close(closes)
        out.append({"id": t.id, "incident": t.incident, "tenant": t.tenant, "plan": t.plan.name,
                    "priority": t.priority.name, "opened_s": secs(t.opened), "responded_s": secs(t.responded),
                    "response_due_s": secs(t.response_due), "response_met": _met(t.response_outcome(end)),
                    "resolved_s": secs(t.resolved), "repair_due_s": secs(t.repair_due),
                    "repair_met": _met(t.repair_outcome(end)), "closed_s": secs(t.closed)})
    return rows, out


def _met(outcome: support.Outcome) -> bool | None:
    """True met, False missed, None not applicable or not decided at the end of the run."""
    return {"met": True, "missed": False}.get(outcome.value)


def availability(intervals: Sequence[dict[str, Any]], epoch: dt.datetime, end_s: float, terms: SlaTerms,
                 region: str, azs: Sequence[str], tenants: Sequence[str], calendar: ChangeCalendar,
                 ended: Mapping[str, float]) -> dict[str, Any]:
    cal = months(epoch, end_s)
    origin = epoch.astimezone(dt.UTC)
    maintenance = {svc: [((a - origin).total_seconds(), (b - origin).total_seconds())
                         for a, b in calendar.maintenance(svc)] for svc in SERVICES}
    by_key: dict[tuple[str, str, str, str | None], list[Span]] = defaultdict(list)
    for i in intervals:
        by_key[(i["service"], i["plane"], i["scope"], i["tenant"])].append((i["start_s"], i["end_s"]))
    services = []
    for svc in SERVICES:
        scopes = [("api", region), ("data", region)] if svc in ("ECS", "EVS") else [("api", region)]
        scopes += [("data", az) for az in azs] if svc in ("ECS", "EVS") else []
        for plane, scope in scopes:
            services += monthly(by_key.get((svc, plane, scope, None), []), svc, plane, scope, cal, terms,
                                maintenance[svc])
    per_tenant = []
    for tenant in tenants:
        mine = months(epoch, min(end_s, ended.get(tenant, end_s)))  # a contract that ended is measured to its end
        for svc in ("ECS", "EVS"):
            per_tenant += monthly(by_key.get((svc, "data", region, tenant), []), svc, "data", region, mine, terms,
                                  maintenance[svc], tenant)
    figures = [*services, *per_tenant]
    return {
        "target_pct": terms.target_pct,
        "min_pct": _floor6(min((f.availability_pct for f in figures), default=100.0)),
        "months_missed": sum(1 for f in services if not f.met),
        "maintenance_s": sum(e - s for spans in maintenance.values() for s, e in spans),
        "services": [_row(f) | {"met": f.met} for f in services],
        "tenants": [_row(f) | {"met": f.met, "credit_pct": terms.credit(f.availability_pct)} for f in per_tenant],
        "intervals": list(intervals),
    }


def _floor6(pct: float) -> float:
    """Six decimals, rounded down: a month with any downtime never shows 100.0."""
    return math.floor(pct * 1e6) / 1e6


def _row(f: Any) -> dict[str, Any]:
    row = {"service": f.service, "plane": f.plane, "scope": f.scope, "month": f.month,
           "downtime_s": round(f.downtime_s, 3), "availability_pct": _floor6(f.availability_pct),
           "target_pct": f.target_pct}
    if f.tenant is not None:
        row = {"tenant": f.tenant, **row}
    return row


def change_of(spec_index: int, kind: str, service: str, announced: dt.datetime, start: dt.datetime,
              duration_s: float) -> Change:
    return Change(f"CHG-{spec_index + 1}", kind, service, announced, start, dt.timedelta(seconds=duration_s))

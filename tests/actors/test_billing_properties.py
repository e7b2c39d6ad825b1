"""Invoices are additive (ECS-2, ECS-7, SDRS-3, VBS-1): for any event history and any
reserved instances, the invoices of the days of a month add up EXACTLY to the month's,
line kind by line kind; no amount is negative but credits; no usage, no invoice.

The month is March 2026 in Paris: 31 days, one of them 23 hours long (DST)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import example, given
from hypothesis import strategies as st

from actors.billing import Invoice, Meter, ReservedInstance, load_prices, with_credits
from actors.billing.catalogue import TERMS
from actors.billing.invoice import invoice
from actors.billing.meter import KINDS
from actors.billing.reserved import Month, seconds

PARIS = ZoneInfo("Europe/Paris")
EPOCH = dt.datetime(2026, 3, 1, tzinfo=PARIS)
MONTH = Month(2026, 3)
M0, M1 = MONTH.span(EPOCH)
DAYS = [(seconds(dt.datetime(2026, 3, d, tzinfo=PARIS), EPOCH),
         seconds(dt.datetime(2026, 3, d, tzinfo=PARIS) + dt.timedelta(days=1), EPOCH)) for d in range(1, 32)]
REGION = "eu-west-0"
PRICES = load_prices(None, REGION)
FLAVORS = ("s3.large.2", "s3.xlarge.2", "d2.xlarge.8")
TENANTS = ("acme", "globex")
LOCAL = {"d2.xlarge.8"}
END = float(M1)

times = st.integers(0, 2 * int(M1) + 7200).map(lambda x: x / 2)  # half seconds, a little past the month
Event = tuple[float, int, str, str, dict[str, Any]]


@st.composite
def server_history(draw: st.DrawFn, i: int) -> list[Event]:
    sid, host, tenant = f"s{i}", f"h{i}", draw(st.sampled_from(TENANTS))
    flavor = draw(st.sampled_from(FLAVORS[::2]))  # two flavors: servers often compete for the same RI
    created = draw(times)
    out: list[Event] = [(created, 0, "eu-west-0b", "ServerCreated",
                         {"server": sid, "tenant": tenant, "host": host, "flavor": flavor, "auto_recovery": True})]
    ops = sorted(draw(st.lists(st.tuples(times, st.sampled_from(["stop", "start", "resize", "crash", "delete"])),
                               max_size=6)))
    for t, op in ops:
        if t < created:
            continue
        if op in ("stop", "start"):
            out.append((t, 0, "eu-west-0b", "ServerStateChanged",
                        {"server": sid, "tenant": tenant, "state": "shutoff" if op == "stop" else "active"}))
        elif op == "resize":
            flavor = draw(st.sampled_from(FLAVORS))
            out.append((t, 0, "eu-west-0b", "ServerResized", {"server": sid, "tenant": tenant, "flavor": flavor}))
        elif op == "crash":
            local = flavor in LOCAL
            out += [(t, 0, "eu-west-0b", "HostSuspected", {"host": host}),
                    (t + 60, 0, "eu-west-0b", "HostFenced",
                     {"host": host, "recovering": [] if local else [sid],
                      "down": {"flavor has a local disk": [sid]} if local else {}})]
            out.append((t + 600, 0, "eu-west-0b", "ServerRecovered",
                        {"server": sid, "tenant": tenant, "from_host": host, "to_host": host + "x"})
                       if not local else
                       (t + 3600, 0, "eu-west-0b", "HostReturned", {"host": host, "removed": [], "restarted": [sid]}))
        else:
            out.append((t, 0, "eu-west-0b", "ServerDeleted", {"server": sid, "tenant": tenant}))
            break
    return out


@st.composite
def volume_history(draw: st.DrawFn, i: int) -> list[Event]:
    vid, tenant, src = f"v{i}", draw(st.sampled_from(TENANTS)), "volumes-eu-west-0b"
    size = draw(st.integers(10, 500))
    created = draw(times)
    out: list[Event] = [(created, 0, src, "VolumeCreated", {"volume": vid, "tenant": tenant, "size_gb": size,
                                                            "type": draw(st.sampled_from(["SATA", "SSD"])),
                                                            "bootable": False})]
    for t in sorted(draw(st.lists(times, max_size=2))):
        if t >= created:
            size += draw(st.integers(1, 100))
            out.append((t, 0, src, "VolumeExpanded", {"volume": vid, "tenant": tenant, "size_gb": size}))
    backups = sorted(t for t in draw(st.lists(times, max_size=4)) if t >= created)
    for k, t in enumerate(backups):
        bid = f"{vid}-b{k}"
        out += [(t, 0, "backups", "BackupRequested", {"backup": bid, "tenant": tenant, "server": None,
                                                      "volumes": [vid], "policy": None}),
                (t + 30, 1, "backups", "BackupCreated", {"backup": bid, "tenant": tenant, "taken_at": t,
                                                         "nbytes": draw(st.integers(1, 50 << 30)),
                                                         "full": [k == 0]})]
        gone = draw(st.one_of(st.none(), times))
        if gone is not None and gone > t + 30:
            later = k + 1 < len(backups) and backups[k + 1] + 30 < gone
            out.append((gone, 2, "backups", "BackupDeleted", {"backup": bid, "tenant": tenant,
                                                              "data_kept_for": int(later)}))
    if draw(st.booleans()):
        t0, t1 = sorted(draw(st.tuples(times, times)))
        out += [(t0, 0, "sdrs", "GroupCreated", {"group": f"g{i}", "name": f"app{i}", "tenant": tenant, "vpc": "v",
                                                 "production_az": "eu-west-0b", "recovery_az": "eu-west-0a"}),
                (max(t0, created), 1, "sdrs", "ServerProtected", {"group": f"g{i}", "server": f"p{i}",
                                                                  "volumes": [vid]}),
                (t1, 2, "sdrs", "GroupDeleted", {"group": f"g{i}"})]
    return out


def instants(lo: dt.datetime, hi: dt.datetime) -> st.SearchStrategy[dt.datetime]:
    return st.integers(0, int((hi - lo).total_seconds())).map(lambda s: (lo + dt.timedelta(seconds=s)))


@st.composite
def reserved(draw: st.DrawFn, i: int, servers: list[tuple[str, str]]) -> ReservedInstance:
    """Mostly for a (tenant, flavor) some server has, and mostly covering March."""
    subscribed = draw(instants(dt.datetime(2026, 1, 1, tzinfo=PARIS), dt.datetime(2026, 3, 31, tzinfo=PARIS)))
    tenant, flavor = draw(st.sampled_from(servers or [(t, f) for t in TENANTS for f in FLAVORS]))
    ri = ReservedInstance.subscribe(f"ri-{i}", tenant, REGION, flavor, draw(st.sampled_from(TERMS)), subscribed,
                                    PRICES, upfront=draw(st.booleans()), flexible=draw(st.booleans()))
    if ri.flexible and draw(st.booleans()):
        flavor = draw(st.sampled_from([f for f in FLAVORS if f != ri.flavor]))
        ri = ri.modify(subscribed + dt.timedelta(days=draw(st.integers(0, 40))), flavor, PRICES)
    if draw(st.integers(0, 3)) == 0:
        last = ri.modifications[-1].at if ri.modifications else subscribed
        ri = ri.cancel(last + dt.timedelta(seconds=draw(st.integers(0, 60 * 86400))))
    return ri


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[Event], list[ReservedInstance]]:
    events: list[Event] = []
    for i in range(draw(st.integers(0, 4))):
        events += draw(server_history(i))
    for i in range(draw(st.integers(0, 3))):
        events += draw(volume_history(i))
    servers = [(e[4]["tenant"], e[4]["flavor"]) for e in events if e[3] == "ServerCreated"]
    ris = [draw(reserved(i, servers)) for i in range(draw(st.integers(0, 3)))]
    return sorted(events, key=lambda e: (e[0], e[1])), ris


def by_kind(invoices: list[Invoice], field: Callable[[Any], Fraction]) -> dict[str, Fraction]:
    out: dict[str, Fraction] = {}
    for inv in invoices:
        for line in inv.lines:
            out[line.kind] = out.get(line.kind, Fraction(0)) + field(line)
    return out


def _competing() -> tuple[list[Event], list[ReservedInstance]]:
    """s1 runs all March but 10 March, s0 runs only that day: s1 is covered for the whole
    month, 10 March included, though s0 used more that day (ECS-7: decided per month)."""
    day0, day1 = float(DAYS[9][0]), float(DAYS[9][1])
    created = {"tenant": "acme", "host": "h", "flavor": "s3.large.2", "auto_recovery": True}
    events: list[Event] = [
        (0.0, 0, "eu-west-0b", "ServerCreated", {"server": "s1", **created}),
        (day0, 0, "eu-west-0b", "ServerCreated", {"server": "s0", **created}),
        (day0, 1, "eu-west-0b", "ServerStateChanged", {"server": "s1", "tenant": "acme", "state": "shutoff"}),
        (day1, 0, "eu-west-0b", "ServerDeleted", {"server": "s0", "tenant": "acme"}),
        (day1, 1, "eu-west-0b", "ServerStateChanged", {"server": "s1", "tenant": "acme", "state": "active"})]
    ri = ReservedInstance.subscribe("ri-0", "acme", REGION, "s3.large.2", 1, dt.datetime(2026, 2, 3, tzinfo=PARIS),
                                    PRICES)
    return events, [ri]


@given(worlds())
@example(_competing())
def test_ecs2_ecs7_daily_invoices_add_up_to_the_monthly_one(world: tuple[list[Event], list[ReservedInstance]]) -> None:
    events, ris = world
    meter = Meter(REGION)
    for t, _, src, kind, fields in events:
        meter(t, f"{REGION}/{src}", kind, fields)
    usage = meter.usage(M0, M1)
    for tenant in TENANTS:
        month = invoice(tenant, M0, M1, usage, ris, PRICES, EPOCH)
        days = [invoice(tenant, d0, d1, usage, ris, PRICES, EPOCH) for d0, d1 in DAYS]
        assert sum((d.total for d in days), Fraction(0)) == month.total
        amounts = by_kind([month], lambda x: x.amount)
        assert by_kind(days, lambda x: x.amount) == amounts
        assert by_kind(days, lambda x: x.quantity) == by_kind([month], lambda x: x.quantity)
        assert all(line.amount >= 0 and line.quantity >= 0 for inv in [month, *days] for line in inv.lines)
        mine = {u.resource for u in usage if u.tenant == tenant}
        assert {x.resource for x in month.lines if x.kind in KINDS} <= mine  # TEN-1: only the tenant's own usage
        credited = with_credits(month, {"ECS": 10, "EVS": 5.5, "CBR": 100, "SDRS": 50})
        credits = [x for x in credited.lines if x.kind == "credit"]
        assert all(x.amount < 0 for x in credits) and credited.total >= 0
        assert [x for x in credited.lines if x.kind != "credit"] == list(month.lines)


@given(st.tuples(times, times).filter(lambda p: p[0] != p[1]).map(sorted))
def test_no_usage_and_no_reserved_instance_gives_an_empty_invoice(period: list[float]) -> None:
    inv = invoice("acme", period[0], period[1], [], [], PRICES, EPOCH)
    assert inv.lines == () and inv.total == 0

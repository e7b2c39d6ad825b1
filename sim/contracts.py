"""The commercial side of a scenario file: support plans, reserved instances, contract
ends (per tenant), SLA terms, price catalogue, support desk and planned changes.

Parsed with the scenario's reader, so every error names file, line and field. What the
fields mean is decided in `actors/` (availability, support, changes, billing, hds):
this module only turns TOML into their values and refuses what they would refuse.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from actors.availability import SERVICES, CreditTier, SlaTerms
from actors.billing import PriceCatalogue, ReservedInstance, load_prices
from actors.support import PLANS as PLAN_TABLE
from actors.support import NamedContacts, plan_named
from actors.topology import RegionInfo
from runtime.errors import ConfigError, InvalidRequest

if TYPE_CHECKING:
    from sim.scenario import _Reader

PLANS = tuple(PLAN_TABLE)
CHANGE_KINDS = ("urgent", "code-release", "major-release", "corrective-maintenance", "incompatible-api", "standard")


@attrs.frozen
class SupportSpec:
    plan: str
    since: dt.datetime | None = None  # subscribed then (default: 6 months before the run starts)
    contacts: tuple[str, ...] = ()


@attrs.frozen
class ReservedSpec:
    flavor: str
    count: int
    term_years: int
    upfront: bool
    flexible: bool
    subscribed: dt.datetime
    cancelled: dt.datetime | None = None


@attrs.frozen
class ChangeSpec:
    at_s: float
    announced_s: float
    kind: str
    service: str
    duration_s: float


@attrs.frozen
class Contract:
    """A tenant's contract: support plan, reserved instances, and when it ends (TEN-5)."""

    support: SupportSpec = SupportSpec("Basic")
    reserved: tuple[ReservedSpec, ...] = ()
    end_s: float | None = None
    erase_after_s: float = 0.0


def contract(r: _Reader, t: dict[str, Any], p: str, start: dt.datetime, run_s: float,
             prices: PriceCatalogue) -> Contract:
    support = SupportSpec("Basic")
    if "support" in t:
        s = r.table(t["support"], f"{p}.support", ("plan", "since", "contacts"), ("plan",))
        contacts = s.get("contacts", [])
        if not isinstance(contacts, list) or not all(isinstance(c, str) and c for c in contacts):
            raise r.error(f"{p}.support.contacts", f"must be a list of names, got {contacts!r}",
                          'e.g. ["alice@acme.example", "bob@acme.example"]')
        if len(set(contacts)) != len(contacts):
            raise r.error(f"{p}.support.contacts", "a named contact is listed twice")
        support = SupportSpec(r.choice(s["plan"], f"{p}.support.plan", list(PLANS)),
                              r.instant(s["since"], f"{p}.support.since") if "since" in s else None,
                              tuple(contacts))
        try:  # SLA-6: at most the plan's number of named contacts
            NamedContacts(str(t.get("name", "")), plan_named(support.plan), contacts)
        except InvalidRequest as exc:
            raise r.error(f"{p}.support.contacts", str(exc)) from None
    reserved = []
    entries = t.get("reserved", [])
    if not isinstance(entries, list):
        raise r.error(f"{p}.reserved", "must be a list of tables")
    for j, e in enumerate(entries):
        q = f"{p}.reserved[{j}]"
        e = r.table(e, q, ("flavor", "count", "term_years", "upfront", "flexible", "subscribed", "cancelled"),
                    ("flavor", "term_years", "subscribed"))
        term = r.integer(e["term_years"], f"{q}.term_years", 1)
        if term not in (1, 2, 3, 5):
            raise r.error(f"{q}.term_years", f"{term} is not a reserved-instance term (ECS-7)", "1, 2, 3 or 5")
        subscribed = r.instant(e["subscribed"], f"{q}.subscribed")
        cancelled = r.instant(e["cancelled"], f"{q}.cancelled") if "cancelled" in e else None
        if cancelled is not None and cancelled <= subscribed:
            raise r.error(f"{q}.cancelled", f"{cancelled.isoformat()} is not after the subscription "
                          f"({subscribed.isoformat()})")
        spec = ReservedSpec(str(e["flavor"]), r.integer(e.get("count", 1), f"{q}.count", 1), term,
                            r.boolean(e.get("upfront", False), f"{q}.upfront"),
                            r.boolean(e.get("flexible", False), f"{q}.flexible"), subscribed, cancelled)
        try:  # ECS-7: the region's catalogue must sell this reserved instance
            subscribe(spec, "check", str(t.get("name", "")) or "tenant", prices)
        except ConfigError as exc:
            raise r.error(f"{q}.{exc.where.rsplit(': ', 1)[-1]}", exc.problem, exc.valid) from None
        reserved.append(spec)
    end_s = None
    if "contract_end" in t:
        end_s = r.duration(t["contract_end"], f"{p}.contract_end")
        if end_s >= run_s:
            raise r.error(f"{p}.contract_end", f"the contract ends at {end_s:g} s, not before the end of the run "
                          f"({run_s:g} s)")
    erase_after = r.duration(t.get("erase_after", 0), f"{p}.erase_after")
    if erase_after and end_s is None:
        raise r.error(f"{p}.erase_after", "only meaningful with contract_end")
    return Contract(support, tuple(reserved), end_s, erase_after)


def subscribe(spec: ReservedSpec, ident: str, tenant: str, prices: PriceCatalogue) -> ReservedInstance:
    ri = ReservedInstance.subscribe(ident, tenant, prices.region, spec.flavor, spec.term_years, spec.subscribed,
                                    prices, spec.upfront, spec.flexible)
    return ri.cancel(spec.cancelled) if spec.cancelled is not None else ri


def reserved_instances(tenant: str, contract: Contract, prices: PriceCatalogue) -> list[ReservedInstance]:
    """The tenant's RIs, `count` of each line, ids `TENANT-ri-LINE-K`."""
    return [subscribe(spec, f"{tenant}-ri-{j}-{k}", tenant, prices)
            for j, spec in enumerate(contract.reserved) for k in range(spec.count)]


def price_catalogue(r: _Reader, value: Any, source: str, region: RegionInfo) -> PriceCatalogue:
    """The region's prices: `[billing] prices` (a partner region's file), or the bundled one."""
    path = prices_path(r, value, source)
    try:
        prices = load_prices(path, region.name)
    except ConfigError as exc:
        if path is None:  # no bundled file for this (partner) region
            raise r.error("billing.prices", exc.problem, "the price catalogue file of " + region.name) from None
        raise  # names the catalogue file, its line and field
    if prices.currency != region.currency:
        raise r.error("billing.prices", f"{prices.source} bills in {prices.currency}, region {region.name} in "
                      f"{region.currency}", f"a catalogue in {region.currency}")
    return prices


def sla_terms(r: _Reader, value: Any) -> SlaTerms:
    s = r.table(value, "sla", ("target_pct", "targets", "credits"))
    targets = r.table(s.get("targets", {}), "sla.targets", SERVICES)
    kwargs: dict[str, Any] = {"targets": {k: r.number(v, f"sla.targets.{k}") for k, v in targets.items()}}
    if "target_pct" in s:
        kwargs["target_pct"] = r.number(s["target_pct"], "sla.target_pct")
    if "credits" in s:
        tiers = s["credits"]
        if not isinstance(tiers, list):
            raise r.error("sla.credits", "must be a list of { below_pct, credit_pct }")
        kwargs["credits"] = tuple(
            CreditTier(r.number(x["below_pct"], f"sla.credits[{i}].below_pct"),
                       r.number(x["credit_pct"], f"sla.credits[{i}].credit_pct"))
            for i, x in enumerate(r.table(x, f"sla.credits[{i}]", ("below_pct", "credit_pct"),
                                          ("below_pct", "credit_pct")) for i, x in enumerate(tiers)))
    try:
        return SlaTerms(**kwargs)
    except ConfigError as exc:
        raise r.error(exc.where, exc.problem, exc.valid) from None


def prices_path(r: _Reader, value: Any, source: str) -> Path | None:
    b = r.table(value, "billing", ("prices",))
    if "prices" not in b:
        return None
    path = Path(str(b["prices"]))
    if not path.is_absolute():
        path = Path(source).parent / path
    if not path.is_file():
        raise r.error("billing.prices", f"no price catalogue at {path}",
                      "a TOML file like actors/prices/eu-west-0.toml")
    return path


def changes(r: _Reader, value: Any, run_s: float) -> tuple[ChangeSpec, ...]:
    if not isinstance(value, list):
        raise r.error("changes", "must be an array of tables ([[changes]])")
    out = []
    for i, c in enumerate(value):
        p = f"changes[{i}]"
        c = r.table(c, p, ("at", "announced", "kind", "service", "duration"), ("at", "kind", "service", "duration"))
        at = r.duration(c["at"], f"{p}.at")
        if at >= run_s:
            raise r.error(f"{p}.at", f"change at {at:g} s is not before the end of the run ({run_s:g} s)")
        announced = r.duration(c.get("announced", c["at"]), f"{p}.announced")
        if announced > at:
            raise r.error(f"{p}.announced", "a change cannot be announced after it starts")
        out.append(ChangeSpec(at, announced, r.choice(c["kind"], f"{p}.kind", list(CHANGE_KINDS)),
                              r.choice(c["service"], f"{p}.service", list(SERVICES)),
                              r.duration(c["duration"], f"{p}.duration")))
    return tuple(out)

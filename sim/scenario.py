"""Scenario files (TOML): parsing and validation with errors that say file, line and fix.

Nothing runs until the whole file is valid. Every error is a `ConfigError` whose
`where` is `FILE:LINE: field.path`.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from actors.availability import SERVICES, SlaTerms
from actors.az import RecoverySettings
from actors.billing import PriceCatalogue, load_prices
from actors.flavors import FLAVORS
from actors.quotas import RESOURCES
from actors.scheduler import GroupPolicy
from actors.topology import DEFAULTS, RegionInfo, Topology, build_topology, load_regions
from runtime.errors import ConfigError
from runtime.toml_reader import TomlReader
from sim import contracts
from sim.contracts import ChangeSpec, Contract
from sim.failures import FAULTS, PRESETS, ScheduledFault
from sim.hosts import HostTiming
from sim.storage import StorageTiming

DEFAULT_START = "2026-01-01T00:00:00+01:00"


@attrs.frozen
class ServerBatch:
    count: int
    flavor: str
    az: str
    auto_recovery: bool = False
    group: str | None = None
    dedicated: bool = False
    protect: str | None = None  # a protection group name (or the name of a counted family of groups)


@attrs.frozen
class ProtectionGroupSpec:
    """`count` > 1 declares a family NAME-0 .. NAME-(count-1); servers spread over it in turn."""

    name: str
    production_az: str
    recovery_az: str
    count: int = 1

    def names(self) -> list[str]:
        return [self.name] if self.count == 1 else [f"{self.name}-{k}" for k in range(self.count)]


@attrs.frozen
class TenantSpec:
    name: str
    quotas: Mapping[str, int]
    server_groups: tuple[tuple[str, str], ...]
    servers: tuple[ServerBatch, ...]
    protection_groups: tuple[ProtectionGroupSpec, ...] = ()
    contract: Contract = Contract()


OPERATIONS = ("start-protection", "stop-protection", "drill", "failover", "reprotect", "switchover", "backup")


@attrs.frozen
class Operation:
    """An operator's action at a time: on every protection group (or every tenant, for
    `backup`) whose name starts with `target` ("" or "*": all)."""

    at_s: float
    action: str
    target: str
    every_s: float | None = None  # repeat until the end of the run


@attrs.frozen
class Workload:
    """Data on every server's system volume: used when created, then written steadily."""

    volume_used_gb: float = 0.0
    volume_write_bytes_per_s: float = 0.0


@attrs.frozen
class Expectation:
    name: str
    equals: Any = None
    min: float | None = None
    max: float | None = None


@attrs.frozen
class Scenario:
    name: str
    source: str
    seed: int
    duration_s: float
    topology: Topology
    timing: HostTiming
    recovery: RecoverySettings
    tenants: tuple[TenantSpec, ...]
    preset: str
    schedule: tuple[ScheduledFault, ...]
    expect: tuple[Expectation, ...]
    storage: StorageTiming = StorageTiming()
    workload: Workload = Workload()
    operations: tuple[Operation, ...] = ()
    start: dt.datetime = dt.datetime.fromisoformat(DEFAULT_START)  # the calendar instant of virtual time 0
    sla: SlaTerms = SlaTerms()
    prices: PriceCatalogue = attrs.field(factory=lambda: load_prices(None, "eu-west-0"))  # the region's
    changes: tuple[ChangeSpec, ...] = ()
    desk: Mapping[str, Any] = attrs.field(factory=dict)  # [support]: the provider's support desk model


class _Reader(TomlReader):
    """The scenario's reader: calendar instants default to the provider's time zone."""

    def instant(self, value: Any, path: str, zone: str = DEFAULTS["working_hours"]["timezone"]) -> dt.datetime:
        return super().instant(value, path, zone)


def load(path: str | Path, seed: int | None = None) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from exc
    return parse(text, str(path), seed)


def parse(text: str, source: str = "<scenario>", seed: int | None = None) -> Scenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, f"not valid TOML: {exc}") from exc
    r = _Reader(source, text)
    r.table(data, "(top level)", ("scenario", "regions", "topology", "timing", "recovery", "tenants", "failures",
                                  "expect", "storage", "workload", "operations", "sla", "billing", "support",
                                  "changes"),
            ("scenario", "topology"))
    meta = r.table(data["scenario"], "scenario", ("name", "seed", "duration", "description", "start"),
                   ("name", "duration"))
    start = r.instant(meta.get("start", DEFAULT_START), "scenario.start")
    run_seed = seed if seed is not None else r.integer(meta.get("seed", 0), "scenario.seed")
    duration = r.duration(meta["duration"], "scenario.duration")

    partners = r.table(data.get("regions", {}), "regions", tuple(data.get("regions", {})))
    for name, table in partners.items():
        r.table(table, f"regions.{name}", ("city", "currency", "azs", "only_for", "inter_az_latency_ms",
                                          "intra_az_latency_ms", "sdrs_recovery_azs"), ("city", "azs"))
    try:
        regions = load_regions(partners)
    except ConfigError as exc:
        raise r.error("regions", exc.problem, exc.valid) from None
    topology = _topology(r, data["topology"], regions)
    timing_fields = [f.name for f in attrs.fields(HostTiming)]
    timing_tab = r.table(data.get("timing", {}), "timing", tuple(timing_fields))
    timing = HostTiming(**{k: r.number(v, f"timing.{k}") for k, v in timing_tab.items()})
    rec_tab = r.table(data.get("recovery", {}), "recovery",
                      ("concurrency", "min_interval_h", "fence_retry_s", "build_retry_s", "fencing"))
    recovery = RecoverySettings(
        concurrency=r.integer(rec_tab.get("concurrency", DEFAULTS["recovery"]["concurrency"]),
                              "recovery.concurrency", 1),
        min_interval_s=r.number(rec_tab.get("min_interval_h", DEFAULTS["recovery"]["min_interval_h"]),
                                "recovery.min_interval_h") * 3600.0,
        fence_retry_s=r.number(rec_tab.get("fence_retry_s", DEFAULTS["recovery"]["fence_retry_s"]),
                               "recovery.fence_retry_s", 1.0),
        build_retry_s=r.number(rec_tab.get("build_retry_s", DEFAULTS["recovery"]["build_retry_s"]),
                               "recovery.build_retry_s", 1.0),
        fencing=r.boolean(rec_tab.get("fencing", True), "recovery.fencing"))

    tenants = data.get("tenants", [])
    if not isinstance(tenants, list):
        raise r.error("tenants", "must be an array of tables ([[tenants]])")
    prices = contracts.price_catalogue(r, data.get("billing", {}), source, topology.region)
    tenant_specs = tuple(spec for i, t in enumerate(tenants)
                         for spec in _tenants(r, t, i, topology, start, duration, prices))
    names = [t.name for t in tenant_specs]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise r.error(f"tenants[{i}].name", f"tenant {name!r} is declared twice")

    failures = r.table(data.get("failures", {}), "failures", ("preset", "schedule"))
    preset = r.choice(failures.get("preset", "none"), "failures.preset", sorted(PRESETS))
    schedule = failures.get("schedule", [])
    if not isinstance(schedule, list):
        raise r.error("failures.schedule", "must be an array of tables ([[failures.schedule]])")
    faults = tuple(_fault(r, f, i, topology, duration) for i, f in enumerate(schedule))

    storage_fields = [f.name for f in attrs.fields(StorageTiming)]
    storage_tab = r.table(data.get("storage", {}), "storage", tuple(storage_fields))
    storage_values: dict[str, Any] = {k: (r.integer(v, f"storage.{k}", 4096) if k == "chunk_bytes"
                                          else r.number(v, f"storage.{k}")) for k, v in storage_tab.items()}
    storage = StorageTiming(**storage_values)
    for k in ("inter_az_bps", "backup_bps", "gateway_bps"):
        if getattr(storage, k) <= 0:
            raise r.error(f"storage.{k}", "a bandwidth must be > 0 bytes/s")
    work_tab = r.table(data.get("workload", {}), "workload", ("volume_used_gb", "volume_write_bytes_per_s"))
    workload = Workload(*(r.number(work_tab.get(k, 0.0), f"workload.{k}")
                          for k in ("volume_used_gb", "volume_write_bytes_per_s")))
    operations = data.get("operations", [])
    if not isinstance(operations, list):
        raise r.error("operations", "must be an array of tables ([[operations]])")
    groups = [n for t in tenant_specs for g in t.protection_groups for n in [g.name, *g.names()]]
    ops = tuple(_operation(r, o, i, duration, groups, names) for i, o in enumerate(operations))

    expect = r.table(data.get("expect", {}), "expect", tuple(data.get("expect", {})))
    expectations = tuple(_expectation(r, k, v) for k, v in expect.items())
    sla = contracts.sla_terms(r, data.get("sla", {}))
    changes = contracts.changes(r, data.get("changes", []), duration)
    desk = r.table(data.get("support", {}), "support", tuple(DEFAULTS.get("support", {})))
    return Scenario(str(meta["name"]), source, run_seed, duration, topology, timing, recovery, tenant_specs,
                    preset, faults, expectations, storage, workload, ops, start, sla, prices, changes, desk)


def _operation(r: _Reader, value: Any, i: int, run_s: float, groups: list[str], tenants: list[str]) -> Operation:
    p = f"operations[{i}]"
    o = r.table(value, p, ("at", "action", "target", "every"), ("at", "action"))
    action = r.choice(o["action"], f"{p}.action", list(OPERATIONS))
    target = str(o.get("target", "*")).rstrip("*")
    names = tenants if action == "backup" else groups
    if not any(n.startswith(target) for n in names):
        kind = "tenant" if action == "backup" else "protection group"
        raise r.error(f"{p}.target", f"no {kind} name starts with {target!r}",
                      ", ".join(names[:12]) + ' or "*" for all' if names else f"declare a {kind} first")
    at = r.duration(o["at"], f"{p}.at")
    if at >= run_s:
        raise r.error(f"{p}.at", f"operation at {at:g} s is not before the end of the run ({run_s:g} s)")
    every = r.duration(o["every"], f"{p}.every") if "every" in o else None
    if every is not None and every < 60:
        raise r.error(f"{p}.every", f"repeating every {every:g} s is too often", "at least 60 s, e.g. \"1d\"")
    return Operation(at, action, target, every)


def _topology(r: _Reader, value: Any, regions: dict[str, RegionInfo]) -> Topology:
    t = r.table(value, "topology", ("region", "hosts_per_az", "host", "dedicated"), ("region", "hosts_per_az"))
    region = regions[r.choice(t["region"], "topology.region", sorted(regions))]
    per_az = t["hosts_per_az"]
    if isinstance(per_az, dict):
        for az in per_az:
            r.choice(az, f"topology.hosts_per_az.{az}", list(region.azs))
        counts = {az: r.integer(per_az.get(az, 0), f"topology.hosts_per_az.{az}") for az in region.azs}
    else:
        n = r.integer(per_az, "topology.hosts_per_az", 1)
        counts = dict.fromkeys(region.azs, n)
    shape = dict(DEFAULTS["host"])
    shape.update(r.table(t.get("host", {}), "topology.host", tuple(DEFAULTS["host"])))
    dedicated: dict[str, list[tuple[str, int]]] = {}
    for i, d in enumerate(t.get("dedicated", [])):
        d = r.table(d, f"topology.dedicated[{i}]", ("tenant", "az", "hosts"), ("tenant", "az", "hosts"))
        az = r.choice(d["az"], f"topology.dedicated[{i}].az", list(region.azs))
        count = r.integer(d["hosts"], f"topology.dedicated[{i}].hosts", 1)
        dedicated.setdefault(az, []).append((str(d["tenant"]), count))
    try:
        return build_topology(region, counts, r.integer(shape["vcpus"], "topology.host.vcpus", 1),
                              int(r.number(shape["ram_gb"], "topology.host.ram_gb", 1) * 1024),
                              r.integer(shape["rack_size"], "topology.host.rack_size", 1),
                              r.integer(shape["racks_per_power_domain"], "topology.host.racks_per_power_domain", 1),
                              dedicated)
    except ConfigError as exc:
        raise r.error("topology.dedicated", exc.problem, exc.valid) from None


def _tenants(r: _Reader, value: Any, i: int, topology: Topology, start: dt.datetime,
             run_s: float, prices: PriceCatalogue) -> list[TenantSpec]:
    """One tenant, or with `count` = N a fleet of N alike tenants NAME-0 .. NAME-(N-1)."""
    spec = attrs.evolve(_tenant(r, value, i, topology),
                        contract=contracts.contract(r, value, f"tenants[{i}]", start, run_s, prices))
    count = r.integer(value.get("count", 1), f"tenants[{i}].count", 1)
    return [spec] if count == 1 else [attrs.evolve(spec, name=f"{spec.name}-{k}") for k in range(count)]


def _tenant(r: _Reader, value: Any, i: int, topology: Topology) -> TenantSpec:
    p = f"tenants[{i}]"
    t = r.table(value, p, ("name", "quotas", "server_groups", "servers", "customer_type", "protection_groups",
                           "count", "support", "reserved", "contract_end", "erase_after"), ("name",))
    quotas = r.table(t.get("quotas", {}), f"{p}.quotas", RESOURCES)
    for k, v in quotas.items():
        r.integer(v, f"{p}.quotas.{k}")
    groups = []
    for j, g in enumerate(t.get("server_groups", [])):
        g = r.table(g, f"{p}.server_groups[{j}]", ("name", "policy"), ("name", "policy"))
        groups.append((str(g["name"]), r.choice(g["policy"], f"{p}.server_groups[{j}].policy",
                                                [x.value for x in GroupPolicy])))
    group_names = [g[0] for g in groups]
    azs = list(topology.region.azs)
    pgs = []
    for j, g in enumerate(t.get("protection_groups", [])):
        q = f"{p}.protection_groups[{j}]"
        g = r.table(g, q, ("name", "production_az", "recovery_az", "count"), ("name", "production_az", "recovery_az"))
        prod = r.choice(g["production_az"], f"{q}.production_az", azs)
        # SDRS-1: another AZ of the same region, one the region allows for recovery.
        rec = r.choice(g["recovery_az"], f"{q}.recovery_az", list(topology.region.recovery_azs(prod)))
        pgs.append(ProtectionGroupSpec(str(g["name"]), prod, rec, r.integer(g.get("count", 1), f"{q}.count", 1)))
    pg_names = [g.name for g in pgs]
    batches = []
    for j, s in enumerate(t.get("servers", [])):
        q = f"{p}.servers[{j}]"
        s = r.table(s, q, ("count", "flavor", "az", "auto_recovery", "group", "dedicated", "protect"),
                    ("flavor", "az"))
        flavor = r.choice(s["flavor"], f"{q}.flavor", sorted(FLAVORS))
        az = r.choice(s["az"], f"{q}.az", list(topology.region.azs))
        group = s.get("group")
        if group is not None:
            r.choice(group, f"{q}.group", group_names)
        ar = r.boolean(s.get("auto_recovery", False), f"{q}.auto_recovery")
        if ar and FLAVORS[flavor].has_local_disk:
            raise r.error(f"{q}.auto_recovery", f"flavor {flavor} has a local disk, so auto-recovery is not "
                          "available (ECS-4)", "a flavor without local disk, or auto_recovery = false")
        protect = s.get("protect")
        if protect is not None:
            pg = pgs[pg_names.index(r.choice(protect, f"{q}.protect", pg_names))]
            if pg.production_az != az:
                raise r.error(f"{q}.protect", f"protection group {pg.name!r} protects servers of "
                              f"{pg.production_az}, these are in {az}", f"a group whose production_az is {az}")
        batches.append(ServerBatch(r.integer(s.get("count", 1), f"{q}.count", 1), flavor, az, ar, group,
                                   r.boolean(s.get("dedicated", False), f"{q}.dedicated"), protect))
    return TenantSpec(str(t["name"]), quotas, tuple(groups), tuple(batches), tuple(pgs))


def _fault(r: _Reader, value: Any, i: int, topology: Topology, run_s: float) -> ScheduledFault:
    p = f"failures.schedule[{i}]"
    f = r.table(value, p, ("at", "fault", "target", "duration", "peer"), ("at", "fault", "target"))
    kind = r.choice(f["fault"], f"{p}.fault", list(FAULTS))
    target = str(f["target"])
    peer = None
    if kind in ("storage-outage", "link-down"):
        azs = list(topology.region.azs)
        r.choice(target, f"{p}.target", azs)
        if kind == "link-down":
            if "peer" not in f:
                raise r.error(p, "link-down needs the AZ at the other end of the link: peer = ...",
                              ", ".join(a for a in azs if a != target))
            peer = r.choice(f["peer"], f"{p}.peer", [a for a in azs if a != target])
    elif kind == "api-outage":
        r.choice(target, f"{p}.target", list(SERVICES))
    else:
        if "peer" in f:
            raise r.error(f"{p}.peer", f"only link-down takes a peer, not {kind}")
        try:
            members = topology.domain_members(target)
        except ConfigError as exc:
            raise r.error(f"{p}.target", exc.problem, exc.valid) from None
        level = {"host-crash": "host", "host-partition": "host", "rack": "rack", "power-domain": "power_domain",
                 "az-outage": "az"}[kind]
        if level == "host":
            if len(members) != 1 or members[0].name != target:
                raise r.error(f"{p}.target", f"{kind} needs a host name, got {target!r}",
                              f"e.g. {members[0].name}")
        elif getattr(members[0], level) != target:
            raise r.error(f"{p}.target", f"{kind} needs a {level.replace('_', ' ')}, got {target!r}",
                          f"e.g. {getattr(members[0], level)}")
    at = r.duration(f["at"], f"{p}.at")
    if at >= run_s:
        raise r.error(f"{p}.at", f"fault at {at:g} s is not before the end of the run ({run_s:g} s)")
    duration = r.duration(f["duration"], f"{p}.duration") if "duration" in f else None
    return ScheduledFault(at, kind, target, duration, peer)


def _expectation(r: _Reader, name: str, value: Any) -> Expectation:
    path = f'expect."{name}"'
    if isinstance(value, dict):
        v = r.table(value, path, ("min", "max"))
        if not v:
            raise r.error(path, "needs min and/or max", "{ min = 1 }, { max = 300 } or both")
        return Expectation(name, None, r.number(v["min"], f"{path}.min", float("-inf")) if "min" in v else None,
                           r.number(v["max"], f"{path}.max", float("-inf")) if "max" in v else None)
    if not isinstance(value, int | float | bool | str):
        raise r.error(path, f"must be a value or {{ min, max }}, got {value!r}")
    return Expectation(name, value)

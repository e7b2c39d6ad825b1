"""Runs a scenario: builds the world (hosts, storage), the actor tree on the simulation
driver, the faults and the operator's actions, and returns the report. A run is a pure
function of (scenario, seed)."""

from __future__ import annotations

import datetime as dt
import gc
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import simpy

from actors.az import Snapshot
from actors.backups import CreateBackup, GetBackupStats
from actors.billing import Meter
from actors.changes import ChangeCalendar
from actors.hds import EndContract, GetDeletionRecord
from actors.region import CreateTenant, GetServices, GetTenant, Region, RegionServices, RegionSnapshot
from actors.sdrs import CreateDrill as CreateDrillMsg
from actors.sdrs import (
    CreateGroup,
    Failover,
    GetJob,
    JobAccepted,
    ProtectServer,
    ReportGroups,
    Reprotect,
    StartProtection,
    StopProtection,
    Switchover,
)
from actors.tenant import CreateServer, CreateServerGroup, SetApiState
from actors.usage import ServerLedger
from actors.volumes import ListVolumes, VolumeView
from runtime.actor import ActorRef, ActorSystem
from runtime.errors import CloudError, InvalidRequest
from runtime.events import EventLog, JsonlSink
from runtime.ports import HostCapacity
from runtime.storage import GIB
from sim import contract_report, html, service_levels, tables
from sim import report as reports
from sim.contract_report import contract_figures
from sim.contracts import ChangeSpec
from sim.driver import SimDriver
from sim.failures import Injector
from sim.hosts import SimHypervisor, SimPower, World
from sim.scenario import Operation, Scenario, TenantSpec
from sim.storage import StorageModel

Progress = Callable[[float, float], None]
JOB_POLL_S = 1.0


async def _populate(system: ActorSystem, region: ActorRef, services: RegionServices, tenant: TenantSpec,
                    groups: dict[str, list[str]]) -> None:
    """Create the tenant, its servers and its protection groups (servers spread over
    each family of groups in turn). `groups` gets group name -> sDRS group ids."""
    ref = await region.ask(CreateTenant(tenant.name, tenant.quotas))
    for name, policy in tenant.server_groups:
        await ref.ask(CreateServerGroup(name, policy))
    created: dict[int, list[str]] = {b: [] for b in range(len(tenant.servers))}

    async def create(batch_index: int, i: int) -> None:
        batch = tenant.servers[batch_index]
        try:
            sid = await ref.ask(CreateServer(f"{tenant.name}-{batch_index}-{i}", batch.flavor, batch.az,
                                             batch.auto_recovery, batch.group, batch.dedicated), timeout=None)
        except CloudError as exc:
            system.emit(f"scenario/{tenant.name}", "CreateRefused", error=str(exc))
        else:
            created[batch_index].append(sid)

    async with system.driver.task_group() as tg:
        for b, batch in enumerate(tenant.servers):
            for i in range(batch.count):
                tg.start_soon(create, b, i)
    if not tenant.protection_groups:
        return
    assert services.sdrs is not None
    family: dict[str, list[str]] = {}
    for spec in tenant.protection_groups:
        family[spec.name] = []
        for name in spec.names():
            accepted: JobAccepted = await services.sdrs.ask(
                CreateGroup(name, tenant.name, f"{tenant.name}-vpc", spec.production_az, spec.recovery_az))
            await _finish(system, services.sdrs, accepted.job)
            family[spec.name].append(accepted.group)
            groups.setdefault(name, []).append(accepted.group)
            if spec.name != name:
                groups.setdefault(spec.name, []).append(accepted.group)
    for b, batch in enumerate(tenant.servers):
        if batch.protect is not None:
            ids = family[batch.protect]
            for k, sid in enumerate(sorted(created[b])):
                await services.sdrs.ask(ProtectServer(ids[k % len(ids)], sid))


async def _finish(system: ActorSystem, sdrs: ActorRef, job: str) -> None:
    while (await sdrs.ask(GetJob(job))).status == "running":
        await system.driver.sleep(JOB_POLL_S)


_GROUP_ACTIONS: dict[str, Callable[[str], object]] = {
    "start-protection": StartProtection, "stop-protection": StopProtection, "failover": Failover,
    "reprotect": Reprotect, "switchover": Switchover,
    "drill": lambda group: CreateDrillMsg(group, f"{group}-drill-vpc"),
}


async def _operate(system: ActorSystem, scenario: Scenario, services: RegionServices, tenants: dict[str, ActorRef],
                   groups: dict[str, list[str]], end: float) -> None:
    """The operator: each action at its time, on every group (or tenant) it names."""
    driver = system.driver
    timeline = sorted((t, i, op) for i, op in enumerate(scenario.operations) for t in _times(op, end))

    async def act(op: Operation, target: str, msg: object, ref: ActorRef) -> None:
        try:
            await ref.ask(msg, timeout=None)
        except CloudError as exc:
            system.emit("scenario/operator", "OperationRefused", action=op.action, target=target, error=str(exc))

    for at, _, op in timeline:
        await driver.sleep(at - driver.now())
        async with driver.task_group() as tg:
            if op.action == "backup":
                assert services.backups is not None
                for name, ref in tenants.items():
                    if name.startswith(op.target):
                        for az in scenario.topology.region.azs:
                            views: list[VolumeView] = await services.volumes[az].ask(ListVolumes(name))
                            for v in views:
                                tg.start_soon(act, op, v.id, CreateBackup(name, v.id), ref)
            else:
                assert services.sdrs is not None
                ids = sorted({g for name, gs in groups.items() if name.startswith(op.target) for g in gs})
                for g in ids:
                    tg.start_soon(act, op, g, _GROUP_ACTIONS[op.action](g), services.sdrs)


async def _changes(system: ActorSystem, scenario: Scenario, region: ActorRef, calendar: ChangeCalendar) -> None:
    """SLA-7: each change submitted when announced; an accepted one takes its service's API
    down for its duration (maintenance, not downtime); a refused one changes nothing."""
    driver = system.driver
    origin = scenario.start

    def at(s: float) -> dt.datetime:
        return origin + dt.timedelta(seconds=s)

    async def interrupt(change: ChangeSpec) -> None:
        await driver.sleep(change.at_s - driver.now())
        await region.ask(SetApiState(change.service, up=False))
        await driver.sleep(change.duration_s)
        await region.ask(SetApiState(change.service, up=True))

    async with driver.task_group() as tg:
        for i, c in sorted(enumerate(scenario.changes), key=lambda x: (x[1].announced_s, x[0])):
            await driver.sleep(c.announced_s - driver.now())
            try:
                calendar.submit(service_levels.change_of(i, c.kind, c.service, at(c.announced_s), at(c.at_s),
                                                         c.duration_s))
            except InvalidRequest as exc:
                system.emit("scenario/changes", "ChangeRefused", change=f"CHG-{i + 1}", change_kind=c.kind,
                            service=c.service, error=str(exc))
                continue
            system.emit("scenario/changes", "ChangeAccepted", change=f"CHG-{i + 1}", change_kind=c.kind,
                        service=c.service, start=c.at_s, duration=c.duration_s)
            if c.duration_s > 0:
                tg.start_soon(interrupt, c)


async def _contract_ends(system: ActorSystem, scenario: Scenario, region: ActorRef) -> None:
    """TEN-5: each tenant whose contract ends during the run is closed and erased."""
    driver = system.driver
    for t in sorted((t for t in scenario.tenants if t.contract.end_s is not None),
                    key=lambda t: (t.contract.end_s, t.name)):
        assert t.contract.end_s is not None
        await driver.sleep(t.contract.end_s - driver.now())
        await region.ask(EndContract(t.name, t.contract.erase_after_s))


def _times(op: Operation, end: float) -> list[float]:
    if op.every_s is None:
        return [op.at_s]
    return [op.at_s + k * op.every_s for k in range(int((end - op.at_s) // op.every_s) + 1)
            if op.at_s + k * op.every_s < end]


def run(scenario: Scenario, seed: int | None = None, out_dir: Path | None = None,
        progress: Progress | None = None) -> dict[str, Any]:
    """Run once. With `out_dir`, writes there `events.jsonl`, `report.json`, `report.html`
    (plots in `plots/`), the tables as CSV and each tenant's monthly invoices (`invoices/`)."""
    seed = scenario.seed if seed is None else seed
    started = time.perf_counter()
    env = simpy.Environment()
    driver = SimDriver(env)
    world = World(env, scenario.timing)
    for h in scenario.topology.hosts:
        world.add_host(h.name, HostCapacity(h.vcpus, h.ram_mb))
    ports = {name: (SimHypervisor(m, driver), SimPower(m, driver)) for name, m in world.hosts.items()}
    region_name = scenario.topology.region.name
    storage = StorageModel(driver, {region_name: list(scenario.topology.region.azs)}, scenario.storage)

    out: IO[str] | None = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        out = (out_dir / "events.jsonl").open("w")
    sink = JsonlSink(out)
    metrics = reports.Metrics(world)
    ledger = ServerLedger()
    outages = service_levels.Outages()
    meter = Meter(scenario.topology.region.name)
    log = EventLog(sink, metrics, ledger, outages, meter)
    system = ActorSystem(driver, seed, log)
    injector = Injector(env, world, scenario.topology, seed, lambda kind, f: log.append(env.now, "sim/faults", kind, f),
                        storage)
    world.on_split_brain = lambda sid, hosts: log.append(env.now, "sim/world", "SplitBrain",
                                                         {"server": sid, "hosts": sorted(hosts)})
    topology = scenario.topology

    if progress is not None:
        def tick() -> Any:
            step = max(scenario.duration_s / 200, 1.0)
            while True:
                progress(env.now, scenario.duration_s)
                yield env.timeout(step)
        env.process(tick())

    stores = {az: storage.block_store(az) for az in topology.region.azs}
    final: dict[str, Any] = {}
    calendar = ChangeCalendar()

    async def main() -> RegionSnapshot:
        async with system.running():
            region = system.spawn(lambda: Region(topology, ports, scenario.recovery, stores,
                                                 storage.object_store(region_name)), region_name)
            services: RegionServices = await region.ask(GetServices())
            injector.on_api = lambda service, up: region.tell(SetApiState(service, up))
            injector.preset(scenario.preset)
            injector.schedule(list(scenario.schedule))
            groups: dict[str, list[str]] = {}
            async with driver.task_group() as tg:
                for tenant in scenario.tenants:
                    tg.start_soon(_populate, system, region, services, tenant, groups)
            work = scenario.workload
            for az, volumes in storage.volumes.items():
                for vid in sorted(volumes):
                    storage.set_workload(az, vid, work.volume_used_gb * GIB, work.volume_write_bytes_per_s)
            tenants = {t.name: await region.ask(GetTenant(t.name)) for t in scenario.tenants}
            gc.freeze()  # the fleet lives as long as the run: keep it out of every collection
            async with driver.task_group() as tg:
                tg.start_soon(_operate, system, scenario, services, tenants, groups, scenario.duration_s)
                tg.start_soon(_changes, system, scenario, region, calendar)
                tg.start_soon(_contract_ends, system, scenario, region)
                await driver.sleep(scenario.duration_s - driver.now())
                tg.cancel_scope.cancel()
            snapshot: RegionSnapshot = await region.ask(Snapshot())
            final["known_volumes"] = {az: [v.id for t in tenants for v in await ref.ask(ListVolumes(t))]
                                      for az, ref in services.volumes.items()}
            if services.sdrs is not None:
                final["groups"] = await services.sdrs.ask(ReportGroups())
            if services.backups is not None:
                final["backups"] = await services.backups.ask(GetBackupStats())
            final["deletions"] = [await region.ask(GetDeletionRecord(t.name)) for t in scenario.tenants
                                  if t.contract.end_s is not None]
            return snapshot

    # A run allocates millions of small, mostly acyclic objects (events, messages,
    # coroutines): collecting young generations every 700 allocations costs up to a
    # fifth of the run, so collect less often while it lasts.
    thresholds = gc.get_threshold()
    gc.set_threshold(100_000, 50, 100)
    try:
        snapshot = driver.run(main)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        if out is not None:
            out.close()
    if progress is not None:
        progress(scenario.duration_s, scenario.duration_s)
    result = reports.build(scenario, seed, snapshot, world, metrics, log.count, sink.sha256, env.now,
                           time.perf_counter() - started, system.restarts,
                           reports.storage_figures(storage, final["known_volumes"], final.get("groups", ()),
                                                   final.get("backups"), metrics),
                           frozenset(sid for g in final.get("groups", ()) for sid in g.waiting))
    result.update(contract_figures(scenario, seed, ledger, outages, calendar, final["deletions"], env.now))
    bills = contract_report.invoices(scenario, meter, result["availability"], env.now)
    result["billing"] = contract_report.billing_figures(scenario, bills)
    result["wall_seconds"] = round(time.perf_counter() - started, 3)  # the contract figures included
    result["expectations"] = [reports.check(e, result) for e in scenario.expect]
    if out_dir is not None:
        charges = contract_report.write_invoices(out_dir, bills)
        (out_dir / "report.json").write_text(json.dumps(result, indent=2) + "\n")
        html.write_report(out_dir, result, {"servers": tables.server_rows(snapshot, world),
                                            "hosts": tables.host_rows(snapshot, world, scenario.topology),
                                            "incidents": result["incidents"]["list"],
                                            "tickets": result["tickets"]["list"], "charges": charges},
                          metrics.recovery_s)
    return result

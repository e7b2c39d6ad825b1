"""Runs a scenario: builds the world, the actor tree on the simulation driver, the
faults, and returns the report. A run is a pure function of (scenario, seed)."""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import simpy

from actors.az import Snapshot
from actors.region import CreateTenant, Region, RegionSnapshot
from actors.tenant import CreateServer, CreateServerGroup
from runtime.actor import ActorRef, ActorSystem
from runtime.errors import CloudError
from runtime.events import EventLog, JsonlSink
from runtime.ports import HostCapacity
from sim import report as reports
from sim.driver import SimDriver
from sim.failures import Injector
from sim.hosts import SimHypervisor, SimPower, World
from sim.scenario import Scenario, TenantSpec

Progress = Callable[[float, float], None]


async def _populate(system: ActorSystem, region: ActorRef, tenant: TenantSpec) -> None:
    ref = await region.ask(CreateTenant(tenant.name, tenant.quotas))
    for name, policy in tenant.server_groups:
        await ref.ask(CreateServerGroup(name, policy))

    async def create(batch_index: int, i: int) -> None:
        batch = tenant.servers[batch_index]
        try:
            await ref.ask(CreateServer(f"{tenant.name}-{batch_index}-{i}", batch.flavor, batch.az,
                                       batch.auto_recovery, batch.group, batch.dedicated), timeout=None)
        except CloudError as exc:
            system.emit(f"scenario/{tenant.name}", "CreateRefused", error=str(exc))

    async with system.driver.task_group() as tg:
        for b, batch in enumerate(tenant.servers):
            for i in range(batch.count):
                tg.start_soon(create, b, i)


def run(scenario: Scenario, seed: int | None = None, out_dir: Path | None = None,
        progress: Progress | None = None) -> dict[str, Any]:
    """Run once. With `out_dir`, writes `events.jsonl` and `report.json` there."""
    seed = scenario.seed if seed is None else seed
    started = time.perf_counter()
    env = simpy.Environment()
    driver = SimDriver(env)
    world = World(env, scenario.timing)
    for h in scenario.topology.hosts:
        world.add_host(h.name, HostCapacity(h.vcpus, h.ram_mb))
    ports = {name: (SimHypervisor(m, driver), SimPower(m, driver)) for name, m in world.hosts.items()}

    out: IO[str] | None = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        out = (out_dir / "events.jsonl").open("w")
    sink = JsonlSink(out)
    metrics = reports.Metrics(world)
    log = EventLog(sink, metrics)
    system = ActorSystem(driver, seed, log)
    injector = Injector(env, world, scenario.topology, seed, lambda kind, f: log.append(env.now, "sim/faults", kind, f))
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

    async def main() -> RegionSnapshot:
        async with system.running():
            region = system.spawn(lambda: Region(topology, ports, scenario.recovery), topology.region.name)
            injector.preset(scenario.preset)
            injector.schedule(list(scenario.schedule))
            async with driver.task_group() as tg:
                for tenant in scenario.tenants:
                    tg.start_soon(_populate, system, region, tenant)
            gc.freeze()  # the fleet lives as long as the run: keep it out of every collection
            await driver.sleep(scenario.duration_s - driver.now())
            snapshot: RegionSnapshot = await region.ask(Snapshot())
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
                           time.perf_counter() - started, system.restarts)
    if out_dir is not None:
        (out_dir / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    return result

"""`fe bench`: measured figures, never asserted in tests (these machines are noisy).

- kernel: ask/reply round trips per second on the simulation driver, and raw SimPy
  timeout events per second in the same process, and their ratio.
- scale: a simulated year (by default) of a region of 50,000 hosts and 100,000
  auto-recovery servers under the SimEDC failure preset.
"""

from __future__ import annotations

import resource
import time
from typing import Any

import simpy
from rich.console import Console

from actors.az import RecoverySettings
from actors.topology import DEFAULTS, REGIONS, build_topology
from runtime.actor import Actor, ActorSystem
from runtime.driver import AnyioDriver
from sim.driver import SimDriver
from sim.hosts import HostTiming
from sim.scenario import Expectation, Scenario, ServerBatch, TenantSpec


class _Echo(Actor):
    async def receive(self, msg: Any) -> Any:
        return msg


def _asks_per_second(driver: Any, n: int) -> float:
    async def main() -> float:
        system = ActorSystem(driver, seed=1)
        async with system.running():
            ref = system.spawn(_Echo, "echo")
            await ref.ask(0)
            started = time.process_time()
            for i in range(n):
                await ref.ask(i)
            return n / (time.process_time() - started)
    return float(driver.run(main))


def _simpy_events_per_second(n: int) -> float:
    env = simpy.Environment()

    def proc() -> Any:
        for _ in range(n):
            yield env.timeout(1)
    env.process(proc())
    started = time.process_time()
    env.run()
    return n / (time.process_time() - started)


def kernel(n: int = 200_000, repeats: int = 3) -> dict[str, Any]:
    """Rates in CPU time of this process. The two measurements alternate `repeats` times
    and the best of each is kept, so that load from elsewhere penalises neither alone."""
    simpy_rate = sim_rate = 0.0
    for _ in range(repeats):
        simpy_rate = max(simpy_rate, _simpy_events_per_second(n))
        sim_rate = max(sim_rate, _asks_per_second(SimDriver(), n))
    anyio_rate = _asks_per_second(AnyioDriver(), max(1, n // 10))
    return {
        "round_trips": n,
        "repeats": repeats,
        "sim_driver_asks_per_s": round(sim_rate),
        "simpy_timeout_events_per_s": round(simpy_rate),
        "ratio_sim_asks_to_simpy_events": round(sim_rate / simpy_rate, 3),
        "anyio_asyncio_asks_per_s": round(anyio_rate),
    }


def scale_scenario(hosts: int, servers: int, days: float, seed: int) -> Scenario:
    region = REGIONS["eu-west-0"]
    per_az = {az: hosts // len(region.azs) + (1 if i < hosts % len(region.azs) else 0)
              for i, az in enumerate(region.azs)}
    topology = build_topology(region, per_az, vcpus=64, ram_mb=256 * 1024, rack_size=20, racks_per_power_domain=5)
    per_tenant = 100
    tenants = []
    for t in range(-(-servers // per_tenant)):
        count = min(per_tenant, servers - t * per_tenant)
        az = region.azs[t % len(region.azs)]
        # every server has a system volume (ECS-3): its quotas cover those too
        quotas = {"instances": count, "vcpus": 2 * count, "ram_mb": 4096 * count, "volumes": count,
                  "gigabytes": DEFAULTS["volumes"]["system_disk_gb"] * count}
        tenants.append(TenantSpec(f"t{t:05d}", quotas,
                                  (), (ServerBatch(count, "s3.large.2", az, auto_recovery=True),)))
    return Scenario("scale: one region under SimEDC failures", "fe bench scale", seed, days * 86400.0, topology,
                    HostTiming(), RecoverySettings(), tuple(tenants), "simedc", (),
                    (Expectation("servers.lost", 0), Expectation("split_brain", 0),
                     Expectation("servers.total", servers), Expectation("quota_rejections", 0)))


def scale(hosts: int, servers: int, days: float, seed: int, console: Console | None) -> dict[str, Any]:
    from sim import runner

    scn = scale_scenario(hosts, servers, days, seed)
    progress = None
    if console is not None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        bar = Progress(TextColumn("simulating"), BarColumn(), TextColumn("{task.fields[days]}"), TimeElapsedColumn(),
                       TimeRemainingColumn(), console=console, transient=True)
        task = bar.add_task("scale", total=scn.duration_s, days="")
        bar.start()

        def progress(now: float, total: float) -> None:
            bar.update(task, completed=now, days=f"day {now / 86400:.0f}/{total / 86400:.0f}")
    cpu_started = time.process_time()
    try:
        report = runner.run(scn, seed, None, progress)
    finally:
        if console is not None:
            bar.stop()
    return {
        "hosts": hosts, "servers": servers, "days": days, "seed": seed,
        "wall_seconds": report["wall_seconds"],
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "events": report["events"],
        "faults": report["faults"],
        "recoveries": report["recoveries"]["count"],
        "recovery_p50_s": report["recoveries"]["p50_s"],
        "recovery_p99_s": report["recoveries"]["p99_s"],
        "servers_running": report["servers"]["running"],
        "servers_lost": report["servers"]["lost"],
        "split_brain": report["split_brain"],
        "event_log_sha256": report["event_log_sha256"],
        **{f"expect_{e['name']}": e["ok"] for e in report["expectations"]},
    }


"""One simulated eu-west-0 with storage, driven step by step from synchronous test code.

`StorageCloud` runs, on the `SimDriver` in virtual time, the real `Region` actor (three
AZs on SimPy host models, one `VolumeService` per AZ on the `StorageModel`'s block
stores, the region's `BackupService` on its object store, `DisasterRecovery`) and one
tenant. The `StorageModel` also holds eu-west-1 (its object store and AZs), so that a
request that would put data there can be tried and the truth checked (GEO-3). The truth
of where servers run is the host models' (`World.running_on`).
"""

from __future__ import annotations

from typing import Any

import simpy

from actors.az import RecoverySettings
from actors.backups import BackupLimits
from actors.region import CreateTenant, GetServices, Region, RegionServices
from actors.topology import REGIONS, Topology, build_topology
from runtime.actor import ActorRef, ActorSystem
from runtime.errors import CloudError
from runtime.events import EventLog
from runtime.ports import HostCapacity
from sim.driver import Handle, SimDriver
from sim.hosts import World, host_ports
from sim.storage import StorageModel
from tests.properties.harness import Outcome

REGION = "eu-west-0"
AZS: tuple[str, ...] = REGIONS[REGION].azs
OTHER_REGION = "eu-west-1"
OTHER_AZS: tuple[str, ...] = REGIONS[OTHER_REGION].azs
TENANT = "acme"
QUOTAS = {"instances": 100, "vcpus": 1000, "ram_mb": 10_000_000, "volumes": 1000, "gigabytes": 10_000_000}
ASK_LIMIT_S = 6 * 3600.0
# VBS-2's limits scaled down so that a short example reaches them (same rules, smaller numbers).
LIMITS = BackupLimits(per_tenant=8, per_volume=3, running_per_tenant=2, server_jobs_per_tenant=2)


async def _ask(ref: ActorRef, msg: Any) -> Any:
    return await ref.ask(msg, timeout=None)


class StorageCloud:
    def __init__(self, seed: int = 1, hosts_per_az: int = 2, vcpus: int = 8, ram_mb: int = 16384) -> None:
        self.env = simpy.Environment()
        self.driver = SimDriver(self.env)
        self.topology: Topology = build_topology(REGIONS[REGION], dict.fromkeys(AZS, hosts_per_az), vcpus, ram_mb,
                                                 rack_size=2, racks_per_power_domain=1)
        self.world = World(self.env)
        for h in self.topology.hosts:
            self.world.add_host(h.name, HostCapacity(h.vcpus, h.ram_mb))
        ports = host_ports(self.world, self.driver)
        self.storage = StorageModel(self.driver, {REGION: AZS, OTHER_REGION: OTHER_AZS})
        stores = {az: self.storage.block_store(az) for az in AZS}
        objects = self.storage.object_store(REGION)
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        log = EventLog(lambda t, _src, kind, fields: self.events.append((t, kind, fields)))
        self.system = ActorSystem(self.driver, seed, log)
        topology = self.topology
        stop = self.driver.event()
        self._stop = stop
        regions: list[ActorRef] = []

        async def main() -> None:
            async with self.system.running():
                regions.append(self.system.spawn(
                    lambda: Region(topology, ports, RecoverySettings(), stores, objects,
                                   backup_limits=LIMITS), REGION))
                await stop.wait()

        self._main = self.driver.start(main)
        self.driver.advance(until=lambda: bool(regions))
        self.region = regions[0]
        services: RegionServices = self.value(self.region, GetServices())
        assert services.backups is not None and services.sdrs is not None
        self.backups: ActorRef = services.backups
        self.sdrs: ActorRef = services.sdrs
        self.volume_services = dict(services.volumes)
        self.tenant: ActorRef = self.value(self.region, CreateTenant(TENANT, QUOTAS))

    # -- driving -------------------------------------------------------------------------
    def send(self, to: ActorRef, msg: Any) -> Handle:
        handle = self.driver.start(_ask, to, msg)
        self.driver.advance(to=self.env.now)
        return handle

    def wait(self, *handles: Handle) -> list[Outcome]:
        self.driver.advance(until=lambda: all(h.done for h in handles), to=self.env.now + ASK_LIMIT_S)
        assert all(h.done for h in handles), f"a request got no reply within {ASK_LIMIT_S} s: an actor lost it"
        out = []
        for h in handles:
            if h.error is None:
                out.append(Outcome(h.result))
            elif isinstance(h.error, CloudError):
                out.append(Outcome(error=h.error))
            else:
                raise AssertionError(f"a request failed with a non-CloudError: {h.error!r}") from h.error
        return out

    def ask(self, to: ActorRef, msg: Any) -> Outcome:
        return self.wait(self.send(to, msg))[0]

    def value(self, to: ActorRef, msg: Any) -> Any:
        out = self.ask(to, msg)
        assert out.ok, f"{msg} refused: {out.error}"
        return out.value

    def advance(self, seconds: float) -> None:
        self.driver.advance(to=self.env.now + seconds)

    # -- the world -------------------------------------------------------------------------
    def fail_az(self, az: str) -> None:
        """The AZ goes dark: its hosts lose power and its storage is gone (as sim.failures' az-outage)."""
        for h in self.topology.hosts_in(az):
            self.world.hosts[h.name].lose_power()
        self.storage.fail_az(az)
        self.driver.advance(to=self.env.now)

    def restore_az(self, az: str) -> None:
        for h in self.topology.hosts_in(az):
            self.world.hosts[h.name].restore_power()
        self.storage.restore_az(az)
        self.driver.advance(to=self.env.now)

    def az_of_host(self, host: str) -> str:
        return self.topology.domain_members(host)[0].az

    def close(self) -> None:
        self._stop.set()
        self.driver.advance(until=lambda: self._main.done, to=self.env.now + 3600)


__all__ = ["AZS", "OTHER_AZS", "OTHER_REGION", "REGION", "TENANT", "Outcome", "StorageCloud"]

"""A live simulated region driven step by step from synchronous test code.

`Cloud` builds a small region on the `SimDriver` with SimPy host and storage models
(every AZ has a block store, so every server has a system volume, ECS-3), starts its
actor tree as a top-level task, and offers blocking calls (`ask`, `advance`, fault
injection) that run virtual time just far enough. Every public call is recorded in
`script`, so `replay` rebuilds the same history on a fresh system: a run is a pure
function of its `CloudConfig` and its script, judged on the event log's SHA-256.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import attrs
import simpy

from actors.az import RecoverySettings, Snapshot
from actors.region import CreateTenant, Region, RegionSnapshot
from actors.tenant import GetQuotas, ListServers, Quotas, TenantServer
from actors.topology import REGIONS, HostSpec, Topology, build_topology
from runtime.actor import ActorRef, ActorSystem
from runtime.errors import CloudError
from runtime.events import EventLog, JsonlSink
from runtime.ports import HostCapacity
from sim.driver import Handle, SimDriver
from sim.hosts import HostModel, SimHypervisor, SimPower, World
from sim.storage import StorageModel

REGION = "eu-west-0"
AZS: tuple[str, ...] = REGIONS[REGION].azs
DEDICATED_TENANT = "ded"
RACK_SIZE = 2
ASK_LIMIT_S = 6 * 3600.0
"""Virtual time a request may take before the test calls it hung (every host call ends in minutes)."""

FAULTS = ("crash", "partition", "power")

P = ParamSpec("P")
R = TypeVar("R")


@attrs.frozen
class CloudConfig:
    """Everything a run depends on besides its script."""

    seed: int
    hosts_per_az: tuple[int, ...]
    host_vcpus: int
    host_ram_mb: int
    dedicated_hosts: int  # in the first AZ, for DEDICATED_TENANT
    quotas: tuple[tuple[str, tuple[tuple[str, int], ...]], ...]  # (tenant, ((resource, limit), ...))
    fencing: bool = True

    @property
    def tenants(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.quotas)

    def topology(self) -> Topology:
        return build_topology(REGIONS[REGION], dict(zip(AZS, self.hosts_per_az, strict=True)), self.host_vcpus,
                              self.host_ram_mb, rack_size=RACK_SIZE, racks_per_power_domain=1,
                              dedicated={AZS[0]: [(DEDICATED_TENANT, self.dedicated_hosts)]})


@attrs.frozen
class Outcome:
    """The reply to one request: its value, or the `CloudError` it was refused with."""

    value: Any = None
    error: CloudError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def recorded(method: Callable[Concatenate[Cloud, P], R]) -> Callable[Concatenate[Cloud, P], R]:
    """Append the call to `Cloud.script` (outermost calls only), so `replay` can redo it."""

    def wrapper(self: Cloud, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if self._depth == 0:
            self.script.append((method.__name__, args, kwargs))
        self._depth += 1
        try:
            return method(self, *args, **kwargs)
        finally:
            self._depth -= 1
    functools.update_wrapper(wrapper, method)
    return wrapper


async def _ask(ref: ActorRef, msg: Any) -> Any:
    return await ref.ask(msg, timeout=None)


class Cloud:
    """One simulated region, running; the test drives it between its own steps."""

    def __init__(self, config: CloudConfig) -> None:
        self.config = config
        self.script: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._depth = 0
        self.topology = config.topology()
        self.env = simpy.Environment()
        self.driver = SimDriver(self.env)
        self.world = World(self.env)
        for h in self.topology.hosts:
            self.world.add_host(h.name, HostCapacity(h.vcpus, h.ram_mb))
        ports = {name: (SimHypervisor(m, self.driver), SimPower(m, self.driver))
                 for name, m in self.world.hosts.items()}
        self.storage = StorageModel(self.driver, {REGION: AZS})
        stores = {az: self.storage.block_store(az) for az in AZS}
        self.lines = io.StringIO()
        self.sink = JsonlSink(self.lines)
        self.log = EventLog(self.sink)
        self.system = ActorSystem(self.driver, config.seed, self.log)
        self.world.on_split_brain = lambda sid, hosts: self.log.append(
            self.env.now, "sim/world", "SplitBrain", {"server": sid, "hosts": sorted(hosts)})
        self.faults_injected = 0
        self.faults_pending = 0  # injected with a delay, not applied yet
        self.tenants: dict[str, ActorRef] = {}
        self._handles: list[Handle] = []
        settings = RecoverySettings(fencing=config.fencing)
        topology = self.topology
        stop = self.driver.event()
        self._stop = stop
        regions: list[ActorRef] = []

        async def main() -> None:
            async with self.system.running():
                regions.append(self.system.spawn(lambda: Region(topology, ports, settings, stores), REGION))
                await stop.wait()

        self._main = self.driver.start(main)
        self.driver.advance(until=lambda: bool(regions))
        self.region = regions[0]
        for name, quotas in config.quotas:
            ref = self.ask(REGION, CreateTenant(name, dict(quotas)))
            assert ref.ok, f"creating tenant {name} failed: {ref.error}"
            self.tenants[name] = ref.value
        self.script.clear()  # a replay builds the same region before it replays the script

    # -- what the test does --------------------------------------------------------------
    @recorded
    def ask(self, to: str, msg: Any) -> Outcome:
        """Send `msg` to a tenant (by name) or the region (REGION) and run until the reply comes."""
        ticket = self.send(to, msg)
        self.wait(ticket)
        return self.outcome(ticket)

    @recorded
    def send(self, to: str, msg: Any) -> int:
        """Send `msg` and run only what is ready now; returns a ticket for `done`, `wait`, `outcome`."""
        target = self.region if to == REGION else self.tenants[to]
        self._handles.append(self.driver.start(_ask, target, msg))
        self.driver.advance(to=self.env.now)
        return len(self._handles) - 1

    def done(self, ticket: int) -> bool:
        return self._handles[ticket].done

    @recorded
    def wait(self, *tickets: int) -> None:
        """Run until every request of `tickets` has its reply (a hung one fails the test)."""
        handles = [self._handles[t] for t in tickets]
        limit = self.env.now + ASK_LIMIT_S
        self.driver.advance(until=lambda: all(h.done for h in handles), to=limit)
        late = [h for h in handles if not h.done]
        assert not late, (f"{len(late)} request(s) got no reply within {ASK_LIMIT_S / 3600:g} h of virtual time "
                          f"(now t={self.env.now}): an actor lost a reply")

    def outcome(self, ticket: int) -> Outcome:
        handle = self._handles[ticket]
        assert handle.done
        if handle.error is None:
            return Outcome(handle.result)
        if isinstance(handle.error, CloudError):
            return Outcome(error=handle.error)
        raise AssertionError(f"a request failed with a non-CloudError: {handle.error!r}") from handle.error

    @recorded
    def advance(self, seconds: float) -> None:
        self.driver.advance(to=self.env.now + seconds)

    @recorded
    def inject(self, fault: str, target: str, delay: float = 0.0) -> None:
        """Start `fault` ("crash", "partition" on a host; "power" on a rack) after `delay` seconds."""
        assert fault in FAULTS
        self.faults_injected += 1
        if delay <= 0:
            self._apply(fault, target)
            return
        self.faults_pending += 1

        def later(_event: object) -> None:
            self.faults_pending -= 1
            self._apply(fault, target)
        self.env.timeout(delay).callbacks.append(later)

    @recorded
    def repair(self, fault: str, target: str) -> None:
        """End one `fault` on `target` (faults nest: a host crashed twice needs two repairs)."""
        self.log.append(self.env.now, "sim/faults", "FaultRepaired", {"fault": fault, "target": target})
        for host in self.hosts_of(target):
            {"crash": host.repair, "partition": host.heal, "power": host.restore_power}[fault]()
        self.driver.advance(to=self.env.now)  # what is observable at once (a reset connection) is observed

    @recorded
    def repair_everything(self) -> None:
        """The operators' round: end every fault and power on every host left off (e.g. fenced)."""
        self.log.append(self.env.now, "sim/faults", "AllRepaired", {})
        for host in self.world.hosts.values():
            while host.crashes:
                host.repair()
            while host.outages:
                host.restore_power()
            while host.partitions:
                host.heal()
            if not host.powered:
                host.switch(True)

    def _apply(self, fault: str, target: str) -> None:
        self.log.append(self.env.now, "sim/faults", "FaultInjected", {"fault": fault, "target": target})
        for host in self.hosts_of(target):
            {"crash": host.crash, "partition": host.partition, "power": host.lose_power}[fault]()

    # -- what the test looks at ------------------------------------------------------------
    @recorded
    def snapshot(self) -> RegionSnapshot:
        out = self.ask(REGION, Snapshot())
        assert out.ok, f"region snapshot refused: {out.error}"
        snapshot: RegionSnapshot = out.value
        return snapshot

    @recorded
    def quotas(self, tenant: str) -> Quotas:
        out = self.ask(tenant, GetQuotas())
        assert out.ok, f"GetQuotas refused: {out.error}"
        quotas: Quotas = out.value
        return quotas

    @recorded
    def servers(self, tenant: str) -> list[TenantServer]:
        out = self.ask(tenant, ListServers())
        assert out.ok, f"ListServers refused: {out.error}"
        servers: list[TenantServer] = out.value
        return servers

    def faults_now(self) -> list[tuple[str, str]]:
        """The faults in effect, as (fault, target) for `repair`."""
        hosts = self.world.hosts.values()
        return ([("crash", h.name) for h in hosts if h.crashes] + [("partition", h.name) for h in hosts if h.partitions]
                + [("power", r) for r in self.racks if self.hosts_of(r)[0].outages])

    def hosts_of(self, target: str) -> list[HostModel]:
        return [self.world.hosts[h.name] for h in self.topology.domain_members(target)]

    def host_spec(self, name: str) -> HostSpec:
        return self.topology.domain_members(name)[0]

    @property
    def racks(self) -> list[str]:
        return sorted({h.rack for h in self.topology.hosts})

    @property
    def now(self) -> float:
        return float(self.env.now)

    @property
    def sha256(self) -> str:
        return self.sink.sha256

    def __enter__(self) -> Cloud:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the actor tree (the run is over); the driver runs until it has unwound."""
        self._stop.set()
        self.driver.advance(until=lambda: self._main.done, to=self.env.now + 3600)


def replay(config: CloudConfig, script: list[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> Cloud:
    """A fresh `Cloud` that went through the same calls."""
    cloud = Cloud(config)
    for name, args, kwargs in script:
        getattr(cloud, name)(*args, **kwargs)
    return cloud


__all__ = ["AZS", "DEDICATED_TENANT", "Cloud", "CloudConfig", "Outcome", "replay"]

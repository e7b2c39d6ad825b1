"""SimPy models of hypervisor hosts and their power controllers: the ground truth.

`World` holds every host model and knows, at any instant, where each server really
runs; it counts split brain (one server running on two hosts at once) from that
truth, not from what the control plane believes.

A host is reachable when powered, not crashed and not cut off from its AZ. Losing
reachability is noticed by the control plane only through `wait_unreachable`, which
fires `keepalive_s` after the loss (libvirt keepalive: interval x missed probes),
unless the host came back in between. A host that went down and is back before that
timeout is noticed when it comes back (its old connection is gone). A partitioned
host keeps running its servers: only fencing (power off through `SimPower`) stops them.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import simpy

from runtime.errors import Conflict, InvalidTransition, NotFound
from runtime.ports import DomainInfo, DomainSpec, HostCapacity, HostUnreachable, PowerState, check_domain_request
from sim.driver import SimDriver


@attrs.frozen
class HostTiming:
    """How long things take on a simulated host (seconds of virtual time)."""

    define_s: float = 1.0
    boot_s: float = 30.0
    stop_s: float = 5.0
    undefine_s: float = 1.0
    keepalive_s: float = 15.0
    fence_s: float = 10.0
    rpc_s: float = 0.01


@attrs.define
class _Domain:
    spec: DomainSpec
    running: bool = False


class World:
    """All host models of one simulation, and the truth about where servers run."""

    def __init__(self, env: simpy.Environment, timing: HostTiming | None = None) -> None:
        self.env = env
        self.timing = timing or HostTiming()
        self.hosts: dict[str, HostModel] = {}
        self.running_on: dict[str, set[str]] = {}
        self.split_brain: set[str] = set()
        self.stopped_at: dict[str, float] = {}  # server id -> when it last stopped running anywhere
        self.on_split_brain: Callable[[str, set[str]], None] | None = None

    def add_host(self, name: str, capacity: HostCapacity) -> HostModel:
        host = HostModel(self, name, capacity)
        self.hosts[name] = host
        return host

    def _running(self, server_id: str, host: str, running: bool) -> None:
        where = self.running_on.setdefault(server_id, set())
        if running:
            where.add(host)
            if len(where) > 1:
                self.split_brain.add(server_id)
                if self.on_split_brain is not None:
                    self.on_split_brain(server_id, set(where))
        else:
            where.discard(host)
            if not where:
                del self.running_on[server_id]
                self.stopped_at[server_id] = self.env.now

    def defined_on(self, server_id: str) -> list[str]:
        return [h.name for h in self.hosts.values() if server_id in h.domains]


class HostModel:
    """One physical host. Faults nest: a host crashed twice is repaired by the second repair."""

    def __init__(self, world: World, name: str, capacity: HostCapacity) -> None:
        self.world = world
        self.env = world.env
        self.name = name
        self.capacity = capacity
        self.domains: dict[str, _Domain] = {}
        self.powered = True
        self.crashes = 0
        self.outages = 0  # power lost from the outside (PDU, AZ outage)
        self.partitions = 0  # cut off from its AZ's management network
        self.bmc_cut = False  # cut off from the out-of-band network
        self.dead = False  # permanent failure: never repaired
        self.unreachable_since: float | None = None
        self._rebooted = False  # stopped running since it was last reachable
        self._generation = 0
        self._lost: simpy.Event = self.env.event()
        self._back: simpy.Event = self.env.event()
        self._back.succeed()

    @property
    def reachable(self) -> bool:
        return self.powered and not self.outages and not self.crashes and not self.partitions and not self.dead

    @property
    def running(self) -> bool:
        """Powered and working (its servers can run), whether or not the AZ can reach it."""
        return self.powered and not self.outages and not self.crashes and not self.dead

    def _update(self, change: Callable[[], None]) -> None:
        was = self.reachable
        change()
        if not self.running:
            self._stop_all()
            self._rebooted = True
        now = self.reachable
        if was and not now:
            self.unreachable_since = self.env.now
            self._generation += 1
            generation, lost = self._generation, self._lost
            self._back = self.env.event()
            self.env.timeout(self.world.timing.keepalive_s).callbacks.append(
                lambda _e: self._fire_lost(generation, lost))
        elif now and not was:
            self._generation += 1
            if self._rebooted and not self._lost.triggered:
                # Back before the keepalive timeout, but it went down meanwhile: the old
                # connection is gone (reset at the first probe), so the loss is seen now.
                self._lost.succeed()
            if self._lost.triggered:
                self._lost = self.env.event()
            self._rebooted = False
            self._back.succeed()

    def _fire_lost(self, generation: int, lost: simpy.Event) -> None:
        if generation == self._generation and not lost.triggered:
            lost.succeed()

    def _stop_all(self) -> None:
        for dom in self.domains.values():
            if dom.running:
                dom.running = False
                self.world._running(dom.spec.server_id, self.name, False)

    # -- what faults and operators do ----------------------------------------------
    def crash(self, permanent: bool = False) -> None:
        def change() -> None:
            self.crashes += 1
            self.dead = self.dead or permanent
        self._update(change)

    def repair(self) -> None:
        """The crash is repaired and the host boots again (its servers stay stopped)."""
        def change() -> None:
            self.crashes = max(0, self.crashes - 1)
            if not self.crashes:
                self.powered = True
        self._update(change)

    def lose_power(self) -> None:
        self._update(lambda: setattr(self, "outages", self.outages + 1))

    def restore_power(self) -> None:
        def change() -> None:
            self.outages = max(0, self.outages - 1)
            if not self.outages:
                self.powered = True
        self._update(change)

    def partition(self) -> None:
        self._update(lambda: setattr(self, "partitions", self.partitions + 1))

    def heal(self) -> None:
        """The network is repaired; a host fenced meanwhile is powered on again by the operator."""
        def change() -> None:
            self.partitions = max(0, self.partitions - 1)
            if not self.partitions:
                self.powered = True
        self._update(change)

    def switch(self, on: bool) -> None:
        """The power controller switches the host on or off (fencing)."""
        self._update(lambda: setattr(self, "powered", on))

    # -- events the ports wait on --------------------------------------------------
    def lost_event(self) -> simpy.Event:
        """Fires `keepalive_s` after the host becomes unreachable (if it stays so)."""
        return self._lost

    def back_event(self) -> simpy.Event:
        """Already triggered while reachable; fires when it becomes reachable again."""
        return self._back


class SimHypervisor:
    """`Hypervisor` port on a `HostModel`; refuses what `LibvirtHypervisor` refuses.

    Each call checks what it can refuse at once, works for `rpc_s` plus its duration,
    then checks again: the state may have changed meanwhile (libvirt serialises jobs
    on one domain the same way). One SimPy event a call keeps a year of 50,000 hosts
    fast. Sizes
    and server ids are checked before any I/O, as libvirt needs them (a server id
    names the domain).
    """

    def __init__(self, model: HostModel, driver: SimDriver) -> None:
        self.model = model
        self.driver = driver

    @property
    def host(self) -> str:
        return self.model.name

    async def _call(self, seconds: float) -> None:
        model = self.model
        if not model.reachable:
            await self.driver.sleep(model.world.timing.keepalive_s)
            raise HostUnreachable(model.name, "no answer to keepalive probes")
        await self.driver.sleep(seconds)
        if not model.reachable:
            raise HostUnreachable(model.name, "connection lost during the call")

    async def _op(self, seconds: float, check: Callable[[], _Domain | None]) -> _Domain | None:
        """Refuse at once what is refusable now; else work for `rpc_s + seconds` and check again."""
        if self.model.reachable:
            check()
        await self._call(self.model.world.timing.rpc_s + seconds)
        return check()

    def _domain(self, server_id: str) -> _Domain:
        dom = self.model.domains.get(server_id)
        if dom is None:
            raise NotFound("domain", f"{server_id} on {self.model.name}")
        return dom

    def _in(self, server_id: str, action: str, running: bool) -> Callable[[], _Domain]:
        """A check: the domain exists and is running (or stopped), else the refusal."""
        def check() -> _Domain:
            dom = self._domain(server_id)
            if dom.running != running:
                if dom.running:
                    raise InvalidTransition("domain", server_id, "running", action, ["stop", "undefine"])
                raise InvalidTransition("domain", server_id, "stopped", action, ["start", "resize", "undefine"])
            return dom
        return check

    async def capacity(self) -> HostCapacity:
        await self._call(self.model.world.timing.rpc_s)
        return self.model.capacity

    async def define(self, spec: DomainSpec) -> None:
        check_domain_request(spec.server_id, spec.vcpus, spec.ram_mb)

        def free() -> None:
            if spec.server_id in self.model.domains:
                raise Conflict(
                    f"domain {spec.server_id} is already defined on {self.model.name}; "
                    "undefine it first or use another server id"
                )

        await self._op(self.model.world.timing.define_s, free)
        self.model.domains[spec.server_id] = _Domain(spec)

    async def start(self, server_id: str) -> None:
        dom = await self._op(self.model.world.timing.boot_s, self._in(server_id, "start", running=False))
        assert dom is not None
        dom.running = True
        self.model.world._running(server_id, self.model.name, True)

    async def stop(self, server_id: str) -> None:
        dom = await self._op(self.model.world.timing.stop_s, self._in(server_id, "stop", running=True))
        assert dom is not None
        dom.running = False
        self.model.world._running(server_id, self.model.name, False)

    async def undefine(self, server_id: str) -> None:
        dom = await self._op(self.model.world.timing.undefine_s, lambda: self._domain(server_id))
        assert dom is not None
        if dom.running:
            self.model.world._running(server_id, self.model.name, False)
        del self.model.domains[server_id]

    async def resize(self, server_id: str, vcpus: int, ram_mb: int) -> None:
        check_domain_request(server_id, vcpus, ram_mb)
        dom = await self._op(self.model.world.timing.define_s, self._in(server_id, "resize", running=False))
        assert dom is not None
        dom.spec = DomainSpec(server_id, vcpus, ram_mb)

    async def list(self) -> list[DomainInfo]:
        await self._call(self.model.world.timing.rpc_s)
        return sorted(
            (DomainInfo(d.spec.server_id, d.spec.vcpus, d.spec.ram_mb, d.running) for d in self.model.domains.values()),
            key=lambda d: d.server_id,
        )

    async def wait_unreachable(self) -> None:
        await self.driver.wait_simpy(self.model.lost_event())

    async def wait_reachable(self) -> None:
        await self.driver.wait_simpy(self.model.back_event())


class SimPower:
    """`Power` port: the host's out-of-band controller. `power_off` and `power_on`
    are idempotent, like a BMC's (and `LibvirtPower`'s)."""

    def __init__(self, model: HostModel, driver: SimDriver) -> None:
        self.model = model
        self.driver = driver

    async def _reach(self) -> None:
        await self.driver.sleep(self.model.world.timing.rpc_s)
        if self.model.bmc_cut:
            raise HostUnreachable(self.model.name, "power controller does not answer")

    async def status(self) -> PowerState:
        await self._reach()
        return PowerState.ON if self.model.running else PowerState.OFF

    async def power_off(self) -> None:
        await self._reach()
        await self.driver.sleep(self.model.world.timing.fence_s)
        self.model.switch(False)

    async def power_on(self) -> None:
        await self._reach()
        self.model.switch(True)


def host_ports(world: World, driver: SimDriver) -> dict[str, tuple[SimHypervisor, SimPower]]:
    return {name: (SimHypervisor(m, driver), SimPower(m, driver)) for name, m in world.hosts.items()}


__all__ = ["HostModel", "HostTiming", "SimHypervisor", "SimPower", "World", "host_ports"]

"""Failure models: presets from field data (REFERENCE.md) and explicit fault schedules.

A preset is a list of failure classes, each a Poisson process per unit (host, rack,
power domain) with a repair-time distribution. N units of one class are simulated as
one superposed process of rate N/MTBF whose victim is drawn uniformly, so a year of
50,000 hosts costs one SimPy process per class, not one per host.

Effects on the host models (`sim.hosts`):
- host-crash: the host crashes (its servers die), repaired after the duration;
- host-partition: the host is cut off from its AZ but keeps running its servers;
- rack, power-domain: the hosts lose power, restored after the duration;
- az-outage: the AZ's hosts lose power and its block store stops answering;
- storage-outage: only the AZ's block store stops answering;
- link-down: the replication links between two AZs (both directions) carry nothing;
- api-outage: a service's API (ECS, EVS, VPC, IAM, OBS) answers no request in the region;
- permanent host failures (presets) are never repaired.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import attrs
import simpy

from actors.topology import Topology
from sim.hosts import HostModel, World
from sim.storage import StorageModel

HOUR = 3600.0
FAULTS = ("host-crash", "host-partition", "rack", "power-domain", "az-outage", "storage-outage", "link-down",
          "api-outage")
NO_HOSTS = ("storage-outage", "link-down", "api-outage")


@attrs.frozen
class Repair:
    """Repair time: `fixed_h` plus an exponential of mean `exp_mean_h` (0 = none)."""

    fixed_h: float
    exp_mean_h: float = 0.0

    def draw(self, rng: random.Random) -> float:
        extra = rng.expovariate(1.0 / self.exp_mean_h) if self.exp_mean_h > 0 else 0.0
        return (self.fixed_h + extra) * HOUR


@attrs.frozen
class FailureClass:
    name: str
    unit: str  # host | rack | power-domain
    effect: str  # crash | power | permanent
    mtbf_h: float  # mean time between failures of ONE unit
    repair: Repair | None  # None: never repaired


PRESETS: dict[str, tuple[FailureClass, ...]] = {
    # SimEDC defaults from field studies (REFERENCE.md "Failure statistics").
    "simedc": (
        FailureClass("node-transient", "host", "crash", 2891.0, Repair(0.25)),
        FailureClass("node-permanent", "host", "permanent", 91250.0, None),
        FailureClass("rack", "rack", "power", 87600.0, Repair(10.0, 24.0)),
    ),
    # Google, first year of a ~1,800-machine cluster: ~0.55 machine failures per machine-year,
    # 20 rack failures, one PDU failure of ~6 h. Repair times are not published: 1 h per
    # machine and 6 h per rack are our assumptions.
    "google": (
        FailureClass("machine", "host", "crash", 8760.0 / 0.55, Repair(1.0)),
        FailureClass("rack", "rack", "power", 8760.0 * 30 / 20, Repair(6.0)),
        FailureClass("pdu", "power-domain", "power", 8760.0 * 18, Repair(6.0)),
    ),
    "none": (),
}


@attrs.frozen
class ScheduledFault:
    at_s: float
    fault: str
    target: str
    duration_s: float | None  # None: lasts to the end of the run
    peer: str | None = None  # link-down: the AZ at the other end


class Injector:
    """Drives faults into the host models and logs each one."""

    def __init__(self, env: simpy.Environment, world: World, topology: Topology, seed: int,
                 log: Callable[[str, dict[str, Any]], None], storage: StorageModel | None = None) -> None:
        self.env = env
        self.world = world
        self.storage = storage
        self.topology = topology
        self.seed = seed
        self.log = log
        self.injected = 0
        self.on_api: Callable[[str, bool], None] | None = None  # api-outage: (service, up)

    def _hosts(self, target: str) -> list[HostModel]:
        return [self.world.hosts[h.name] for h in self.topology.domain_members(target)]

    def _storage(self, fault: ScheduledFault, failing: bool) -> None:
        storage = self.storage
        if storage is None:
            return
        if fault.fault in ("az-outage", "storage-outage"):
            (storage.fail_az if failing else storage.restore_az)(fault.target)
        elif fault.fault == "link-down":
            assert fault.peer is not None
            for a, b in ((fault.target, fault.peer), (fault.peer, fault.target)):
                (storage.cut_link if failing else storage.mend_link)(a, b)

    def schedule(self, faults: list[ScheduledFault]) -> None:
        for fault in faults:
            hosts = [] if fault.fault in NO_HOSTS else self._hosts(fault.target)  # validates the target before the run
            self.env.process(self._scheduled(fault, hosts))

    def _scheduled(self, fault: ScheduledFault, hosts: list[HostModel]) -> Any:
        yield self.env.timeout(fault.at_s)
        effect = {"host-crash": "crash", "host-partition": "partition"}.get(fault.fault, "power")
        target = fault.target if fault.peer is None else f"{fault.target}<->{fault.peer}"
        self._storage(fault, failing=True)
        self._apply(fault.fault, target, effect, hosts)
        if fault.fault == "api-outage" and self.on_api is not None:
            self.on_api(fault.target, False)
        if fault.duration_s is not None:
            yield self.env.timeout(fault.duration_s)
            self._storage(fault, failing=False)
            self._revert(fault.fault, target, effect, hosts)
            if fault.fault == "api-outage" and self.on_api is not None:
                self.on_api(fault.target, True)

    def preset(self, name: str) -> None:
        for cls in PRESETS[name]:
            units = self._units(cls.unit)
            if units:
                rng = random.Random(f"{self.seed}/failures/{cls.name}")
                self.env.process(self._poisson(cls, units, rng))

    def _units(self, unit: str) -> list[str]:
        if unit == "host":
            return [h.name for h in self.topology.hosts]
        key = "rack" if unit == "rack" else "power_domain"
        return sorted({getattr(h, key) for h in self.topology.hosts})

    def _poisson(self, cls: FailureClass, units: list[str], rng: random.Random) -> Any:
        rate = len(units) / (cls.mtbf_h * HOUR)
        while True:
            yield self.env.timeout(rng.expovariate(rate))
            target = units[rng.randrange(len(units))]
            hosts = self._hosts(target)
            self._apply(cls.name, target, cls.effect, hosts)
            if cls.repair is not None:
                self.env.process(self._repair_after(cls, target, hosts, cls.repair.draw(rng)))

    def _repair_after(self, cls: FailureClass, target: str, hosts: list[HostModel], delay: float) -> Any:
        yield self.env.timeout(delay)
        self._revert(cls.name, target, cls.effect, hosts)

    def _apply(self, name: str, target: str, effect: str, hosts: list[HostModel]) -> None:
        self.injected += 1
        self.log("FaultInjected", {"fault": name, "target": target, "hosts": len(hosts)})
        for host in hosts:
            if effect == "crash":
                host.crash()
            elif effect == "permanent":
                host.crash(permanent=True)
            elif effect == "partition":
                host.partition()
            else:
                host.lose_power()

    def _revert(self, name: str, target: str, effect: str, hosts: list[HostModel]) -> None:
        self.log("FaultRepaired", {"fault": name, "target": target})
        for host in hosts:
            if effect == "crash":
                host.repair()
            elif effect == "partition":
                host.heal()
            else:
                host.restore_power()

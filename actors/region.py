"""The region actor: its AZs and tenants (SPEC GEO-1, TEN-1).

A tenant of a region reaches only the AZs of that region, so no request of a tenant
can place anything outside the region it chose (GEO-3).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import attrs

from actors.az import AvailabilityZone, AZSnapshot, RecoverySettings, Snapshot
from actors.quotas import check_resources
from actors.tenant import Tenant
from actors.topology import Topology
from runtime.actor import Actor, ActorRef
from runtime.errors import Conflict, InvalidRequest, NotFound
from runtime.ports import Hypervisor, Power


@attrs.frozen
class CreateTenant:
    name: str
    quotas: Mapping[str, int] = attrs.field(factory=dict)
    customer_type: str | None = None  # e.g. "sap-hana-managed"


@attrs.frozen
class GetTenant:
    name: str


@attrs.frozen
class RegionSnapshot:
    azs: tuple[AZSnapshot, ...]


class Region(Actor):
    def __init__(self, topology: Topology, ports: Mapping[str, tuple[Hypervisor, Power]],
                 settings: RecoverySettings | None = None) -> None:
        self.topology = topology
        self.ports = ports
        self.settings = settings
        self.azs: dict[str, ActorRef] = {}
        self.tenants: dict[str, ActorRef] = {}

    async def started(self) -> None:
        for az in self.topology.region.azs:
            hosts = self.topology.hosts_in(az)
            ports = {h.name: self.ports[h.name] for h in hosts}
            self.azs[az] = self.ctx.spawn(functools.partial(AvailabilityZone, az, hosts, ports, self.settings), az)

    async def receive(self, msg: Any) -> Any:
        match msg:
            case CreateTenant(name, quotas, customer_type):
                return self._create_tenant(name, quotas, customer_type)
            case GetTenant(name):
                ref = self.tenants.get(name)
                if ref is None:
                    raise NotFound("tenant", name)
                return ref
            case Snapshot():
                return RegionSnapshot(tuple([await ref.ask(Snapshot()) for ref in self.azs.values()]))
        return await super().receive(msg)

    def _create_tenant(self, name: str, quotas: Mapping[str, int], customer_type: str | None) -> ActorRef:
        if name in self.tenants:
            raise Conflict(f"tenant {name!r} already exists in {self.topology.region.name}")
        if not name or "/" in name:
            raise InvalidRequest(f"tenant name {name!r} must be non-empty and contain no '/'")
        only = self.topology.region.only_for
        if only is not None and customer_type != only:
            raise InvalidRequest(f"region {self.topology.region.name} is only for {only!r} tenants (GEO-1)")
        check_resources(quotas, f"tenant {name} quotas")
        ref = self.ctx.spawn(lambda: Tenant(name, self.azs, quotas), f"tenant-{name}")
        self.tenants[name] = ref
        self.ctx.emit("TenantCreated", tenant=name)
        return ref

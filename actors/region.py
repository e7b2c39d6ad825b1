"""The region actor: its AZs, their volume services, its backup and disaster-recovery
services, and tenants (SPEC GEO-1, TEN-1).

A tenant of a region reaches only the AZs (and volume services) of that region, so no
request of a tenant can place anything outside the region it chose (GEO-3).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import attrs

from actors.az import AvailabilityZone, AZSnapshot, RecoverySettings, Snapshot
from actors.backups import BackupLimits, BackupService
from actors.hds import ERASE_WITHIN_S, DeletionRecord, EndContract, Eraser, GetDeletionRecord
from actors.quotas import check_resources
from actors.sdrs import DisasterRecovery, SdrsSettings
from actors.tenant import CloseTenant, SetApiState, Tenant
from actors.topology import Topology
from actors.volumes import VolumeService
from runtime.actor import Actor, ActorRef
from runtime.errors import Conflict, InvalidRequest, NotFound
from runtime.ports import Hypervisor, Power
from runtime.storage import BlockStore, ObjectStore


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


@attrs.frozen
class GetServices:
    """Reply: RegionServices."""


@attrs.frozen
class RegionServices:
    azs: Mapping[str, ActorRef]
    volumes: Mapping[str, ActorRef]
    backups: ActorRef | None
    sdrs: ActorRef | None


class Region(Actor):
    """`block_stores`: the BlockStore of each AZ that has one; each gets a VolumeService,
    and servers placed there get a system volume (ECS-3). With them, the region also runs
    sDRS (`DisasterRecovery`), and with its `object_store` the `BackupService`."""

    def __init__(self, topology: Topology, ports: Mapping[str, tuple[Hypervisor, Power]],
                 settings: RecoverySettings | None = None,
                 block_stores: Mapping[str, BlockStore] | None = None,
                 object_store: ObjectStore | None = None,
                 sdrs_settings: SdrsSettings | None = None,
                 backup_limits: BackupLimits | None = None) -> None:
        self.topology = topology
        self.ports = ports
        self.settings = settings
        self.block_stores = dict(block_stores or {})
        self.object_store = object_store
        self.sdrs_settings = sdrs_settings
        self.backup_limits = backup_limits
        self.azs: dict[str, ActorRef] = {}
        self.volumes: dict[str, ActorRef] = {}
        self.backups: ActorRef | None = None
        self.sdrs: ActorRef | None = None
        self.tenants: dict[str, ActorRef] = {}
        self.deletions: dict[str, DeletionRecord] = {}
        self.apis_down: set[str] = set()

    async def started(self) -> None:
        for az in self.topology.region.azs:
            hosts = self.topology.hosts_in(az)
            ports = {h.name: self.ports[h.name] for h in hosts}
            self.azs[az] = self.ctx.spawn(functools.partial(AvailabilityZone, az, hosts, ports, self.settings), az)
            store = self.block_stores.get(az)
            if store is not None:
                self.volumes[az] = self.ctx.spawn(functools.partial(VolumeService, az, store), f"volumes-{az}")
        if self.block_stores:
            self.sdrs = self.ctx.spawn(functools.partial(
                DisasterRecovery, self.topology.region, self.azs, self.volumes, self.block_stores,
                self.sdrs_settings), "sdrs")
        if self.block_stores and self.object_store is not None:
            self.backups = self.ctx.spawn(functools.partial(
                BackupService, self.object_store, self.block_stores, self.volumes, self.backup_limits), "backups")

    async def receive(self, msg: Any) -> Any:
        match msg:
            case CreateTenant(name, quotas, customer_type):
                return self._create_tenant(name, quotas, customer_type)
            case GetServices():
                return RegionServices(self.azs, self.volumes, self.backups, self.sdrs)
            case GetTenant(name):
                ref = self.tenants.get(name)
                if ref is None:
                    raise NotFound("tenant", name)
                return ref
            case SetApiState(service, up):
                (self.apis_down.discard if up else self.apis_down.add)(service)
                self.ctx.emit("ApiStateChanged", service=service, up=up)
                for ref in self.tenants.values():
                    ref.tell(msg)
                return None
            case EndContract(tenant, after_s):
                return await self._end_contract(tenant, after_s)
            case GetDeletionRecord(tenant):
                if tenant not in self.deletions:
                    raise NotFound("deletion record of tenant", tenant)
                return self.deletions[tenant]
            case Snapshot():
                return RegionSnapshot(tuple([await ref.ask(Snapshot()) for ref in self.azs.values()]))
        return await super().receive(msg)

    async def _end_contract(self, tenant: str, after_s: float) -> None:
        """TEN-5: close the tenant now, erase its data after `after_s` and within two months."""
        ref = self.tenants.get(tenant)
        if ref is None:
            raise NotFound("tenant", tenant)
        if tenant in self.deletions:
            raise Conflict(f"tenant {tenant!r}'s contract has already ended")
        if not 0.0 <= after_s <= ERASE_WITHIN_S:
            raise InvalidRequest(f"erasure of tenant {tenant!r} {after_s:g} s after the contract's end is beyond "
                                 f"the {ERASE_WITHIN_S / 86400:g} days TEN-5 allows "
                                 f"(0 <= after_s <= {ERASE_WITHIN_S:g})")
        await ref.ask(CloseTenant())
        end = self.ctx.now()
        eraser = Eraser(tenant, ref, self.backups, self.sdrs, self.ctx.now, self.ctx.sleep, end + ERASE_WITHIN_S)
        self.deletions[tenant] = eraser.record(end, finished=False)
        self.ctx.emit("ContractEnded", tenant=tenant, erase_at=end + after_s, deadline=end + ERASE_WITHIN_S)

        async def run() -> None:
            await self.ctx.sleep(after_s)
            await eraser.run()
            record = self.deletions[tenant] = eraser.record(end, finished=True)
            self.ctx.emit("TenantDataDeleted", tenant=tenant, items=len(record.items), left=len(record.left),
                          completed=record.completed_s, within_limit=record.within_limit, sha256=record.sha256)
        self.ctx.start_soon(run)

    def _create_tenant(self, name: str, quotas: Mapping[str, int], customer_type: str | None) -> ActorRef:
        if name in self.tenants:
            raise Conflict(f"tenant {name!r} already exists in {self.topology.region.name}")
        if not name or "/" in name:
            raise InvalidRequest(f"tenant name {name!r} must be non-empty and contain no '/'")
        only = self.topology.region.only_for
        if only is not None and customer_type != only:
            raise InvalidRequest(f"region {self.topology.region.name} is only for {only!r} tenants (GEO-1)")
        check_resources(quotas, f"tenant {name} quotas")
        ref = self.ctx.spawn(lambda: Tenant(name, self.azs, quotas, self.volumes, self.backups), f"tenant-{name}")
        self.tenants[name] = ref
        for service in sorted(self.apis_down):
            ref.tell(SetApiState(service, up=False))
        self.ctx.emit("TenantCreated", tenant=name)
        return ref

"""The tenant actor (SPEC TEN-1, TEN-3, ECS-3): a tenant's quotas, server groups, servers and volumes.

Every request that consumes resources reserves quota first and gives it back if it is
refused, so a refused request leaves nothing behind.

In a region with volume services, a server's system disk is an EVS volume (ECS-3): a
bootable volume is created in the server's AZ before the server is placed, attached once
it is, deleted again if the placement is refused, and deleted with the server (whose data
volumes are only detached). It counts against the volumes and gigabytes quotas. A local
disk (a flavor with has_local_disk) is not a volume: it lives and dies with the server.

Volume and backup requests name their tenant and pass through here for quotas and
routing (the tenant knows each of its volumes' AZ), then go to the AZ's VolumeService or
the region's BackupService, which enforce the EVS, VBS and CSBS rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import attrs

from actors.az import DeleteServer, PlaceServer, ResizeServer, ServerCommand, SetAutoRecovery
from actors.backups import (
    BindBackupPolicy,
    CreateBackup,
    CreateBackupPolicy,
    CreateServerBackup,
    DeleteBackup,
    DeleteBackupPolicy,
    GetBackup,
    ListBackups,
    RestoreBackup,
)
from actors.flavors import Flavor, get_flavor
from actors.quotas import RESOURCES, ChangeState, QuotaChange, QuotaLedger
from actors.scheduler import GroupPolicy
from actors.volumes import (
    REGION_OF,
    SYSTEM_DISK_GB,
    SYSTEM_DISK_KIND,
    AttachVolume,
    CreateVolume,
    DeleteVolume,
    DetachVolume,
    ExpandVolume,
    ForgetServer,
    GetVolume,
    ListVolumes,
    RegisterServer,
    ServerVolumes,
    VolumeView,
    check_region,
    check_size,
    parse_kind,
)
from runtime.actor import Actor, ActorRef
from runtime.errors import CloudError, Conflict, InvalidRequest, NotFound, QuotaExceeded, ServiceUnavailable
from runtime.storage import VolumeKind


@attrs.frozen
class CreateServer:
    name: str
    flavor: str
    az: str
    auto_recovery: bool = False
    group: str | None = None
    dedicated: bool = False
    system_disk_gb: int | None = None  # default: [volumes] system_disk_gb
    system_disk_kind: VolumeKind | str | None = None  # default: [volumes] system_disk_kind
    server_id: str | None = None  # default: a new id (the daemon gives its own, journaled before the create)
    boot_volume: str | None = None  # boot from this available volume of the tenant instead of a new system disk


@attrs.frozen
class RemoveServer:
    server_id: str


@attrs.frozen
class ActOnServer:
    server_id: str
    action: str  # start | stop | reboot


@attrs.frozen
class ChangeFlavor:
    server_id: str
    flavor: str


@attrs.frozen
class CreateServerGroup:
    name: str
    policy: str


@attrs.frozen
class DeleteServerGroup:
    """Delete a server group without members; its server_groups quota comes back. Reply: None."""

    name: str


@attrs.frozen
class ListServerGroups:
    """Reply: {name: GroupPolicy} of the tenant's server groups."""


@attrs.frozen
class RequestQuotaChange:
    resource: str
    limit: int


@attrs.frozen
class AcceptQuotaChange:
    """The provider accepts a pending request (TEN-3: only path to new limits)."""

    request_id: str


@attrs.frozen
class GetQuotas:
    pass


@attrs.frozen
class Quotas:
    limits: Mapping[str, int]
    used: Mapping[str, int]


@attrs.frozen
class ListServers:
    pass


@attrs.frozen
class SetApiState:
    """A service's API went down (`up` False) or came back (SLA-1, SLA-2: an API outage)."""

    service: str  # ECS, EVS, VPC, IAM, OBS
    up: bool


@attrs.frozen
class CloseTenant:
    """The contract ended (TEN-5): from now on nothing new is created; deletions still work."""


@attrs.frozen
class TenantServer:
    id: str
    name: str
    flavor: Flavor
    az: str
    group: str | None
    system_volume: str | None = None


@attrs.frozen
class TenantVolume:
    id: str
    az: str
    size_gb: int


def system_volume_id(server_id: str) -> str:
    """The id of the system disk the tenant makes for a server created under a given id: known
    before the create, so a journal that recorded the intent knows what to clean up."""
    return f"{server_id}-sys"


@attrs.frozen
class AdoptState:
    """Restore what a tenant owned (the daemon, from its durable state, at start): its server
    groups, servers and volumes, whose actors (AZs, volume services) adopted them already.
    Usage is recounted from them; nothing is reserved twice. Reply: None."""

    groups: Mapping[str, GroupPolicy]
    servers: tuple[TenantServer, ...]
    volumes: tuple[TenantVolume, ...]


def _needs(flavor: Flavor) -> dict[str, int]:
    return {"instances": 1, "vcpus": flavor.vcpus, "ram_mb": flavor.ram_mb}


def _volume_needs(size_gb: int) -> dict[str, int]:
    return {"volumes": 1, "gigabytes": size_gb}


_BACKUP_REQUESTS = (CreateBackup, CreateServerBackup, DeleteBackup, RestoreBackup, GetBackup, ListBackups,
                    CreateBackupPolicy, BindBackupPolicy, DeleteBackupPolicy)


_CREATIONS = (CreateServer, ActOnServer, ChangeFlavor, CreateServerGroup, RequestQuotaChange, CreateVolume,
              ExpandVolume, AttachVolume, CreateBackup, CreateServerBackup, RestoreBackup, CreateBackupPolicy,
              BindBackupPolicy)

# The API each request belongs to. IAM down refuses every request (no one can authenticate).
_SERVICE_OF: dict[type, str] = {
    **dict.fromkeys((CreateServer, RemoveServer, ActOnServer, ChangeFlavor, CreateServerGroup, ListServers,
                     DeleteServerGroup, ListServerGroups, SetAutoRecovery), "ECS"),
    **dict.fromkeys((CreateVolume, ExpandVolume, AttachVolume, DetachVolume, DeleteVolume, GetVolume, ListVolumes),
                    "EVS"),
}

_PROVIDER_SIDE = (SetApiState, CloseTenant, AcceptQuotaChange, AdoptState)


class Tenant(Actor):
    """`volumes`: the VolumeService of each AZ (none: servers get no system volume);
    `backups`: the region's BackupService (none: backup requests are refused)."""

    def __init__(self, name: str, azs: Mapping[str, ActorRef], quotas: Mapping[str, int] | None = None,
                 volumes: Mapping[str, ActorRef] | None = None, backups: ActorRef | None = None) -> None:
        self.name = name
        self.azs = dict(azs)
        self.volume_services = dict(volumes or {})
        self.backups = backups
        self.region = next((REGION_OF[az] for az in (*self.azs, *self.volume_services) if az in REGION_OF),
                           "this region")
        self.quota = QuotaLedger.with_defaults(quotas)
        self.servers: dict[str, TenantServer] = {}
        self.volumes: dict[str, TenantVolume] = {}
        self.busy: set[str] = set()  # servers and volumes with a request in progress
        self.groups: dict[str, GroupPolicy] = {}
        self.group_members: dict[str, int] = {}
        self.changes: dict[str, QuotaChange] = {}
        self.closed = False
        self.apis_down: set[str] = set()

    async def receive(self, msg: Any) -> Any:
        if self.apis_down and not isinstance(msg, _PROVIDER_SIDE):
            service = "IAM" if "IAM" in self.apis_down else _SERVICE_OF.get(type(msg))
            if service in self.apis_down:
                raise ServiceUnavailable(service, self.region)
        if self.closed and isinstance(msg, _CREATIONS):
            raise Conflict(f"tenant {self.name}'s contract has ended: its data is being deleted (TEN-5); "
                           f"{type(msg).__name__} refused")
        match msg:
            case CloseTenant():
                self.closed = True
                return None
            case AdoptState():
                return self._adopt(msg)
            case SetApiState(service, up):
                (self.apis_down.discard if up else self.apis_down.add)(service)
                return None
            case CreateServer():
                return self._create(msg)
            case RemoveServer(sid):
                return self._remove(self._server(sid))
            case ActOnServer(sid, action):
                server = self._server(sid)
                return self._relay(self.azs[server.az], ServerCommand(sid, action), busy=sid)
            case ChangeFlavor(sid, flavor):
                return self._resize(sid, get_flavor(flavor))
            case CreateServerGroup(name, policy):
                return self._create_group(name, policy)
            case DeleteServerGroup(name):
                return self._delete_group(name)
            case ListServerGroups():
                return dict(self.groups)
            case SetAutoRecovery(sid, _):
                return self._relay(self.azs[self._server(sid).az], msg, busy=sid)
            case RequestQuotaChange(resource, limit):
                return self._request_change(resource, limit)
            case AcceptQuotaChange(request_id):
                return self._accept_change(request_id)
            case GetQuotas():
                return Quotas(dict(self.quota.limits), dict(self.quota.used))
            case ListServers():
                return sorted(self.servers.values(), key=lambda s: s.id)
            case CreateVolume():
                return self._create_volume(msg)
            case ExpandVolume():
                return self._expand_volume(msg)
            case AttachVolume(tenant, vid, sid):
                return self._attach_volume(tenant, self._volume(tenant, vid), self._server(sid), msg)
            case DetachVolume(tenant, vid):
                vol = self._volume(tenant, vid)
                return self._relay(self.volume_services[vol.az], msg, busy=vid)
            case DeleteVolume(tenant, vid):
                vol = self._volume(tenant, vid)
                return self._relay(self.volume_services[vol.az], msg, busy=vid, on_done=lambda _: self._drop(vid))
            case GetVolume(tenant, vid):
                vol = self._volume(tenant, vid, idle=False)
                return self._relay(self.volume_services[vol.az], msg)
            case ListVolumes(tenant):
                return self._list_volumes(tenant)
            case RestoreBackup(volume_id=None):
                return self._restore_into_new(msg)
            case _ if isinstance(msg, _BACKUP_REQUESTS):
                self._mine(msg.tenant)
                return self._relay(self._backup_service(), msg)
        return await super().receive(msg)

    def _adopt(self, msg: AdoptState) -> None:
        if self.servers or self.volumes or self.groups:
            raise Conflict(f"tenant {self.name} already has resources: adopt into a new tenant only")
        self.groups = dict(msg.groups)
        self.group_members = dict.fromkeys(self.groups, 0)
        for server in msg.servers:
            if server.group is not None and server.group not in self.groups:
                raise InvalidRequest(f"server {server.id} is in group {server.group!r}, which the tenant lacks")
            self.servers[server.id] = server
            for name, n in _needs(server.flavor).items():
                self.quota.used[name] += n
            if server.group is not None:
                self.group_members[server.group] += 1
        for vol in msg.volumes:
            self.volumes[vol.id] = vol
            for name, n in _volume_needs(vol.size_gb).items():
                self.quota.used[name] += n
        self.quota.used["server_groups"] = len(self.groups)
        self.quota.used["server_group_members"] = max(self.group_members.values(), default=0)
        return None

    def _mine(self, tenant: str) -> None:
        if tenant != self.name:
            raise InvalidRequest(f"a request of tenant {tenant!r} was sent to tenant {self.name!r}")

    def _relay(self, to: ActorRef, msg: Any, busy: str | None = None, on_done: Callable[[Any], None] | None = None,
               on_fail: Callable[[], None] | None = None) -> None:
        """Ask `to` and answer with its reply; `busy` (a server or volume) takes no other request meanwhile."""
        if busy is not None:
            self.busy.add(busy)
        reply = self.ctx.defer()

        async def run() -> None:
            try:
                result = await to.ask(msg, timeout=None)
            except CloudError as exc:
                if on_fail is not None:
                    on_fail()
                reply.fail(exc)
            else:
                if on_done is not None:
                    on_done(result)
                reply.set(result)
            finally:
                if busy is not None:
                    self.busy.discard(busy)
        self.ctx.start_soon(run)

    def _reserve(self, amounts: Mapping[str, int]) -> None:
        try:
            self.quota.reserve(amounts)
        except QuotaExceeded as exc:
            self._refused(exc)

    def _refused(self, exc: QuotaExceeded) -> NoReturn:
        self.ctx.emit("QuotaRejected", tenant=self.name, resource=exc.resource, limit=exc.limit,
                      used=exc.used, requested=exc.requested)
        raise exc

    def _create(self, msg: CreateServer) -> None:
        flavor = get_flavor(msg.flavor)
        az = self.azs.get(msg.az)
        if az is None:
            raise InvalidRequest(f"availability zone {msg.az!r} is not in this region; valid: {', '.join(self.azs)}")
        if msg.auto_recovery and flavor.has_local_disk:
            raise InvalidRequest(f"flavor {flavor.name} has a local disk: auto-recovery is not available (ECS-4); "
                                 "choose a flavor without local disk or disable auto_recovery")
        policy = None
        if msg.group is not None:
            policy = self.groups.get(msg.group)
            if policy is None:
                raise NotFound("server group", msg.group)
            if self.group_members[msg.group] >= self.quota.limits["server_group_members"]:
                self._refused(QuotaExceeded("server_group_members", self.quota.limits["server_group_members"],
                                            self.group_members[msg.group], 1))
        if msg.server_id is not None and (msg.server_id in self.servers or msg.server_id in self.busy):
            raise Conflict(f"server {msg.server_id} already exists")
        service = self.volume_services.get(msg.az)
        boot = None if msg.boot_volume is None else self._volume(self.name, msg.boot_volume)
        if boot is not None and (service is None or boot.az != msg.az):
            raise InvalidRequest(f"volume {boot.id} is in {boot.az}: a server boots from a volume of its own "
                                 f"availability zone ({msg.az})")
        disk = None
        if service is not None and boot is None:
            size = SYSTEM_DISK_GB if msg.system_disk_gb is None else msg.system_disk_gb
            disk = CreateVolume(self.name, msg.az, check_size(size, bootable=True),
                                parse_kind(msg.system_disk_kind or SYSTEM_DISK_KIND), bootable=True,
                                volume_id=None if msg.server_id is None else system_volume_id(msg.server_id))
        needs = _needs(flavor)
        disk_needs = {} if disk is None else _volume_needs(disk.size_gb)
        self._reserve({**needs, **disk_needs})
        if msg.group is not None:
            self._count_member(msg.group, +1)
        sid = msg.server_id or self.ctx.new_id()
        self.busy.add(sid)
        if boot is not None:
            self.busy.add(boot.id)
        reply = self.ctx.defer()
        place = PlaceServer(sid, self.name, flavor, msg.auto_recovery,
                            f"{self.name}/{msg.group}" if msg.group else None, policy, msg.dedicated)

        async def build() -> None:
            volume = boot
            try:
                if service is not None and boot is not None:
                    view: VolumeView = await service.ask(GetVolume(self.name, boot.id), timeout=None)
                    if view.state != "available":
                        raise Conflict(f"volume {boot.id} is {view.state}: a server boots from an available volume")
                    await service.ask(RegisterServer(self.name, sid), timeout=None)
                if service is not None and disk is not None:
                    volume = await self._new_volume(service, disk, disk_needs)
                    await service.ask(RegisterServer(self.name, sid), timeout=None)
                await az.ask(place, timeout=None)
            except CloudError as exc:
                self.quota.release(needs)
                if msg.group is not None:
                    self._count_member(msg.group, -1)
                if service is not None and volume is not None and boot is None:
                    await self._undo_volume(service, volume.id, sid)
                elif service is not None and boot is not None:
                    await service.ask(ForgetServer(sid), timeout=None)
                self.busy.discard(sid)
                self.busy.discard(msg.boot_volume or sid)
                reply.fail(exc)
                return
            if service is not None and volume is not None:
                # cannot be refused: an available volume (kept busy meanwhile), a new server without disks
                await service.ask(AttachVolume(self.name, volume.id, sid), timeout=None)
            self.servers[sid] = TenantServer(sid, msg.name, flavor, msg.az, msg.group,
                                             None if volume is None else volume.id)
            self.busy.discard(sid)
            self.busy.discard(msg.boot_volume or sid)
            reply.set(sid)
        self.ctx.start_soon(build)

    def _server(self, sid: str) -> TenantServer:
        # busy first: a server being deleted is already unlisted while its volumes are released
        if sid in self.busy:
            raise Conflict(f"server {sid} has a request in progress; retry when it ends")
        server = self.servers.get(sid)
        if server is None:
            raise NotFound("server", sid)
        return server

    def _remove(self, server: TenantServer) -> None:
        """Delete the server, then detach its volumes and delete its system disk (ECS-3)."""
        service = self.volume_services.get(server.az)
        self.busy.add(server.id)
        reply = self.ctx.defer()

        async def run() -> None:
            attached: list[VolumeView] = []
            try:
                if service is not None:
                    attached = await service.ask(ServerVolumes(server.id), timeout=None)
                    for v in attached:
                        if v.protected_by is not None:
                            raise Conflict(f"server {server.id} has volume {v.id} protected by sDRS group "
                                           f"{v.protected_by}; disable the protection before deleting the server")
                await self.azs[server.az].ask(DeleteServer(server.id), timeout=None)
            except CloudError as exc:
                self.busy.discard(server.id)
                reply.fail(exc)
                return
            self._forget(server)
            if service is not None:
                await self._release_volumes(service, server.id, attached)
            self.busy.discard(server.id)
            reply.set(None)
        self.ctx.start_soon(run)

    def _forget(self, server: TenantServer) -> None:
        del self.servers[server.id]
        self.quota.release(_needs(server.flavor))
        if server.group is not None:
            self._count_member(server.group, -1)

    async def _release_volumes(self, service: ActorRef, server_id: str, attached: list[VolumeView]) -> None:
        """The server is gone: data volumes become available, its system disk is deleted.
        A volume the store cannot delete now stays the tenant's (in error, still counted)."""
        left = False
        for v in attached:
            try:
                await service.ask(DetachVolume(self.name, v.id), timeout=None)
                if v.bootable:
                    await service.ask(DeleteVolume(self.name, v.id), timeout=None)
                    self._drop(v.id)
            except CloudError as exc:
                left = True
                self.ctx.emit("VolumeLeftBehind", tenant=self.name, volume=v.id, server=server_id, error=str(exc))
        if not left:
            await service.ask(ForgetServer(server_id), timeout=None)

    def _count_member(self, group: str, delta: int) -> None:
        # server_group_members limits each group; its "use" is the largest group, so that
        # a quota change can never go below a group that already exists (TEN-3).
        self.group_members[group] += delta
        self.quota.used["server_group_members"] = max(self.group_members.values())

    def _resize(self, sid: str, flavor: Flavor) -> None:
        server = self._server(sid)
        old, new = _needs(server.flavor), _needs(flavor)
        delta = {k: new[k] - old[k] for k in new}
        grow = {k: max(0, v) for k, v in delta.items()}
        self._reserve(grow)

        def resized(_: Any) -> None:
            self.quota.release({k: max(0, -v) for k, v in delta.items()})
            self.servers[sid] = attrs.evolve(server, flavor=flavor)

        self._relay(self.azs[server.az], ResizeServer(sid, flavor), busy=sid, on_done=resized,
                    on_fail=lambda: self.quota.release(grow))

    def _create_group(self, name: str, policy: str) -> str:
        try:
            parsed = GroupPolicy(policy)
        except ValueError:
            raise InvalidRequest(f"server group policy {policy!r} is not one of: "
                                 f"{', '.join(p.value for p in GroupPolicy)}") from None
        if name in self.groups:
            raise Conflict(f"server group {name!r} already exists")
        self._reserve({"server_groups": 1})
        self.groups[name] = parsed
        self.group_members[name] = 0
        return name

    def _delete_group(self, name: str) -> None:
        if name not in self.groups:
            raise NotFound("server group", name)
        if self.group_members[name]:
            raise Conflict(f"server group {name!r} has {self.group_members[name]} member(s) (servers being created "
                           "included): delete them first")
        del self.groups[name], self.group_members[name]
        self.quota.release({"server_groups": 1})
        self.quota.used["server_group_members"] = max(self.group_members.values(), default=0)

    def _request_change(self, resource: str, limit: int) -> str:
        if resource not in RESOURCES:
            raise InvalidRequest(f"unknown quota resource {resource!r}; valid: {', '.join(RESOURCES)}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidRequest(f"quota limit must be a whole number >= 0, got {limit!r}")
        change = QuotaChange(self.ctx.new_id(), resource, limit)
        self.changes[change.id] = change
        self.ctx.emit("QuotaChangeRequested", tenant=self.name, request=change.id, resource=resource, limit=limit)
        return change.id

    def _accept_change(self, request_id: str) -> None:
        change = self.changes.get(request_id)
        if change is None:
            raise NotFound("quota change request", request_id)
        if change.state is not ChangeState.PENDING:
            raise Conflict(f"quota change request {request_id} is already {change.state.value}")
        used = self.quota.used[change.resource]
        if change.limit < used:
            raise InvalidRequest(f"cannot set {change.resource} quota to {change.limit}: {used} already in use; "
                                 "free resources first or ask for at least the current use")
        self.quota.limits[change.resource] = change.limit
        change.state = ChangeState.ACCEPTED
        self.ctx.emit("QuotaChanged", tenant=self.name, resource=change.resource, limit=change.limit)

    # -- volumes (EVS-1, EVS-2) -------------------------------------------------------------
    def _service(self, az: str) -> ActorRef:
        check_region(az, self.region, self.volume_services, "storing a volume")
        return self.volume_services[az]

    def _volume(self, tenant: str, volume_id: str, idle: bool = True) -> TenantVolume:
        self._mine(tenant)
        vol = self.volumes.get(volume_id)
        if vol is None:
            raise NotFound("volume", volume_id)
        if idle and volume_id in self.busy:
            raise Conflict(f"volume {volume_id} has a request in progress; retry when it ends")
        return vol

    async def _new_volume(self, service: ActorRef, msg: CreateVolume, needs: Mapping[str, int]) -> TenantVolume:
        """Create a volume whose quota is reserved; give the quota back if it is refused."""
        try:
            view: VolumeView = await service.ask(msg, timeout=None)
        except CloudError:
            self.quota.release(needs)
            raise
        vol = self.volumes[view.id] = TenantVolume(view.id, view.az, view.size_gb)
        return vol

    async def _undo_volume(self, service: ActorRef, volume_id: str, server_id: str | None = None) -> None:
        """Delete a volume made for a request that was refused after all."""
        try:
            if server_id is not None:
                await service.ask(ForgetServer(server_id), timeout=None)
            await service.ask(DeleteVolume(self.name, volume_id), timeout=None)
        except CloudError as exc:
            self.ctx.emit("VolumeLeftBehind", tenant=self.name, volume=volume_id, server=server_id, error=str(exc))
            return
        self._drop(volume_id)

    def _drop(self, volume_id: str) -> None:
        """The volume is deleted: its quota comes back (adopted volumes were never counted here)."""
        vol = self.volumes.pop(volume_id, None)
        if vol is not None:
            self.quota.release(_volume_needs(vol.size_gb))

    def _create_volume(self, msg: CreateVolume) -> None:
        self._mine(msg.tenant)
        service = self._service(msg.az)
        check_size(msg.size_gb, msg.bootable)
        parse_kind(msg.kind)
        needs = _volume_needs(msg.size_gb)
        self._reserve(needs)
        reply = self.ctx.defer()

        async def run() -> None:
            try:
                vol = await self._new_volume(service, msg, needs)
            except CloudError as exc:
                reply.fail(exc)
                return
            reply.set(await service.ask(GetVolume(self.name, vol.id), timeout=None))
        self.ctx.start_soon(run)

    def _expand_volume(self, msg: ExpandVolume) -> None:
        vol = self._volume(msg.tenant, msg.volume_id)
        grow = {"gigabytes": max(0, check_size(msg.size_gb, bootable=True) - vol.size_gb)}
        self._reserve(grow)

        def expanded(view: VolumeView) -> None:
            self.volumes[vol.id] = attrs.evolve(vol, size_gb=view.size_gb)

        self._relay(self.volume_services[vol.az], msg, busy=vol.id, on_done=expanded,
                    on_fail=lambda: self.quota.release(grow))

    def _attach_volume(self, tenant: str, vol: TenantVolume, server: TenantServer, msg: AttachVolume) -> None:
        if server.az != vol.az:
            raise InvalidRequest(f"server {server.id} is in {server.az} and volume {vol.id} in {vol.az}: a volume "
                                 "attaches only to a server of its own AZ (EVS-2)")
        self._relay(self.volume_services[vol.az], msg, busy=vol.id)

    def _list_volumes(self, tenant: str) -> None:
        self._mine(tenant)
        reply = self.ctx.defer()

        async def run() -> None:
            try:
                views = [v for ref in self.volume_services.values()
                         for v in await ref.ask(ListVolumes(self.name), timeout=None)]
            except CloudError as exc:
                reply.fail(exc)
                return
            reply.set(sorted(views, key=lambda v: v.id))
        self.ctx.start_soon(run)

    # -- backups (VBS-1, CSBS-1) -------------------------------------------------------------
    def _backup_service(self) -> ActorRef:
        if self.backups is None:
            raise InvalidRequest("this region has no backup service")
        return self.backups

    def _restore_into_new(self, msg: RestoreBackup) -> None:
        """Restore into a new volume: created within quota first, deleted again if the restore is refused."""
        self._mine(msg.tenant)
        backups = self._backup_service()
        if msg.az is not None:
            self._service(msg.az)  # GEO-3: refused before anything is done
        reply = self.ctx.defer()

        async def run() -> None:
            try:
                part = (await backups.ask(GetBackup(self.name, msg.backup_id), timeout=None)).part(msg.source_volume_id)
                az = msg.az or part.az
                service = self._service(az)
                needs = _volume_needs(part.size_gb)
                self._reserve(needs)
                vol = await self._new_volume(service, CreateVolume(self.name, az, part.size_gb, part.kind,
                                                                   part.bootable, msg.new_volume_id), needs)
            except CloudError as exc:
                reply.fail(exc)
                return
            try:
                reply.set(await backups.ask(attrs.evolve(msg, volume_id=vol.id, az=az), timeout=None))
            except CloudError as exc:
                await self._undo_volume(service, vol.id)
                reply.fail(exc)
        self.ctx.start_soon(run)

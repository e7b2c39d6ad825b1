"""EVS volumes of one availability zone (SPEC EVS-1, EVS-2, ECS-3).

`VolumeService` is the only actor that calls its AZ's `BlockStore` for volume life
cycles. It owns the record of every volume of the AZ: tenant, size, type, state (the
transition table `TRANSITIONS`), the server it is attached to, the sDRS group that
protects it; and the servers of the AZ it was told about (`RegisterServer`), so that
a volume attaches only to a server of its own AZ and tenant.

Invariants:
- a record exists only for a volume its store holds (or is creating): a create whose
  store call fails leaves no record, and the asker (the Tenant) gives the quota back;
- sizes are within EVS-1 and only grow (EVS-2);
- a volume is attached to at most one server; a server has at most one system
  (bootable) volume, listed first;
- a protected volume is never detached or deleted; a volume is deleted only when
  available or in error, together with its snapshots.

Attaching and detaching are records only (the Hypervisor port has no disk calls yet):
they pass through attaching and detaching at once. Store calls (create, expand, delete)
run in the background; the volume's transient state refuses other actions meanwhile.

Requests name their tenant; a volume of another tenant is `NotFound` (TEN-1). Quotas
are counted by the Tenant, never here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from actors.topology import DEFAULTS, REGIONS
from runtime.actor import Actor
from runtime.errors import BackendError, CloudError, Conflict, InvalidRequest, InvalidTransition, NotFound
from runtime.storage import BlockStore, VolumeKind, check_same_region

SYSTEM_MIN_GB: int = DEFAULTS["volumes"]["system_min_gb"]
DATA_MIN_GB: int = DEFAULTS["volumes"]["data_min_gb"]
MAX_GB: int = DEFAULTS["volumes"]["max_gb"]
SYSTEM_DISK_GB: int = DEFAULTS["volumes"]["system_disk_gb"]
SYSTEM_DISK_KIND = VolumeKind(DEFAULTS["volumes"]["system_disk_kind"])
REGION_OF: Mapping[str, str] = {az: name for name, region in REGIONS.items() for az in region.azs}


class VolumeState(enum.Enum):
    CREATING = "creating"
    AVAILABLE = "available"
    ATTACHING = "attaching"
    IN_USE = "in-use"
    DETACHING = "detaching"
    EXTENDING = "extending"
    DELETING = "deleting"
    RESTORING = "restoring"
    ERROR = "error"


class VolumeAction(enum.Enum):
    ATTACH = "attach"
    DETACH = "detach"
    EXPAND = "expand"
    DELETE = "delete"
    RESTORE = "restore"
    CREATED = "created"
    DONE = "done"
    FAILED = "failed"


_S, _A = VolumeState, VolumeAction
_BACK = None
"""A destination meaning: the state the volume was in when the operation began."""

_ROWS: dict[VolumeState, dict[VolumeAction, VolumeState | None]] = {
    # A failed create leaves no record, so creating has no FAILED.
    _S.CREATING: {_A.CREATED: _S.AVAILABLE},
    _S.AVAILABLE: {_A.ATTACH: _S.ATTACHING, _A.EXPAND: _S.EXTENDING, _A.DELETE: _S.DELETING,
                   _A.RESTORE: _S.RESTORING},
    _S.ATTACHING: {_A.DONE: _S.IN_USE},
    _S.IN_USE: {_A.DETACH: _S.DETACHING, _A.EXPAND: _S.EXTENDING},
    _S.DETACHING: {_A.DONE: _S.AVAILABLE},
    _S.EXTENDING: {_A.DONE: _BACK, _A.FAILED: _BACK},
    # Deleted volumes leave no record, so deleting has no DONE.
    _S.DELETING: {_A.FAILED: _S.ERROR},
    _S.RESTORING: {_A.DONE: _S.AVAILABLE, _A.FAILED: _S.ERROR},
    _S.ERROR: {_A.DELETE: _S.DELETING, _A.RESTORE: _S.RESTORING},
}
TRANSITIONS: Mapping[VolumeState, Mapping[VolumeAction, VolumeState | None]] = MappingProxyType(
    {state: MappingProxyType(row) for state, row in _ROWS.items()})

USER_ACTIONS = frozenset({_A.ATTACH, _A.DETACH, _A.EXPAND, _A.DELETE, _A.RESTORE})


def transition(volume_id: str, state: VolumeState, action: VolumeAction,
               before: VolumeState | None = None) -> VolumeState:
    """The state after `action` (`before`: the state the operation began in), or
    `InvalidTransition` naming the state and the user actions it allows."""
    row = TRANSITIONS[state]
    if action in row:
        after = row[action]
        if after is not None:
            return after
        assert before is not None, f"{state.value} returns to the state before; pass it"
        return before
    shown = [a.value for a in row if action not in USER_ACTIONS or a in USER_ACTIONS]
    raise InvalidTransition("volume", volume_id, state.value, action.value, shown)


def check_size(size_gb: object, bootable: bool) -> int:
    """EVS-1: a system disk has 1 GB to 32 TB, a data disk 10 GB to 32 TB."""
    low = SYSTEM_MIN_GB if bootable else DATA_MIN_GB
    if isinstance(size_gb, bool) or not isinstance(size_gb, int) or not low <= size_gb <= MAX_GB:
        disk = "system (bootable) disk" if bootable else "data disk"
        raise InvalidRequest(f"size_gb = {size_gb!r} is outside the valid range of a {disk}: "
                             f"{low} to {MAX_GB} GB (EVS-1)")
    return size_gb


def check_region(az: str, region: str, valid: Iterable[str], what: str) -> None:
    """GEO-3: an AZ of another region is refused naming both regions; an unknown one listing the valid."""
    if az in valid:
        return
    other = REGION_OF.get(az)
    if other is not None:
        check_same_region(f"{what} in {az}", region, other)
    raise InvalidRequest(f"availability zone {az!r} is not one of {region}; valid: {', '.join(valid)}")


def parse_kind(kind: VolumeKind | str) -> VolumeKind:
    """EVS-1: SATA (standard) or SSD (high I/O)."""
    if isinstance(kind, VolumeKind):
        return kind
    try:
        return VolumeKind(kind)
    except ValueError:
        raise InvalidRequest(f"kind = {kind!r} is not a volume type; valid: "
                             f"{', '.join(k.value for k in VolumeKind)} (EVS-1)") from None


# -- messages ----------------------------------------------------------------------
@attrs.frozen
class VolumeView:
    """What the control plane knows about one volume."""

    id: str
    tenant: str
    az: str
    size_gb: int
    kind: VolumeKind
    state: str  # a VolumeState value
    server_id: str | None  # attached to
    bootable: bool  # a server's system disk
    protected_by: str | None  # the sDRS protection group replicating it


@attrs.frozen
class CreateVolume:
    """A data disk, or with `bootable` a system disk (ECS-3). Reply: its VolumeView once available."""

    tenant: str
    az: str
    size_gb: int
    kind: VolumeKind | str = VolumeKind.SATA
    bootable: bool = False
    volume_id: str | None = None  # default: a new id (the daemon gives its own, journaled before the create)


@attrs.frozen
class ExpandVolume:
    """Grow a volume, available or in use (EVS-2: never shrink). Reply: VolumeView."""

    tenant: str
    volume_id: str
    size_gb: int


@attrs.frozen
class AttachVolume:
    """Attach an available volume to a server of the same AZ and tenant. Reply: VolumeView."""

    tenant: str
    volume_id: str
    server_id: str


@attrs.frozen
class DetachVolume:
    """Reply: VolumeView (available)."""

    tenant: str
    volume_id: str


@attrs.frozen
class DeleteVolume:
    """Delete an available (or failed) volume and its snapshots. Reply: None."""

    tenant: str
    volume_id: str


@attrs.frozen
class GetVolume:
    """Reply: VolumeView."""

    tenant: str
    volume_id: str


@attrs.frozen
class ListVolumes:
    """Reply: list[VolumeView] of the tenant's volumes in this AZ, by id."""

    tenant: str


@attrs.frozen
class ServerVolumes:
    """Reply: list[VolumeView] of the volumes attached to a server, its system disk first."""

    server_id: str


@attrs.frozen
class AdoptVolume:
    """Take into this AZ's service a volume that already exists in its BlockStore (a
    replica promoted by sDRS), available or attached to `server_id`. Reply: VolumeView."""

    volume_id: str
    tenant: str
    size_gb: int
    kind: VolumeKind
    bootable: bool
    server_id: str | None = None


@attrs.frozen
class SetProtection:
    """Mark a volume as replicated by an sDRS group (or unmark with None). A protected
    volume cannot be deleted, detached or shrunk away: those requests get Conflict
    naming the group. Reply: None."""

    volume_id: str
    group: str | None


@attrs.frozen
class RegisterServer:
    """A server of `tenant` now exists in this AZ: volumes may attach to it. Reply: None."""

    tenant: str
    server_id: str


@attrs.frozen
class ForgetServer:
    """The server is gone; refused while volumes are attached to it. Reply: None."""

    server_id: str


@attrs.frozen
class StartRestore:
    """The backup service is about to write a backup into the volume: available (or in
    error) -> restoring; it must hold `min_size_gb`. Reply: VolumeView."""

    tenant: str
    volume_id: str
    min_size_gb: int


@attrs.frozen
class EndRestore:
    """The restore ended: restoring -> available, or error when it failed. Reply: VolumeView."""

    volume_id: str
    ok: bool


# -- the service -------------------------------------------------------------------
@attrs.define
class _Volume:
    id: str
    tenant: str
    size_gb: int
    kind: VolumeKind
    bootable: bool
    state: VolumeState = VolumeState.CREATING
    server_id: str | None = None
    protected_by: str | None = None


@attrs.define
class _Server:
    tenant: str
    volumes: list[str] = attrs.Factory(list)  # attached, the system disk first

    def add(self, volume_id: str, bootable: bool) -> None:
        if bootable:
            self.volumes.insert(0, volume_id)
        else:
            self.volumes.append(volume_id)


class VolumeService(Actor):
    def __init__(self, az: str, store: BlockStore) -> None:
        self.az = az
        self.store = store
        self.volumes: dict[str, _Volume] = {}
        self.by_tenant: dict[str, set[str]] = {}
        self.servers: dict[str, _Server] = {}

    async def receive(self, msg: Any) -> Any:
        match msg:
            case CreateVolume():
                return self._create(msg)
            case ExpandVolume(tenant, vid, size_gb):
                return self._expand(self._owned(tenant, vid), size_gb)
            case AttachVolume(tenant, vid, sid):
                return self._attach(self._owned(tenant, vid), sid)
            case DetachVolume(tenant, vid):
                return self._detach(self._owned(tenant, vid))
            case DeleteVolume(tenant, vid):
                return self._delete(self._owned(tenant, vid))
            case GetVolume(tenant, vid):
                return self._view(self._owned(tenant, vid))
            case ListVolumes(tenant):
                return [self._view(self.volumes[v]) for v in sorted(self.by_tenant.get(tenant, ()))]
            case ServerVolumes(sid):
                server = self.servers.get(sid)
                return [] if server is None else [self._view(self.volumes[v]) for v in server.volumes]
            case AdoptVolume():
                return self._adopt(msg)
            case SetProtection(vid, group):
                return self._protect(vid, group)
            case RegisterServer(tenant, sid):
                return self._register(tenant, sid)
            case ForgetServer(sid):
                return self._forget(sid)
            case StartRestore(tenant, vid, min_size_gb):
                return self._start_restore(self._owned(tenant, vid), min_size_gb)
            case EndRestore(vid, ok):
                return self._end_restore(vid, ok)
        return await super().receive(msg)

    def _view(self, vol: _Volume) -> VolumeView:
        return VolumeView(vol.id, vol.tenant, self.az, vol.size_gb, vol.kind, vol.state.value, vol.server_id,
                          vol.bootable, vol.protected_by)

    def _owned(self, tenant: str, volume_id: str) -> _Volume:
        vol = self.volumes.get(volume_id)
        if vol is None or vol.tenant != tenant:
            raise NotFound("volume", volume_id)
        return vol

    def _add(self, vol: _Volume) -> None:
        self.volumes[vol.id] = vol
        self.by_tenant.setdefault(vol.tenant, set()).add(vol.id)

    def _remove(self, vol: _Volume) -> None:
        del self.volumes[vol.id]
        self.by_tenant[vol.tenant].discard(vol.id)

    def _system_disk(self, server: _Server) -> str | None:
        return server.volumes[0] if server.volumes and self.volumes[server.volumes[0]].bootable else None

    def _unprotected(self, vol: _Volume, action: str) -> None:
        if vol.protected_by is not None:
            raise Conflict(f"cannot {action} volume {vol.id}: sDRS protection group {vol.protected_by} replicates "
                           "it; disable the protection first")

    def _create(self, msg: CreateVolume) -> None:
        if msg.az != self.az:
            raise InvalidRequest(f"a volume of {msg.az} was asked of the volume service of {self.az}")
        kind = parse_kind(msg.kind)
        if msg.volume_id is not None and msg.volume_id in self.volumes:
            raise Conflict(f"volume {msg.volume_id} already exists in {self.az}")
        vol = _Volume(msg.volume_id or self.ctx.new_id(), msg.tenant, check_size(msg.size_gb, msg.bootable), kind,
                      msg.bootable)
        self._add(vol)
        reply = self.ctx.defer()

        async def run() -> None:
            try:
                await self.store.create_volume(vol.id, vol.size_gb, kind)
            except CloudError as exc:
                self._remove(vol)
                self.ctx.emit("VolumeCreateFailed", volume=vol.id, tenant=vol.tenant, error=str(exc))
                if isinstance(exc, BackendError):
                    # the store may have made it before the answer was lost: leave nothing behind
                    self.ctx.start_soon(self._discard, vol.id)
                reply.fail(exc)
                return
            vol.state = transition(vol.id, vol.state, _A.CREATED)
            self.ctx.emit("VolumeCreated", volume=vol.id, tenant=vol.tenant, size_gb=vol.size_gb,
                          type=kind.value, bootable=vol.bootable)
            reply.set(self._view(vol))
        self.ctx.start_soon(run)

    async def _discard(self, volume_id: str) -> None:
        try:
            await self.store.delete_volume(volume_id)
        except CloudError:
            return

    def _expand(self, vol: _Volume, size_gb: int) -> None:
        check_size(size_gb, vol.bootable)
        if size_gb <= vol.size_gb:
            raise InvalidRequest(f"size_gb = {size_gb} does not grow volume {vol.id} of {vol.size_gb} GB: volumes "
                                 f"are only expanded, never shrunk (EVS-2); ask for more than {vol.size_gb} GB")
        before = vol.state
        vol.state = transition(vol.id, vol.state, _A.EXPAND)
        reply = self.ctx.defer()

        async def run() -> None:
            try:
                await self.store.expand_volume(vol.id, size_gb)
            except CloudError as exc:
                vol.state = transition(vol.id, vol.state, _A.FAILED, before)
                reply.fail(exc)
                return
            vol.size_gb = size_gb
            vol.state = transition(vol.id, vol.state, _A.DONE, before)
            self.ctx.emit("VolumeExpanded", volume=vol.id, tenant=vol.tenant, size_gb=size_gb)
            reply.set(self._view(vol))
        self.ctx.start_soon(run)

    def _attach(self, vol: _Volume, server_id: str) -> VolumeView:
        server = self.servers.get(server_id)
        if server is None or server.tenant != vol.tenant:
            raise NotFound("server", f"{server_id} in {self.az}")
        if vol.bootable and self._system_disk(server) is not None:
            raise Conflict(f"server {server_id} already has system disk {server.volumes[0]}; a server has one "
                           "system disk (ECS-3): attach this volume elsewhere or detach that one first")
        vol.state = transition(vol.id, transition(vol.id, vol.state, _A.ATTACH), _A.DONE)
        vol.server_id = server_id
        server.add(vol.id, vol.bootable)
        self.ctx.emit("VolumeAttached", volume=vol.id, tenant=vol.tenant, server=server_id)
        return self._view(vol)

    def _detach(self, vol: _Volume) -> VolumeView:
        self._unprotected(vol, "detach")
        vol.state = transition(vol.id, transition(vol.id, vol.state, _A.DETACH), _A.DONE)
        server_id = vol.server_id
        assert server_id is not None
        self.servers[server_id].volumes.remove(vol.id)
        vol.server_id = None
        self.ctx.emit("VolumeDetached", volume=vol.id, tenant=vol.tenant, server=server_id)
        return self._view(vol)

    def _delete(self, vol: _Volume) -> None:
        self._unprotected(vol, "delete")
        vol.state = transition(vol.id, vol.state, _A.DELETE)
        reply = self.ctx.defer()

        async def run() -> None:
            try:
                record = await self.store.get_volume(vol.id)
                for snapshot in record.snapshots:  # backup bases or leftovers: backups live in object storage
                    await self.store.delete_snapshot(vol.id, snapshot)
                await self.store.delete_volume(vol.id)
            except CloudError as exc:
                vol.state = transition(vol.id, vol.state, _A.FAILED)
                self.ctx.emit("VolumeDeleteFailed", volume=vol.id, tenant=vol.tenant, error=str(exc))
                reply.fail(exc)
                return
            self._remove(vol)
            self.ctx.emit("VolumeDeleted", volume=vol.id, tenant=vol.tenant)
            reply.set(None)
        self.ctx.start_soon(run)

    def _adopt(self, msg: AdoptVolume) -> None:
        if msg.volume_id in self.volumes:
            raise Conflict(f"volume {msg.volume_id} is already known in {self.az}")
        server = None
        if msg.server_id is not None:
            server = self.servers.setdefault(msg.server_id, _Server(msg.tenant))
            if server.tenant != msg.tenant:
                raise Conflict(f"server {msg.server_id} in {self.az} belongs to another tenant")
            if msg.bootable and self._system_disk(server) is not None:
                raise Conflict(f"server {msg.server_id} already has system disk {server.volumes[0]} (ECS-3)")
        vol = _Volume(msg.volume_id, msg.tenant, msg.size_gb, msg.kind, msg.bootable)
        self._add(vol)
        reply = self.ctx.defer()

        async def run() -> None:
            try:
                await self.store.get_volume(vol.id)
            except CloudError as exc:
                self._remove(vol)
                reply.fail(exc)
                return
            vol.state = transition(vol.id, vol.state, _A.CREATED)
            if server is not None and msg.server_id is not None:
                vol.state = transition(vol.id, transition(vol.id, vol.state, _A.ATTACH), _A.DONE)
                vol.server_id = msg.server_id
                server.add(vol.id, vol.bootable)
            self.ctx.emit("VolumeAdopted", volume=vol.id, tenant=vol.tenant, server=msg.server_id)
            reply.set(self._view(vol))
        self.ctx.start_soon(run)

    def _protect(self, volume_id: str, group: str | None) -> None:
        vol = self.volumes.get(volume_id)
        if vol is None:
            raise NotFound("volume", volume_id)
        vol.protected_by = group
        self.ctx.emit("VolumeProtectionChanged", volume=volume_id, tenant=vol.tenant, group=group)

    def _register(self, tenant: str, server_id: str) -> None:
        server = self.servers.setdefault(server_id, _Server(tenant))
        if server.tenant != tenant:
            raise Conflict(f"server {server_id} in {self.az} belongs to another tenant")

    def _forget(self, server_id: str) -> None:
        server = self.servers.get(server_id)
        if server is not None and server.volumes:
            raise Conflict(f"server {server_id} still has volumes attached ({', '.join(server.volumes)}); "
                           "detach them first")
        self.servers.pop(server_id, None)

    def _start_restore(self, vol: _Volume, min_size_gb: int) -> VolumeView:
        if vol.size_gb < min_size_gb:
            raise InvalidRequest(f"volume {vol.id} has {vol.size_gb} GB but the backup comes from a volume of "
                                 f"{min_size_gb} GB: expand it to at least {min_size_gb} GB first")
        vol.state = transition(vol.id, vol.state, _A.RESTORE)
        return self._view(vol)

    def _end_restore(self, volume_id: str, ok: bool) -> VolumeView:
        vol = self.volumes.get(volume_id)
        if vol is None:
            raise NotFound("volume", volume_id)
        vol.state = transition(vol.id, vol.state, _A.DONE if ok else _A.FAILED)
        self.ctx.emit("VolumeRestored" if ok else "VolumeRestoreFailed", volume=vol.id, tenant=vol.tenant)
        return self._view(vol)

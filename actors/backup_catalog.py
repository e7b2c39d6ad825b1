"""The catalogue of a region's backups: records, chains and limits (SPEC VBS-1, VBS-2, CSBS-1).

Pure bookkeeping, no I/O: `actors.backups.BackupService` asks it what to do and does the
store calls. A backup holds one part per volume. A chain is a volume's own backups, or
a server's backups of one of its volumes (keyed by the volume id, or the server id).
Each part is full or a diff from the same volume's part in its chain's previous backup,
its base; the chain's head is its last backup, whose snapshot stays on the volume as the
next base. A chain restarts with a full backup after `full_every` backups, and when a
restore rewrites the volume.

Invariants:
- a backup is hidden (deleted by the tenant, out of its view and limits) only while other
  backups depend on it; it is erased when the last one goes, so every visible backup's
  chain of objects exists;
- heads point to existing backups; a base is a head when its dependent starts, and keeps
  its snapshot until that dependent is done;
- per tenant: visible backups <= per_tenant; per volume: visible backups holding it <=
  per_volume; stored + reserved GB <= data_gb (reservations are the volumes' sizes of
  backups not done yet);
- a chain has at most one backup queued or being created; a volume is never backed up
  and restored into at the same time.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from types import MappingProxyType

import attrs

from actors.topology import DEFAULTS
from runtime.errors import Conflict, InvalidRequest, InvalidTransition, NotFound, QuotaExceeded
from runtime.storage import GIB, VolumeKind

_B = DEFAULTS["backups"]


@attrs.frozen
class BackupLimits:
    per_tenant: int = _B["per_tenant"]
    per_volume: int = _B["per_volume"]
    data_gb: int = _B["data_gb"]
    running_per_tenant: int = _B["running_per_tenant"]
    server_jobs_per_tenant: int = _B["server_jobs_per_tenant"]
    full_every: int = _B["full_every"]
    retry_s: float = _B["retry_s"]
    attempts: int = _B["attempts"]


class BackupState(enum.Enum):
    QUEUED = "queued"
    CREATING = "creating"
    AVAILABLE = "available"
    DELETING = "deleting"
    RESTORING = "restoring"
    ERROR = "error"


class BackupAction(enum.Enum):
    DELETE = "delete"
    RESTORE = "restore"
    START = "start"
    DONE = "done"
    FAILED = "failed"
    RETRY = "retry"
    RESTORED = "restored"  # the last restore from it ended


_S, _A = BackupState, BackupAction
_ROWS: dict[BackupState, dict[BackupAction, BackupState]] = {
    _S.QUEUED: {_A.START: _S.CREATING},
    _S.CREATING: {_A.DONE: _S.AVAILABLE, _A.FAILED: _S.ERROR},
    _S.AVAILABLE: {_A.DELETE: _S.DELETING, _A.RESTORE: _S.RESTORING},
    _S.RESTORING: {_A.RESTORE: _S.RESTORING, _A.RESTORED: _S.AVAILABLE},
    _S.DELETING: {_A.FAILED: _S.ERROR},  # a deleted backup leaves no record
    _S.ERROR: {_A.DELETE: _S.DELETING, _A.RETRY: _S.QUEUED},
}
TRANSITIONS: Mapping[BackupState, Mapping[BackupAction, BackupState]] = MappingProxyType(
    {state: MappingProxyType(row) for state, row in _ROWS.items()})
USER_ACTIONS = frozenset({_A.DELETE, _A.RESTORE})


def transition(backup_id: str, state: BackupState, action: BackupAction) -> BackupState:
    row = TRANSITIONS[state]
    if action in row:
        return row[action]
    shown = [a.value for a in row if action not in USER_ACTIONS or a in USER_ACTIONS]
    raise InvalidTransition("backup", backup_id, state.value, action.value, shown)


def object_key(backup_id: str, volume_id: str) -> str:
    return f"{volume_id}/{backup_id}"


@attrs.define
class Part:
    volume_id: str
    az: str
    size_gb: int
    kind: VolumeKind
    bootable: bool
    base: str | None = None
    depth: int = 0  # backups before it in its chain since the last full one
    snapshot: str | None = None  # kept on the volume while this backup is its chain's head
    nbytes: int = 0


@attrs.define(eq=False)
class Backup:
    id: str
    tenant: str
    name: str
    server_id: str | None
    parts: dict[str, Part]
    requested_at: float
    policy: str | None
    state: BackupState = BackupState.QUEUED
    taken_at: float | None = None
    error: str | None = None
    retry_at: float | None = None  # in error: when its create is tried again
    reserved_gb: int = 0  # counted against the data limit until it is done
    dependents: int = 0  # parts of other backups that are diffs from this one
    restores: int = 0  # restores from it queued or running
    hidden: bool = False

    @property
    def chain(self) -> str:
        return self.server_id or next(iter(self.parts))

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.parts.values())


@attrs.frozen
class BackupPartView:
    volume_id: str
    az: str
    size_gb: int
    kind: VolumeKind
    bootable: bool
    base: str | None  # the backup this part is a diff from; None: full (or not taken yet)
    nbytes: int  # stored in object storage


@attrs.frozen
class BackupView:
    id: str
    tenant: str
    name: str
    server_id: str | None  # a server backup (CSBS) of this server; None: a volume backup (VBS)
    parts: tuple[BackupPartView, ...]
    state: str  # a BackupState value
    requested_at: float
    taken_at: float | None  # when its snapshots were taken
    policy: str | None
    error: str | None
    retry_at: float | None  # in error after a store failure: when its create is tried again

    def part(self, volume_id: str | None) -> BackupPartView:
        """The part of `volume_id`; None names the only part of a volume backup."""
        for p in self.parts:
            if (volume_id is None and len(self.parts) == 1) or p.volume_id == volume_id:
                return p
        raise InvalidRequest(f"backup {self.id} holds volumes {', '.join(p.volume_id for p in self.parts)}; "
                             f"name one of them as source_volume_id (got {volume_id!r})")


def view(b: Backup) -> BackupView:
    parts = tuple(BackupPartView(p.volume_id, p.az, p.size_gb, p.kind, p.bootable, p.base, p.nbytes)
                  for p in b.parts.values())
    return BackupView(b.id, b.tenant, b.name, b.server_id, parts, b.state.value, b.requested_at, b.taken_at,
                      b.policy, b.error, b.retry_at)


class BackupCatalog:
    def __init__(self, limits: BackupLimits) -> None:
        self.limits = limits
        self.backups: dict[str, Backup] = {}  # visible and hidden
        self.by_tenant: dict[str, dict[str, None]] = {}  # visible, in request order
        self.by_chain: dict[str, dict[str, None]] = {}  # visible, in request order
        self.per_volume: dict[str, int] = {}
        self.stored: dict[str, int] = {}  # bytes in object storage, hidden backups included
        self.reserved_gb: dict[str, int] = {}
        self.pending: dict[str, str] = {}  # chain -> its backup queued or being created
        self.backing_up: dict[str, int] = {}  # volume id -> pending backups holding it
        self.writing: set[str] = set()  # volumes a restore is queued or running into
        self.heads: dict[str, dict[str, str]] = {}  # volume id -> chain -> its head

    def owned(self, tenant: str, backup_id: str) -> Backup:
        b = self.backups.get(backup_id)
        if b is None or b.tenant != tenant or b.hidden:
            raise NotFound("backup", backup_id)
        return b

    def listed(self, tenant: str) -> list[Backup]:
        return [self.backups[b] for b in self.by_tenant.get(tenant, ())]

    def of_chain(self, chain: str) -> Iterator[Backup]:
        return (self.backups[b] for b in self.by_chain.get(chain, ()))

    # -- admission (VBS-2) --------------------------------------------------------------
    def admit(self, backup_id: str, tenant: str, name: str, server_id: str | None, parts: list[Part],
              now: float, policy: str | None) -> Backup:
        """Record a new backup, queued; `Conflict` or `QuotaExceeded` change nothing."""
        chain = server_id or parts[0].volume_id
        busy = self.pending.get(chain)
        if busy is not None:
            raise Conflict(f"{'server' if server_id else 'volume'} {chain} already has backup {busy} queued or "
                           "being created; ask again when it is done")
        for p in parts:
            if p.volume_id in self.writing:
                raise Conflict(f"volume {p.volume_id} is being restored; back it up when the restore has ended")
        size = sum(p.size_gb for p in parts)
        self._check_limits(tenant, [p.volume_id for p in parts], size)
        b = Backup(backup_id, tenant, name, server_id, {p.volume_id: p for p in parts}, now, policy, reserved_gb=size)
        self.backups[b.id] = b
        self.by_tenant.setdefault(tenant, {})[b.id] = None
        self.by_chain.setdefault(chain, {})[b.id] = None
        for vid in b.parts:
            self.per_volume[vid] = self.per_volume.get(vid, 0) + 1
            self.backing_up[vid] = self.backing_up.get(vid, 0) + 1
        self.pending[chain] = b.id
        self.reserved_gb[tenant] = self.reserved_gb.get(tenant, 0) + size
        return b

    def _check_limits(self, tenant: str, volume_ids: list[str], size_gb: int) -> None:
        lim = self.limits
        held = len(self.by_tenant.get(tenant, ()))
        if held + 1 > lim.per_tenant:
            raise QuotaExceeded("backups", lim.per_tenant, held, 1)
        for vid in volume_ids:
            held = self.per_volume.get(vid, 0)
            if held + 1 > lim.per_volume:
                raise QuotaExceeded(f"backups of volume {vid}", lim.per_volume, held, 1)
        used = -(-self.stored.get(tenant, 0) // GIB) + self.reserved_gb.get(tenant, 0)
        if used + size_gb > lim.data_gb:
            raise QuotaExceeded("backup_gb", lim.data_gb, used, size_gb)

    def settle_create(self, b: Backup) -> None:
        """The create of `b` is over: done, failed for good, or its backup deleted."""
        if self.pending.get(b.chain) == b.id:
            del self.pending[b.chain]
            for vid in b.parts:
                self.backing_up[vid] -= 1
                if not self.backing_up[vid]:
                    del self.backing_up[vid]
        self.reserved_gb[b.tenant] -= b.reserved_gb
        b.reserved_gb = 0

    # -- chains -------------------------------------------------------------------------
    def link_bases(self, b: Backup) -> None:
        """Make each part a diff from its chain's head, or full."""
        for p in b.parts.values():
            head = self.backups.get(self.heads.get(p.volume_id, {}).get(b.chain, ""))
            depth = head.parts[p.volume_id].depth + 1 if head is not None else 0
            if head is not None and depth < self.limits.full_every:
                p.base, p.depth = head.id, depth
                head.dependents += 1
            else:
                p.base, p.depth = None, 0

    def unlink_bases(self, b: Backup) -> list[Backup]:
        """`b` no longer depends on its bases; returns the hidden ones nothing needs now (to erase)."""
        free = []
        for p in b.parts.values():
            base, p.base = p.base, None
            if base is not None:
                parent = self.backups[base]
                parent.dependents -= 1
                if parent.hidden and not parent.dependents:
                    free.append(parent)
        return free

    def base_snapshot(self, p: Part) -> str | None:
        if p.base is None:
            return None
        snapshot = self.backups[p.base].parts[p.volume_id].snapshot
        assert snapshot is not None, "a base is its chain's head, whose snapshot is kept"
        return snapshot

    def created(self, b: Backup, sizes: list[int]) -> list[Part]:
        """`b` is done: it heads its chains. Returns the old heads' parts, whose snapshots go."""
        old = []
        for p, n in zip(b.parts.values(), sizes, strict=True):
            p.nbytes = n
            chains = self.heads.setdefault(p.volume_id, {})
            previous = chains.get(b.chain)
            chains[b.chain] = b.id
            if previous is not None:
                old.append(self.backups[previous].parts[p.volume_id])
        self.stored[b.tenant] = self.stored.get(b.tenant, 0) + b.nbytes
        self.settle_create(b)
        return old

    def behead(self, b: Backup) -> None:
        """`b` stops heading its chains, so nothing new depends on it."""
        for p in b.parts.values():
            chains = self.heads.get(p.volume_id, {})
            if chains.get(b.chain) == b.id:
                del chains[b.chain]
                if not chains:
                    del self.heads[p.volume_id]

    def rewritten(self, volume_id: str) -> list[Part]:
        """A restore rewrites the volume: its chains restart. Returns the parts whose snapshots go."""
        return [self.backups[head].parts[volume_id] for head in self.heads.pop(volume_id, {}).values()]

    def chain_keys(self, b: Backup, volume_id: str) -> list[str]:
        """The objects to apply to restore `volume_id` from `b`, full first."""
        keys = []
        cur: Backup | None = b
        while cur is not None:
            keys.append(object_key(cur.id, volume_id))
            base = cur.parts[volume_id].base
            cur = None if base is None else self.backups[base]
        return keys[::-1]

    # -- durability (issue 5) -------------------------------------------------------------
    def load(self, backups: list[Backup], heads: dict[str, dict[str, str]]) -> None:
        """Rebuild an empty catalogue from its backups (in request order, hidden ones included) and
        heads: the indexes, stored bytes, reservations, pending creates and dependents are derived
        from them. InvalidRequest names a base or head that points to no backup."""
        assert not self.backups, "load into an empty catalogue"
        self.backups = {b.id: b for b in backups}
        for b in backups:
            b.dependents = 0
        for b in backups:
            for p in b.parts.values():
                base = self.backups.get(p.base) if p.base is not None else None
                if p.base is not None and (base is None or p.volume_id not in base.parts):
                    raise InvalidRequest(f"backup {b.id}: part {p.volume_id} is a diff from {p.base}, which holds "
                                         "no such part")
                if base is not None:
                    base.dependents += 1
            if not b.hidden:
                self.by_tenant.setdefault(b.tenant, {})[b.id] = None
                self.by_chain.setdefault(b.chain, {})[b.id] = None
                for vid in b.parts:
                    self.per_volume[vid] = self.per_volume.get(vid, 0) + 1
            self.stored[b.tenant] = self.stored.get(b.tenant, 0) + b.nbytes
            if b.reserved_gb:
                self.reserved_gb[b.tenant] = self.reserved_gb.get(b.tenant, 0) + b.reserved_gb
            if b.state in (BackupState.QUEUED, BackupState.CREATING) or (
                    b.state is BackupState.ERROR and b.retry_at is not None):
                self.pending[b.chain] = b.id
                for vid in b.parts:
                    self.backing_up[vid] = self.backing_up.get(vid, 0) + 1
        for vid, chains in heads.items():
            for chain, bid in chains.items():
                head = self.backups.get(bid)
                if head is None or vid not in head.parts or head.parts[vid].snapshot is None:
                    raise InvalidRequest(f"heads[{vid!r}][{chain!r}] = {bid!r}: not a backup of that volume "
                                         "that keeps its snapshot")
        self.heads = {vid: dict(chains) for vid, chains in heads.items() if chains}

    # -- deleting -----------------------------------------------------------------------
    def hide(self, b: Backup) -> None:
        b.hidden = True
        self._unlist(b)

    def forget(self, b: Backup) -> list[Backup]:
        """`b` is erased: drop its record. Returns the hidden bases nothing needs now."""
        del self.backups[b.id]
        if not b.hidden:
            self._unlist(b)
        self.stored[b.tenant] = self.stored.get(b.tenant, 0) - b.nbytes
        return self.unlink_bases(b)

    def _unlist(self, b: Backup) -> None:
        del self.by_tenant[b.tenant][b.id]
        del self.by_chain[b.chain][b.id]
        for vid in b.parts:
            self.per_volume[vid] -= 1
            if not self.per_volume[vid]:
                del self.per_volume[vid]

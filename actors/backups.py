"""Volume and server backups of one region (SPEC VBS-1, VBS-2, CSBS-1, CBR-1, GEO-3).

`BackupService` owns the region's `ObjectStore` (one bucket per tenant,
`backups-TENANT`) and calls the `BlockStore`s of the region's AZs for snapshots, diffs
and restores; volume states change only through the AZs' `VolumeService`s. Its records,
chains and limits are an `actors.backup_catalog.BackupCatalog`.

A backup holds one part per volume: one for a volume backup (VBS), one per attached
volume for a server backup (CSBS), whose snapshots are all taken before any is exported,
so they show one point in time. The first backup of a chain is full, later ones are
diffs from the previous one's snapshot (see the catalogue for chains).

Deleting keeps chains consistent by hiding, not merging: a backup that a later one
depends on leaves the tenant's view and limits at once, but its data stays in object
storage, as part of its dependents' chains, until the last backup that needs it is
deleted; it is deleted with that one. So every backup a tenant sees can be restored.

Jobs. Creating, deleting and restoring run as jobs: at most `running_per_tenant` volume
backup jobs and `server_jobs_per_tenant` server backup jobs of a tenant run at once; the
others wait in FIFO queues (one per tenant and kind) and are never dropped. A request is
answered at once (queued, deleting or restoring). A job that fails because a store is
unreachable is retried `attempts` times, `retry_s` apart (a backup being created shows
error and `retry_at` meanwhile), then left in error and reported (`BackupJobFailed` with
final=true): a backup never disappears unless it is deleted.

Limits (VBS-2, `[backups]` of defaults.toml) are checked when a backup is requested: per
tenant, per volume and backup data per tenant; a refusal names the limit and the use,
creates nothing and is counted. Policies (CBR-1) have one timer each. GEO-3: a restore
into an AZ of another region is refused before anything is done; the stores refuse it too.

Durability (issue 5): `ExportBackups` replies the whole state as plain JSON-able data and
`ImportBackups` gives it to a fresh service; what was in flight is settled as `_import` says
(creates become error, deletes and restores run again, policies keep their schedule).
"""

from __future__ import annotations

import enum
import functools
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from actors.backup_catalog import Backup, BackupAction, BackupCatalog, Part, object_key, transition, view
from actors.backup_catalog import BackupLimits as BackupLimits  # the API, re-exported
from actors.backup_catalog import BackupPartView as BackupPartView
from actors.backup_catalog import BackupState as BackupState
from actors.backup_catalog import BackupView as BackupView
from actors.volumes import EndRestore, GetVolume, ServerVolumes, StartRestore, VolumeView, check_region
from runtime.actor import Actor, ActorRef, Context
from runtime.errors import BackendError, CloudError, Conflict, InvalidRequest, NotFound, QuotaExceeded
from runtime.storage import BlockStore, ObjectStore, VolumeKind, check_same_region

T = TypeVar("T")
_A = BackupAction
BACKUP_FROM = frozenset({"available", "in-use"})


# -- messages ----------------------------------------------------------------------
@attrs.frozen
class CreateBackup:
    """Back up one volume (VBS-1), available or in use. Reply: BackupView (queued)."""

    tenant: str
    volume_id: str
    name: str = ""


@attrs.frozen
class CreateServerBackup:
    """Back up every volume attached to a server at one point in time (CSBS-1). Reply: BackupView."""

    tenant: str
    server_id: str
    name: str = ""


@attrs.frozen
class DeleteBackup:
    """Reply: BackupView (deleting)."""

    tenant: str
    backup_id: str


@attrs.frozen
class RestoreBackup:
    """Restore a backup (the part of `source_volume_id` for a server backup) into a volume
    of the region that is available: the original or another one, in any AZ of the region
    (`az`: the target volume's AZ, by default the source's). The Tenant turns a request
    without `volume_id` into a new volume first. Reply: RestoreJob."""

    tenant: str
    backup_id: str
    volume_id: str | None = None
    az: str | None = None
    source_volume_id: str | None = None
    new_volume_id: str | None = None  # without volume_id: the new volume's id (default: a new one)


@attrs.frozen
class RestoreJob:
    """The restore is queued or running; the target volume is `restoring` until it ends."""

    backup: BackupView
    volume_id: str
    az: str


@attrs.frozen
class GetBackup:
    """Reply: BackupView."""

    tenant: str
    backup_id: str


@attrs.frozen
class ListBackups:
    """Reply: list[BackupView], in the order they were requested."""

    tenant: str


@attrs.frozen
class CreateBackupPolicy:
    """Back up every bound volume or server each `interval_h` hours; keep at most
    `retain_count` of each one's policy backups and none older than `retain_days` (CBR-1).
    Reply: the policy id."""

    tenant: str
    name: str
    interval_h: float
    retain_count: int | None = None
    retain_days: float | None = None


@attrs.frozen
class BindBackupPolicy:
    """Apply a policy to a volume or a server (one policy each, CSBS-1). Reply: None."""

    tenant: str
    policy_id: str
    volume_id: str | None = None
    server_id: str | None = None


@attrs.frozen
class DeleteBackupPolicy:
    """Stop a policy; its backups stay. Reply: None."""

    tenant: str
    policy_id: str


@attrs.frozen
class ExportBackups:
    """Everything the service must remember across a restart (issue 5). Reply: a JSON-able dict
    (see `BackupService._export`)."""


@attrs.frozen
class ImportBackups:
    """Give a fresh service, before any request, the state `ExportBackups` replied. Creates that
    were queued or running become error (they are not resumed: see `BackupService._import`),
    deletes and restores in flight are run again, policies' timers restart from their schedule.
    Reply: the number of backups imported (hidden ones included). Conflict if the service
    already holds backups, policies or jobs; InvalidRequest names a malformed field."""

    state: dict[str, Any]


@attrs.frozen
class GetBackupStats:
    """Reply: BackupStats."""


@attrs.frozen
class BackupStats:
    completed: int  # backups created
    deleted: int
    restored: int
    failed: int  # jobs that failed for good (left in error and reported)
    rejected: int  # requests refused by a VBS-2 limit
    queued_max: int  # the longest job queue seen
    running_max_per_tenant: int  # the most jobs of one tenant's queue seen running at once
    queued: int  # jobs waiting now
    running: int  # jobs running now


# -- jobs and policies -------------------------------------------------------------
class _Kind(enum.Enum):
    CREATE = "create"
    DELETE = "delete"
    RESTORE = "restore"


@attrs.define(eq=False)
class _Job:
    kind: _Kind
    backup: Backup
    attempts: int = 0
    volume_id: str = ""  # restore target
    az: str = ""
    source: str = ""  # restore: the part restored


@attrs.define(eq=False)
class _Queue:
    limit: int
    waiting: deque[_Job] = attrs.Factory(deque)
    running: int = 0


@attrs.define(eq=False)
class _Policy:
    id: str
    tenant: str
    name: str
    interval_s: float
    retain_count: int | None
    retain_days: float | None
    targets: dict[str, bool] = attrs.Factory(dict)  # volume or server id -> is a server
    next_at: float = 0.0  # when its timer fires next


@attrs.define
class _Counters:
    completed: int = 0
    deleted: int = 0
    restored: int = 0
    failed: int = 0
    rejected: int = 0
    queued_max: int = 0
    running_max_per_tenant: int = 0


def _bucket_name(tenant: str) -> str:
    return f"backups-{tenant}"


async def _together(ctx: Context, calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run the calls at once, wait for all; then raise the first CloudError, if any."""
    results: list[Any] = [None] * len(calls)
    errors: list[CloudError] = []

    async def one(i: int) -> None:
        try:
            results[i] = await calls[i]()
        except CloudError as exc:
            errors.append(exc)

    async with ctx.driver.task_group() as tg:
        for i in range(len(calls)):
            tg.start_soon(one, i)
    if errors:
        raise errors[0]
    return results


# -- the exported state (issue 5) ---------------------------------------------------
STATE_VERSION = 1


def _backup_state(b: Backup) -> dict[str, Any]:
    return {"id": b.id, "tenant": b.tenant, "name": b.name, "server_id": b.server_id,
            "requested_at": b.requested_at, "policy": b.policy, "state": b.state.value, "taken_at": b.taken_at,
            "error": b.error, "retry_at": b.retry_at, "reserved_gb": b.reserved_gb, "hidden": b.hidden,
            "parts": [{"volume_id": p.volume_id, "az": p.az, "size_gb": p.size_gb, "kind": p.kind.value,
                       "bootable": p.bootable, "base": p.base, "depth": p.depth, "snapshot": p.snapshot,
                       "nbytes": p.nbytes} for p in b.parts.values()]}


def _read_state(state: Any) -> tuple[list[Backup], dict[str, dict[str, str]], list[dict[str, str]], list[_Policy]]:
    """Parse an exported state; InvalidRequest names the first malformed entry."""
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise InvalidRequest(f"backup state: version must be {STATE_VERSION} (got "
                             f"{state.get('version') if isinstance(state, dict) else type(state).__name__!r})")
    where = "backups"
    try:
        backups = []
        for i, d in enumerate(state["backups"]):
            where = f"backups[{i}]"
            parts = [Part(p["volume_id"], p["az"], int(p["size_gb"]), VolumeKind(p["kind"]), bool(p["bootable"]),
                          p["base"], int(p["depth"]), p["snapshot"], int(p["nbytes"])) for p in d["parts"]]
            if not parts:
                raise ValueError("a backup holds at least one part")
            backups.append(Backup(d["id"], d["tenant"], d["name"], d["server_id"], {p.volume_id: p for p in parts},
                                  float(d["requested_at"]), d["policy"], BackupState(d["state"]), d["taken_at"],
                                  d["error"], d["retry_at"], int(d["reserved_gb"]), hidden=bool(d["hidden"])))
        where = "heads"
        heads = {str(vid): {str(c): str(bid) for c, bid in chains.items()} for vid, chains in state["heads"].items()}
        restores = []
        for i, r in enumerate(state["restores"]):
            where = f"restores[{i}]"
            restores.append({k: str(r[k]) for k in ("backup", "volume_id", "az", "source")})
        policies = []
        for i, d in enumerate(state["policies"]):
            where = f"policies[{i}]"
            policies.append(_Policy(d["id"], d["tenant"], d["name"], float(d["interval_s"]), d["retain_count"],
                                    d["retain_days"], {str(t): bool(s) for t, s in d["targets"].items()},
                                    float(d["next_at"])))
        bound: dict[str, str] = {}
        for policy in policies:
            for target in policy.targets:
                if target in bound:
                    raise ValueError(f"{target} follows policies {bound[target]} and {policy.id}; one each (CSBS-1)")
                bound[target] = policy.id
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidRequest(f"backup state: {where}: {type(exc).__name__} {exc}; give what ExportBackups "
                             "replied") from None
    return backups, heads, restores, policies


# -- the service -------------------------------------------------------------------
class BackupService(Actor):
    def __init__(self, objects: ObjectStore, stores: Mapping[str, BlockStore], volumes: Mapping[str, ActorRef],
                 limits: BackupLimits | None = None) -> None:
        self.region = objects.region
        for az, store in stores.items():
            check_same_region(f"backing up the volumes of {az}", store.region, self.region)
        self.objects = objects
        self.stores = dict(stores)
        self.volumes = dict(volumes)
        self.limits = limits or BackupLimits()
        self.catalog = BackupCatalog(self.limits)
        self.queues: dict[tuple[str, bool], _Queue] = {}  # (tenant, server backups?)
        self.buckets: set[str] = set()
        self.policies: dict[str, _Policy] = {}
        self.policy_of: dict[str, str] = {}  # volume or server id -> its policy
        self.restore_jobs: dict[str, _Job] = {}  # target volume -> its restore, queued or running
        self.counters = _Counters()

    async def receive(self, msg: Any) -> Any:
        match msg:
            case CreateBackup(tenant, vid, name):
                return self._later(self._create(tenant, None, vid, name, None))
            case CreateServerBackup(tenant, sid, name):
                return self._later(self._create(tenant, sid, None, name, None))
            case DeleteBackup(tenant, bid):
                return view(self._delete(self.catalog.owned(tenant, bid)))
            case RestoreBackup():
                return self._later(self._restore(msg))
            case GetBackup(tenant, bid):
                return view(self.catalog.owned(tenant, bid))
            case ListBackups(tenant):
                return [view(b) for b in self.catalog.listed(tenant)]
            case CreateBackupPolicy():
                return self._create_policy(msg)
            case BindBackupPolicy():
                return self._later(self._bind(msg))
            case DeleteBackupPolicy(tenant, pid):
                return self._delete_policy(self._policy(tenant, pid))
            case GetBackupStats():
                return self._stats()
            case ExportBackups():
                return self._export()
            case ImportBackups(state):
                return self._later(self._import(state))
        return await super().receive(msg)

    def _later(self, work: Awaitable[Any]) -> None:
        """Answer with the result of `work`, which may ask other actors, without blocking the mailbox."""
        reply = self.ctx.defer()

        async def run() -> None:
            try:
                reply.set(await work)
            except CloudError as exc:
                reply.fail(exc)
        self.ctx.start_soon(run)

    async def _volume(self, tenant: str, volume_id: str) -> VolumeView:
        for ref in self.volumes.values():
            try:
                view: VolumeView = await ref.ask(GetVolume(tenant, volume_id), timeout=None)
            except NotFound:
                continue
            return view
        raise NotFound("volume", volume_id)

    async def _server_volumes(self, tenant: str, server_id: str) -> list[VolumeView]:
        for ref in self.volumes.values():
            views: list[VolumeView] = await ref.ask(ServerVolumes(server_id), timeout=None)
            if views and views[0].tenant == tenant:
                return views
        raise NotFound("server", server_id)

    async def _quietly(self, call: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Best effort: a snapshot left behind is deleted with its volume."""
        try:
            await call(*args)
        except CloudError:
            return

    def _drop_snapshots(self, parts: list[Part]) -> None:
        for p in parts:
            if p.snapshot is not None:
                self.ctx.start_soon(self._quietly, self.stores[p.az].delete_snapshot, p.volume_id, p.snapshot)
                p.snapshot = None

    # -- creating ----------------------------------------------------------------------
    async def _create(self, tenant: str, server_id: str | None, volume_id: str | None, name: str,
                      policy: str | None) -> BackupView:
        if server_id is not None:
            views = await self._server_volumes(tenant, server_id)
        else:
            assert volume_id is not None
            views = [await self._volume(tenant, volume_id)]
        for v in views:
            if v.state not in BACKUP_FROM:
                raise Conflict(f"volume {v.id} is {v.state}: back up a volume that is available or in use")
        parts = [Part(v.id, v.az, v.size_gb, v.kind, v.bootable) for v in views]
        try:
            b = self.catalog.admit(self.ctx.new_id(), tenant, name, server_id, parts, self.ctx.now(), policy)
        except QuotaExceeded as exc:
            self.counters.rejected += 1
            self.ctx.emit("BackupRejected", tenant=tenant, resource=exc.resource, limit=exc.limit, used=exc.used,
                          requested=exc.requested)
            raise
        self.ctx.emit("BackupRequested", backup=b.id, tenant=tenant, server=server_id, volumes=list(b.parts),
                      policy=policy)
        self._enqueue(_Job(_Kind.CREATE, b))
        return view(b)

    async def _run_create(self, job: _Job) -> None:
        b = job.backup
        b.state = transition(b.id, b.state, _A.START)
        b.error = None
        self.ctx.emit("BackupStarted", backup=b.id, tenant=b.tenant, attempt=job.attempts)
        snapshot = f"{b.id}-{job.attempts}"
        parts = list(b.parts.values())
        self.catalog.link_bases(b)
        try:
            bucket = await self._bucket(b.tenant)
            # every snapshot before any export: one point in time for the whole server (CSBS-1)
            await _together(self.ctx, [functools.partial(self.stores[p.az].create_snapshot, p.volume_id, snapshot)
                                       for p in parts])
            b.taken_at = self.ctx.now()
            for p in parts:
                p.snapshot = snapshot
            sizes = await _together(self.ctx, [
                functools.partial(self.stores[p.az].export_diff, p.volume_id, snapshot, self.catalog.base_snapshot(p),
                                  self.objects, bucket, object_key(b.id, p.volume_id)) for p in parts])
        except CloudError:
            b.taken_at = None
            for p in parts:
                p.snapshot = None
            self.ctx.start_soon(self._discard_attempt, b, snapshot)
            await self._erase_all(self.catalog.unlink_bases(b))
            raise
        self._drop_snapshots(self.catalog.created(b, sizes))
        b.state = transition(b.id, b.state, _A.DONE)
        self.counters.completed += 1
        self.ctx.emit("BackupCreated", backup=b.id, tenant=b.tenant, taken_at=b.taken_at, nbytes=b.nbytes,
                      full=[p.base is None for p in parts])
        policy = self.policies.get(b.policy or "")
        if policy is not None:
            self._retain(policy, b.chain)

    async def _discard_attempt(self, b: Backup, snapshot: str) -> None:
        for p in b.parts.values():
            await self._quietly(self.stores[p.az].delete_snapshot, p.volume_id, snapshot)
            await self._quietly(self.objects.delete_object, _bucket_name(b.tenant), object_key(b.id, p.volume_id))

    async def _bucket(self, tenant: str) -> str:
        name = _bucket_name(tenant)
        if name not in self.buckets:
            try:
                await self.objects.create_bucket(name)
            except Conflict:
                pass  # made by an earlier incarnation
            self.buckets.add(name)
        return name

    # -- deleting ----------------------------------------------------------------------
    def _delete(self, b: Backup) -> Backup:
        b.state = transition(b.id, b.state, _A.DELETE)
        if b.retry_at is not None:  # its create will not be tried again
            b.retry_at = None
            self.catalog.settle_create(b)
        self.ctx.emit("BackupDeleteRequested", backup=b.id, tenant=b.tenant)
        self._enqueue(_Job(_Kind.DELETE, b))
        return b

    async def _run_delete(self, job: _Job) -> None:
        b = job.backup
        if b.dependents:
            self.catalog.hide(b)
        else:
            await self._erase(b)
        self.counters.deleted += 1
        self.ctx.emit("BackupDeleted", backup=b.id, tenant=b.tenant, data_kept_for=b.dependents)
        if not b.dependents:
            await self._erase_all(self.catalog.forget(b))

    async def _erase(self, b: Backup) -> None:
        """Delete what `b` keeps in the stores."""
        self.catalog.behead(b)
        for p in b.parts.values():
            if p.snapshot is not None:
                try:
                    await self.stores[p.az].delete_snapshot(p.volume_id, p.snapshot)
                except NotFound:
                    pass  # deleted with its volume
                p.snapshot = None
        for p in b.parts.values():
            try:
                await self.objects.delete_object(_bucket_name(b.tenant), object_key(b.id, p.volume_id))
            except NotFound:
                pass  # never stored: the backup failed

    async def _erase_all(self, hidden: list[Backup]) -> None:
        """Erase hidden backups nothing depends on any more, and in turn their bases."""
        while hidden:
            b = hidden.pop()
            try:
                await self._erase(b)
            except CloudError as exc:
                self.ctx.emit("BackupDataLeft", backup=b.id, tenant=b.tenant, nbytes=b.nbytes, error=str(exc))
                continue
            hidden += self.catalog.forget(b)

    # -- restoring ---------------------------------------------------------------------
    async def _restore(self, msg: RestoreBackup) -> RestoreJob:
        if msg.az is not None:
            check_region(msg.az, self.region, self.stores, "restoring a backup")  # GEO-3, before anything else
        b = self.catalog.owned(msg.tenant, msg.backup_id)
        part = view(b).part(msg.source_volume_id)
        az = msg.az or part.az
        if msg.volume_id is None:
            raise InvalidRequest("name the volume to restore into (volume_id); to restore into a new volume, "
                                 "ask the tenant, which creates it within its quota")
        volume_id = msg.volume_id
        if volume_id in self.catalog.backing_up or volume_id in self.catalog.writing:
            raise Conflict(f"volume {volume_id} has a backup or a restore queued or running; ask again when it ends")
        b.state = transition(b.id, b.state, _A.RESTORE)
        b.restores += 1
        self.catalog.writing.add(volume_id)
        try:
            await self.volumes[az].ask(StartRestore(msg.tenant, volume_id, part.size_gb), timeout=None)
        except CloudError:
            self._restore_ended(b, volume_id)
            raise
        self._drop_snapshots(self.catalog.rewritten(volume_id))
        job = self.restore_jobs[volume_id] = _Job(_Kind.RESTORE, b, volume_id=volume_id, az=az, source=part.volume_id)
        self._enqueue(job)
        return RestoreJob(view(b), volume_id, az)

    def _restore_ended(self, b: Backup, volume_id: str) -> None:
        self.catalog.writing.discard(volume_id)
        self.restore_jobs.pop(volume_id, None)
        b.restores -= 1
        if not b.restores:
            b.state = transition(b.id, b.state, _A.RESTORED)

    async def _run_restore(self, job: _Job) -> None:
        b = job.backup
        self.ctx.emit("RestoreStarted", backup=b.id, tenant=b.tenant, volume=job.volume_id, az=job.az,
                      attempt=job.attempts)
        await self.stores[job.az].import_diffs(job.volume_id, self.objects, _bucket_name(b.tenant),
                                               self.catalog.chain_keys(b, job.source))
        await self.volumes[job.az].ask(EndRestore(job.volume_id, True), timeout=None)
        self._restore_ended(b, job.volume_id)
        self.counters.restored += 1
        self.ctx.emit("BackupRestored", backup=b.id, tenant=b.tenant, volume=job.volume_id, az=job.az)

    # -- jobs --------------------------------------------------------------------------
    def _enqueue(self, job: _Job) -> None:
        server = job.backup.server_id is not None
        key = (job.backup.tenant, server)
        q = self.queues.get(key)
        if q is None:
            lim = self.limits
            q = self.queues[key] = _Queue(lim.server_jobs_per_tenant if server else lim.running_per_tenant)
        q.waiting.append(job)
        self._pump(q)
        self.counters.queued_max = max(self.counters.queued_max, len(q.waiting))

    def _pump(self, q: _Queue) -> None:
        while q.waiting and q.running < q.limit:
            q.running += 1
            self.counters.running_max_per_tenant = max(self.counters.running_max_per_tenant, q.running)
            self.ctx.start_soon(self._run, q, q.waiting.popleft())

    async def _run(self, q: _Queue, job: _Job) -> None:
        job.attempts += 1
        try:
            if job.kind is _Kind.CREATE:
                await self._run_create(job)
            elif job.kind is _Kind.DELETE:
                await self._run_delete(job)
            else:
                await self._run_restore(job)
        except CloudError as exc:
            await self._failed(job, exc)
        finally:
            q.running -= 1
            self._pump(q)

    async def _failed(self, job: _Job, exc: CloudError) -> None:
        b = job.backup
        final = not isinstance(exc, BackendError) or job.attempts >= self.limits.attempts
        self.ctx.emit("BackupJobFailed", backup=b.id, tenant=b.tenant, job=job.kind.value, attempt=job.attempts,
                      final=final, error=str(exc))
        if final:
            self.counters.failed += 1
        if job.kind is _Kind.CREATE:
            b.state = transition(b.id, b.state, _A.FAILED)
            b.error = str(exc)
            if final:
                self.catalog.settle_create(b)
            b.retry_at = None if final else self.ctx.now() + self.limits.retry_s
        elif job.kind is _Kind.DELETE and final:
            b.state = transition(b.id, b.state, _A.FAILED)
            b.error = str(exc)
        elif job.kind is _Kind.RESTORE and final:
            await self.volumes[job.az].ask(EndRestore(job.volume_id, False), timeout=None)
            self._restore_ended(b, job.volume_id)
        if not final:
            self.ctx.start_soon(self._retry, job)

    async def _retry(self, job: _Job) -> None:
        await self.ctx.sleep(self.limits.retry_s)
        b = job.backup
        if job.kind is _Kind.CREATE:
            if b.retry_at is None:
                return  # deleted meanwhile
            b.retry_at = None
            b.state = transition(b.id, b.state, _A.RETRY)
        self._enqueue(job)

    def _stats(self) -> BackupStats:
        c = self.counters
        return BackupStats(c.completed, c.deleted, c.restored, c.failed, c.rejected, c.queued_max,
                           c.running_max_per_tenant, sum(len(q.waiting) for q in self.queues.values()),
                           sum(q.running for q in self.queues.values()))

    # -- durability (issue 5) -------------------------------------------------------------
    def _export(self) -> dict[str, Any]:
        """The catalogue (every backup, hidden ones included, in request order; the chains' heads),
        the restores queued or running, and the policies with their bindings and next tick. The rest
        (indexes, reservations, dependents) is derived from it at import; counters are not kept."""
        return {
            "version": STATE_VERSION,
            "backups": [_backup_state(b) for b in self.catalog.backups.values()],
            "heads": {vid: dict(chains) for vid, chains in self.catalog.heads.items()},
            "restores": [{"backup": j.backup.id, "volume_id": j.volume_id, "az": j.az, "source": j.source}
                         for j in self.restore_jobs.values()],
            "policies": [{"id": p.id, "tenant": p.tenant, "name": p.name, "interval_s": p.interval_s,
                          "retain_count": p.retain_count, "retain_days": p.retain_days,
                          "targets": dict(p.targets), "next_at": p.next_at} for p in self.policies.values()],
        }

    async def _import(self, state: dict[str, Any]) -> int:
        """Load an exported state into this fresh service, then settle what was in flight:

        - a create queued or running (or waiting to be retried) becomes error, for good: resuming
          it would take its snapshot at another time than the tenant asked, on a volume that may
          have changed since. Its reservation is released and it no longer depends on its bases;
          the chain's head stays the previous complete backup (whose snapshot is kept), so the
          next backup of the chain is a diff from it. What the attempt may have left (snapshot
          `<id>-<attempt>`, a partial object under its own key) is deleted, best effort; nothing
          else ever names them.
        - a delete queued or running is run again (idempotent: missing objects are skipped);
          a hidden backup nothing depends on any more is erased;
        - a restore queued or running is run again from the start (the target volume is
          discarded before the diffs are applied): the target is put back to restoring; if that is
          refused (the volume is gone or in use), the restore is reported (`RestoreNotResumed`).
        """
        if self.catalog.backups or self.policies or self.restore_jobs or any(
                q.waiting or q.running for q in self.queues.values()):
            raise Conflict("the backup service already holds backups, policies or jobs: import into a fresh one")
        backups, heads, restores, policies = _read_state(state)
        try:
            self.catalog.load(backups, heads)
        except InvalidRequest:
            self.catalog = BackupCatalog(self.limits)  # nothing half-loaded
            raise
        free = [b for b in backups if b.hidden and not b.dependents]
        interrupted = [self.catalog.backups[bid] for bid in self.catalog.pending.values()]
        for b in interrupted:
            self.catalog.settle_create(b)
            free += self.catalog.unlink_bases(b)
            for p in b.parts.values():
                p.snapshot = None
            b.state, b.taken_at, b.retry_at = BackupState.ERROR, None, None
            b.error = "the daemon restarted while this backup was being created; delete it and back up again"
            self.counters.failed += 1
            self.ctx.emit("BackupJobFailed", backup=b.id, tenant=b.tenant, job=_Kind.CREATE.value, attempt=0,
                          final=True, error=b.error)
            for attempt in range(1, self.limits.attempts + 1):
                self.ctx.start_soon(self._discard_attempt, b, f"{b.id}-{attempt}")
        for b in backups:
            if b.state is BackupState.DELETING and not b.hidden:
                self._enqueue(_Job(_Kind.DELETE, b))
            elif b.state is BackupState.RESTORING:
                b.state, b.restores = BackupState.AVAILABLE, 0
        for policy in policies:
            self.policies[policy.id] = policy
            self.policy_of.update(dict.fromkeys(policy.targets, policy.id))
            self.ctx.start_soon(self._tick, policy, max(0.0, policy.next_at - self.ctx.now()))
        self.ctx.emit("BackupsImported", backups=len(backups), interrupted=[b.id for b in interrupted],
                      restores=len(restores), policies=len(policies))
        await self._erase_all(free)
        await self._check_heads(interrupted)
        for r in restores:
            await self._resume_restore(r)
        return len(backups)

    async def _check_heads(self, interrupted: list[Backup]) -> None:
        """A create that ended after the state was exported (the daemon was killed before the next
        save) dropped its chain's previous head snapshot: a head whose snapshot is no longer on the
        volume is not a base any more, so the chain's next backup is full instead of failing."""
        for b in interrupted:
            for p in b.parts.values():
                head = self.catalog.backups.get(self.catalog.heads.get(p.volume_id, {}).get(b.chain, ""))
                store = self.stores.get(p.az)
                if head is None or store is None:
                    continue
                try:
                    record = await store.get_volume(p.volume_id)
                except CloudError:
                    continue  # gone: nothing chains onto it; unreachable: its next create fails and retries
                if head.parts[p.volume_id].snapshot not in record.snapshots:
                    self.catalog.behead(head)
                    self.ctx.emit("BackupChainRestarted", backup=head.id, tenant=head.tenant, volume=p.volume_id)

    async def _resume_restore(self, r: dict[str, str]) -> None:
        b = self.catalog.backups.get(r["backup"])
        if b is None or b.state is not BackupState.AVAILABLE or r["az"] not in self.volumes:
            self.ctx.emit("RestoreNotResumed", backup=r["backup"], volume=r["volume_id"], error="no such backup")
            return
        b.state = transition(b.id, b.state, _A.RESTORE)
        b.restores += 1
        self.catalog.writing.add(r["volume_id"])
        try:
            await self.volumes[r["az"]].ask(StartRestore(b.tenant, r["volume_id"], b.parts[r["source"]].size_gb),
                                            timeout=None)
        except CloudError as exc:
            self._restore_ended(b, r["volume_id"])
            self.ctx.emit("RestoreNotResumed", backup=b.id, tenant=b.tenant, volume=r["volume_id"], error=str(exc))
            return
        job = self.restore_jobs[r["volume_id"]] = _Job(_Kind.RESTORE, b, volume_id=r["volume_id"], az=r["az"],
                                                       source=r["source"])
        self._enqueue(job)

    # -- policies (CBR-1) -----------------------------------------------------------------
    def _create_policy(self, msg: CreateBackupPolicy) -> str:
        if isinstance(msg.interval_h, bool) or not isinstance(msg.interval_h, int | float) or msg.interval_h <= 0:
            raise InvalidRequest(f"interval_h = {msg.interval_h!r} must be a number of hours > 0")
        if msg.retain_count is not None and (isinstance(msg.retain_count, bool) or not isinstance(msg.retain_count, int)
                                             or msg.retain_count < 1):
            raise InvalidRequest(f"retain_count = {msg.retain_count!r} must be a whole number >= 1, or omitted")
        if msg.retain_days is not None and (not isinstance(msg.retain_days, int | float) or msg.retain_days <= 0):
            raise InvalidRequest(f"retain_days = {msg.retain_days!r} must be a number of days > 0, or omitted")
        policy = _Policy(self.ctx.new_id(), msg.tenant, msg.name, msg.interval_h * 3600.0, msg.retain_count,
                         msg.retain_days)
        self.policies[policy.id] = policy
        self.ctx.start_soon(self._tick, policy, policy.interval_s)
        self.ctx.emit("BackupPolicyCreated", policy=policy.id, tenant=msg.tenant, interval_h=msg.interval_h,
                      retain_count=msg.retain_count, retain_days=msg.retain_days)
        return policy.id

    def _policy(self, tenant: str, policy_id: str) -> _Policy:
        policy = self.policies.get(policy_id)
        if policy is None or policy.tenant != tenant:
            raise NotFound("backup policy", policy_id)
        return policy

    async def _bind(self, msg: BindBackupPolicy) -> None:
        policy = self._policy(msg.tenant, msg.policy_id)
        if (msg.volume_id is None) == (msg.server_id is None):
            raise InvalidRequest("bind a backup policy to a volume_id or a server_id (exactly one)")
        if msg.server_id is not None:
            target = msg.server_id
            await self._server_volumes(msg.tenant, target)
        else:
            assert msg.volume_id is not None
            target = (await self._volume(msg.tenant, msg.volume_id)).id
        bound = self.policy_of.get(target)
        if bound is not None:
            raise Conflict(f"{target} already follows backup policy {bound}; one policy each (CSBS-1)")
        self.policy_of[target] = policy.id
        policy.targets[target] = msg.server_id is not None
        self.ctx.emit("BackupPolicyBound", policy=policy.id, tenant=msg.tenant, target=target)

    def _delete_policy(self, policy: _Policy) -> None:
        del self.policies[policy.id]
        for target in policy.targets:
            del self.policy_of[target]
        self.ctx.emit("BackupPolicyDeleted", policy=policy.id, tenant=policy.tenant)

    async def _tick(self, policy: _Policy, first_s: float) -> None:
        """One timer per policy, whatever the number of volumes it covers; first fires after `first_s`."""
        delay = first_s
        while True:
            policy.next_at = self.ctx.now() + delay
            await self.ctx.sleep(delay)
            delay = policy.interval_s
            if self.policies.get(policy.id) is not policy:
                return
            for target, is_server in list(policy.targets.items()):
                self._retain(policy, target)
                self.ctx.start_soon(self._policy_backup, policy, target, is_server)

    async def _policy_backup(self, policy: _Policy, target: str, is_server: bool) -> None:
        try:
            await self._create(policy.tenant, target if is_server else None, None if is_server else target,
                               policy.name, policy.id)
        except NotFound:  # the volume or server is gone
            if policy.targets.pop(target, None) is not None:
                del self.policy_of[target]
            self.ctx.emit("BackupPolicyUnbound", policy=policy.id, tenant=policy.tenant, target=target)
        except CloudError as exc:
            self.ctx.emit("PolicyBackupSkipped", policy=policy.id, tenant=policy.tenant, target=target,
                          error=str(exc))

    def _retain(self, policy: _Policy, chain: str) -> None:
        """CBR-1: delete the policy's settled backups of `chain` beyond its count or age."""
        oldest = None if policy.retain_days is None else self.ctx.now() - policy.retain_days * 86400.0
        mine = [b for b in self.catalog.of_chain(chain) if b.policy == policy.id and (
            b.state is BackupState.AVAILABLE or (b.state is BackupState.ERROR and b.retry_at is None))]
        extra = 0 if policy.retain_count is None else max(0, len(mine) - policy.retain_count)
        for i, b in enumerate(mine):
            if i < extra or (oldest is not None and (b.taken_at or b.requested_at) < oldest):
                self._delete(b)

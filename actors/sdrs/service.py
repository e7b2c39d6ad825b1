"""The sDRS actor: `DisasterRecovery`, one per region, and the requests it answers.

See the package docstring for what it owns and its invariants.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs

from actors.az import (
    AwaitCapacity,
    DeleteServer,
    DescribeServer,
    ParkServer,
    PlaceServer,
    ServerDescription,
    UnparkServer,
)
from actors.sdrs.groups import REPLICA_SUFFIX, Drill, Group, Pair, ProtectedServer
from actors.sdrs.jobs import Job, JobStatus, Progress, oldest
from actors.sdrs.states import ACTIONS, GroupAction, GroupState, begin
from actors.topology import DEFAULTS, REGIONS, RegionInfo
from actors.volumes import AdoptVolume, ServerVolumes, SetProtection, VolumeView
from runtime.actor import Actor, ActorRef
from runtime.driver import Event
from runtime.errors import CloudError, Conflict, InvalidRequest, NoCapacity, NotFound
from runtime.storage import BlockStore, StoreUnavailable

DRILL_SUFFIX = "-drill"  # the drill copy of server S is S-drill


@attrs.frozen
class SdrsSettings:
    sync_poll_s: float = DEFAULTS["sdrs"]["sync_poll_s"]
    sync_poll_max_s: float = DEFAULTS["sdrs"]["sync_poll_max_s"]
    drain_poll_s: float = DEFAULTS["sdrs"]["drain_poll_s"]
    drain_timeout_s: float = DEFAULTS["sdrs"]["drain_timeout_s"]
    capacity_retry_s: float = DEFAULTS["sdrs"]["capacity_retry_s"]


# -- requests: every action (CreateGroup to DeleteGroup) replies JobAccepted at once ---------
@attrs.frozen
class CreateGroup:
    """Reply: JobAccepted (the group id is in it)."""

    name: str
    tenant: str
    vpc: str
    production_az: str
    recovery_az: str


@attrs.frozen
class ProtectServer:
    """Add a server of the group's tenant, in the AZ where the group's servers run, with
    its volumes. Reply (when done): None."""

    group: str
    server_id: str


@attrs.frozen
class UnprotectServer:
    """Reply (when done): None. Replicas never taken into use are deleted."""

    group: str
    server_id: str


@attrs.frozen
class StartProtection:
    group: str


@attrs.frozen
class StopProtection:
    group: str


@attrs.frozen
class CreateDrill:
    """Start copies of the group's servers in its other AZ, in the isolated `vpc`."""

    group: str
    vpc: str


@attrs.frozen
class DeleteDrill:
    group: str


@attrs.frozen
class Failover:
    """Unplanned: bring the servers up in the other AZ from their replicas as they are."""

    group: str


@attrs.frozen
class Switchover:
    """Planned (reverse): stop the servers, let the replicas catch up, flip replication,
    bring the servers up in the other AZ."""

    group: str


@attrs.frozen
class Reprotect:
    """After a failover: replicate back to the other AZ, its old volumes as replicas."""

    group: str


@attrs.frozen
class DeleteGroup:
    group: str


@attrs.frozen
class JobAccepted:
    job: str
    group: str


@attrs.frozen
class GetJob:
    """Reply: JobView."""

    job: str


@attrs.frozen
class GetGroup:
    """Reply: GroupView."""

    group: str


@attrs.frozen
class ReportGroups:
    """Reply: tuple[GroupReport, ...], one per group, in creation order."""


class Refused(Conflict):
    """Ends a job: the reason is in the message."""


_S, _A = GroupState, GroupAction


class DisasterRecovery(Actor):
    """sDRS of one region. `azs`, `volumes`, `stores`: the AvailabilityZone actors, the
    VolumeService actors and the BlockStore ports of the region's AZs, by AZ name."""

    def __init__(self, region: RegionInfo | str, azs: Mapping[str, ActorRef], volumes: Mapping[str, ActorRef],
                 stores: Mapping[str, BlockStore], settings: SdrsSettings | None = None) -> None:
        self.region = REGIONS[region] if isinstance(region, str) else region
        self.azs = dict(azs)
        self.volume_services = dict(volumes)
        self.stores = dict(stores)
        self.settings = settings or SdrsSettings()
        self.groups: dict[str, Group] = {}
        self.jobs: dict[str, Job] = {}
        self.owner: dict[str, str] = {}  # server id -> its group
        self.capacity: dict[str, Event] = {}  # AZ -> set when capacity may have freed there

    async def receive(self, msg: Any) -> Any:
        match msg:
            case CreateGroup():
                return self._create(msg)
            case ProtectServer(group, sid):
                return self._protect(self._group(group), sid)
            case UnprotectServer(group, sid):
                return self._unprotect(self._group(group), sid)
            case StartProtection(group):
                return self._start_protection(self._group(group))
            case StopProtection(group):
                return self._job(self._group(group), _A.STOP_PROTECTION, self._stop_protection)
            case CreateDrill(group, vpc):
                return self._create_drill(self._group(group), vpc)
            case DeleteDrill(group):
                return self._delete_drill(self._group(group))
            case Failover(group):
                return self._job(self._group(group), _A.FAILOVER, self._failover)
            case Switchover(group):
                return self._job(self._group(group), _A.REVERSE, self._switchover)
            case Reprotect(group):
                return self._job(self._group(group), _A.REPROTECT, self._reprotect)
            case DeleteGroup(group):
                return self._delete(self._group(group))
            case GetJob(job_id):
                job = self.jobs.get(job_id)
                if job is None:
                    raise NotFound("sDRS job", job_id)
                return job.view()
            case GetGroup(group):
                return self._group(group).view()
            case ReportGroups():
                return tuple(g.report() for g in self.groups.values())
        return await super().receive(msg)

    # -- requests ------------------------------------------------------------------------
    def _group(self, group_id: str) -> Group:
        g = self.groups.get(group_id)
        if g is None:
            raise NotFound("protection group", group_id)
        return g

    def _create(self, msg: CreateGroup) -> JobAccepted:
        region, azs = self.region.name, self.region.azs
        for field, value in (("name", msg.name), ("tenant", msg.tenant), ("vpc", msg.vpc)):
            if not value:
                raise InvalidRequest(f"{field} {value!r}: must not be empty")
        if msg.production_az not in azs:
            raise InvalidRequest(f"production_az {msg.production_az!r} is not an AZ of region {region} "
                                 f"(valid: {', '.join(azs)})")
        valid = self.region.recovery_azs(msg.production_az)
        if msg.recovery_az not in valid:
            other = next((r.name for r in REGIONS.values() if msg.recovery_az in r.azs), None)
            if msg.recovery_az == msg.production_az:
                why = "is the production AZ; the recovery AZ must be another AZ"
            elif msg.recovery_az not in azs:
                where = f"in region {other}" if other else "not an AZ"
                why = (f"is {where}, not in {region}: a group replicates within its region "
                       "(SDRS-1; GEO-3: no replica outside the tenant's region)")
            else:
                why = f"is not a recovery AZ of region {region} (SDRS-1)"
            raise InvalidRequest(f"recovery_az {msg.recovery_az!r} {why} (valid: {', '.join(valid) or 'none'})")
        if any(g.tenant == msg.tenant and g.name == msg.name for g in self.groups.values()):
            raise Conflict(f"tenant {msg.tenant} already has a protection group named {msg.name!r}; pick another name")
        g = Group(self.ctx.new_id(), msg.name, msg.tenant, msg.vpc, msg.production_az, msg.recovery_az,
                   active_az=msg.production_az)
        self.groups[g.id] = g
        self.ctx.emit("GroupCreated", group=g.id, name=g.name, tenant=g.tenant, vpc=g.vpc,
                      production_az=g.production_az, recovery_az=g.recovery_az)
        return self._job(g, _A.CREATE, self._noop)

    async def _noop(self, g: Group, job: Job) -> None:
        """Creating a group reserves nothing outside this actor."""

    def _check(self, g: Group, action: GroupAction) -> GroupState:
        during = begin(g.id, g.state, action)
        if g.job is not None:
            raise Conflict(f"protection group {g.id} is running job {g.job.id} ({g.job.action.value}); "
                           "retry when it has ended (GetJob)")
        if g.changing and action not in (_A.ADD_SERVER, _A.REMOVE_SERVER):
            raise Conflict(f"protection group {g.id} has servers being added or removed; retry when done")
        return during

    def _job(self, g: Group, action: GroupAction, work: Callable[[Group, Job], Awaitable[None]]) -> JobAccepted:
        during = self._check(g, action)
        job = Job(self.ctx.new_id(), g.id, action, self.ctx.now())
        self.jobs[job.id] = job
        g.job = job
        self._set_state(g, during)
        self.ctx.start_soon(self._run, g, job, work)
        return JobAccepted(job.id, g.id)

    async def _run(self, g: Group, job: Job, work: Callable[[Group, Job], Awaitable[None]]) -> None:
        rule = ACTIONS[job.action]
        try:
            await work(g, job)
        except CloudError as exc:
            job.status, job.error, new = JobStatus.FAILED, str(exc), rule.failed
            self.ctx.emit("JobFailed", group=g.id, job=job.id, action=job.action.value, error=job.error)
        else:
            job.status, new = JobStatus.SUCCESS, rule.done
        job.finished_at = self.ctx.now()
        g.job = None
        if new is not None:
            self._set_state(g, new)
        if new is _S.DELETED:
            del self.groups[g.id]

    def _set_state(self, g: Group, state: GroupState) -> None:
        if state is not g.state:
            g.state = state
            self.ctx.emit("GroupStateChanged", group=g.id, state=state.value)

    def _protect(self, g: Group, sid: str) -> None:
        self._check(g, _A.ADD_SERVER)
        if sid in self.owner:
            if self.groups[self.owner[sid]].tenant != g.tenant:  # another tenant's server does not exist (TEN-1)
                raise NotFound("server", f"{sid} of tenant {g.tenant} in {g.active_az}")
            raise Conflict(f"server {sid} is already protected by group {self.owner[sid]}; a server belongs to "
                           "one group at most")
        az = g.active_az
        self.owner[sid] = g.id
        g.changing += 1
        reply = self.ctx.defer()

        async def run() -> None:
            marked: list[str] = []
            missing = NotFound("server", f"{sid} of tenant {g.tenant} in {az}")
            try:
                try:
                    server: ServerDescription = await self.azs[az].ask(DescribeServer(sid), timeout=None)
                except NotFound:
                    raise missing from None
                if server.tenant != g.tenant:  # another tenant's server does not exist for this one (TEN-1)
                    raise missing
                views: list[VolumeView] = await self.volume_services[az].ask(ServerVolumes(sid), timeout=None)
                for v in views:
                    await self.volume_services[az].ask(SetProtection(v.id, g.id), timeout=None)
                    marked.append(v.id)
            except CloudError as exc:
                for vid in marked:
                    await self._unmark(az, vid)
                del self.owner[sid]
                reply.fail(exc)
            else:
                other = g.other(az)
                pairs = [Pair(v.id, {az: v.id, other: v.id + REPLICA_SUFFIX}, v.size_gb, v.kind, v.bootable, {az})
                         for v in views]
                g.servers[sid] = ProtectedServer(server, pairs)
                self.ctx.emit("ServerProtected", group=g.id, server=sid, volumes=[v.id for v in views])
                reply.set(None)
            finally:
                g.changing -= 1
        self.ctx.start_soon(run)

    def _unprotect(self, g: Group, sid: str) -> None:
        self._check(g, _A.REMOVE_SERVER)
        member = g.servers.get(sid)
        if member is None:
            raise NotFound("protected server", f"{sid} in group {g.id}")
        if g.drill is not None:
            raise Conflict(f"protection group {g.id} has a drill; delete it first (DeleteDrill)")
        del g.servers[sid]
        g.changing += 1
        reply = self.ctx.defer()

        async def run() -> None:
            try:
                await self._forget(g, member.pairs)
            except CloudError as exc:
                g.servers[sid] = member
                reply.fail(exc)
            else:
                del self.owner[sid]
                self.ctx.emit("ServerUnprotected", group=g.id, server=sid)
                reply.set(None)
            finally:
                g.changing -= 1
        self.ctx.start_soon(run)

    def _start_protection(self, g: Group) -> JobAccepted:
        begin(g.id, g.state, _A.START_PROTECTION)
        if not any(True for _ in g.pairs()):
            raise InvalidRequest(f"protection group {g.id} has no replication pair: protect a server with volumes "
                                 "first (ProtectServer)")
        return self._job(g, _A.START_PROTECTION, self._start)

    def _create_drill(self, g: Group, vpc: str) -> JobAccepted:
        begin(g.id, g.state, _A.CREATE_DRILL)
        if not vpc or vpc == g.vpc:
            raise InvalidRequest(f"vpc {vpc!r}: a drill runs in an isolated VPC (valid: any VPC but {g.vpc!r})")
        if g.synced_at is None:
            raise Conflict(f"protection group {g.id}: the first synchronisation has not completed; "
                           "a drill needs consistent replicas, retry when it has (GetGroup synced_at)")
        if g.drill is not None:
            raise Conflict(f"protection group {g.id} already has a drill in {g.drill.vpc}; delete it first")
        accepted = self._job(g, _A.CREATE_DRILL, self._drill)
        g.drill = Drill(vpc, g.other(g.active_az), f"drill-{accepted.job}")
        return accepted

    def _delete_drill(self, g: Group) -> JobAccepted:
        begin(g.id, g.state, _A.DELETE_DRILL)
        if g.drill is None:
            raise NotFound("drill", f"of protection group {g.id}")
        return self._job(g, _A.DELETE_DRILL, self._undrill)

    def _delete(self, g: Group) -> JobAccepted:
        begin(g.id, g.state, _A.DELETE)
        if g.drill is not None:
            raise Conflict(f"protection group {g.id} has a drill; delete it first (DeleteDrill)")
        return self._job(g, _A.DELETE, self._remove)

    # -- jobs ----------------------------------------------------------------------------
    async def _start(self, g: Group, job: Job) -> None:
        await self._replicate(g, g.active_az)
        self.ctx.emit("ProtectionStarted", group=g.id, from_az=g.active_az, to_az=g.other(g.active_az),
                      pairs=sum(1 for _ in g.pairs()))

    async def _stop_protection(self, g: Group, job: Job) -> None:
        await self._stop_pairs(g, g.other(g.active_az))
        self.ctx.emit("ProtectionStopped", group=g.id)

    async def _failover(self, g: Group, job: Job) -> None:
        source, target = g.active_az, g.other(g.active_az)
        self.ctx.emit("FailoverStarted", group=g.id, from_az=source, to_az=target, servers=len(g.servers))
        # Freeze the replicas where they are, asked of the target (the source may be gone).
        for pair in g.pairs():
            if pair.source_az == source:
                name = pair.names[target]
                try:
                    status = await self.stores[target].replication_status(name)
                    await self.stores[target].stop_replication(name)
                    pair.consistent_at_stop = status.consistent_as_of
                except NotFound:
                    pass  # stopped already
            elif pair.source_az is not None:  # flipped by a switchover that failed later: stop it as it is
                await self._stop_pair(pair, target)
            pair.source_az = None
            job.consistent_as_of[pair.id] = pair.consistent_at_stop
        g.sync_epoch += 1
        await self._move_all(g, job, source, target)
        g.active_az = target
        g.last_switch = job
        self._completed("FailoverCompleted", g, job)

    async def _switchover(self, g: Group, job: Job) -> None:
        source, target = g.active_az, g.other(g.active_az)
        if any(pair.source_az != source for pair in g.pairs()):
            raise Refused(f"protection group {g.id}: not every volume replicates from {source}; "
                           "fail over instead, or stop and start protection")
        if g.synced is None:
            raise Refused(f"protection group {g.id} replicates nothing; stop and start protection")
        await g.synced.wait()  # production runs on until every replica has completed its first synchronisation
        self.ctx.emit("SwitchoverStarted", group=g.id, from_az=source, to_az=target, servers=len(g.servers))
        job.stopping_at = self.ctx.now()
        await self._each(g, lambda member: self._park(job, source, member.server.id))
        job.stopped_at = stopped = self.ctx.now()
        try:
            self._all_done(job, "stop in " + source)
            job.consistent_as_of = await self._consistent(g, stopped, self.settings.drain_poll_s,
                                                          self.settings.drain_poll_s,
                                                          stopped + self.settings.drain_timeout_s)
        except Refused as exc:
            await self._bring_up_all(job, g, source)
            raise Refused(f"{exc}; production was started again") from exc
        for pair in g.pairs():
            await self._stop_pair(pair, source)
            pair.consistent_at_stop = job.consistent_as_of[pair.id]
        await self._replicate(g, target)
        await self._bring_up_all(job, g, target)
        self._all_done(job, "start in " + target)
        g.active_az = target
        g.last_switch = job
        self._completed("SwitchoverCompleted", g, job)

    async def _reprotect(self, g: Group, job: Job) -> None:
        other = g.other(g.active_az)
        # The copies in the AZ we left must stay stopped (parked by the failover; made sure here).
        await self._each(g, lambda member: self._park(job, other, member.server.id))
        self._all_done(job, "stop in " + other)
        await self._replicate(g, g.active_az)
        self.ctx.emit("GroupReprotected", group=g.id, from_az=g.active_az, to_az=other)

    async def _drill(self, g: Group, job: Job) -> None:
        drill = g.drill
        assert drill is not None
        for pair in g.pairs():  # replication goes on; production is not touched
            await self.stores[drill.az].create_snapshot(pair.names[drill.az], drill.snapshot)

        async def place(member: ProtectedServer) -> None:
            s = member.server
            progress = job.servers[s.id] = Progress(s.id + DRILL_SUFFIX, drill.az, attempts=1)
            try:
                await self.azs[drill.az].ask(PlaceServer(progress.server_id, s.tenant, s.flavor, False, None, None,
                                                         s.dedicated), timeout=None)
            except CloudError as exc:
                progress.status, progress.error = "failed", str(exc)  # a drill does not wait for capacity
                return
            drill.servers.append(progress.server_id)
            progress.status, progress.running_at = "running", self.ctx.now()
        await self._each(g, place)
        failed = [p.server_id for p in job.servers.values() if p.status == "failed"]
        self.ctx.emit("DrillCreated", group=g.id, az=drill.az, vpc=drill.vpc, servers=len(drill.servers),
                      failed=failed)
        if failed:
            raise Refused(f"drill copies of {len(failed)} server(s) could not start: {', '.join(failed)}; "
                           "delete the drill and retry")

    async def _undrill(self, g: Group, job: Job) -> None:
        drill = g.drill
        assert drill is not None
        while drill.servers:
            try:
                await self.azs[drill.az].ask(DeleteServer(drill.servers[-1]), timeout=None)
            except NotFound:
                pass
            drill.servers.pop()
        for pair in g.pairs():
            try:
                await self.stores[drill.az].delete_snapshot(pair.names[drill.az], drill.snapshot)
            except NotFound:
                pass
        g.drill = None
        self.ctx.emit("DrillDeleted", group=g.id, vpc=drill.vpc)

    async def _remove(self, g: Group, job: Job) -> None:
        g.sync_epoch += 1
        for member in list(g.servers.values()):
            await self._forget(g, member.pairs)
            del g.servers[member.server.id]
            del self.owner[member.server.id]
        self.ctx.emit("GroupDeleted", group=g.id)

    # -- steps ---------------------------------------------------------------------------
    async def _each(self, g: Group, step: Callable[[ProtectedServer], Awaitable[object]]) -> None:
        """Run `step` for every server at once; a step records its own failure."""
        async with self.ctx.driver.task_group() as tg:
            for member in list(g.servers.values()):
                tg.start_soon(step, member)

    async def _bring_up_all(self, job: Job, g: Group, az: str) -> None:
        """Bring up in `az` every server the job has not found deleted."""
        async def start(member: ProtectedServer) -> None:
            if job.servers[member.server.id].status != "gone":
                await self._bring_up(job, g, member, az)
        await self._each(g, start)

    async def _move_all(self, g: Group, job: Job, source: str, target: str) -> None:
        async def move(member: ProtectedServer) -> None:
            if await self._park(job, source, member.server.id) == "stopped":
                await self._bring_up(job, g, member, target)
        await self._each(g, move)
        self._all_done(job, "move to " + target)

    def _all_done(self, job: Job, what: str) -> None:
        failed = [p.server_id for p in job.servers.values() if p.status == "failed"]
        if failed:
            raise Refused(f"{len(failed)} server(s) could not {what}: {', '.join(failed)} (see GetJob); "
                           "retry the action")

    async def _park(self, job: Job, az: str, sid: str) -> str:
        """Stop the copy of `sid` in `az` and keep it stopped. Returns (and records) what
        became of it: stopped, gone (its tenant deleted it: it is not brought up
        elsewhere) or failed."""
        progress = job.servers.setdefault(sid, Progress(sid, az))
        try:
            await self.azs[az].ask(ParkServer(sid), timeout=None)
        except NotFound:
            progress.status = "gone"
        except CloudError as exc:
            progress.status, progress.error = "failed", f"could not stop it in {az}: {exc}"
        else:
            progress.status = "stopped"
        return progress.status

    async def _bring_up(self, job: Job, g: Group, member: ProtectedServer, az: str) -> None:
        """Adopt the server's volumes in `az` and run it there exactly once, waiting for capacity."""
        sid = member.server.id
        progress = job.servers[sid] = Progress(sid, az)
        try:
            for pair in member.pairs:
                if az not in pair.adopted_in:
                    await self.volume_services[az].ask(AdoptVolume(pair.names[az], g.tenant, pair.size_gb, pair.kind,
                                                                   pair.bootable, sid), timeout=None)
                    await self.volume_services[az].ask(SetProtection(pair.names[az], g.id), timeout=None)
                    pair.adopted_in.add(az)
            while not await self._start_copy(progress, member.server, az):
                if progress.status != "waiting":
                    progress.status = "waiting"
                    self.ctx.emit("DrServerWaiting", group=g.id, server=sid, az=az, reason=progress.error)
                await self._capacity_freed(az)
        except CloudError as exc:
            progress.status, progress.error = "failed", str(exc)
            return
        progress.status, progress.running_at, progress.error = "running", self.ctx.now(), None
        self.ctx.emit("DrServerStarted", group=g.id, server=sid, az=az, attempts=progress.attempts,
                      waited_for_capacity=progress.waited_for_capacity)

    async def _start_copy(self, progress: Progress, server: ServerDescription, az: str) -> bool:
        """One attempt: the copy in `az` runs afterwards (True) or cannot yet (False).
        Placed if `az` has no copy of it, unparked if it has one: never a second copy."""
        progress.attempts += 1
        ref = self.azs[az]
        try:
            try:
                there: ServerDescription | None = await ref.ask(DescribeServer(server.id), timeout=None)
            except NotFound:
                there = None
            if there is None:
                await ref.ask(server.clone(), timeout=None)
                return True
            if there.state == "active" and not there.parked:
                return True
            view = await ref.ask(UnparkServer(server.id), timeout=None)
            progress.error = f"{server.id} is {view.state} in {az}: waits for its host or its recovery"
            return bool(view.state == "active")
        except NoCapacity as exc:
            progress.error = str(exc)
            if progress.attempts == 1:
                progress.waited_for_capacity = True  # its first start failed for lack of capacity
        except InvalidRequest:
            raise
        except CloudError as exc:  # a build that failed, a copy placed or parked meanwhile: look again
            progress.error = str(exc)
        return False

    async def _capacity_freed(self, az: str) -> None:
        """Wait until capacity may have freed in `az`: one watch per AZ, however many wait."""
        event = self.capacity.get(az)
        if event is None:
            event = self.capacity[az] = self.ctx.driver.event()
            self.ctx.start_soon(self._watch_capacity, az, event)
        await event.wait()

    async def _watch_capacity(self, az: str, event: Event) -> None:
        try:
            await self.azs[az].ask(AwaitCapacity(self.ctx.path), timeout=self.settings.capacity_retry_s)
        except CloudError:
            pass  # AskTimeout: retry anyway, every capacity_retry_s
        del self.capacity[az]
        event.set()

    async def _replicate(self, g: Group, source: str) -> None:
        """Start every pair from `source`, then watch for the first synchronisation."""
        target = g.other(source)
        g.sync_epoch += 1
        g.synced_at = None
        g.synced = self.ctx.driver.event()
        for pair in g.pairs():
            if pair.source_az is None:
                await self.stores[source].start_replication(pair.names[source], self.stores[target],
                                                            pair.names[target])
                pair.source_az = source
        self.ctx.start_soon(self._watch_first_sync, g, g.sync_epoch)

    async def _watch_first_sync(self, g: Group, epoch: int) -> None:
        try:
            await self._consistent(g, -math.inf, self.settings.sync_poll_s, self.settings.sync_poll_max_s, None,
                                   epoch=epoch, look_now=False)
        except Refused:
            return  # replication stopped or restarted meanwhile: that watch takes over
        g.synced_at = self.ctx.now()
        if g.synced is not None:
            g.synced.set()
        self.ctx.emit("FirstSyncCompleted", group=g.id, pairs=sum(1 for _ in g.pairs()))

    async def _consistent(self, g: Group, as_of: float, poll: float, poll_max: float, deadline: float | None,
                          epoch: int | None = None, look_now: bool = True) -> dict[str, float | None]:
        """Wait until every replica holds every write made before `as_of`; return their
        consistent_as_of. Looks at the first pair not known to be there first, so a look
        usually costs one status read."""
        found: dict[str, float | None] = {}
        pending = [pair for pair in g.pairs() if pair.source_az is not None]
        while True:
            if epoch is not None and g.sync_epoch != epoch:
                raise Refused("replication restarted or stopped")
            if look_now:
                while pending:
                    pair = pending[0]
                    assert pair.source_az is not None
                    try:
                        status = await self.stores[pair.source_az].replication_status(pair.names[pair.source_az])
                    except StoreUnavailable:
                        break
                    if status.consistent_as_of is None or status.consistent_as_of < as_of:
                        break
                    found[pair.id] = status.consistent_as_of
                    pending.pop(0)
                if not pending:
                    return found
            look_now = True
            now = self.ctx.now()
            if deadline is not None and now >= deadline:
                raise Refused(f"protection group {g.id}: {len(pending)} replica(s) still lack writes made before "
                              f"t={as_of:g}, {deadline - as_of:g} s later")
            await self.ctx.sleep(poll if deadline is None else min(poll, deadline - now))
            poll = min(2 * poll, poll_max)

    async def _stop_pairs(self, g: Group, prefer: str) -> None:
        for pair in g.pairs():
            await self._stop_pair(pair, prefer)
        g.sync_epoch += 1

    async def _stop_pair(self, pair: Pair, prefer: str) -> None:
        """Stop the pair, asked of `prefer`'s end, else of the other one."""
        if pair.source_az is None:
            return
        unreachable: StoreUnavailable | None = None
        for az in sorted(pair.names, key=lambda az: az != prefer):
            try:
                await self.stores[az].stop_replication(pair.names[az])
            except NotFound:
                pass  # stopped already
            except StoreUnavailable as exc:
                unreachable = exc
                continue
            pair.source_az = None
            return
        assert unreachable is not None
        raise unreachable

    async def _forget(self, g: Group, pairs: list[Pair]) -> None:
        """Unmark the volumes and delete replicas never taken into use."""
        for pair in pairs:
            await self._stop_pair(pair, g.other(g.active_az))
            for az, name in pair.names.items():
                if az in pair.adopted_in:
                    await self._unmark(az, name)
                else:
                    try:
                        await self.stores[az].delete_volume(name)
                    except NotFound:
                        pass

    async def _unmark(self, az: str, volume_id: str) -> None:
        try:
            await self.volume_services[az].ask(SetProtection(volume_id, None), timeout=None)
        except NotFound:
            pass

    def _completed(self, kind: str, g: Group, job: Job) -> None:
        view = job.view()
        self.ctx.emit(kind, group=g.id, az=g.active_az, servers=len(view.servers),
                      consistent_as_of=oldest(job.consistent_as_of), rpo_s=view.rpo_s, rto_s=view.rto_s,
                      failed_to_start=view.failed_to_start)

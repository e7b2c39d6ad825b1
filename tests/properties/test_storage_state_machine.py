"""Volumes, backups and protection groups of one region as a hypothesis state machine
(EVS-1, EVS-2, VBS-1, VBS-2, CBR-1, SDRS-1, SDRS-2, GEO-3).

A `StorageCloud` (tests/properties/storage_harness.py) runs the real `Region` of
eu-west-0 (3 AZs, 2 small hosts each, block stores, object store) on the SimDriver;
the storage model also holds eu-west-1. Rules are what the tenant and the world do:
create (incl. invalid sizes), expand (incl. shrinking) and delete volumes; create
backups, several at once (queues); delete backups; restore into the same volume, a new
volume in the same or another AZ, or another region's AZ (refused, GEO-3); create a
protection group (sometimes with a recovery AZ that is not allowed: refused, nothing
created, SDRS-1); protect servers; start protection; failover; reprotect; switchover;
AZ outages (hosts lose power, block store gone) and their end; inter-AZ link cuts and
mends; virtual time passing.

Every refusal changes nothing (volumes, backups, groups listed before and after). After
every step the invariants below hold.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from actors.backups import (
    BackupStats,
    BackupView,
    CreateBackup,
    DeleteBackup,
    GetBackupStats,
    ListBackups,
    RestoreBackup,
)
from actors.sdrs import (
    CreateGroup,
    Failover,
    GetGroup,
    GetJob,
    GroupView,
    JobAccepted,
    JobView,
    ProtectServer,
    ReportGroups,
    Reprotect,
    StartProtection,
    Switchover,
)
from actors.tenant import CreateServer
from actors.volumes import CreateVolume, DeleteVolume, ExpandVolume, ListVolumes, VolumeView
from runtime.errors import InvalidRequest
from tests.properties.storage_harness import (
    AZS,
    LIMITS,
    OTHER_AZS,
    OTHER_REGION,
    REGION,
    TENANT,
    Outcome,
    StorageCloud,
)

A, B, C = AZS
GB = 1 << 30
PER_VOLUME, PER_TENANT, RUNNING_PER_TENANT = LIMITS.per_volume, LIMITS.per_tenant, LIMITS.running_per_tenant
SIZES = (0, 1, 9, 10, 40, 100, 32768, 32769, 40000)
BUCKET = f"backups-{TENANT}"
SWITCHES = ("failover", "reverse", "reprotect")


def valid_size(size: int, bootable: bool) -> bool:
    return (1 if bootable else 10) <= size <= 32768  # EVS-1


class StorageMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.cloud = StorageCloud()
        self.volumes: list[str] = []  # created by the test (deleted ones removed)
        self.servers: dict[str, str] = {}  # server id -> its AZ
        self.deleted_backups: set[str] = set()
        self.acknowledged: set[str] = set()  # backups once listed as available
        self.groups: list[str] = []
        self.jobs: dict[str, str] = {}  # running job id -> group
        self.expect_running: dict[str, str] = {}  # group -> the job that last brought its servers up
        self.down: set[str] = set()
        self.cut: set[tuple[str, str]] = set()

    def teardown(self) -> None:
        self.cloud.close()

    # -- helpers -----------------------------------------------------------------------
    def listing(self) -> tuple[frozenset[tuple[str, str, int]], frozenset[str], frozenset[str]]:
        """What a refusal must not change: volumes (id, AZ, size), backups, groups."""
        vols: list[VolumeView] = self.cloud.value(self.cloud.tenant, ListVolumes(TENANT))
        backups: list[BackupView] = self.cloud.value(self.cloud.tenant, ListBackups(TENANT))
        groups = self.cloud.value(self.cloud.sdrs, ReportGroups())
        return (frozenset((v.id, v.az, v.size_gb) for v in vols),
                frozenset(b.id for b in backups if b.state != "deleting"), frozenset(g.group for g in groups))

    def refused_changes_nothing(self, before: Any, out: Outcome) -> None:
        """Compare listings before/after a refused request (a backup being deleted may finish meanwhile)."""
        if out.ok:
            return
        after = self.listing()
        assert after[0] == before[0], f"refused ({out.error}) yet volumes changed"
        assert after[1] <= before[1], f"refused ({out.error}) yet a backup appeared"
        assert after[2] == before[2], f"refused ({out.error}) yet groups changed"

    def ask(self, to: Any, msg: Any) -> Outcome:
        before = self.listing()
        out = self.cloud.ask(to, msg)
        event(f"{type(msg).__name__}: {'ok' if out.ok else type(out.error).__name__}")
        self.refused_changes_nothing(before, out)
        return out

    def backups(self) -> list[BackupView]:
        views: list[BackupView] = self.cloud.value(self.cloud.tenant, ListBackups(TENANT))
        return views

    # -- setup ---------------------------------------------------------------------------
    @initialize(n=st.integers(1, 3), used_gb=st.floats(0.0, 4.0))
    def servers_in_b(self, n: int, used_gb: float) -> None:
        """Servers the protection groups can protect (production AZ eu-west-0b, SDRS-1)."""
        for i in range(n):
            sid = self.cloud.value(self.cloud.tenant, CreateServer(f"app-{i}", "s3.large.2", B))
            self.servers[sid] = B
        for vol in self.cloud.value(self.cloud.tenant, ListVolumes(TENANT)):
            self.cloud.storage.set_workload(vol.az, vol.id, used_gb * GB, 1e5)

    # -- volumes (EVS-1, EVS-2) ----------------------------------------------------------
    @rule(az=st.sampled_from(AZS), size=st.sampled_from(SIZES), bootable=st.booleans(), used_gb=st.floats(0.0, 8.0))
    def create_volume(self, az: str, size: int, bootable: bool, used_gb: float) -> None:
        """EVS-1: 1 GB-32 TB system disks, 10 GB-32 TB data disks; anything else is refused."""
        out = self.ask(self.cloud.tenant, CreateVolume(TENANT, az, size, bootable=bootable))
        if not valid_size(size, bootable):
            assert isinstance(out.error, InvalidRequest), out
            return
        if az in self.down:
            return
        assert out.ok, out.error
        self.volumes.append(out.value.id)
        self.cloud.storage.set_workload(az, out.value.id, min(used_gb, size) * GB, 1e5)

    @precondition(lambda self: self.volumes)
    @rule(data=st.data(), size=st.sampled_from(SIZES))
    def expand_volume(self, data: st.DataObject, size: int) -> None:
        """EVS-2: expand, never shrink."""
        vid = data.draw(st.sampled_from(self.volumes))
        before = {v.id: v for v in self.cloud.value(self.cloud.tenant, ListVolumes(TENANT))}[vid]
        out = self.ask(self.cloud.tenant, ExpandVolume(TENANT, vid, size))
        if size <= before.size_gb or size > 32768:
            assert not out.ok, f"expanding {before.size_gb} GB to {size} GB was accepted"

    @precondition(lambda self: self.volumes)
    @rule(data=st.data())
    def delete_volume(self, data: st.DataObject) -> None:
        vid = data.draw(st.sampled_from(self.volumes))
        if self.ask(self.cloud.tenant, DeleteVolume(TENANT, vid)).ok:
            self.volumes.remove(vid)

    # -- backups (VBS-1, VBS-2) ----------------------------------------------------------
    @precondition(lambda self: self.volumes)
    @rule(data=st.data(), n=st.integers(1, 8))
    def create_backups(self, data: st.DataObject, n: int) -> None:
        """Several at once: at most 5 run, the rest queue (VBS-2); over a limit, refused."""
        targets = [data.draw(st.sampled_from(self.volumes)) for _ in range(n)]
        before = self.listing()
        outs = self.cloud.wait(*[self.cloud.send(self.cloud.tenant, CreateBackup(TENANT, v)) for v in targets])
        for o in outs:
            event(f"CreateBackup: {'ok' if o.ok else type(o.error).__name__}")
        if all(not o.ok for o in outs):
            self.refused_changes_nothing(before, outs[0])

    @precondition(lambda self: self.acknowledged - self.deleted_backups)
    @rule(data=st.data())
    def delete_backup(self, data: st.DataObject) -> None:
        bid = data.draw(st.sampled_from(sorted(self.acknowledged - self.deleted_backups)))
        if self.ask(self.cloud.tenant, DeleteBackup(TENANT, bid)).ok:
            self.deleted_backups.add(bid)

    @precondition(lambda self: self.acknowledged - self.deleted_backups)
    @rule(data=st.data(), where=st.sampled_from(("same-volume", "new-same-az", "new-other-az", "other-region")))
    def restore(self, data: st.DataObject, where: str) -> None:
        """VBS-1: into the volume or a new one, also in another AZ; GEO-3: never another region."""
        bid = data.draw(st.sampled_from(sorted(self.acknowledged - self.deleted_backups)))
        part = {b.id: b for b in self.backups()}[bid].parts[0]
        if where == "same-volume":
            msg = RestoreBackup(TENANT, bid, part.volume_id)
        elif where == "new-same-az":
            msg = RestoreBackup(TENANT, bid, None, part.az)
        elif where == "new-other-az":
            msg = RestoreBackup(TENANT, bid, None, data.draw(st.sampled_from([az for az in AZS if az != part.az])))
        else:
            msg = RestoreBackup(TENANT, bid, data.draw(st.sampled_from([None, part.volume_id])),
                                data.draw(st.sampled_from(OTHER_AZS)))
        out = self.ask(self.cloud.tenant, msg)
        if where == "other-region":
            assert isinstance(out.error, InvalidRequest), f"a restore into {msg.az} was not refused: {out}"
        elif out.ok and msg.volume_id is None:
            self.volumes.append(out.value.volume_id)

    # -- protection groups (SDRS-1, SDRS-2) ----------------------------------------------
    @precondition(lambda self: len(self.groups) < 2)
    @rule(recovery=st.sampled_from((A, A, B, C, OTHER_AZS[0])), protect=st.integers(0, 3))
    def create_group(self, recovery: str, protect: int) -> None:
        """SDRS-1: the recovery AZ of eu-west-0b is eu-west-0a; any other is refused, nothing created."""
        out = self.ask(self.cloud.sdrs, CreateGroup(f"g{len(self.groups)}", TENANT, "vpc-1", B, recovery))
        if recovery != A:
            assert isinstance(out.error, InvalidRequest), out
            return
        assert out.ok, out.error
        accepted: JobAccepted = out.value
        self.groups.append(accepted.group)
        self.jobs[accepted.job] = accepted.group
        self.wait_jobs()
        for sid in sorted(self.servers)[:protect]:
            self.ask(self.cloud.sdrs, ProtectServer(accepted.group, sid))

    @precondition(lambda self: self.groups)
    @rule(data=st.data())
    def protect_server(self, data: st.DataObject) -> None:
        group = data.draw(st.sampled_from(self.groups))
        sid = data.draw(st.sampled_from(sorted(self.servers)))
        self.ask(self.cloud.sdrs, ProtectServer(group, sid))

    @precondition(lambda self: self.groups)
    @rule(data=st.data(), action=st.sampled_from(("start", "failover", "reprotect", "switchover")))
    def group_action(self, data: st.DataObject, action: str) -> None:
        """SDRS-2: an action from the wrong state (or while a job runs) is refused and changes nothing."""
        group = data.draw(st.sampled_from(self.groups))
        msg = {"start": StartProtection, "failover": Failover, "reprotect": Reprotect,
               "switchover": Switchover}[action](group)
        before: GroupView = self.cloud.value(self.cloud.sdrs, GetGroup(group))
        out = self.ask(self.cloud.sdrs, msg)
        if out.ok:
            self.jobs[out.value.job] = group
            self.expect_running.pop(group, None)
            return
        after: GroupView = self.cloud.value(self.cloud.sdrs, GetGroup(group))
        assert (after.state, after.servers, after.active_az) == (before.state, before.servers, before.active_az), \
            f"refused ({out.error}) yet the group changed"

    @precondition(lambda self: self.groups)
    @rule(data=st.data(), then=st.sampled_from(("failover", "switchover")))
    def protect_then_switch(self, data: st.DataObject, then: str) -> None:
        """A user's whole story: start protection, wait for the first synchronisation, then
        fail over or switch over (and re-protect after a failover), each job waited for."""
        group = data.draw(st.sampled_from(self.groups))
        for msg in (StartProtection(group), Failover(group) if then == "failover" else Switchover(group),
                    Reprotect(group)):
            out = self.ask(self.cloud.sdrs, msg)
            if not out.ok:
                continue
            self.jobs[out.value.job] = group
            self.expect_running.pop(group, None)
            self.wait_jobs()
            self.jobs_progress()
            end = self.cloud.env.now + 3600.0
            while (self.cloud.value(self.cloud.sdrs, GetGroup(group)).synced_at is None
                   and self.cloud.env.now < end):
                self.cloud.advance(60.0)

    # -- the world ------------------------------------------------------------------------
    @rule(az=st.sampled_from(AZS))
    def az_outage(self, az: str) -> None:
        if az in self.down:
            return
        self.down.add(az)
        self.expect_running.clear()
        self.cloud.fail_az(az)

    @precondition(lambda self: self.down)
    @rule(data=st.data())
    def az_back(self, data: st.DataObject) -> None:
        az = data.draw(st.sampled_from(sorted(self.down)))
        self.down.remove(az)
        self.cloud.restore_az(az)

    @rule(link=st.sampled_from([(s, t) for s in AZS for t in AZS if s != t]), cut=st.booleans())
    def link(self, link: tuple[str, str], cut: bool) -> None:
        if cut and link not in self.cut:
            self.cut.add(link)
            self.cloud.storage.cut_link(*link)
        elif not cut and link in self.cut:
            self.cut.remove(link)
            self.cloud.storage.mend_link(*link)

    @precondition(lambda self: self.jobs)
    @rule()
    def wait_jobs(self) -> None:
        """Run until no sDRS job runs (at most 6 h of virtual time; a job may wait for an AZ)."""
        end = self.cloud.env.now + 6 * 3600.0
        while self.cloud.env.now < end and any(
                self.cloud.value(self.cloud.sdrs, GetJob(j)).status == "running" for j in self.jobs):
            self.cloud.advance(60.0)

    @rule(seconds=st.sampled_from((1.0, 30.0, 300.0, 1800.0, 7200.0)))
    def advance(self, seconds: float) -> None:
        self.cloud.advance(seconds)

    # -- invariants ---------------------------------------------------------------------
    @invariant()
    def jobs_progress(self) -> None:
        """Follow the sDRS jobs; a failover, switchover or reprotect that succeeded sets an expectation."""
        for job_id, group in list(self.jobs.items()):
            view: JobView = self.cloud.value(self.cloud.sdrs, GetJob(job_id))
            if view.status == "running":
                continue
            del self.jobs[job_id]
            event(f"job {view.action}: {view.status}")
            if view.status == "success" and view.action in SWITCHES and not self.down:
                self.expect_running[group] = job_id

    @invariant()
    def at_most_five_backup_operations_run_per_tenant_VBS_2(self) -> None:
        stats: BackupStats = self.cloud.value(self.cloud.backups, GetBackupStats())
        assert stats.running <= RUNNING_PER_TENANT and stats.running_max_per_tenant <= RUNNING_PER_TENANT, stats
        started = sum(k in ("BackupStarted", "RestoreStarted") for _, k, _ in self.cloud.events)
        ended = sum(k in ("BackupCreated", "BackupRestored") or (k == "BackupJobFailed" and f["job"] != "delete")
                    for _, k, f in self.cloud.events)
        assert started - ended <= RUNNING_PER_TENANT, f"events show {started - ended} creates/restores running"

    @invariant()
    def backup_limits_VBS_2(self) -> None:
        views = self.backups()
        assert len(views) <= PER_TENANT
        per_volume: dict[str, int] = {}
        for b in views:
            for p in b.parts:
                per_volume[p.volume_id] = per_volume.get(p.volume_id, 0) + 1
        assert max(per_volume.values(), default=0) <= PER_VOLUME, per_volume

    @invariant()
    def nothing_stored_outside_the_region_GEO_3(self) -> None:
        model = self.cloud.storage
        assert not any(model.buckets[OTHER_REGION].values()), model.buckets[OTHER_REGION]
        assert set(model.buckets[REGION]) <= {BUCKET}, set(model.buckets[REGION])
        for az in OTHER_AZS:
            assert not model.volumes[az], f"volumes in {az}: {sorted(model.volumes[az])}"
        assert model.object_store(REGION).region == REGION

    @invariant()
    def no_acknowledged_backup_is_lost_VBS_1(self) -> None:
        views = {b.id: b for b in self.backups()}
        self.acknowledged |= {bid for bid, b in views.items() if b.state == "available"}
        bucket = self.cloud.storage.buckets[REGION].get(BUCKET, {})
        for bid in sorted(self.acknowledged - self.deleted_backups):
            assert bid in views, f"backup {bid} was available and is no longer listed"
            for p in views[bid].parts:
                assert f"{p.volume_id}/{bid}" in bucket, f"backup {bid}: no object for volume {p.volume_id}"

    @invariant()
    def servers_run_at_most_once_and_after_failover_exactly_once_SDRS_2(self) -> None:
        world = self.cloud.world
        assert not world.split_brain, f"split brain: {sorted(world.split_brain)}"
        for sid, hosts in world.running_on.items():
            assert len(hosts) <= 1, f"{sid} runs on {sorted(hosts)}"
        for group, job_id in self.expect_running.items():
            view: GroupView = self.cloud.value(self.cloud.sdrs, GetGroup(group))
            job: JobView = self.cloud.value(self.cloud.sdrs, GetJob(job_id))
            for sid in view.servers:
                if sid in job.waiting:
                    continue
                hosts = world.running_on.get(sid, set())
                assert len(hosts) == 1, f"after {job.action} job {job_id} of {group}: {sid} runs on {sorted(hosts)}"
                (host,) = hosts
                assert self.cloud.az_of_host(host) == view.active_az, \
                    f"{sid} runs in {self.cloud.az_of_host(host)}, its group's active AZ is {view.active_az}"


StorageMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("STORAGE_SM_EXAMPLES", "200")), stateful_step_count=25)
TestStorageStateMachine = StorageMachine.TestCase

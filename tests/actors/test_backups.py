"""Volume and server backups (VBS-1, VBS-2, CSBS-1, CBR-1, GEO-3) on the storage model.

Durations come from the model's bandwidth (a backup's export shares its AZ's path to the
object gateway), so queueing is checked against exact virtual times; data written
through the BlockStore port is read back after restores.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from actors.backup_catalog import TRANSITIONS, USER_ACTIONS, BackupAction, transition
from actors.backups import (
    BackupLimits,
    BackupState,
    BindBackupPolicy,
    CreateBackup,
    CreateBackupPolicy,
    CreateServerBackup,
    DeleteBackup,
    DeleteBackupPolicy,
    GetBackup,
    GetBackupStats,
    ListBackups,
    RestoreBackup,
)
from actors.tenant import GetQuotas
from actors.volumes import DeleteVolume, DetachVolume, GetVolume, ListVolumes
from runtime.errors import Conflict, InvalidRequest, InvalidTransition, NotFound, QuotaExceeded
from runtime.storage import GIB, ResidencyViolation
from sim.storage import StorageTiming
from tests.actors.storage_site import REGION, TENANT, A, B, C, Site, failed

pytestmark = pytest.mark.timeout(120)
MIB = 1 << 20


@pytest.fixture
def site() -> Iterator[Site]:
    with Site() as s:
        yield s


def backup(site: Site, volume_id: str) -> str:
    """Back a volume up and wait until it is available."""
    view = site.ask(CreateBackup(TENANT, volume_id))
    assert view.state == "queued"
    done = site.until_settled(view.id)
    assert done.state == "available", done.error
    return str(view.id)


def write(site: Site, az: str, volume_id: str, offset: int, data: bytes) -> None:
    site.run(site.model.block_store(az).write, volume_id, offset, data)


def read(site: Site, az: str, volume_id: str, offset: int, length: int) -> bytes:
    data: bytes = site.run(site.model.block_store(az).read, volume_id, offset, length)
    return data


def restore(site: Site, backup_id: str, volume_id: str | None, az: str | None = None,
            source: str | None = None) -> str:
    """Restore and wait for the target volume to be available again; returns its id."""
    job = site.ask(RestoreBackup(TENANT, backup_id, volume_id, az, source))
    assert job.backup.state == "restoring"
    for _ in range(100_000):
        state = site.ask(GetVolume(TENANT, job.volume_id)).state
        if state != "restoring":
            break
        site.advance(1.0)
    assert state == "available"
    return str(job.volume_id)


# -- VBS-1: full then incremental; restore -----------------------------------------------
def test_vbs1_first_backup_full_then_incremental_from_the_last(site: Site) -> None:
    vol = site.volume(A, 10)
    write(site, A, vol.id, 0, b"a" * MIB)
    first = backup(site, vol.id)
    write(site, A, vol.id, 4 * MIB, b"b" * 128 * 1024)
    second = backup(site, vol.id)
    views = {v.id: v for v in site.ask(ListBackups(TENANT))}
    assert views[first].parts[0].base is None and views[second].parts[0].base == first
    # What is stored is the changed data plus a little framing (chunk headers).
    assert MIB <= views[first].parts[0].nbytes < MIB + 4096
    assert 128 * 1024 <= views[second].parts[0].nbytes < 128 * 1024 + 4096
    # only the last backup's snapshot stays on the volume, as the next one's base
    site.advance(5)
    assert len(site.run(site.model.block_store(A).get_volume, vol.id).snapshots) == 1


def test_vbs1_restoring_a_full_and_incremental_chain_reproduces_the_data(site: Site) -> None:
    vol = site.volume(A, 10)
    write(site, A, vol.id, 0, b"A" * MIB)
    first = backup(site, vol.id)
    write(site, A, vol.id, 3 * MIB, b"B" * MIB)
    second = backup(site, vol.id)
    write(site, A, vol.id, 0, b"C" * (4 * MIB))  # overwrites both
    restore(site, second, vol.id)
    assert read(site, A, vol.id, 0, MIB) == b"A" * MIB and read(site, A, vol.id, 3 * MIB, MIB) == b"B" * MIB
    restore(site, first, vol.id)
    assert read(site, A, vol.id, 0, MIB) == b"A" * MIB and read(site, A, vol.id, 3 * MIB, MIB) == bytes(MIB)
    # the restore rewrote the volume: its next backup is full again
    third = backup(site, vol.id)
    assert site.ask(GetBackup(TENANT, third)).parts[0].base is None


def test_vbs1_restore_needs_the_volume_detached(site: Site) -> None:
    [disk] = site.server_with_volumes(A, "s1", (20,))
    first = backup(site, disk.id)  # an in-use volume may be backed up
    err = failed(site.ask, RestoreBackup(TENANT, first, disk.id))
    assert isinstance(err, InvalidTransition) and err.state == "in-use" and err.action == "restore"
    assert site.ask(GetBackup(TENANT, first)).state == "available"
    site.ask(DetachVolume(TENANT, disk.id), to=site.volumes[A])
    restore(site, first, disk.id)


def test_vbs1_restore_into_a_new_volume_in_another_az(site: Site) -> None:
    vol = site.volume(A, 20)
    write(site, A, vol.id, 5 * MIB, b"payload")
    first = backup(site, vol.id)
    new = restore(site, first, None, az=C)
    view = site.ask(GetVolume(TENANT, new))
    assert (view.az, view.size_gb, view.state) == (C, 20, "available")
    assert read(site, C, new, 5 * MIB, 7) == b"payload"
    used = site.ask(GetQuotas()).used
    assert (used["volumes"], used["gigabytes"]) == (2, 40)


def test_geo3_a_restore_into_another_region_is_refused_before_anything(site: Site) -> None:
    vol = site.volume(A, 10)
    first = backup(site, vol.id)
    before = (site.ask(GetBackupStats(), to=site.backups), site.ask(GetQuotas()), site.ask(ListVolumes(TENANT)))
    for msg, to in ((RestoreBackup(TENANT, first, vol.id, "eu-west-1a"), site.backups),
                    (RestoreBackup(TENANT, first, None, "eu-west-1b"), None)):
        err = failed(site.ask, msg, to)
        assert isinstance(err, ResidencyViolation)
        assert "region eu-west-0" in str(err) and "region eu-west-1" in str(err) and "GEO-3" in str(err)
    assert (site.ask(GetBackupStats(), to=site.backups), site.ask(GetQuotas()), site.ask(ListVolumes(TENANT))) == before
    assert site.ask(GetBackup(TENANT, first)).state == "available"
    assert site.model.volume_ids("eu-west-1a") == set() and site.model.volume_ids("eu-west-1b") == set()


# -- VBS-2: limits --------------------------------------------------------------------------
def test_vbs2_the_21st_backup_of_a_volume_is_refused_and_nothing_changes(site: Site) -> None:
    vol = site.volume(A, 10)
    for _ in range(20):
        backup(site, vol.id)
    before = site.ask(ListBackups(TENANT))
    err = failed(site.ask, CreateBackup(TENANT, vol.id))
    assert isinstance(err, QuotaExceeded)
    assert (err.resource, err.limit, err.used, err.requested) == (f"backups of volume {vol.id}", 20, 20, 1)
    assert site.ask(ListBackups(TENANT)) == before
    stats = site.ask(GetBackupStats(), to=site.backups)
    assert (stats.rejected, stats.completed, stats.queued, stats.running) == (1, 20, 0, 0)
    # a chain restarts with a full backup after `full_every` (10) backups
    assert [b.parts[0].base is None for b in before] == [True] + [False] * 9 + [True] + [False] * 9


def test_vbs2_backups_per_tenant_and_backup_data_are_limited() -> None:
    with Site(limits=BackupLimits(per_tenant=3, data_gb=100)) as s:
        vols = [s.volume(A, 40) for _ in range(3)]
        s.ask(CreateBackup(TENANT, vols[0].id))
        s.ask(CreateBackup(TENANT, vols[1].id))
        err = failed(s.ask, CreateBackup(TENANT, vols[2].id))  # 40 + 40 reserved, 40 more would pass 100
        assert isinstance(err, QuotaExceeded) and (err.resource, err.limit, err.used, err.requested) == (
            "backup_gb", 100, 80, 40)
        s.advance(3600)  # done: the data stored is tiny, the reservations are gone
        s.ask(CreateBackup(TENANT, vols[2].id))
        s.advance(3600)
        err = failed(s.ask, CreateBackup(TENANT, vols[0].id))
        assert isinstance(err, QuotaExceeded) and (err.resource, err.limit, err.used) == ("backups", 3, 3)
        assert len(s.ask(ListBackups(TENANT))) == 3
        assert s.ask(GetBackupStats(), to=s.backups).rejected == 2


def test_vbs2_one_backup_of_a_volume_at_a_time(site: Site) -> None:
    vol = site.volume(A, 10)
    first = site.ask(CreateBackup(TENANT, vol.id))
    err = failed(site.ask, CreateBackup(TENANT, vol.id))
    assert isinstance(err, Conflict) and first.id in str(err)
    err = failed(site.ask, DeleteBackup(TENANT, first.id))
    assert isinstance(err, InvalidTransition) and err.state in ("queued", "creating")


def test_vbs2_seventh_backup_waits_fifo_at_most_five_running(site: Site) -> None:
    """7 backups of one tenant at once: 5 run, the 6th and 7th start in order as soon as
    running ones end; times follow from the model's bandwidth (5 exports share the path)."""
    timing = site.model.timing
    vols = [site.volume(A, 10) for _ in range(7)]
    for v in vols:
        site.model.set_workload(A, v.id, GIB, 0.0)
    t0 = site.now
    views = [site.result(h) for h in [site.send(CreateBackup(TENANT, v.id)) for v in vols]]
    assert [v.state for v in views] == ["queued"] * 7
    assert [site.ask(GetBackup(TENANT, v.id)).state for v in views] == ["creating"] * 5 + ["queued"] * 2
    for v in views:
        site.until_settled(v.id)
    started = {f["backup"]: t for t, _, f in site.kinds("BackupStarted")}
    created = {f["backup"]: t for t, _, f in site.kinds("BackupCreated")}
    ids = [v.id for v in views]
    assert [started[i] for i in ids[:5]] == [t0] * 5
    # bucket, snapshot and export calls, then 5 GiB through the AZ's shared path
    first_end = t0 + 3 * timing.rpc_s + timing.snapshot_s + 5 * GIB / timing.backup_bps
    assert [created[i] for i in ids[:5]] == pytest.approx([first_end] * 5)
    assert [started[i] for i in ids[5:]] == [created[ids[0]]] * 2  # FIFO, at once
    second_end = first_end + 2 * timing.rpc_s + timing.snapshot_s + 2 * GIB / timing.backup_bps
    assert [created[i] for i in ids[5:]] == pytest.approx([second_end] * 2)
    assert sorted(started, key=started.__getitem__) == ids
    timeline = sorted([(t, 1) for t in started.values()] + [(t, -1) for t in created.values()])
    running = peak = 0
    for _, delta in timeline:
        running += delta
        peak = max(peak, running)
    assert peak == 5
    stats = site.ask(GetBackupStats(), to=site.backups)
    assert (stats.completed, stats.queued_max, stats.running_max_per_tenant) == (7, 2, 5)


def test_vbs2_deletes_and_restores_share_the_five_slots(site: Site) -> None:
    vols = [site.volume(A, 10) for _ in range(6)]
    for v in vols:
        site.model.set_workload(A, v.id, GIB, 0.0)  # each restore moves 1 GiB
    ids = [backup(site, v.id) for v in vols]
    restores = [site.send(RestoreBackup(TENANT, i, v.id)) for i, v in zip(ids[:5], vols[:5], strict=True)]
    [site.result(h) for h in restores]
    deleting = site.ask(DeleteBackup(TENANT, ids[5]))
    assert deleting.state == "deleting"
    assert site.ask(GetBackupStats(), to=site.backups).queued == 1  # behind five restores
    site.advance(3600)
    assert [b.id for b in site.ask(ListBackups(TENANT))] == ids[:5]


# -- failures: nothing acknowledged is lost ---------------------------------------------------
def test_vbs2_a_backup_during_an_az_outage_is_retried_and_not_lost(site: Site) -> None:
    vol, other = site.volume(A, 10), site.volume(B, 10)
    write(site, A, vol.id, 0, b"before")
    site.model.fail_az(A)
    view = site.ask(CreateBackup(TENANT, vol.id))
    site.advance(60)
    failing = site.ask(GetBackup(TENANT, view.id))
    assert failing.state == "error" and "eu-west-0a" in (failing.error or "")
    assert failing.retry_at == pytest.approx(view.requested_at + 5 + 600, abs=0.1)
    assert backup(site, other.id)  # the queue goes on
    site.model.restore_az(A)
    done = site.until_settled(view.id)
    assert done.state == "available" and done.error is None
    [final] = [f for _, _, f in site.kinds("BackupJobFailed")]
    assert (final["attempt"], final["final"]) == (1, False)
    new = restore(site, view.id, None, az=B)
    assert read(site, B, new, 0, 6) == b"before"


def test_vbs2_a_long_outage_leaves_the_backup_in_error_and_reported(site: Site) -> None:
    vol = site.volume(A, 10)
    write(site, A, vol.id, 0, b"kept")
    kept = backup(site, vol.id)
    site.model.fail_az(A)
    view = site.ask(CreateBackup(TENANT, vol.id))
    site.advance(4 * 600)
    assert [(f["attempt"], f["final"]) for _, _, f in site.kinds("BackupJobFailed")] == [
        (1, False), (2, False), (3, True)]
    listed = {b.id: b for b in site.ask(ListBackups(TENANT))}
    assert listed[view.id].state == "error" and listed[kept].state == "available"
    assert site.ask(GetBackupStats(), to=site.backups).failed == 1
    # the backups already made live in the region's object storage: restorable while the AZ is down
    new = restore(site, kept, None, az=C)
    assert read(site, C, new, 0, 4) == b"kept"
    site.model.restore_az(A)
    site.ask(DeleteBackup(TENANT, view.id))
    site.advance(60)
    assert [b.id for b in site.ask(ListBackups(TENANT))] == [kept]
    assert backup(site, vol.id)


# -- deleting keeps chains consistent ------------------------------------------------------
def test_deleting_a_base_hides_it_and_keeps_its_data_for_its_dependents(site: Site) -> None:
    vol = site.volume(A, 10)
    write(site, A, vol.id, 0, b"1" * MIB)
    first = backup(site, vol.id)
    write(site, A, vol.id, MIB, b"2" * MIB)
    second = backup(site, vol.id)
    bucket = site.model.buckets[REGION][f"backups-{TENANT}"]
    assert site.ask(DeleteBackup(TENANT, first)).state == "deleting"
    site.advance(60)
    assert [b.id for b in site.ask(ListBackups(TENANT))] == [second]
    assert isinstance(failed(site.ask, GetBackup(TENANT, first)), NotFound)
    assert len(bucket) == 2  # the full backup's data is still needed
    new = restore(site, second, None)
    assert read(site, A, new, 0, 2 * MIB) == b"1" * MIB + b"2" * MIB
    site.ask(DeleteBackup(TENANT, second))
    site.advance(60)
    assert site.ask(ListBackups(TENANT)) == [] and len(bucket) == 0
    assert site.run(site.model.block_store(A).get_volume, vol.id).snapshots == ()


def test_ten1_a_tenant_sees_only_its_backups(site: Site) -> None:
    first = backup(site, site.volume(A, 10).id)
    assert isinstance(failed(site.ask, GetBackup("other", first), site.backups), NotFound)
    assert isinstance(failed(site.ask, DeleteBackup("other", first), site.backups), NotFound)
    assert site.ask(ListBackups("other"), to=site.backups) == []


# -- CSBS-1: server backups ---------------------------------------------------------------------
def test_csbs1_a_server_backup_holds_all_its_volumes_at_one_point_in_time(site: Site) -> None:
    disk, data = site.server_with_volumes(A, "s1", (20, 50))
    write(site, A, disk.id, 0, b"disk-1")
    write(site, A, data.id, 0, b"data-1")
    site.model.set_workload(A, disk.id, 2 * GIB, 0.0)  # its export takes a while
    view = site.ask(CreateServerBackup(TENANT, "s1"))
    assert [p.volume_id for p in view.parts] == [disk.id, data.id]
    site.advance(5.0)  # snapshots taken, exports running
    taken = site.ask(GetBackup(TENANT, view.id))
    assert taken.state == "creating" and taken.taken_at is not None
    write(site, A, data.id, 0, b"data-2")  # after the point in time: not in the backup
    write(site, A, disk.id, 0, b"disk-2")
    done = site.until_settled(view.id)
    assert done.state == "available" and [p.base for p in done.parts] == [None, None]
    restored = {p.volume_id: restore(site, view.id, None, az=B, source=p.volume_id) for p in done.parts}
    assert read(site, B, restored[disk.id], 0, 6) == b"disk-1" and read(site, B, restored[data.id], 0, 6) == b"data-1"
    second = site.ask(CreateServerBackup(TENANT, "s1"))
    assert [p.base for p in site.until_settled(second.id).parts] == [view.id, view.id]
    err = failed(site.ask, RestoreBackup(TENANT, view.id, None, B))
    assert isinstance(err, InvalidRequest) and "source_volume_id" in str(err)


def test_csbs1_five_server_jobs_at_once_in_their_own_queue(site: Site) -> None:
    for i in range(6):
        disk, = site.server_with_volumes(A, f"s{i}", (10,))
        site.model.set_workload(A, disk.id, GIB, 0.0)
    vol = site.volume(B, 10)
    servers = [site.ask(CreateServerBackup(TENANT, f"s{i}")) for i in range(6)]
    lone = site.ask(CreateBackup(TENANT, vol.id))
    states = [site.ask(GetBackup(TENANT, v.id)).state for v in servers]
    assert states == ["creating"] * 5 + ["queued"]
    assert site.ask(GetBackup(TENANT, lone.id)).state == "creating"  # the volume backup queue is another
    for v in servers:
        assert site.until_settled(v.id).state == "available"


def test_csbs1_one_policy_per_server(site: Site) -> None:
    site.server_with_volumes(A, "s1", (10,))
    daily = site.ask(CreateBackupPolicy(TENANT, "daily", 24))
    weekly = site.ask(CreateBackupPolicy(TENANT, "weekly", 168))
    site.ask(BindBackupPolicy(TENANT, daily, server_id="s1"))
    err = failed(site.ask, BindBackupPolicy(TENANT, weekly, server_id="s1"))
    assert isinstance(err, Conflict) and daily in str(err)
    assert isinstance(failed(site.ask, BindBackupPolicy(TENANT, weekly, server_id="nope")), NotFound)


# -- CBR-1: policies and retention -----------------------------------------------------------------
def test_cbr1_retention_by_count(site: Site) -> None:
    """An hourly policy keeping 3: after 6 h the 3 newest remain; the oldest of them still
    restores, from its hidden bases (write k happens between backups k-1 and k)."""
    vol = site.volume(A, 10)
    policy = site.ask(CreateBackupPolicy(TENANT, "hourly", 1, retain_count=3))
    site.ask(BindBackupPolicy(TENANT, policy, volume_id=vol.id))
    for hour in range(1, 7):
        site.advance(1800)
        write(site, A, vol.id, hour * MIB, bytes([hour]) * 1024)
        site.advance(1800)
    site.advance(60)
    listed = site.ask(ListBackups(TENANT))
    assert all(b.policy == policy and b.state == "available" for b in listed)
    assert [round(b.requested_at / 3600) for b in listed] == [4, 5, 6]
    new = restore(site, listed[0].id, None)
    assert [read(site, A, new, h * MIB, 1024) for h in range(1, 6)] == [bytes([h]) * 1024 for h in range(1, 5)] + [
        bytes(1024)]


def test_cbr1_retention_by_age_and_policy_end(site: Site) -> None:
    vol = site.volume(A, 10)
    policy = site.ask(CreateBackupPolicy(TENANT, "2h", 2, retain_days=0.2))
    site.ask(BindBackupPolicy(TENANT, policy, volume_id=vol.id))
    site.advance(12 * 3600 + 60)
    listed = site.ask(ListBackups(TENANT))
    assert [round(b.requested_at / 3600) for b in listed] == [8, 10, 12]  # none older than 4.8 h
    site.ask(DeleteBackupPolicy(TENANT, policy))
    site.advance(24 * 3600)
    assert len(site.ask(ListBackups(TENANT))) == 3  # no more backups, and the kept ones stay


def test_cbr1_a_policy_drops_a_deleted_volume(site: Site) -> None:
    vol = site.volume(A, 10)
    policy = site.ask(CreateBackupPolicy(TENANT, "hourly", 1, retain_count=2))
    site.ask(BindBackupPolicy(TENANT, policy, volume_id=vol.id))
    site.advance(3600 + 60)
    site.ask(DeleteVolume(TENANT, vol.id))
    site.advance(3600)
    assert [f["target"] for _, _, f in site.kinds("BackupPolicyUnbound")] == [vol.id]
    assert len(site.ask(ListBackups(TENANT))) == 1


def test_timing_of_a_backup_follows_the_bandwidth() -> None:
    timing = StorageTiming(backup_bps=1e8)
    with Site(timing=timing) as s:
        vol = s.volume(A, 10)
        s.model.set_workload(A, vol.id, GIB, 0.0)
        start = s.now
        backup(s, vol.id)
        [(t, _, _)] = s.kinds("BackupCreated")
        assert t - start == pytest.approx(2 * timing.rpc_s + timing.snapshot_s + GIB / 1e8 + timing.rpc_s)


def test_the_backup_transition_table_names_the_state_and_the_allowed_user_actions() -> None:
    for state, row in TRANSITIONS.items():
        for action in USER_ACTIONS - set(row):
            with pytest.raises(InvalidTransition) as info:
                transition("b1", state, action)
            assert info.value.state == state.value
            assert set(info.value.allowed) == {a.value for a in row if a in USER_ACTIONS}
    assert transition("b1", BackupState.ERROR, BackupAction.RETRY) is BackupState.QUEUED

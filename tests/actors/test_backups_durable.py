"""The backup service's state survives a restart (issue 5; VBS-1, VBS-2, CSBS-1, CBR-1).

`ExportBackups` on one service, then `ImportBackups` into a new one on the same stores (the
old one is stopped first, as a killed daemon's is): the tenant sees the same backups, chains
go on from the imported heads, creates in flight become error and free their chain, deletes
and restores in flight are run again, and policies keep their schedule.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.backups import (
    BackupLimits,
    BackupService,
    BindBackupPolicy,
    CreateBackup,
    CreateBackupPolicy,
    CreateServerBackup,
    DeleteBackup,
    ExportBackups,
    GetBackup,
    GetBackupStats,
    ImportBackups,
    ListBackups,
    RestoreBackup,
)
from actors.volumes import EndRestore, GetVolume
from runtime.actor import ActorRef
from runtime.errors import Conflict, InvalidRequest
from sim.storage import StorageTiming
from tests.actors.storage_site import AZS, REGION, TENANT, A, B, Site, failed
from tests.actors.test_backups import MIB, read, write

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def site() -> Iterator[Site]:
    with Site() as s:
        yield s


def restart(site: Site, limits: BackupLimits | None = None, state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Export (unless `state` was exported earlier), stop the service (its jobs die with it), import
    into a new one, which the site then uses; returns the exported state (after a JSON round trip:
    it must be JSON-able)."""
    old = site.backups
    if state is None:
        state = json.loads(json.dumps(site.ask(ExportBackups(), to=old)))
    assert state is not None
    site.system._top[old.path].stop()
    stores = {az: site.model.block_store(az) for az in AZS}
    new: ActorRef = site.system.spawn(
        lambda: BackupService(site.model.object_store(REGION), stores, site.volumes, limits), f"{old.path}-next")
    site.driver.advance(to=site.env.now)
    site.backups = new
    assert site.ask(ImportBackups(state), to=new) == len(state["backups"])
    return state


def backup(site: Site, volume_id: str) -> str:
    """Back a volume up through the site's current service and wait until it is available."""
    view = site.ask(CreateBackup(TENANT, volume_id), to=site.backups)
    return settle(site, view.id)


def views(site: Site) -> list[Any]:
    return list(site.ask(ListBackups(TENANT), to=site.backups))


def settle(site: Site, backup_id: str) -> str:
    view = site.until_settled(backup_id)
    assert view.state == "available", view.error
    return backup_id


def test_vbs1_export_import_keeps_every_backup_chain_and_hidden_base(site: Site) -> None:
    """Same ListBackups/GetBackup views after the import, and the same exported state; a hidden
    base (deleted, still needed) stays hidden and restorable through its dependent."""
    vol = site.volume(A, 10)
    write(site, A, vol.id, 0, b"1" * MIB)
    first = backup(site, vol.id)
    write(site, A, vol.id, MIB, b"2" * MIB)
    second = backup(site, vol.id)
    site.ask(DeleteBackup(TENANT, first), to=site.backups)
    site.advance(60)
    site.server_with_volumes(B, "s1", (10, 20))
    srv = site.ask(CreateServerBackup(TENANT, "s1"), to=site.backups)
    settle(site, srv.id)
    before = views(site)
    assert [v.id for v in before] == [second, srv.id]
    state = restart(site)
    assert len(state["backups"]) == 3  # the hidden base is kept
    assert views(site) == before
    assert [site.ask(GetBackup(TENANT, v.id), to=site.backups) for v in before] == before
    assert site.ask(ExportBackups(), to=site.backups) == state
    # the chains go on from the imported heads (their snapshots are still the bases)
    write(site, A, vol.id, 2 * MIB, b"3" * MIB)
    third = backup(site, vol.id)
    assert site.ask(GetBackup(TENANT, third), to=site.backups).parts[0].base == second
    target = site.volume(B, 10)
    job = site.ask(RestoreBackup(TENANT, third, target.id, B), to=site.backups)
    assert job.backup.state == "restoring"
    site.advance(600)
    assert read(site, B, target.id, 0, 3 * MIB) == b"1" * MIB + b"2" * MIB + b"3" * MIB
    again = site.ask(CreateServerBackup(TENANT, "s1"), to=site.backups)
    assert {p.base for p in settle_view(site, again.id).parts} == {srv.id}


def settle_view(site: Site, backup_id: str) -> Any:
    view = site.until_settled(backup_id)
    assert view.state == "available", view.error
    return view


def test_vbs2_a_create_in_flight_becomes_error_and_the_next_backup_chains_on_the_head() -> None:
    """A backup being created (and one queued behind it) when the state was exported is error
    after the import, with the reason; its reservation and its chain are free again, what its
    attempt left is removed, and the next backup is a diff from the last complete one."""
    limits = BackupLimits(running_per_tenant=1)
    with Site(limits=limits, timing=StorageTiming(backup_bps=1e6)) as site:
        vol, other = site.volume(A, 10), site.volume(A, 10)
        write(site, A, vol.id, 0, b"x" * MIB)
        first = backup(site, vol.id)
        write(site, A, vol.id, MIB, b"y" * (8 * MIB))
        creating = site.ask(CreateBackup(TENANT, vol.id), to=site.backups)
        queued = site.ask(CreateBackup(TENANT, other.id), to=site.backups)
        site.advance(2)
        assert site.ask(GetBackup(TENANT, creating.id), to=site.backups).state == "creating"
        assert site.ask(GetBackup(TENANT, queued.id), to=site.backups).state == "queued"
        state = restart(site, limits)
        assert {b["state"] for b in state["backups"] if b["id"] != first} == {"creating", "queued"}
        for bid in (creating.id, queued.id):
            view = site.ask(GetBackup(TENANT, bid), to=site.backups)
            assert view.state == "error" and view.retry_at is None and "restarted" in (view.error or "")
        assert site.ask(GetBackupStats(), to=site.backups).failed == 2
        exported = site.ask(ExportBackups(), to=site.backups)
        assert all(b["reserved_gb"] == 0 for b in exported["backups"])
        assert exported["heads"] == {vol.id: {vol.id: first}}
        nxt = backup(site, vol.id)
        assert site.ask(GetBackup(TENANT, nxt), to=site.backups).parts[0].base == first
        assert backup(site, other.id)
        site.advance(60)
        bucket = site.model.buckets[REGION][f"backups-{TENANT}"]
        assert f"{vol.id}/{creating.id}" not in bucket
        snaps = site.run(site.model.block_store(A).get_volume, vol.id).snapshots
        assert len(snaps) == 1  # only the new head's: the interrupted attempt's is gone
        new = site.ask(RestoreBackup(TENANT, nxt, other.id), to=site.backups)
        site.advance(600)
        assert read(site, A, new.volume_id, 0, 9 * MIB) == b"x" * MIB + b"y" * (8 * MIB)
        # the interrupted ones can be deleted as any backup in error
        site.ask(DeleteBackup(TENANT, creating.id), to=site.backups)
        site.advance(60)
        assert creating.id not in {v.id for v in views(site)}


def test_vbs1_a_create_done_after_the_last_save_restarts_its_chain_with_a_full_backup() -> None:
    """Killed between a backup's end and the next save: the saved state shows it creating, but it
    already dropped the previous head's snapshot. After the import it is error, and the next
    backup of the volume is full (not a diff from a snapshot that is gone), and restores."""
    with Site(timing=StorageTiming(backup_bps=1e6)) as site:
        vol = site.volume(A, 10)
        write(site, A, vol.id, 0, b"p" * MIB)
        first = backup(site, vol.id)
        write(site, A, vol.id, MIB, b"q" * MIB)
        late = site.ask(CreateBackup(TENANT, vol.id), to=site.backups)
        site.advance(1)
        saved = json.loads(json.dumps(site.ask(ExportBackups(), to=site.backups)))
        assert settle(site, late.id)  # done in the old service, after the save
        site.advance(5)  # and the previous head's snapshot dropped
        assert len(site.run(site.model.block_store(A).get_volume, vol.id).snapshots) == 1
        restart(site, state=saved)
        assert site.ask(GetBackup(TENANT, late.id), to=site.backups).state == "error"
        assert [f["backup"] for _, _, f in site.kinds("BackupChainRestarted")] == [first]
        nxt = backup(site, vol.id)
        assert site.ask(GetBackup(TENANT, nxt), to=site.backups).parts[0].base is None
        target = site.volume(A, 10)
        site.ask(RestoreBackup(TENANT, nxt, target.id), to=site.backups)
        site.advance(600)
        assert read(site, A, target.id, 0, 2 * MIB) == b"p" * MIB + b"q" * MIB
        # the older backup still restores from its own (full) object
        site.ask(RestoreBackup(TENANT, first, target.id), to=site.backups)
        site.advance(600)
        assert read(site, A, target.id, 0, 2 * MIB) == b"p" * MIB + bytes(MIB)


def test_vbs2_a_create_waiting_for_its_retry_becomes_error_for_good(site: Site) -> None:
    """A create that failed once (AZ outage) and waits for its retry is not retried by the new
    service: error with no retry due, and the volume can be backed up again."""
    vol = site.volume(A, 10)
    site.model.fail_az(A)
    waiting = site.ask(CreateBackup(TENANT, vol.id), to=site.backups)
    site.advance(60)
    assert site.ask(GetBackup(TENANT, waiting.id), to=site.backups).retry_at is not None
    restart(site)
    site.model.restore_az(A)
    site.advance(2 * 600)
    view = site.ask(GetBackup(TENANT, waiting.id), to=site.backups)
    assert view.state == "error" and view.retry_at is None and "restarted" in (view.error or "")
    assert site.ask(GetBackup(TENANT, backup(site, vol.id)), to=site.backups).parts[0].base is None


def test_a_delete_in_flight_is_finished_after_the_import(site: Site) -> None:
    vol = site.volume(A, 10)
    write(site, A, vol.id, 0, b"d" * MIB)
    gone = backup(site, vol.id)
    assert site.ask(DeleteBackup(TENANT, gone), to=site.backups).state == "deleting"
    state = restart(site)
    assert [b["state"] for b in state["backups"]] == ["deleting"]
    site.advance(60)
    assert views(site) == []
    assert site.model.buckets[REGION][f"backups-{TENANT}"] == {}
    assert site.run(site.model.block_store(A).get_volume, vol.id).snapshots == ()


def test_vbs1_a_restore_in_flight_is_run_again_after_the_import() -> None:
    with Site(timing=StorageTiming(backup_bps=1e6, gateway_bps=1e6)) as site:
        vol, target = site.volume(A, 10), site.volume(A, 10)
        write(site, A, vol.id, 0, b"r" * (4 * MIB))
        bid = backup(site, vol.id)
        write(site, A, target.id, 0, b"z" * (4 * MIB))
        site.ask(RestoreBackup(TENANT, bid, target.id), to=site.backups)
        site.advance(1)
        assert site.ask(GetVolume(TENANT, target.id)).state == "restoring"
        state = _restart_with_fresh_volume(site, target.id)
        assert state["restores"] == [{"backup": bid, "volume_id": target.id, "az": A, "source": vol.id}]
        assert site.ask(GetBackup(TENANT, bid), to=site.backups).state == "restoring"
        site.advance(600)
        assert site.ask(GetVolume(TENANT, target.id)).state == "available"
        assert site.ask(GetBackup(TENANT, bid), to=site.backups).state == "available"
        assert read(site, A, target.id, 0, 4 * MIB) == b"r" * (4 * MIB)


def _restart_with_fresh_volume(site: Site, volume_id: str) -> dict[str, Any]:
    """As `restart`; the daemon's volume services come back with the volume not restoring (it is
    adopted): here its service is told the interrupted restore ended."""
    old = site.backups
    state = json.loads(json.dumps(site.ask(ExportBackups(), to=old)))
    site.system._top[old.path].stop()
    site.ask(EndRestore(volume_id, False), to=site.volumes[A])
    stores = {az: site.model.block_store(az) for az in AZS}
    new: ActorRef = site.system.spawn(
        lambda: BackupService(site.model.object_store(REGION), stores, site.volumes, None), f"{old.path}-next")
    site.driver.advance(to=site.env.now)
    site.backups = new
    site.ask(ImportBackups(state), to=new)
    return state


def test_cbr1_policy_timers_restart_from_the_imported_schedule(site: Site) -> None:
    vol = site.volume(A, 10)
    t0 = site.now
    policy = site.ask(CreateBackupPolicy(TENANT, "hourly", 1, retain_count=2), to=site.backups)
    site.ask(BindBackupPolicy(TENANT, policy, volume_id=vol.id), to=site.backups)
    site.advance(1800)
    state = restart(site)
    assert state["policies"][0]["targets"] == {vol.id: False}
    assert state["policies"][0]["next_at"] == pytest.approx(t0 + 3600)
    site.advance(3 * 3600 + 60)
    listed = views(site)
    assert [b.requested_at - t0 for b in listed] == pytest.approx([2 * 3600, 3 * 3600])  # on the hour, 2 kept
    # the binding is back: one policy per volume (CSBS-1)
    other = site.ask(CreateBackupPolicy(TENANT, "daily", 24), to=site.backups)
    assert isinstance(failed(site.ask, BindBackupPolicy(TENANT, other, volume_id=vol.id), site.backups), Conflict)


def test_import_is_refused_into_a_service_that_holds_anything_and_for_a_malformed_state(site: Site) -> None:
    vol = site.volume(A, 10)
    bid = backup(site, vol.id)
    state = site.ask(ExportBackups(), to=site.backups)
    assert isinstance(failed(site.ask, ImportBackups(state), site.backups), Conflict)
    assert [v.id for v in views(site)] == [bid]
    stores = {az: site.model.block_store(az) for az in AZS}
    fresh: ActorRef = site.system.spawn(
        lambda: BackupService(site.model.object_store(REGION), stores, site.volumes), "fresh")
    site.driver.advance(to=site.env.now)
    bad = {**state, "backups": [{**state["backups"][0], "state": "lost"}]}
    err = failed(site.ask, ImportBackups(bad), fresh)
    assert isinstance(err, InvalidRequest) and "backups[0]" in str(err)
    dangling = {**state, "heads": {vol.id: {vol.id: "nope"}}}
    assert isinstance(failed(site.ask, ImportBackups(dangling), fresh), InvalidRequest)
    assert site.ask(ExportBackups(), to=fresh)["backups"] == []  # nothing half-loaded
    assert site.ask(ImportBackups(state), to=fresh) == 1


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["backup", "delete"]), st.integers(0, 1), st.integers(0, 5)),
                max_size=8))
def test_property_export_import_round_trip(ops: list[tuple[str, int, int]]) -> None:
    """Any settled history of backups and deletes (VBS-1): import(export(s)) lists the same views
    and exports the same state."""
    with Site() as site:
        vols = [site.volume(A, 10).id, site.volume(B, 10).id]
        for op, v, pick in ops:
            if op == "backup":
                write(site, A if v == 0 else B, vols[v], pick * MIB, bytes([pick + 1]) * 1024)
                backup(site, vols[v])
            else:
                listed = views(site)
                if listed:
                    site.ask(DeleteBackup(TENANT, listed[pick % len(listed)].id), to=site.backups)
                    site.advance(60)
        before = views(site)
        state = restart(site)
        assert views(site) == before
        assert site.ask(ExportBackups(), to=site.backups) == state

"""EVS volumes (EVS-1, EVS-2), system disks of servers (ECS-3) and volume quotas (TEN-3).

Volume requests run on the SimDriver against the SimPy storage model (`storage_site.Site`
for the volume service and tenant alone, the property harness's `Cloud` for whole
servers); the block store is the truth each test checks the control plane against.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from actors.tenant import CreateServer, GetQuotas, ListServers, RemoveServer
from actors.volumes import (
    TRANSITIONS,
    USER_ACTIONS,
    AttachVolume,
    CreateVolume,
    DeleteVolume,
    DetachVolume,
    EndRestore,
    ExpandVolume,
    GetVolume,
    ListVolumes,
    RegisterServer,
    ServerVolumes,
    SetProtection,
    StartRestore,
    VolumeAction,
    VolumeState,
    VolumeView,
    transition,
)
from runtime.errors import Conflict, InvalidRequest, InvalidTransition, NoCapacity, NotFound, QuotaExceeded
from runtime.storage import ResidencyViolation, StoreUnavailable, VolumeKind
from tests.actors.storage_site import AZS, TENANT, A, B, C, Site, failed
from tests.properties.harness import Cloud, CloudConfig

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def site() -> Iterator[Site]:
    with Site() as s:
        yield s


def quotas(site: Site) -> dict[str, int]:
    return dict(site.ask(GetQuotas()).used)


# -- EVS-1: types and sizes ------------------------------------------------------------
@pytest.mark.parametrize(("bootable", "size", "ok"), [
    (True, 1, True), (True, 0, False), (True, 32768, True), (True, 32769, False),
    (False, 10, True), (False, 9, False), (False, 32768, True), (False, 32769, False),
])
def test_evs1_sizes_at_the_limits_and_just_outside(bootable: bool, size: int, ok: bool) -> None:
    """A system disk has 1 GB to 32 TB, a data disk 10 GB to 32 TB; outside, the error names
    the field, the value and the range, and nothing is created (quota high enough for 32 TB)."""
    with Site(quotas={"gigabytes": 40000}) as s:
        msg = CreateVolume(TENANT, A, size, VolumeKind.SSD, bootable)
        if ok:
            view = s.ask(msg)
            assert (view.size_gb, view.state, view.bootable) == (size, "available", bootable)
            assert s.run(s.model.block_store(A).get_volume, view.id).size_gb == size
            return
        err = failed(s.ask, msg)
        assert isinstance(err, InvalidRequest)
        low = 1 if bootable else 10
        assert f"size_gb = {size}" in str(err) and f"{low} to 32768 GB" in str(err) and "EVS-1" in str(err)
        assert s.model.volume_ids(A) == set() and quotas(s)["volumes"] == 0 and quotas(s)["gigabytes"] == 0


def test_evs1_types_are_sata_and_ssd(site: Site) -> None:
    assert site.ask(CreateVolume(TENANT, A, 10, "SSD")).kind is VolumeKind.SSD
    err = failed(site.ask, CreateVolume(TENANT, A, 10, "NVMe"))
    assert isinstance(err, InvalidRequest) and "'NVMe'" in str(err) and "SATA, SSD" in str(err)


# -- EVS-2: expand, attach, detach, delete -----------------------------------------------
def test_evs2_expand_grows_available_and_in_use_volumes_never_shrinks(site: Site) -> None:
    vol = site.volume(A, 20)
    assert site.ask(ExpandVolume(TENANT, vol.id, 30)).size_gb == 30
    assert site.run(site.model.block_store(A).get_volume, vol.id).size_gb == 30
    for smaller in (30, 25):
        err = failed(site.ask, ExpandVolume(TENANT, vol.id, smaller))
        assert isinstance(err, InvalidRequest) and "never shrunk" in str(err) and "more than 30 GB" in str(err)
    site.ask(RegisterServer(TENANT, "s1"), to=site.volumes[A])
    site.ask(AttachVolume(TENANT, vol.id, "s1"), to=site.volumes[A])
    view = site.ask(ExpandVolume(TENANT, vol.id, 40))
    assert (view.size_gb, view.state, view.server_id) == (40, "in-use", "s1")  # back to where it was
    assert quotas(site)["gigabytes"] == 40


def test_evs2_a_volume_is_extending_while_the_store_works(site: Site) -> None:
    vol = site.volume(A, 20)
    pending = site.send(ExpandVolume(TENANT, vol.id, 30))
    assert site.ask(GetVolume(TENANT, vol.id)).state == "extending"
    err = failed(site.ask, DeleteVolume(TENANT, vol.id))
    assert isinstance(err, Conflict)  # the tenant holds the volume while its expand runs
    err = failed(site.ask, DeleteVolume(TENANT, vol.id), site.volumes[A])
    assert isinstance(err, InvalidTransition) and err.state == "extending" and err.allowed == ()
    assert site.result(pending).state == "available"


def test_evs2_attach_and_detach_transitions(site: Site) -> None:
    vs = site.volumes[A]
    site.ask(RegisterServer(TENANT, "s1"), to=vs)
    site.ask(RegisterServer(TENANT, "s2"), to=vs)
    vol = site.volume(A)
    view = site.ask(AttachVolume(TENANT, vol.id, "s1"), to=vs)
    assert (view.state, view.server_id) == ("in-use", "s1")
    err = failed(site.ask, AttachVolume(TENANT, vol.id, "s2"), vs)
    assert isinstance(err, InvalidTransition)
    assert (err.state, err.action, err.allowed) == ("in-use", "attach", ("detach", "expand"))
    assert [v.id for v in site.ask(ServerVolumes("s1"), to=vs)] == [vol.id]
    view = site.ask(DetachVolume(TENANT, vol.id))
    assert (view.state, view.server_id) == ("available", None)
    err = failed(site.ask, DetachVolume(TENANT, vol.id))
    assert isinstance(err, InvalidTransition) and err.state == "available"
    assert site.ask(ServerVolumes("s1"), to=vs) == []


def test_evs2_attach_only_to_a_known_server_of_the_az_and_one_system_disk(site: Site) -> None:
    site.ask(RegisterServer(TENANT, "s1"), to=site.volumes[A])
    site.ask(RegisterServer("other", "s9"), to=site.volumes[A])
    in_b = site.volume(B)
    err = failed(site.ask, AttachVolume(TENANT, in_b.id, "s1"), site.volumes[B])
    assert isinstance(err, NotFound) and "s1 in eu-west-0b" in str(err)
    data = site.volume(A)
    assert isinstance(failed(site.ask, AttachVolume(TENANT, data.id, "s9"), site.volumes[A]), NotFound)  # TEN-1
    disk1, disk2 = site.volume(A, 10, bootable=True), site.volume(A, 10, bootable=True)
    site.ask(AttachVolume(TENANT, data.id, "s1"), to=site.volumes[A])
    site.ask(AttachVolume(TENANT, disk1.id, "s1"), to=site.volumes[A])
    err = failed(site.ask, AttachVolume(TENANT, disk2.id, "s1"), site.volumes[A])
    assert isinstance(err, Conflict) and "one system disk" in str(err)
    assert [v.id for v in site.ask(ServerVolumes("s1"), to=site.volumes[A])] == [disk1.id, data.id]


def test_evs2_delete_only_when_available_and_not_protected(site: Site) -> None:
    vs = site.volumes[A]
    site.ask(RegisterServer(TENANT, "s1"), to=vs)
    vol = site.volume(A, 20)
    site.ask(AttachVolume(TENANT, vol.id, "s1"), to=vs)
    err = failed(site.ask, DeleteVolume(TENANT, vol.id))
    assert isinstance(err, InvalidTransition) and err.state == "in-use"
    site.ask(SetProtection(vol.id, "pg-1"), to=vs)
    for msg in (DetachVolume(TENANT, vol.id), DeleteVolume(TENANT, vol.id)):
        err = failed(site.ask, msg)
        assert isinstance(err, Conflict) and "pg-1" in str(err)
    site.ask(SetProtection(vol.id, None), to=vs)
    site.ask(DetachVolume(TENANT, vol.id))
    site.run(site.model.block_store(A).create_snapshot, vol.id, "leftover")  # deleted with the volume
    assert site.ask(DeleteVolume(TENANT, vol.id)) is None
    assert site.model.volume_ids(A) == set()
    assert isinstance(failed(site.ask, GetVolume(TENANT, vol.id)), NotFound)
    assert quotas(site)["volumes"] == 0 and quotas(site)["gigabytes"] == 0


def test_restore_needs_an_available_volume_large_enough(site: Site) -> None:
    vs = site.volumes[A]
    vol = site.volume(A, 20)
    err = failed(site.ask, StartRestore(TENANT, vol.id, 30), vs)
    assert isinstance(err, InvalidRequest) and "expand it to at least 30 GB" in str(err)
    assert site.ask(StartRestore(TENANT, vol.id, 20), to=vs).state == "restoring"
    site.ask(RegisterServer(TENANT, "s1"), to=vs)
    err = failed(site.ask, AttachVolume(TENANT, vol.id, "s1"), vs)
    assert isinstance(err, InvalidTransition) and err.state == "restoring"
    assert site.ask(EndRestore(vol.id, False), to=vs).state == "error"
    assert site.ask(StartRestore(TENANT, vol.id, 20), to=vs).state == "restoring"  # a failed restore may be redone
    assert site.ask(EndRestore(vol.id, True), to=vs).state == "available"


def test_the_transition_table_names_the_state_and_the_allowed_user_actions() -> None:
    for state, row in TRANSITIONS.items():
        for action in USER_ACTIONS - set(row):
            with pytest.raises(InvalidTransition) as info:
                transition("v1", state, action)
            assert info.value.state == state.value
            assert set(info.value.allowed) == {a.value for a in row if a in USER_ACTIONS}
    assert transition("v1", VolumeState.EXTENDING, VolumeAction.DONE, VolumeState.IN_USE) is VolumeState.IN_USE


# -- failures leave nothing; TEN-1, TEN-3 ---------------------------------------------------
def test_a_failed_create_leaves_no_volume_and_gives_the_quota_back(site: Site) -> None:
    site.model.fail_az(A)
    err = failed(site.volume, A)
    assert isinstance(err, StoreUnavailable)
    site.model.restore_az(A)
    site.advance(60)  # the best-effort clean-up has run
    assert site.ask(ListVolumes(TENANT)) == [] and site.model.volume_ids(A) == set()
    assert quotas(site)["volumes"] == 0 and quotas(site)["gigabytes"] == 0
    assert site.volume(A).state == "available"


def test_ten3_volume_quotas_refuse_and_create_nothing() -> None:
    with Site(quotas={"volumes": 2, "gigabytes": 50}) as s:
        s.volume(A, 20)
        err = failed(s.volume, A, 40)
        assert isinstance(err, QuotaExceeded) and (err.resource, err.limit, err.used, err.requested) == (
            "gigabytes", 50, 20, 40)
        s.volume(B, 30)
        err = failed(s.volume, C, 10)
        assert isinstance(err, QuotaExceeded) and (err.resource, err.limit, err.used) == ("volumes", 2, 2)
        assert s.model.volume_ids(C) == set() and len(s.ask(ListVolumes(TENANT))) == 2
        vol = s.ask(ListVolumes(TENANT))[0]
        err = failed(s.ask, ExpandVolume(TENANT, vol.id, vol.size_gb + 1))
        assert isinstance(err, QuotaExceeded) and err.resource == "gigabytes"
        assert s.ask(GetVolume(TENANT, vol.id)).size_gb == vol.size_gb


def test_ten1_a_tenant_sees_only_its_volumes(site: Site) -> None:
    vol = site.volume(A)
    assert isinstance(failed(site.ask, GetVolume("other", vol.id), site.volumes[A]), NotFound)
    assert site.ask(ListVolumes("other"), to=site.volumes[A]) == []
    assert isinstance(failed(site.ask, GetVolume("other", vol.id)), InvalidRequest)  # sent to acme's actor


def test_geo3_a_volume_in_another_region_is_refused(site: Site) -> None:
    err = failed(site.volume, "eu-west-1a")
    assert isinstance(err, ResidencyViolation) and "eu-west-0" in str(err) and "eu-west-1" in str(err)
    assert isinstance(failed(site.volume, "mars-1a"), InvalidRequest)


# -- ECS-3: system disks of servers ------------------------------------------------------------
CONFIG = CloudConfig(seed=5, hosts_per_az=(2, 2, 2), host_vcpus=16, host_ram_mb=65536, dedicated_hosts=1,
                     quotas=(("alpha", ()), ("ded", ())))


def volumes_of(cloud: Cloud, tenant: str) -> list[VolumeView]:
    out = cloud.ask(tenant, ListVolumes(tenant))
    assert out.ok, out.error
    views: list[VolumeView] = out.value
    return views


def test_ecs3_a_server_gets_a_system_volume_and_its_deletion_removes_it() -> None:
    with Cloud(CONFIG) as cloud:
        out = cloud.ask("alpha", CreateServer("web", "s3.large.2", AZS[0]))
        assert out.ok, out.error
        sid = out.value
        [disk] = volumes_of(cloud, "alpha")
        assert (disk.server_id, disk.bootable, disk.size_gb, disk.kind, disk.state) == (
            sid, True, 40, VolumeKind.SATA, "in-use")
        assert cloud.storage.volume_ids(AZS[0]) == {disk.id}
        [server] = cloud.servers("alpha")
        assert server.system_volume == disk.id
        data = cloud.ask("alpha", CreateVolume("alpha", AZS[0], 100)).value
        assert cloud.ask("alpha", AttachVolume("alpha", data.id, sid)).ok
        assert {k: cloud.quotas("alpha").used[k] for k in ("volumes", "gigabytes")} == {"volumes": 2, "gigabytes": 140}
        assert cloud.ask("alpha", RemoveServer(sid)).ok
        [left] = volumes_of(cloud, "alpha")
        assert (left.id, left.state, left.server_id) == (data.id, "available", None)  # data volumes are detached
        assert cloud.storage.volume_ids(AZS[0]) == {data.id}
        assert {k: cloud.quotas("alpha").used[k] for k in ("volumes", "gigabytes")} == {"volumes": 1, "gigabytes": 100}


def test_ecs3_a_refused_placement_leaves_no_volume() -> None:
    with Cloud(CONFIG) as cloud:
        out = cloud.ask("alpha", CreateServer("web", "s3.large.2", AZS[1], dedicated=True))
        assert isinstance(out.error, NoCapacity)
        assert volumes_of(cloud, "alpha") == [] and cloud.storage.volume_ids(AZS[1]) == set()
        assert cloud.quotas("alpha").used["volumes"] == 0 and cloud.quotas("alpha").used["gigabytes"] == 0
        assert any('"kind":"VolumeDeleted"' in line for line in cloud.lines.getvalue().splitlines())


def test_ecs3_system_disk_size_and_type_from_the_request() -> None:
    with Cloud(CONFIG) as cloud:
        out = cloud.ask("alpha", CreateServer("tiny", "s3.small.1", AZS[0], system_disk_gb=0))
        assert isinstance(out.error, InvalidRequest) and "system (bootable) disk" in str(out.error)
        assert cloud.servers("alpha") == [] and cloud.storage.volume_ids(AZS[0]) == set()
        assert cloud.ask("alpha", CreateServer("tiny", "s3.small.1", AZS[0], system_disk_gb=1,
                                               system_disk_kind="SSD")).ok
        [disk] = volumes_of(cloud, "alpha")
        assert (disk.size_gb, disk.kind) == (1, VolumeKind.SSD)


def test_ecs3_a_local_disk_is_not_a_volume() -> None:
    with Cloud(CONFIG) as cloud:
        assert cloud.ask("alpha", CreateServer("big", "d2.xlarge.8", AZS[0])).ok
        [disk] = volumes_of(cloud, "alpha")  # the system disk only; the 3600 GB local disk lives on the host
        assert disk.size_gb == 40 and cloud.quotas("alpha").used["gigabytes"] == 40


def test_ten3_ecs3_the_volume_quota_limits_servers_too() -> None:
    config = CloudConfig(seed=5, hosts_per_az=(2, 2, 2), host_vcpus=16, host_ram_mb=65536, dedicated_hosts=1,
                         quotas=(("alpha", (("volumes", 1),)),))
    with Cloud(config) as cloud:
        assert cloud.ask("alpha", CreateServer("one", "s3.small.1", AZS[0])).ok
        out = cloud.ask("alpha", CreateServer("two", "s3.small.1", AZS[0]))
        assert isinstance(out.error, QuotaExceeded) and out.error.resource == "volumes"
        assert len(cloud.servers("alpha")) == 1 and cloud.quotas("alpha").used["instances"] == 1
        assert len(cloud.storage.volume_ids(AZS[0])) == 1


def test_ecs3_evs2_volumes_attach_only_within_the_servers_az() -> None:
    with Cloud(CONFIG) as cloud:
        sid = cloud.ask("alpha", CreateServer("web", "s3.large.2", AZS[0])).value
        elsewhere = cloud.ask("alpha", CreateVolume("alpha", AZS[1], 10)).value
        out = cloud.ask("alpha", AttachVolume("alpha", elsewhere.id, sid))
        assert isinstance(out.error, InvalidRequest) and "its own AZ" in str(out.error)


def test_ecs3_a_server_with_protected_volumes_is_not_deleted() -> None:
    with Cloud(CONFIG) as cloud:
        sid = cloud.ask("alpha", CreateServer("web", "s3.large.2", AZS[0])).value
        [disk] = volumes_of(cloud, "alpha")
        region = cloud.region._cell.instance
        assert region is not None
        service = region.volumes[AZS[0]]  # type: ignore[attr-defined]
        cloud.driver.run(service.ask, SetProtection(disk.id, "pg-7"))
        out = cloud.ask("alpha", RemoveServer(sid))
        assert isinstance(out.error, Conflict) and "pg-7" in str(out.error)
        assert [s.id for s in cloud.ask("alpha", ListServers()).value] == [sid]
        assert volumes_of(cloud, "alpha")[0].state == "in-use"

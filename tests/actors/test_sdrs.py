"""sDRS protection groups (SDRS-1, SDRS-2, SDRS-3, GEO-3) on the SimPy host and storage models.

A `Site` is one simulated eu-west-0: three AZ actors on host models, one VolumeService
per AZ on the storage model, and the DisasterRecovery actor, in virtual time. The
truth of where a server runs is the host models' (`World.running_on`), never what
the control plane believes.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

import pytest
import simpy

from actors.az import AvailabilityZone, DeleteServer, ParkServer, PlaceServer, ServerCommand, UnparkServer
from actors.flavors import get_flavor
from actors.sdrs import (
    ACTIONS,
    CreateDrill,
    CreateGroup,
    DeleteDrill,
    DeleteGroup,
    DisasterRecovery,
    Failover,
    GetGroup,
    GetJob,
    GroupAction,
    GroupReport,
    GroupState,
    GroupView,
    JobAccepted,
    JobView,
    ProtectServer,
    ReportGroups,
    Reprotect,
    StartProtection,
    StopProtection,
    Switchover,
    UnprotectServer,
    allowed,
    begin,
)
from actors.topology import REGIONS, build_topology, load_regions
from actors.volumes import AttachVolume, CreateVolume, RegisterServer, ServerVolumes, VolumeService
from runtime.actor import ActorRef, ActorSystem
from runtime.errors import ConfigError, Conflict, InvalidRequest, InvalidTransition, NotFound
from runtime.events import EventLog
from runtime.ports import HostCapacity
from runtime.storage import ReplicationStatus
from sim.driver import SimDriver
from sim.hosts import World, host_ports
from sim.storage import StorageModel

REGION = "eu-west-0"
A, B, C = REGIONS[REGION].azs
TENANT = "acme"
GB = 1 << 30
HOUR = 3600.0


class Site:
    """One simulated region with sDRS, driven step by step from the test."""

    def __init__(self, hosts_per_az: dict[str, int] | None = None, vcpus: int = 8, ram_mb: int = 16384) -> None:
        self.env = simpy.Environment()
        self.driver = SimDriver(self.env)
        counts = hosts_per_az or {A: 2, B: 2, C: 2}
        self.topology = build_topology(REGIONS[REGION], counts, vcpus, ram_mb, rack_size=2, racks_per_power_domain=1)
        self.world = World(self.env)
        for h in self.topology.hosts:
            self.world.add_host(h.name, HostCapacity(h.vcpus, h.ram_mb))
        ports = host_ports(self.world, self.driver)
        self.storage = StorageModel(self.driver, {REGION: [A, B, C]})
        self.stores = {az: self.storage.block_store(az) for az in (A, B, C)}
        self.status_reads = 0
        for store in self.stores.values():
            store.replication_status = self._counted(store.replication_status)  # type: ignore[method-assign,assignment]
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        log = EventLog(lambda t, src, kind, fields: self.events.append((t, kind, fields)))
        system = ActorSystem(self.driver, 7, log)
        self.azs: dict[str, ActorRef] = {}
        self.volumes: dict[str, ActorRef] = {}
        self.sdrs: ActorRef | None = None
        stop = self.driver.event()
        self._stop = stop

        async def main() -> None:
            async with system.running():
                for az in (A, B, C):
                    hosts = self.topology.hosts_in(az)
                    self.azs[az] = system.spawn(functools.partial(
                        AvailabilityZone, az, hosts, {h.name: ports[h.name] for h in hosts}), az)
                    self.volumes[az] = system.spawn(functools.partial(VolumeService, az, self.stores[az]),
                                                    f"volumes-{az}")
                self.sdrs = system.spawn(lambda: DisasterRecovery(REGION, self.azs, self.volumes, self.stores), "sdrs")
                await stop.wait()

        self._main = self.driver.start(main)
        self.driver.advance(until=lambda: self.sdrs is not None)
        self._n = 0

    def _counted(self, read: Callable[[str], Awaitable[ReplicationStatus]]
                 ) -> Callable[[str], Coroutine[Any, Any, ReplicationStatus]]:
        async def counted(volume_id: str) -> ReplicationStatus:
            self.status_reads += 1
            return await read(volume_id)
        return counted

    # -- driving -------------------------------------------------------------------------
    def ask(self, msg: Any, to: ActorRef | None = None) -> Any:
        """Ask (the sDRS actor by default) and run until the reply; a refusal is raised here."""
        target = to or self.sdrs
        assert target is not None
        handle = self.driver.start(lambda: target.ask(msg, timeout=None))
        self.driver.advance(until=lambda: handle.done, to=self.env.now + 6 * HOUR)
        assert handle.done, f"no reply to {msg} within 6 h"
        if handle.error is not None:
            raise handle.error
        return handle.result

    def ask_all(self, msgs: list[Any], to: ActorRef | None = None) -> list[Any]:
        """Ask all at once (concurrently) and run until every reply is in."""
        target = to or self.sdrs
        assert target is not None
        handles = [self.driver.start(lambda m=m: target.ask(m, timeout=None)) for m in msgs]
        self.driver.advance(until=lambda: all(h.done for h in handles), to=self.env.now + 6 * HOUR)
        errors = [h.error for h in handles if h.error is not None]
        assert not errors, errors[:3]
        return [h.result for h in handles]

    def run(self, seconds: float) -> None:
        self.driver.advance(to=self.env.now + seconds)

    def job(self, job_id: str) -> JobView:
        view: JobView = self.ask(GetJob(job_id))
        return view

    def wait_job(self, accepted: JobAccepted, limit: float = 6 * HOUR, step: float = 10.0) -> JobView:
        end = self.env.now + limit
        while (view := self.job(accepted.job)).status == "running":
            assert self.env.now < end, f"job {view.action} still running after {limit} s: {view}"
            self.run(step)
        return view

    def group(self, group_id: str) -> GroupView:
        view: GroupView = self.ask(GetGroup(group_id))
        return view

    def until(self, cond: Callable[[], bool], limit: float = 6 * HOUR, step: float = 10.0) -> None:
        end = self.env.now + limit
        while not cond():
            assert self.env.now < end, "condition not met in time"
            self.run(step)

    # -- building ------------------------------------------------------------------------
    def server(self, az: str, tenant: str = TENANT, flavor: str = "s3.large.2", disks: int = 1,
               used_gb: float = 1.0, write_bps: float = 1e6) -> str:
        """A running server with a system disk (and `disks - 1` data disks) under a workload."""
        self._n += 1
        sid = f"{tenant}-{self._n}"
        self.ask(PlaceServer(sid, tenant, get_flavor(flavor), False, None, None, False), to=self.azs[az])
        self.ask(RegisterServer(tenant, sid), to=self.volumes[az])
        for i in range(disks):
            vol = self.ask(CreateVolume(tenant, az, 10 if i == 0 else 20, bootable=i == 0), to=self.volumes[az])
            self.ask(AttachVolume(tenant, vol.id, sid), to=self.volumes[az])
            self.storage.set_workload(az, vol.id, used_gb * GB, write_bps)
        return sid

    def create_group(self, name: str = "app", production: str = B, recovery: str = A, tenant: str = TENANT) -> str:
        accepted: JobAccepted = self.ask(CreateGroup(name, tenant, "vpc-1", production, recovery))
        assert self.wait_job(accepted).status == "success"
        return accepted.group

    def protected_group(self, servers: int = 2, production: str = B, recovery: str = A) -> tuple[str, list[str]]:
        """A group of `servers` servers whose first synchronisation completed."""
        group = self.create_group(production=production, recovery=recovery)
        sids = [self.server(production) for _ in range(servers)]
        for sid in sids:
            self.ask(ProtectServer(group, sid))
        assert self.wait_job(self.ask(StartProtection(group))).status == "success"
        self.until(lambda: self.group(group).synced_at is not None)
        return group, sids

    # -- faults --------------------------------------------------------------------------
    def fail_az(self, az: str) -> None:
        """The AZ goes dark: its hosts lose power (as sim.failures' az-outage does) and its storage is gone."""
        for h in self.topology.hosts_in(az):
            self.world.hosts[h.name].lose_power()
        self.storage.fail_az(az)

    def restore_az(self, az: str) -> None:
        for h in self.topology.hosts_in(az):
            self.world.hosts[h.name].restore_power()
        self.storage.restore_az(az)

    # -- truth ---------------------------------------------------------------------------
    def running_in(self, sid: str) -> list[str]:
        """The AZs of the hosts that run `sid` now (the host models' truth)."""
        return sorted(self.topology.domain_members(h)[0].az for h in self.world.running_on.get(sid, ()))

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [fields for _, k, fields in self.events if k == kind]

    def close(self) -> None:
        self._stop.set()
        self.driver.advance(until=lambda: self._main.done, to=self.env.now + HOUR)


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.close()


# -- the transition table ------------------------------------------------------------------
S, Act = GroupState, GroupAction
ERRORS_BUT_DELETING = {S.ERROR, S.ERROR_STARTING, S.ERROR_STOPPING, S.ERROR_REPROTECTING, S.ERROR_REVERSING,
                       S.ERROR_FAILING_OVER}
# REFERENCE "Storage disaster recovery", written out once more so that a change is deliberate:
# action -> (allowed from, state while it runs, after success, after failure)
EXPECTED: dict[GroupAction, tuple[set[GroupState], GroupState | None, GroupState | None, GroupState | None]] = {
    Act.CREATE: ({S.CREATING}, S.CREATING, S.AVAILABLE, S.ERROR),
    Act.ADD_SERVER: ({S.AVAILABLE}, None, None, None),
    Act.REMOVE_SERVER: ({S.AVAILABLE}, None, None, None),
    Act.START_PROTECTION: ({S.AVAILABLE, S.ERROR_STARTING}, S.STARTING, S.PROTECTED, S.ERROR_STARTING),
    Act.STOP_PROTECTION: ({S.PROTECTED, S.ERROR_STOPPING}, S.STOPPING, S.AVAILABLE, S.ERROR_STOPPING),
    Act.CREATE_DRILL: ({S.AVAILABLE, S.PROTECTED, S.FAILED_OVER} | ERRORS_BUT_DELETING, None, None, None),
    Act.DELETE_DRILL: ({S.AVAILABLE, S.PROTECTED, S.FAILED_OVER} | ERRORS_BUT_DELETING, None, None, None),
    Act.FAILOVER: ({S.PROTECTED, S.ERROR_FAILING_OVER, S.ERROR_REVERSING}, S.FAILING_OVER, S.FAILED_OVER,
                   S.ERROR_FAILING_OVER),
    Act.REVERSE: ({S.PROTECTED, S.ERROR_REVERSING}, S.REVERSING, S.PROTECTED, S.ERROR_REVERSING),
    Act.REPROTECT: ({S.FAILED_OVER, S.ERROR_REPROTECTING}, S.REPROTECTING, S.PROTECTED, S.ERROR_REPROTECTING),
    Act.DELETE: ({S.AVAILABLE, S.ERROR, S.ERROR_STARTING, S.ERROR_STOPPING, S.ERROR_DELETING}, S.DELETING, S.DELETED,
                 S.ERROR_DELETING),
}


def test_the_table_is_the_REFERENCE_one_SDRS_2() -> None:
    assert {a: (set(r.allowed_from), r.during, r.done, r.failed) for a, r in ACTIONS.items()} == EXPECTED
    assert {s.value for s in GroupState} == {
        "creating", "available", "protected", "deleting", "starting", "stopping", "reprotecting", "reversing",
        "failing-over", "failed-over", "error", "error-starting", "error-stopping", "error-reprotecting",
        "error-reversing", "error-failing-over", "error-deleting", "deleted"}


@pytest.mark.parametrize(("state", "action"), [(s, a) for s in GroupState for a in GroupAction])
def test_every_action_from_every_state_is_allowed_or_refused_naming_the_state_SDRS_2(
        state: GroupState, action: GroupAction) -> None:
    froms, during, _, _ = EXPECTED[action]
    if state in froms:
        assert begin("g", state, action) is (during or state)
        return
    with pytest.raises(InvalidTransition) as err:
        begin("g", state, action)
    assert err.value.state == state.value and err.value.action == action.value
    assert set(err.value.allowed) == {a.value for a in allowed(state)}
    assert f"in state {state.value}" in str(err.value)


# -- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize(("production", "recovery", "words"), [
    (B, "eu-west-1a", ["recovery_az", "'eu-west-1a'", "region eu-west-1", "GEO-3", "valid: eu-west-0a"]),
    (B, C, ["recovery_az", "'eu-west-0c'", "SDRS-1", "valid: eu-west-0a"]),
    (A, A, ["recovery_az", "'eu-west-0a'", "production AZ", "valid: none"]),
    (B, B, ["recovery_az", "'eu-west-0b'", "production AZ", "valid: eu-west-0a"]),
    ("eu-west-1b", A, ["production_az", "'eu-west-1b'", "valid: eu-west-0a, eu-west-0b, eu-west-0c"]),
])
def test_a_group_needs_a_recovery_AZ_of_its_region_and_in_eu_west_0_it_is_0a_SDRS_1_GEO_3(
        site: Site, production: str, recovery: str, words: list[str]) -> None:
    with pytest.raises(InvalidRequest) as err:
        site.ask(CreateGroup("app", TENANT, "vpc-1", production, recovery))
    for word in words:
        assert word in str(err.value)
    assert site.ask(ReportGroups()) == ()
    assert site.kinds("GroupCreated") == []


def test_the_recovery_AZ_rule_is_catalogue_data_SDRS_1() -> None:
    assert REGIONS[REGION].recovery_azs(B) == (A,)
    assert REGIONS[REGION].recovery_azs(A) == ()
    assert REGIONS["eu-west-1"].recovery_azs("eu-west-1b") == ("eu-west-1a", "eu-west-1c")  # no rule: any other AZ
    with pytest.raises(ConfigError, match="p-z is not an AZ of the region"):
        load_regions({"partner": {"city": "X", "azs": ["p-a", "p-b"], "sdrs_recovery_azs": ["p-z"]}})


def test_failover_of_an_unprotected_group_is_refused_and_changes_nothing_SDRS_2(site: Site) -> None:
    group = site.create_group()
    site.ask(ProtectServer(group, site.server(B)))
    before = site.group(group)
    with pytest.raises(InvalidTransition) as err:
        site.ask(Failover(group))
    assert err.value.state == "available"
    assert "start-protection" in err.value.allowed and "failover" not in err.value.allowed
    assert site.group(group) == before
    assert site.kinds("FailoverStarted") == []


def test_protected_servers_are_the_tenants_own_in_the_production_AZ_one_group_each_SDRS_1(site: Site) -> None:
    group = site.create_group()
    other = site.create_group("other")
    with pytest.raises(InvalidRequest, match="no replication pair"):
        site.ask(StartProtection(group))
    mine, theirs, elsewhere = site.server(B), site.server(B, tenant="globex"), site.server(C)
    with pytest.raises(NotFound):
        site.ask(ProtectServer(group, theirs))
    with pytest.raises(NotFound):
        site.ask(ProtectServer(group, elsewhere))
    site.ask(ProtectServer(group, mine))
    with pytest.raises(Conflict, match="already protected"):
        site.ask(ProtectServer(other, mine))
    foreign = site.create_group("foreign", tenant="globex")
    with pytest.raises(NotFound) as err:  # TEN-1: not "protected by group <id>" to another tenant
        site.ask(ProtectServer(foreign, mine))
    assert group not in str(err.value)
    assert site.group(group).servers == (mine,)
    assert site.group(other).servers == ()
    volumes = site.ask(ServerVolumes(mine), to=site.volumes[B])
    assert [v.protected_by for v in volumes] == [group]
    site.ask(UnprotectServer(group, mine))
    assert [v.protected_by for v in site.ask(ServerVolumes(mine), to=site.volumes[B])] == [None]
    site.ask(ProtectServer(other, mine))


def test_a_drill_needs_the_first_synchronisation_and_an_isolated_vpc_SDRS_2(site: Site) -> None:
    group = site.create_group()
    site.ask(ProtectServer(group, site.server(B, used_gb=8.0)))
    assert site.wait_job(site.ask(StartProtection(group))).status == "success"
    with pytest.raises(Conflict, match="first synchronisation"):
        site.ask(CreateDrill(group, "drill-vpc"))
    site.until(lambda: site.group(group).synced_at is not None)
    with pytest.raises(InvalidRequest, match="isolated VPC"):
        site.ask(CreateDrill(group, "vpc-1"))


# -- the whole cycle -----------------------------------------------------------------------
def test_full_cycle_protect_drill_failover_reprotect_switch_back_SDRS_1_SDRS_2_SDRS_3(site: Site) -> None:
    group, sids = site.protected_group(servers=3)
    assert site.group(group).state == "protected"
    assert [site.running_in(s) for s in sids] == [[B]] * 3

    # A drill: copies run in the recovery AZ, in their own VPC, while production runs on.
    drill = site.wait_job(site.ask(CreateDrill(group, "drill-vpc")))
    assert drill.status == "success"
    assert site.group(group).drill_vpc == "drill-vpc"
    assert [site.running_in(s) for s in sids] == [[B]] * 3
    assert [site.running_in(s + "-drill") for s in sids] == [[A]] * 3
    assert site.wait_job(site.ask(DeleteDrill(group))).status == "success"
    assert [site.running_in(s + "-drill") for s in sids] == [[]] * 3
    assert site.group(group).drill_vpc is None

    # Production AZ goes dark; the operator fails over a while later.
    site.run(600)
    failed_at = site.env.now
    site.fail_az(B)
    site.run(120)
    accepted = site.ask(Failover(group))
    job = site.wait_job(accepted)
    assert job.status == "success", job
    assert site.group(group).state == "failed-over"
    assert [site.running_in(s) for s in sids] == [[A]] * 3  # exactly once, in the recovery AZ
    assert not site.world.split_brain
    rpo = job.rpo_at(failed_at)
    assert rpo is not None and rpo < 0.01  # healthy link: only the link latency is lost
    assert job.rpo_s is not None and 120 <= job.rpo_s < 121  # the actor's estimate, from the job's start
    assert job.rto_s is not None and 0 < job.rto_s < 300
    assert job.failed_to_start == 0
    (done,) = site.kinds("FailoverCompleted")
    assert done["rto_s"] == job.rto_s and done["rpo_s"] == job.rpo_s
    assert len(site.kinds("DrServerStarted")) == 3

    # The production AZ returns: its hosts are reconciled, but the parked servers stay stopped.
    site.run(3600)
    site.restore_az(B)
    site.run(3600)
    assert [site.running_in(s) for s in sids] == [[A]] * 3
    with pytest.raises(Conflict, match="parked"):
        site.ask(ServerCommand(sids[0], "start"), to=site.azs[B])

    # Failback: re-protect (replicating A -> B onto the old volumes), then switch back.
    assert site.wait_job(site.ask(Reprotect(group))).status == "success"
    assert site.group(group).state == "protected" and site.group(group).active_az == A
    site.until(lambda: site.group(group).synced_at is not None)
    back = site.wait_job(site.ask(Switchover(group)))
    assert back.status == "success", back
    view = site.group(group)
    assert view.state == "protected" and view.active_az == B
    assert [site.running_in(s) for s in sids] == [[B]] * 3
    assert not site.world.split_brain
    assert back.rpo_s == 0.0  # a planned switchover waits for the replicas
    assert back.rto_s is not None and back.rto_s < 300
    oldest = min(t for _, t in back.consistent_as_of if t is not None)
    report: tuple[GroupReport, ...] = site.ask(ReportGroups())
    assert report == (GroupReport(group, "app", TENANT, "protected", 3, 30, oldest, 0.0, back.rto_s, 0, ()),)
    site.until(lambda: site.group(group).synced_at is not None)
    assert [v.protected_by for v in site.ask(ServerVolumes(sids[0]), to=site.volumes[B])] == [group]
    assert [v.protected_by for v in site.ask(ServerVolumes(sids[0]), to=site.volumes[A])] == [group]


def test_rpo_is_the_link_outage_when_the_link_was_cut_before_the_failure_SDRS_2(site: Site) -> None:
    group, sids = site.protected_group(servers=2)
    site.run(3600)
    cut_at = site.env.now
    site.storage.cut_link(B, A)
    site.run(300)
    failed_at = site.env.now
    site.fail_az(B)
    job = site.wait_job(site.ask(Failover(group)))
    assert job.status == "success"
    rpo = job.rpo_at(failed_at)
    assert rpo is not None and 300 <= rpo < 300.01
    assert [site.running_in(s) for s in sids] == [[A]] * 2
    (done,) = site.kinds("FailoverCompleted")
    assert done["consistent_as_of"] == pytest.approx(cut_at, abs=0.01)


def test_without_capacity_dr_servers_wait_are_reported_and_start_when_capacity_frees_SDRS_2(site: Site) -> None:
    group, sids = site.protected_group(servers=3)
    fillers = [site.server(A, tenant="filler", disks=0) for _ in range(8)]  # the recovery AZ is full
    site.fail_az(B)  # the operator fails over at once: the hosts are not even known to be down yet
    accepted = site.ask(Failover(group))
    site.run(600)
    job = site.job(accepted.job)
    assert job.status == "running" and site.group(group).state == "failing-over"
    assert job.failed_to_start == 3 and set(job.waiting) == set(sids)
    (report,) = site.ask(ReportGroups())
    assert report.failed_to_start == 3 and set(report.waiting) == set(sids)
    assert len(site.kinds("DrServerWaiting")) == 3
    assert [site.running_in(s) for s in sids] == [[]] * 3

    # The production AZ comes back meanwhile: its servers are parked, so nothing restarts them.
    site.restore_az(B)
    site.run(3 * HOUR)
    assert [site.running_in(s) for s in sids] == [[]] * 3
    assert site.job(accepted.job).status == "running"

    # Capacity frees in the recovery AZ: every waiting server starts there, once.
    for sid in fillers[:3]:
        site.ask(DeleteServer(sid), to=site.azs[A])
    job = site.wait_job(accepted)
    assert job.status == "success" and job.waiting == () and job.failed_to_start == 3
    assert [site.running_in(s) for s in sids] == [[A]] * 3
    assert not site.world.split_brain
    assert job.rto_s is not None and job.rto_s > 3 * HOUR
    site.run(HOUR)
    assert [site.running_in(s) for s in sids] == [[A]] * 3


def test_a_production_AZ_back_before_its_servers_are_known_down_does_not_run_them_twice_SDRS_2(site: Site) -> None:
    group, sids = site.protected_group(servers=2)
    site.fail_az(B)
    accepted = site.ask(Failover(group))
    site.run(5)  # back before the keepalive timeout: the AZ has not even suspected its hosts yet
    site.restore_az(B)
    job = site.wait_job(accepted)
    assert job.status == "success"
    site.run(3600)
    assert [site.running_in(s) for s in sids] == [[A]] * 2
    assert not site.world.split_brain


def test_a_switchover_whose_replicas_cannot_catch_up_restarts_production_and_fails_SDRS_2(site: Site) -> None:
    group, sids = site.protected_group(servers=2)
    site.storage.cut_link(B, A)
    job = site.wait_job(site.ask(Switchover(group)))
    assert job.status == "failed" and "production was started again" in (job.error or "")
    assert site.group(group).state == "error-reversing"
    assert [site.running_in(s) for s in sids] == [[B]] * 2
    refuse_all_but_allowed(site, group)
    # From error-reversing the operator may still fail over (accepting the data the link lost).
    assert site.wait_job(site.ask(Failover(group))).status == "success"
    assert [site.running_in(s) for s in sids] == [[A]] * 2


def test_stop_protection_then_delete_leaves_no_replica_and_unmarks_the_volumes_SDRS_2(site: Site) -> None:
    group, sids = site.protected_group(servers=2)
    assert site.wait_job(site.ask(StopProtection(group))).status == "success"
    assert site.group(group).state == "available"
    assert any(v.endswith("-r") for v in site.storage.volume_ids(A))
    assert site.wait_job(site.ask(DeleteGroup(group))).status == "success"
    with pytest.raises(NotFound):
        site.ask(GetGroup(group))
    assert not any(v.endswith("-r") for v in site.storage.volume_ids(A))
    assert [v.protected_by for s in sids for v in site.ask(ServerVolumes(s), to=site.volumes[B])] == [None] * 2
    assert [site.running_in(s) for s in sids] == [[B]] * 2


MESSAGES: dict[GroupAction, Callable[[str], Any]] = {
    Act.ADD_SERVER: lambda g: ProtectServer(g, "acme-1"),
    Act.REMOVE_SERVER: lambda g: UnprotectServer(g, "acme-1"),
    Act.START_PROTECTION: StartProtection,
    Act.STOP_PROTECTION: StopProtection,
    Act.CREATE_DRILL: lambda g: CreateDrill(g, "drill-vpc"),
    Act.DELETE_DRILL: DeleteDrill,
    Act.FAILOVER: Failover,
    Act.REVERSE: Switchover,
    Act.REPROTECT: Reprotect,
    Act.DELETE: DeleteGroup,
}


def refuse_all_but_allowed(site: Site, group: str) -> None:
    state = GroupState(site.group(group).state)
    before, jobs = site.group(group), len(site.kinds("GroupStateChanged"))
    for action, message in MESSAGES.items():
        if state in ACTIONS[action].allowed_from:
            continue
        with pytest.raises(InvalidTransition) as err:
            site.ask(message(group))
        assert err.value.state == state.value and set(err.value.allowed) == {a.value for a in allowed(state)}
    assert site.group(group) == before and len(site.kinds("GroupStateChanged")) == jobs


def test_refused_actions_change_nothing_in_every_state_the_group_goes_through_SDRS_2(site: Site) -> None:
    group = site.create_group()
    sid = site.server(B)
    site.ask(ProtectServer(group, sid))
    refuse_all_but_allowed(site, group)  # available
    accepted = site.ask(StartProtection(group))
    refuse_all_but_allowed(site, group)  # starting
    site.wait_job(accepted)
    site.until(lambda: site.group(group).synced_at is not None)
    refuse_all_but_allowed(site, group)  # protected
    accepted = site.ask(Failover(group))
    refuse_all_but_allowed(site, group)  # failing-over
    site.wait_job(accepted)
    refuse_all_but_allowed(site, group)  # failed-over
    accepted = site.ask(Reprotect(group))
    refuse_all_but_allowed(site, group)  # reprotecting
    site.wait_job(accepted)
    accepted = site.ask(StopProtection(group))
    refuse_all_but_allowed(site, group)  # stopping
    site.wait_job(accepted)
    refuse_all_but_allowed(site, group)  # available again
    assert site.wait_job(site.ask(DeleteGroup(group))).status == "success"


def test_a_failed_start_leaves_error_starting_from_which_it_can_be_retried_SDRS_2(site: Site) -> None:
    group = site.create_group()
    site.ask(ProtectServer(group, site.server(B)))
    site.storage.fail_az(A)  # the recovery AZ's storage is unreachable
    job = site.wait_job(site.ask(StartProtection(group)))
    assert job.status == "failed" and "unreachable" in (job.error or "")
    assert site.group(group).state == "error-starting"
    refuse_all_but_allowed(site, group)
    site.storage.restore_az(A)
    assert site.wait_job(site.ask(StartProtection(group))).status == "success"
    assert site.group(group).state == "protected"


# -- parking, in the AZ (what failover relies on) ----------------------------------------------
def test_a_parked_server_stays_stopped_until_unparked_even_when_its_host_returns(site: Site) -> None:
    running = site.server(B)
    site.ask(ParkServer(running), to=site.azs[B])
    assert site.running_in(running) == []
    with pytest.raises(Conflict, match="parked"):
        site.ask(ServerCommand(running, "start"), to=site.azs[B])
    site.fail_az(B)
    site.run(600)
    site.restore_az(B)
    site.run(600)
    assert site.running_in(running) == []
    view = site.ask(UnparkServer(running), to=site.azs[B])
    assert view.state == "active" and not view.parked
    assert site.running_in(running) == [B]


def test_parking_cancels_auto_recovery_of_a_server_whose_host_died() -> None:
    site = Site(hosts_per_az={A: 1, B: 2, C: 1})
    try:
        sid = "rec-1"
        site.ask(PlaceServer(sid, TENANT, get_flavor("s3.large.2"), True, None, None, False), to=site.azs[B])
        host = next(iter(site.world.running_on[sid]))
        site.world.hosts[host].crash()
        site.ask(ParkServer(sid), to=site.azs[B])
        site.run(3600)
        assert site.running_in(sid) == []  # not rebuilt on the other host
        site.world.hosts[host].repair()
        site.run(600)
        assert site.running_in(sid) == []  # nor restarted when its host returned
        assert site.ask(UnparkServer(sid), to=site.azs[B]).state == "active"
        assert site.running_in(sid) == [B]
    finally:
        site.close()


# -- cost -------------------------------------------------------------------------------------
def test_steady_state_reads_no_replication_status_SDRS_3(site: Site) -> None:
    site.protected_group(servers=3)
    reads = site.status_reads
    site.run(30 * 24 * HOUR)
    assert site.status_reads == reads


def test_a_month_of_50_groups_costs_work_in_proportion_to_servers_per_action_SDRS_3() -> None:
    """50 groups of 10 servers (the 500/5,000 benchmark at a tenth): protection, an AZ
    outage, failover, and a month in which nothing polls."""
    site = Site(hosts_per_az={A: 10, B: 10, C: 10}, vcpus=64, ram_mb=262144)
    try:
        flavor = get_flavor("s3.medium.2")
        sids = [f"s{i:03d}" for i in range(500)]
        site.ask_all([PlaceServer(sid, TENANT, flavor, False, None, None, False) for sid in sids], to=site.azs[B])
        site.ask_all([RegisterServer(TENANT, sid) for sid in sids], to=site.volumes[B])
        vols = site.ask_all([CreateVolume(TENANT, B, 10, bootable=True) for _ in sids], to=site.volumes[B])
        site.ask_all([AttachVolume(TENANT, v.id, sid) for v, sid in zip(vols, sids, strict=True)], to=site.volumes[B])
        for v in vols:
            site.storage.set_workload(B, v.id, 2 * GB, 1e5)
        groups = [a.group for a in site.ask_all([CreateGroup(f"g{i}", TENANT, "vpc", B, A) for i in range(50)])]
        site.run(1)
        site.ask_all([ProtectServer(groups[i // 10], sid) for i, sid in enumerate(sids)])
        site.ask_all([StartProtection(g) for g in groups])
        site.until(lambda: all(v.synced_at is not None for v in site.ask_all([GetGroup(g) for g in groups])),
                   step=600)
        first_sync_reads = site.status_reads
        assert first_sync_reads < 500 * 3
        site.run(3 * 24 * HOUR)
        failed_at = site.env.now
        site.fail_az(B)
        site.run(900)
        jobs = site.ask_all([Failover(g) for g in groups])
        site.run(600)
        views = site.ask_all([GetJob(j.job) for j in jobs])
        assert all(v.status == "success" for v in views)
        assert site.status_reads - first_sync_reads == 500  # one read per pair: what it was consistent as of
        assert max(v.rpo_at(failed_at) or 0 for v in views) < 0.01
        assert max(v.rto_s or 0 for v in views) < 120
        assert all(site.running_in(sid) == [A] for sid in sids)
        reads = site.status_reads
        site.run(27 * 24 * HOUR)
        assert site.status_reads == reads and not site.world.split_brain
    finally:
        site.close()


def test_a_cycle_is_deterministic() -> None:
    def history() -> list[tuple[float, str, dict[str, Any]]]:
        site = Site()
        try:
            group, _ = site.protected_group(servers=2)
            site.fail_az(B)
            site.wait_job(site.ask(Failover(group)))
            return site.events
        finally:
            site.close()
    assert history() == history()

"""Server groups are deleted through the tenant (TEN-3: their quota comes back), and a
server's auto-recovery is turned on or off after its creation (ECS-4, the provider's
`support_auto_recovery`), in a simulated region in virtual time."""

from __future__ import annotations

from actors.az import ServerView, SetAutoRecovery
from actors.scheduler import GroupPolicy
from actors.tenant import CreateServer, CreateServerGroup, DeleteServerGroup, ListServerGroups, RemoveServer
from runtime.errors import Conflict, InvalidRequest, NotFound
from tests.actors.test_az_recovery_regressions import MakeZone, other, zone_of  # noqa: F401 (fixture)
from tests.properties.harness import AZS, Cloud, CloudConfig

CONFIG = CloudConfig(seed=3, hosts_per_az=(2, 2, 2), host_vcpus=16, host_ram_mb=65536, dedicated_hosts=0,
                     quotas=(("acme", (("server_groups", 2),)),))
AZ = AZS[0]


def view(cloud: Cloud, sid: str) -> ServerView:
    return next(v for az in cloud.snapshot().azs for v in az.servers if v.id == sid)


def create(cloud: Cloud, name: str, **kwargs: object) -> str:
    out = cloud.ask("acme", CreateServer(name, "s3.large.2", AZ, **kwargs))  # type: ignore[arg-type]
    assert out.ok, out.error
    sid: str = out.value
    return sid


def test_deleting_an_empty_server_group_gives_its_quota_back_TEN_3() -> None:
    with Cloud(CONFIG) as cloud:
        assert cloud.ask("acme", CreateServerGroup("web", "anti-affinity")).ok
        assert cloud.ask("acme", CreateServerGroup("db", "soft-anti-affinity")).ok
        assert cloud.ask("acme", ListServerGroups()).value == {"web": GroupPolicy.ANTI_AFFINITY,
                                                                 "db": GroupPolicy.SOFT_ANTI_AFFINITY}
        assert isinstance(cloud.ask("acme", CreateServerGroup("third", "anti-affinity")).error, Exception)
        assert cloud.quotas("acme").used["server_groups"] == 2
        assert cloud.ask("acme", DeleteServerGroup("web")).ok
        assert cloud.ask("acme", ListServerGroups()).value == {"db": GroupPolicy.SOFT_ANTI_AFFINITY}
        assert cloud.quotas("acme").used["server_groups"] == 1
        assert cloud.ask("acme", CreateServerGroup("third", "anti-affinity")).ok  # the quota is free again
        missing = cloud.ask("acme", DeleteServerGroup("web")).error
        assert isinstance(missing, NotFound) and "server group 'web'" in str(missing)


def test_a_server_group_with_members_is_not_deleted_TEN_3() -> None:
    with Cloud(CONFIG) as cloud:
        assert cloud.ask("acme", CreateServerGroup("web", "anti-affinity")).ok
        sid = create(cloud, "w1", group="web")
        refused = cloud.ask("acme", DeleteServerGroup("web")).error
        assert isinstance(refused, Conflict) and "has 1 member(s)" in str(refused)
        assert cloud.ask("acme", ListServerGroups()).value == {"web": GroupPolicy.ANTI_AFFINITY}
        assert cloud.quotas("acme").used["server_group_members"] == 1
        assert cloud.ask("acme", RemoveServer(sid)).ok
        assert cloud.ask("acme", DeleteServerGroup("web")).ok
        used = cloud.quotas("acme").used
        assert (used["server_groups"], used["server_group_members"]) == (0, 0)


def test_auto_recovery_turned_on_after_creation_rebuilds_the_server_ECS_4() -> None:
    with Cloud(CONFIG) as cloud:
        kept, plain = create(cloud, "kept"), create(cloud, "plain")
        assert cloud.ask("acme", SetAutoRecovery(kept, True)).ok
        assert (view(cloud, kept).auto_recovery, view(cloud, plain).auto_recovery) == (True, False)
        host = view(cloud, kept).host
        assert host is not None
        cloud.inject("crash", host)
        cloud.advance(3600)
        assert (view(cloud, kept).state, view(cloud, kept).host) == ("active", other_host(cloud, host))


def other_host(cloud: Cloud, host: str) -> str:
    return next(h.name for h in cloud.topology.hosts_in(AZ) if h.name != host)


def test_auto_recovery_turned_off_leaves_the_server_down_with_its_host_ECS_4() -> None:
    with Cloud(CONFIG) as cloud:
        sid = create(cloud, "s", auto_recovery=True)
        assert cloud.ask("acme", SetAutoRecovery(sid, False)).ok
        host = view(cloud, sid).host
        assert host is not None
        cloud.inject("crash", host)
        cloud.advance(3600)
        v = view(cloud, sid)
        assert (v.state, v.host, v.auto_recovery, v.recovery_pending) == ("down", host, False, False)


def test_a_flavor_with_a_local_disk_cannot_get_auto_recovery_ECS_4() -> None:
    with Cloud(CONFIG) as cloud:
        out = cloud.ask("acme", CreateServer("d", "d2.xlarge.8", AZ))
        assert out.ok, out.error
        refused = cloud.ask("acme", SetAutoRecovery(out.value, True)).error
        assert isinstance(refused, InvalidRequest) and "local disk" in str(refused) and "ECS-4" in str(refused)
        assert view(cloud, out.value).auto_recovery is False
        assert cloud.ask("acme", SetAutoRecovery(out.value, False)).ok  # off is always allowed
        assert isinstance(cloud.ask("acme", SetAutoRecovery("nope", True)).error, NotFound)


def test_turned_on_while_down_on_a_fenced_host_it_is_rebuilt_at_once_ECS_4(zone_of: MakeZone) -> None:  # noqa: F811
    zone = zone_of(2)
    a = zone.create("srv", auto_recovery=False)
    t0 = zone.env.now
    zone.host(a).crash()
    zone.run_until(t0 + 600)  # noticed, fenced; the server stays down there
    assert (zone.view("srv").state, zone.view("srv").host) == ("down", a)
    zone.ask(SetAutoRecovery("srv", True))
    zone.run_until(t0 + 1200)
    v = zone.view("srv")
    assert (v.state, v.host) == ("active", other(zone, a)), zone.kinds("srv")
    assert "AutoRecoveryChanged" in zone.kinds("srv") and "ServerRecovered" in zone.kinds("srv")


def test_turned_off_while_waiting_for_capacity_the_wait_is_dropped_ECS_4(zone_of: MakeZone) -> None:  # noqa: F811
    zone = zone_of(1)
    a = zone.create("srv", auto_recovery=True)
    t0 = zone.env.now
    zone.host(a).crash()
    zone.run_until(t0 + 600)
    assert zone.view("srv").waiting_capacity  # no other host
    zone.ask(SetAutoRecovery("srv", False))
    v = zone.view("srv")
    assert (v.state, v.waiting_capacity, v.recovery_pending, v.auto_recovery) == ("down", False, False, False)

"""Placement: filters, weighers, claims (ECS-5 dedicated hosts, GEO-4 anti-affinity)."""

from __future__ import annotations

import random
from collections import Counter

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actors.flavors import get_flavor
from actors.scheduler import GroupPolicy, PlacementRequest, Scheduler
from runtime.errors import Conflict, InvalidRequest, NoCapacity, NotFound

AA, SOFT = GroupPolicy.ANTI_AFFINITY, GroupPolicy.SOFT_ANTI_AFFINITY


def req(
    server_id: str,
    vcpus: int = 1,
    ram_mb: int = 1024,
    tenant: str = "t1",
    group: str | None = None,
    policy: GroupPolicy | None = None,
    dedicated: bool = False,
) -> PlacementRequest:
    return PlacementRequest(server_id, tenant, vcpus, ram_mb, group, policy, dedicated)


def scheduler(*hosts: tuple[str, int, int], cpu_ratio: float = 1.0) -> Scheduler:
    s = Scheduler("eu-west-0a", cpu_ratio=cpu_ratio)
    for name, vcpus, ram_mb in hosts:
        s.add_host(name, vcpus, ram_mb)
    return s


# -- weighers -------------------------------------------------------------------------


def test_most_free_ram_wins_spread() -> None:
    s = scheduler(("h1", 8, 8192), ("h2", 8, 16384), ("h3", 8, 4096))
    assert [s.place(req(f"s{i}", ram_mb=4096)) for i in range(4)] == ["h2", "h2", "h1", "h2"]
    assert s.free("h2") == (5, 4096)


def test_ties_go_to_the_smallest_host_name() -> None:
    s = scheduler(("h2", 4, 4096), ("h10", 4, 4096), ("h1", 4, 4096))
    assert s.place(req("a")) == "h1"
    assert s.place(req("b")) == "h10"
    assert s.place(req("c")) == "h2"


def test_host_with_more_ram_but_too_few_vcpus_is_skipped() -> None:
    # 3 vCPUs: h-big (2 free) shares the request's vCPU bucket (2-3) and must be skipped.
    s = scheduler(("h-big", 2, 65536), ("h-mid", 3, 8192), ("h-wide", 64, 4096))
    assert s.place(req("a", vcpus=3, ram_mb=2048)) == "h-mid"
    assert s.place(req("b", vcpus=3, ram_mb=2048)) == "h-wide"


def test_allocation_ratios_scale_capacity() -> None:
    s = Scheduler("az", cpu_ratio=4.0, ram_ratio=1.5)
    s.add_host("h1", 16, 1000)
    assert s.free("h1") == (64, 1500)


@pytest.mark.parametrize(("cpu", "ram"), [(0.0, 1.0), (1.0, -1.0), (float("nan"), 1.0), (float("inf"), 1.0)])
def test_bad_allocation_ratio_is_refused(cpu: float, ram: float) -> None:
    with pytest.raises(InvalidRequest, match="allocation ratios"):
        Scheduler("az", cpu, ram)


# -- capacity and claims ----------------------------------------------------------------


def test_no_capacity_names_the_az_and_the_shortfall() -> None:
    s = scheduler(("h1", 4, 4096), ("h2", 2, 8192))
    with pytest.raises(NoCapacity) as info:
        s.place(req("big", vcpus=4, ram_mb=8192))
    err = info.value
    assert err.where == "eu-west-0a"
    assert err.need == (
        "server big (4 vCPUs, 8192 MB RAM): none of the 2 enabled shared hosts with free vCPUs has "
        "4 vCPUs and 8192 MB RAM free (most free RAM with enough vCPUs: 4096 MB on host h1)"
    )
    assert s.free("h1") == (4, 4096) and s.free("h2") == (2, 8192)


def test_no_capacity_when_every_host_is_full_or_disabled() -> None:
    s = scheduler(("h1", 1, 1024), ("h2", 4, 4096))
    s.set_enabled("h2", False)
    assert s.place(req("a")) == "h1"
    with pytest.raises(NoCapacity, match="no enabled host with free vCPUs among the shared hosts"):
        s.place(req("b"))


def test_release_frees_capacity_and_unknown_release_is_a_no_op() -> None:
    s = scheduler(("h1", 4, 4096))
    s.place(req("a", vcpus=3, ram_mb=3000))
    assert s.free("h1") == (1, 1096)
    s.release("a")
    s.release("a")
    s.release("never-placed")
    assert s.free("h1") == (4, 4096)
    assert s.host_of("a") is None
    assert s.servers_on("h1") == []


def test_servers_on_lists_claims_in_order() -> None:
    s = scheduler(("h1", 8, 8192))
    for name in ("c", "a", "b"):
        s.place(req(name))
    s.release("a")
    s.place(req("a"))
    assert s.servers_on("h1") == ["c", "b", "a"]
    assert s.host_of("b") == "h1"


def test_placing_a_placed_server_again_is_a_conflict() -> None:
    s = scheduler(("h1", 8, 8192), ("h2", 8, 8192))
    s.place(req("a"))
    with pytest.raises(Conflict, match="already placed on host h1"):
        s.place(req("a"))
    with pytest.raises(Conflict):
        s.claim("h2", req("a"))
    assert s.free("h2") == (8, 8192)


def test_exclude_skips_hosts() -> None:
    s = scheduler(("h1", 8, 8192), ("h2", 8, 4096))
    assert s.place(req("a"), exclude=["h1"]) == "h2"
    with pytest.raises(NoCapacity, match="2 of the shared hosts have room, but 2 excluded by the caller"):
        s.place(req("b"), exclude={"h1", "h2"})


def test_disabled_host_takes_nothing_new_but_can_be_claimed() -> None:
    s = scheduler(("h1", 8, 65536), ("h2", 8, 4096))
    s.set_enabled("h1", False)
    assert not s.enabled("h1")
    assert s.place(req("a")) == "h2"
    s.claim("h1", req("b"))
    assert s.servers_on("h1") == ["b"]
    s.set_enabled("h1", True)
    s.set_enabled("h1", True)
    assert s.place(req("c")) == "h1"


def test_claim_refuses_what_does_not_fit() -> None:
    s = scheduler(("h1", 2, 2048))
    with pytest.raises(NoCapacity) as info:
        s.claim("h1", req("a", vcpus=4))
    assert info.value.where == "eu-west-0a host h1"
    assert "only 2 vCPUs and 2048 MB RAM free" in info.value.need


def test_unknown_host_is_not_found() -> None:
    s = scheduler(("h1", 2, 2048))
    for call in (s.free, s.enabled, s.servers_on, lambda h: s.set_enabled(h, False), lambda h: s.claim(h, req("a"))):
        with pytest.raises(NotFound):
            call("nope")


def test_add_host_refuses_duplicates_and_empty_hosts() -> None:
    s = scheduler(("h1", 2, 2048))
    with pytest.raises(Conflict):
        s.add_host("h1", 2, 2048)
    with pytest.raises(InvalidRequest):
        s.add_host("h2", 0, 2048)


def test_placement_request_validation() -> None:
    with pytest.raises(InvalidRequest):
        req("a", vcpus=0)
    with pytest.raises(InvalidRequest):
        req("a", ram_mb=0)
    with pytest.raises(InvalidRequest, match="needs a policy"):
        req("a", group="g")
    with pytest.raises(InvalidRequest, match="needs a policy"):
        req("a", policy=AA)


def test_placement_request_for_flavor() -> None:
    r = PlacementRequest.for_flavor("a", "t1", get_flavor("m3.xlarge.8"), group="g", policy=SOFT)
    assert r == PlacementRequest("a", "t1", 4, 32768, "g", SOFT, False)


# -- dedicated hosts (ECS-5) ------------------------------------------------------------


def test_shared_requests_never_land_on_a_dedicated_host_ECS_5() -> None:
    s = scheduler(("shared", 2, 2048))
    s.add_host("deh", 64, 65536, dedicated_to="t1")
    assert s.place(req("a", tenant="t1")) == "shared"
    with pytest.raises(NoCapacity, match="shared hosts"):
        s.place(req("b", vcpus=4, tenant="t1"))
    assert s.servers_on("deh") == []


def test_dedicated_requests_go_only_to_the_tenants_dedicated_hosts_ECS_5() -> None:
    s = scheduler(("shared", 64, 65536))
    s.add_host("deh-t1", 4, 4096, dedicated_to="t1")
    s.add_host("deh-t2", 64, 65536, dedicated_to="t2")
    assert s.place(req("a", tenant="t1", dedicated=True)) == "deh-t1"
    with pytest.raises(NoCapacity) as info:
        s.place(req("b", vcpus=8, tenant="t1", dedicated=True))
    assert "dedicated hosts of tenant t1 (ECS-5)" in info.value.need
    with pytest.raises(NoCapacity, match="no enabled host with free vCPUs among the dedicated hosts of tenant t3"):
        s.place(req("c", tenant="t3", dedicated=True))


def test_claim_on_another_tenants_dedicated_host_is_refused_ECS_5() -> None:
    s = scheduler(("shared", 8, 8192))
    s.add_host("deh", 8, 8192, dedicated_to="t1")
    for bad in (req("a", tenant="t2", dedicated=True), req("a", tenant="t2"), req("a", tenant="t1")):
        with pytest.raises(InvalidRequest, match="ECS-5"):
            s.claim("deh", bad)
    with pytest.raises(InvalidRequest, match="shared host"):
        s.claim("shared", req("a", tenant="t1", dedicated=True))
    s.claim("deh", req("a", tenant="t1", dedicated=True))
    assert s.servers_on("deh") == ["a"] and s.servers_on("shared") == []


# -- server groups (GEO-4) --------------------------------------------------------------


def test_anti_affinity_never_shares_a_host_GEO_4() -> None:
    s = scheduler(("h1", 16, 65536), ("h2", 16, 4096), ("h3", 16, 2048))
    hosts = [s.place(req(f"w{i}", group="web", policy=AA)) for i in range(3)]
    assert hosts == ["h1", "h2", "h3"]
    with pytest.raises(NoCapacity) as info:
        s.place(req("w3", group="web", policy=AA))
    assert "3 of the shared hosts have room, but 3 already hold a member of anti-affinity group 'web'" in (
        info.value.need
    )
    s.release("w1")
    assert s.place(req("w3", group="web", policy=AA)) == "h2"


def test_anti_affinity_claim_on_a_member_host_is_a_conflict_GEO_4() -> None:
    s = scheduler(("h1", 16, 65536))
    s.claim("h1", req("w0", group="web", policy=AA))
    with pytest.raises(Conflict, match="GEO-4"):
        s.claim("h1", req("w1", group="web", policy=AA))


def test_groups_are_scoped_to_their_tenant_TEN_1() -> None:
    s = scheduler(("h1", 16, 65536), ("h2", 16, 4096))
    assert s.place(req("a", tenant="t1", group="web", policy=AA)) == "h1"
    assert s.place(req("b", tenant="t2", group="web", policy=AA)) == "h1"


def test_soft_anti_affinity_prefers_the_fewest_members_and_never_fails_for_them() -> None:
    s = scheduler(("h1", 16, 65536), ("h2", 16, 4096))
    placed = [s.place(req(f"w{i}", group="web", policy=SOFT)) for i in range(5)]
    assert placed == ["h1", "h2", "h1", "h2", "h1"]
    assert s.place(req("x")) == "h1"


def test_a_group_keeps_the_policy_of_its_members() -> None:
    s = scheduler(("h1", 16, 65536), ("h2", 16, 65536))
    s.place(req("w0", group="web", policy=AA))
    for call in (lambda r: s.place(r), lambda r: s.claim("h2", r)):
        with pytest.raises(InvalidRequest, match="policy soft-anti-affinity, but the group's members have policy anti"):
            call(req("w1", group="web", policy=SOFT))
    assert s.servers_on("h2") == []
    s.release("w0")
    assert s.place(req("w1", group="web", policy=SOFT)) == "h1"


def test_release_forgets_group_membership() -> None:
    s = scheduler(("h1", 16, 65536))
    s.place(req("w0", group="web", policy=AA))
    s.release("w0")
    assert s.place(req("w1", group="web", policy=AA)) == "h1"


# -- properties -------------------------------------------------------------------------

TENANTS = ["t1", "t2"]
GROUPS = [None, "g1", "g2"]


@attrs.define
class ModelHost:
    vcpus: int
    ram_mb: int
    dedicated_to: str | None
    enabled: bool = True


requests_st = st.builds(
    lambda vcpus, ram, tenant, group, policy, dedicated: PlacementRequest(
        "", tenant, vcpus, ram, group, policy if group else None, dedicated
    ),
    st.integers(1, 5),
    st.sampled_from([256, 512, 1024, 1536, 4096]),
    st.sampled_from(TENANTS),
    st.sampled_from(GROUPS),
    st.sampled_from([AA, SOFT]),
    st.booleans(),
)


class SchedulerMachine(RuleBasedStateMachine):
    """Random hosts, placements, claims and releases, checked against a brute-force oracle."""

    def __init__(self) -> None:
        super().__init__()
        self.s = Scheduler("az", cpu_ratio=1.5)
        self.hosts: dict[str, ModelHost] = {}
        self.placed: dict[str, tuple[str, PlacementRequest]] = {}
        self.next_id = 0

    def _free(self, host: str) -> tuple[int, int]:
        m = self.hosts[host]
        used = [r for h, r in self.placed.values() if h == host]
        return m.vcpus - sum(r.vcpus for r in used), m.ram_mb - sum(r.ram_mb for r in used)

    def _members(self, r: PlacementRequest) -> Counter[str]:
        return Counter(h for h, o in self.placed.values() if r.group and (o.tenant, o.group) == (r.tenant, r.group))

    def _policy_clash(self, r: PlacementRequest) -> bool:
        return any(
            (o.tenant, o.group) == (r.tenant, r.group) and o.policy is not r.policy
            for _, o in self.placed.values()
            if r.group
        )

    def _expected(self, r: PlacementRequest, exclude: frozenset[str]) -> str | None:
        owner = r.tenant if r.dedicated else None
        members = self._members(r)
        fits = [
            h
            for h, m in self.hosts.items()
            if m.enabled
            and m.dedicated_to == owner
            and h not in exclude
            and self._free(h)[0] >= r.vcpus
            and self._free(h)[1] >= r.ram_mb
            and not (r.policy is AA and members[h])
        ]
        if not fits:
            return None
        soft = r.policy is SOFT
        return min(fits, key=lambda h: (members[h] if soft else 0, -self._free(h)[1], h))

    def _new(self, r: PlacementRequest) -> PlacementRequest:
        self.next_id += 1
        return attrs.evolve(r, server_id=f"s{self.next_id}")

    @precondition(lambda self: len(self.hosts) < 8)
    @rule(
        vcpus=st.integers(1, 8),
        ram=st.sampled_from([1024, 2048, 4096, 8192]),
        dedicated_to=st.sampled_from([None, None, *TENANTS]),
    )
    def add_host(self, vcpus: int, ram: int, dedicated_to: str | None) -> None:
        name = f"h{len(self.hosts)}"
        self.s.add_host(name, vcpus, ram, dedicated_to)
        self.hosts[name] = ModelHost(int(vcpus * 1.5), ram, dedicated_to)

    @precondition(lambda self: self.hosts)
    @rule(data=st.data(), enabled=st.booleans())
    def set_enabled(self, data: st.DataObject, enabled: bool) -> None:
        host = data.draw(st.sampled_from(sorted(self.hosts)))
        self.s.set_enabled(host, enabled)
        self.hosts[host].enabled = enabled

    @rule(r=requests_st, data=st.data())
    def place(self, r: PlacementRequest, data: st.DataObject) -> None:
        r = self._new(r)
        exclude = frozenset(data.draw(st.lists(st.sampled_from(sorted(self.hosts) or ["none"]), max_size=2)))
        expected = self._expected(r, exclude)
        if self._policy_clash(r):
            with pytest.raises(InvalidRequest, match="the group's members have policy"):
                self.s.place(r, exclude)
        elif expected is None:
            with pytest.raises(NoCapacity):
                self.s.place(r, exclude)
        else:
            assert self.s.place(r, exclude) == expected
            self.placed[r.server_id] = (expected, r)

    @precondition(lambda self: self.hosts)
    @rule(r=requests_st, data=st.data())
    def claim(self, r: PlacementRequest, data: st.DataObject) -> None:
        r = self._new(r)
        host = data.draw(st.sampled_from(sorted(self.hosts)))
        m = self.hosts[host]
        free_vcpus, free_ram = self._free(host)
        if self._policy_clash(r) or m.dedicated_to != (r.tenant if r.dedicated else None):
            with pytest.raises(InvalidRequest):
                self.s.claim(host, r)
        elif free_vcpus < r.vcpus or free_ram < r.ram_mb:
            with pytest.raises(NoCapacity):
                self.s.claim(host, r)
        elif r.policy is AA and self._members(r)[host]:
            with pytest.raises(Conflict):
                self.s.claim(host, r)
        else:
            self.s.claim(host, r)
            self.placed[r.server_id] = (host, r)

    @precondition(lambda self: self.placed)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        server = data.draw(st.sampled_from(sorted(self.placed)))
        self.s.release(server)
        del self.placed[server]

    @invariant()
    def capacity_is_exact_and_never_negative(self) -> None:
        for host in self.hosts:
            free = self.s.free(host)
            assert free == self._free(host)
            assert free[0] >= 0 and free[1] >= 0

    @invariant()
    def placements_match(self) -> None:
        for host in self.hosts:
            assert self.s.servers_on(host) == [sid for sid, (h, _) in self.placed.items() if h == host]
            assert self.s.enabled(host) == self.hosts[host].enabled
        for sid, (host, _) in self.placed.items():
            assert self.s.host_of(sid) == host

    @invariant()
    def anti_affinity_holds_GEO_4(self) -> None:
        for host, r in self.placed.values():
            if r.policy is AA:
                others = [o for sid, (h, o) in self.placed.items() if h == host and sid != r.server_id]
                assert not [o for o in others if (o.tenant, o.group) == (r.tenant, r.group)]

    @invariant()
    def dedicated_hosts_never_get_another_tenant_ECS_5(self) -> None:
        for host, r in self.placed.values():
            owner = self.hosts[host].dedicated_to
            assert owner == (r.tenant if r.dedicated else None)


TestSchedulerMachine = SchedulerMachine.TestCase
TestSchedulerMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@settings(max_examples=100, deadline=None)
@given(
    hosts=st.lists(st.tuples(st.integers(1, 16), st.integers(1, 16384)), min_size=1, max_size=6),
    requests=st.lists(requests_st, max_size=30),
    order=st.randoms(use_true_random=False),
)
def test_claims_then_releases_restore_free_capacity_exactly(
    hosts: list[tuple[int, int]], requests: list[PlacementRequest], order: random.Random
) -> None:
    s = Scheduler("az", cpu_ratio=2.0, ram_ratio=1.25)
    for i, (vcpus, ram) in enumerate(hosts):
        s.add_host(f"h{i}", vcpus, ram, dedicated_to="t1" if i % 3 == 2 else None)
    before = {f"h{i}": s.free(f"h{i}") for i in range(len(hosts))}

    def place_all(prefix: str) -> dict[str, str | None]:
        result: dict[str, str | None] = {}
        for i, r in enumerate(requests):
            try:
                result[f"{prefix}{i}"] = s.place(attrs.evolve(r, server_id=f"{prefix}{i}"))
            except (NoCapacity, InvalidRequest):
                result[f"{prefix}{i}"] = None
        return result

    first = place_all("a")
    placed = [sid for sid, host in first.items() if host is not None]
    order.shuffle(placed)
    for sid in placed:
        s.release(sid)
    assert {h: s.free(h) for h in before} == before
    assert all(s.servers_on(h) == [] for h in before)
    # The index and the groups are back too: the same requests place exactly as before.
    assert list(place_all("b").values()) == list(first.values())

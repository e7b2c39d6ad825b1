"""The whole control plane as a hypothesis state machine (TEN-1, TEN-3, ECS-1..5, GEO-4).

A small eu-west-0 region (2-4 small hosts per AZ, 1-2 hosts of the first AZ dedicated
to tenant "ded") runs on the SimDriver with SimPy host and block storage models;
tenants alpha, beta and ded get random quotas (volume quotas included: every server
has a system volume).

Rules are what tenants do: create servers (small flavors, any flavor incl. local-disk
ones, other regions' AZs, auto-recovery on/off, in anti-affinity or soft-anti-affinity
groups, on dedicated hosts), delete them, start/stop/reboot, resize (stopping first or
not), create server groups, request and accept quota changes (up and down, near the
limit or near the use), and try all that on another tenant's server; what operators
fear: host crash, partition from the AZ, rack power loss, now or delayed into the
middle of a request, possibly under a server its user then acts on; repairs; virtual
time passing (seconds to 14 hours); and `settle`: every fault repaired, then quiet.
A request either waits for its reply or stays in flight while later rules run.

Every refusal must be one the test's model expects (and the one it foresees, when it
can), and must change nothing. After every step the invariants of
`tests/properties/checks.py` hold (usage within quota and equal to what the servers
need, no split brain, no lost server, anti-affinity, dedicated hosts, no overcommitted
host, no actor crash; with no request in flight, the block stores hold each server's
system volume and nothing else, ECS-3); after `settle` (also the end of every example)
every server is back in the state its user left it. Finally each example is replayed on a fresh system
from its recorded calls and must give the same event log, byte for byte (SHA-256).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable

import attrs
import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from actors.flavors import FLAVORS
from actors.quotas import RESOURCES
from actors.tenant import (
    AcceptQuotaChange,
    ActOnServer,
    ChangeFlavor,
    CreateServer,
    CreateServerGroup,
    RemoveServer,
    RequestQuotaChange,
)
from actors.topology import DEFAULTS
from runtime.errors import (
    BackendError,
    CloudError,
    Conflict,
    InvalidRequest,
    InvalidTransition,
    NoCapacity,
    NotFound,
    QuotaExceeded,
)
from tests.properties import checks
from tests.properties.harness import AZS, DEDICATED_TENANT, FAULTS, Cloud, CloudConfig, Outcome, replay
from tests.properties.model import Pending, QuotaRequest, Server, ServerModel, TenantModel, needs

TENANTS = ("alpha", "beta", DEDICATED_TENANT)
SMALL_FLAVORS = sorted(n for n, f in FLAVORS.items() if f.vcpus <= 4 and f.ram_mb <= 32768)
ALLOWED_FROM = {"start": {"shutoff"}, "stop": {"active"}, "reboot": {"active"}, "resize": {"shutoff"}}
AFTER = {"start": "active", "stop": "shutoff", "reboot": "active", "resize": "shutoff"}
SETTLE_ROUNDS = 3
SETTLE_ROUND_S = 600.0
QUIET_S = 3600.0
DETECTED_S = 180.0  # > the longest fault delay + keepalive loss + fencing


# -- strategies --------------------------------------------------------------------------
@st.composite
def configs(draw: st.DrawFn) -> CloudConfig:
    hosts = (draw(st.integers(2, 4)), draw(st.integers(2, 4)), draw(st.integers(2, 4)))
    quotas = st.fixed_dictionaries({}, optional={
        "instances": st.integers(2, 10),
        "vcpus": st.integers(4, 32),
        "ram_mb": st.sampled_from([16384, 32768, 65536, 131072]),
        "server_groups": st.integers(0, 3),
        "server_group_members": st.integers(1, 4),
        "volumes": st.integers(2, 10),
        "gigabytes": st.sampled_from([120, 400, 1000]),
    })
    return CloudConfig(
        seed=draw(st.integers(0, 2**32 - 1)),
        hosts_per_az=hosts,
        host_vcpus=draw(st.sampled_from([8, 16])),
        host_ram_mb=draw(st.sampled_from([16384, 32768, 65536])),
        dedicated_hosts=draw(st.integers(1, hosts[0] - 1)),
        quotas=tuple((t, tuple(sorted(draw(quotas).items()))) for t in TENANTS),
    )


flavors = st.one_of(st.sampled_from(SMALL_FLAVORS), st.sampled_from(sorted(FLAVORS)))
azs = st.one_of(st.sampled_from(AZS), st.just("eu-west-1a"))
waits = st.sampled_from([True, True, True, False])  # False: the request stays in flight
delays = st.one_of(st.just(0.0), st.integers(1, 60).map(float))
durations = st.one_of(st.integers(1, 60), st.integers(61, 3600), st.integers(3601, 14 * 3600)).map(float)


class CloudMachine(RuleBasedStateMachine):
    tenants = Bundle("tenants")
    servers = Bundle("servers")
    groups = Bundle("groups")
    requests = Bundle("quota_requests")

    def __init__(self) -> None:
        super().__init__()
        self._cloud: Cloud | None = None
        self.model: dict[str, TenantModel] = {}
        self.inflight: list[Pending] = []
        self.names = itertools.count()
        self.settled_servers = 0

    @property
    def cloud(self) -> Cloud:
        assert self._cloud is not None
        return self._cloud

    # -- setup ---------------------------------------------------------------------------
    @initialize(target=tenants, config=configs())
    def build_region(self, config: CloudConfig) -> MultipleResults[str]:
        self._cloud = Cloud(config)
        for tenant, quotas in config.quotas:
            self.model[tenant] = TenantModel({**DEFAULTS["quotas"], **dict(quotas)})
        return multiple(*config.tenants)

    # -- requests ------------------------------------------------------------------------
    def _faulted(self) -> bool:
        return self.cloud.faults_injected > 0

    def _busy(self) -> set[str]:
        return {p.server_id for p in self.inflight if p.server_id is not None}

    def _quiet(self, tenant: str) -> bool:
        return not any(p.tenant == tenant for p in self.inflight)

    def _tenant_state(self, tenant: str) -> tuple[object, ...]:
        q = self.cloud.quotas(tenant)
        listed = [(s.id, s.flavor.name) for s in self.cloud.servers(tenant)]
        in_azs = sorted(v.id for az in self.cloud.snapshot().azs for v in az.servers if v.tenant == tenant)
        return dict(q.limits), dict(q.used), listed, in_azs

    def _request(self, tenant: str, msg: object, wait: bool, done: Callable[[Outcome], None],
                 allowed: tuple[type[CloudError], ...], predicted: tuple[type[CloudError], ...] = (),
                 server_id: str | None = None) -> None:
        """Send `msg` as `tenant`. Refusals must be of `allowed` types (BackendError too once
        faults were injected); when the model foresees a refusal, it must be of `predicted` types.
        A refused request changes nothing."""
        self._reap()
        if self._faulted():
            allowed = (*allowed, BackendError)
        if not wait:
            allowed = (*allowed, *predicted)
            ticket = self.cloud.send(tenant, msg)
            self.inflight.append(Pending(ticket, msg, tenant, server_id, allowed, done))
            return
        before = self._tenant_state(tenant) if self._quiet(tenant) else None
        out = self.cloud.ask(tenant, msg)
        self._reap()
        if predicted:
            event(f"{type(msg).__name__}: {'ok' if out.ok else type(out.error).__name__} (predicted)")
            assert isinstance(out.error, predicted), (
                f"{msg} should be refused with {' or '.join(p.__name__ for p in predicted)}, got {out}")
        else:
            self._judge(msg, out, allowed)
        done(out)
        if not out.ok and before is not None:
            after = self._tenant_state(tenant)
            assert after == before, f"{msg} was refused ({out.error!r}) but changed {tenant}: {before} -> {after}"

    @staticmethod
    def _judge(msg: object, out: Outcome, allowed: tuple[type[CloudError], ...]) -> None:
        event(f"{type(msg).__name__}: {'ok' if out.ok else type(out.error).__name__}")
        assert out.ok or isinstance(out.error, allowed), (
            f"{msg} was refused with {out.error!r}; expected success or one of {[a.__name__ for a in allowed]}")

    def _reap(self) -> None:
        """Apply the outcomes of requests in flight that got their reply."""
        still = []
        for p in self.inflight:
            if not self.cloud.done(p.ticket):
                still.append(p)
                continue
            out = self.cloud.outcome(p.ticket)
            self._judge(p.msg, out, (*p.allowed, BackendError) if self._faulted() else p.allowed)
            p.done(out)
        self.inflight = still

    def _unknown_server(self, tenant: str, sid: str) -> bool:
        return sid not in self.model[tenant].servers

    @rule(target=servers, tenant=tenants, flavor=st.sampled_from(SMALL_FLAVORS), az=st.sampled_from(AZS),
          auto_recovery=st.booleans(), group=st.one_of(st.none(), groups), wait=waits)
    def create_server(self, tenant: str, flavor: str, az: str, auto_recovery: bool,
                      group: tuple[str, str] | None, wait: bool) -> Server:
        """The common request: a small flavor, a valid AZ; the dedicated tenant uses its hosts in the first AZ."""
        if auto_recovery and FLAVORS[flavor].has_local_disk:
            auto_recovery = False
        dedicated = tenant == DEDICATED_TENANT and az == AZS[0]
        return self._create(tenant, flavor, az, auto_recovery, group, dedicated, wait)

    @rule(target=servers, group=groups, flavor=st.sampled_from(SMALL_FLAVORS), az=st.sampled_from(AZS),
          auto_recovery=st.booleans(), wait=waits)
    def create_group_member(self, group: tuple[str, str], flavor: str, az: str, auto_recovery: bool,
                            wait: bool) -> Server:
        """A member of one of the tenant's server groups (GEO-4)."""
        tenant = group[0]
        return self._create(tenant, flavor, az, auto_recovery and not FLAVORS[flavor].has_local_disk, group,
                            tenant == DEDICATED_TENANT and az == AZS[0], wait)

    @rule(target=servers, tenant=tenants, flavor=flavors, az=azs, auto_recovery=st.booleans(),
          group=st.one_of(st.none(), groups), dedicated=st.booleans(), wait=waits)
    def create_any_server(self, tenant: str, flavor: str, az: str, auto_recovery: bool,
                          group: tuple[str, str] | None, dedicated: bool, wait: bool) -> Server:
        """Any request, also for flavors too big, AZs of another region, dedicated hosts one has not got."""
        return self._create(tenant, flavor, az, auto_recovery, group, dedicated, wait)

    def _create(self, tenant: str, flavor: str, az: str, auto_recovery: bool, group: tuple[str, str] | None,
                dedicated: bool, wait: bool) -> Server:
        f = FLAVORS[flavor]
        server = Server(tenant, f"{tenant}-{next(self.names)}")
        group_name = None if group is None else group[1]
        model = self.model[tenant]
        predicted: tuple[type[CloudError], ...] = ()
        allowed: tuple[type[CloudError], ...] = (QuotaExceeded, NoCapacity, InvalidRequest, NotFound)
        if self._quiet(tenant):
            allowed = (NoCapacity,)  # what the model cannot foresee: the AZ's capacity
            need = needs(f)
            over = [r for r, n in need.items() if model.usage()[r] + n > model.limits[r]]
            if az not in AZS or (auto_recovery and f.has_local_disk):
                predicted = (InvalidRequest,)
            elif group_name is not None and group_name not in model.groups:
                predicted = (NotFound,)
            elif (group_name is not None and model.members(group_name) >= model.limits["server_group_members"]) \
                    or over:
                predicted = (QuotaExceeded,)
            elif dedicated and (tenant != DEDICATED_TENANT or az != AZS[0]):
                predicted = (NoCapacity,)

        def done(out: Outcome) -> None:
            if out.ok:
                server.id = out.value
                model.servers[out.value] = ServerModel(f, az, group_name, auto_recovery)

        self._request(tenant, CreateServer(server.name, flavor, az, auto_recovery, group_name, dedicated), wait,
                      done, allowed, predicted)
        return server

    @rule(server=servers, wait=waits)
    def delete_server(self, server: Server, wait: bool) -> None:
        sid = server.id
        if sid is None:
            return
        model = self.model[server.tenant]
        unknown = self._unknown_server(server.tenant, sid)
        allowed: tuple[type[CloudError], ...] = (NotFound,) if unknown else self._conflicts(sid)

        def done(out: Outcome) -> None:
            if out.ok:
                del model.servers[sid]

        self._request(server.tenant, RemoveServer(sid), wait, done, allowed, (NotFound,) if unknown else (), sid)

    def _conflicts(self, sid: str) -> tuple[type[CloudError], ...]:
        """Conflict (busy) is expected only with a request in flight on it, or faults being handled."""
        return (Conflict,) if sid in self._busy() or self._faulted() else ()

    def _act(self, server: Server, action: str, msg: object, wait: bool,
             extra: tuple[type[CloudError], ...] = (), after: Callable[[ServerModel], None] | None = None,
             refused_first: tuple[type[CloudError], ...] = (),
             may_refuse_first: tuple[type[CloudError], ...] = ()) -> None:
        """Send a request about one server, foreseeing its refusal when the model can.

        `refused_first`: what the tenant surely refuses it with before the AZ sees it;
        `may_refuse_first`: what the tenant may refuse it with (the model cannot tell)."""
        sid = server.id
        if sid is None:
            return
        model = self.model[server.tenant]
        if self._unknown_server(server.tenant, sid):
            self._request(server.tenant, msg, wait, lambda out: None, (NotFound,), (NotFound,), sid)
            return
        s = model.servers[sid]
        predicted: tuple[type[CloudError], ...] = ()
        if sid not in self._busy() and refused_first:
            predicted = refused_first  # the tenant refuses before the AZ looks at the state
        elif not self._faulted() and sid not in self._busy() and s.expected is not None \
                and s.expected not in ALLOWED_FROM[action]:
            predicted = (InvalidTransition, *may_refuse_first)
        # Without faults, a server in the state its last request left it in accepts the actions of that state.
        strict = not self._faulted() and sid not in self._busy() and s.expected is not None
        allowed = (*self._conflicts(sid), *extra, *may_refuse_first,
                   *(() if strict and not predicted else (InvalidTransition,)))

        def done(out: Outcome) -> None:
            if sid not in model.servers:
                return
            s = model.servers[sid]
            if out.ok:
                s.expected = AFTER[action]
                if after is not None:
                    after(s)
            elif not isinstance(out.error, InvalidTransition | Conflict | NotFound | NoCapacity | QuotaExceeded):
                # A host failed during the operation: the state is the AZ's call, except that an
                # auto-recovery server that was active must run again (ECS-4), whatever it was doing.
                if not (s.auto_recovery and s.expected == "active" and action == "reboot"):
                    s.expected = None

        self._request(server.tenant, msg, wait, done, allowed, predicted, sid)

    @rule(server=servers, action=st.sampled_from(["start", "stop", "reboot"]), wait=waits)
    def act_on_server(self, server: Server, action: str, wait: bool) -> None:
        if server.id is not None:
            self._act(server, action, ActOnServer(server.id, action), wait)

    @rule(server=servers, flavor=flavors, stop_first=st.booleans(), wait=waits)
    def resize_server(self, server: Server, flavor: str, stop_first: bool, wait: bool) -> None:
        sid = server.id
        if sid is None:
            return
        if stop_first:
            self._act(server, "stop", ActOnServer(sid, "stop"), True)
        f = FLAVORS[flavor]
        model = self.model[server.tenant]
        over_quota: tuple[type[CloudError], ...] = ()
        maybe_over_quota: tuple[type[CloudError], ...] = (QuotaExceeded,)
        if sid in model.servers and self._quiet(server.tenant):
            maybe_over_quota = ()
            old = model.servers[sid].flavor
            usage = model.usage()
            grow = {r: max(0, n - needs(old)[r]) for r, n in needs(f).items()}
            if any(n and usage[r] + n > model.limits[r] for r, n in grow.items()):
                over_quota = (QuotaExceeded,)

        def resized(s: ServerModel) -> None:
            s.flavor = f

        self._act(server, "resize", ChangeFlavor(sid, flavor), wait, (NoCapacity,), resized, over_quota,
                  maybe_over_quota)

    @rule(server=servers, tenant=tenants, action=st.sampled_from(["start", "stop", "reboot", "delete"]))
    def act_as_another_tenant_TEN_1(self, server: Server, tenant: str, action: str) -> None:
        """A tenant cannot see, let alone touch, another tenant's server."""
        if server.id is None or tenant == server.tenant:
            return
        msg = RemoveServer(server.id) if action == "delete" else ActOnServer(server.id, action)
        self._request(tenant, msg, True, lambda out: None, (NotFound,), (NotFound,))

    @rule(target=groups, tenant=tenants, name=st.sampled_from(["web", "db"]),
          policy=st.sampled_from(["anti-affinity", "soft-anti-affinity", "affinity"]))
    def create_server_group(self, tenant: str, name: str, policy: str) -> tuple[str, str]:
        model = self.model[tenant]
        predicted: tuple[type[CloudError], ...] = ()
        if policy == "affinity":
            predicted = (InvalidRequest,)
        elif name in model.groups:
            predicted = (Conflict,)
        elif len(model.groups) + 1 > model.limits["server_groups"]:
            predicted = (QuotaExceeded,)

        def done(out: Outcome) -> None:
            if out.ok:
                model.groups[name] = policy

        self._request(tenant, CreateServerGroup(name, policy), True, done, (), predicted)
        return tenant, name

    @rule(target=requests, tenant=tenants, resource=st.sampled_from(RESOURCES),
          base=st.sampled_from(["limit", "use", "nothing"]), change=st.integers(-3, 3))
    def request_quota_change(self, tenant: str, resource: str, base: str,
                             change: int) -> MultipleResults[QuotaRequest]:
        """Ask for a new limit near the current limit, or near what is in use (where TEN-3 bites)."""
        model = self.model[tenant]
        step = {"ram_mb": 1024, "gigabytes": 20}.get(resource, 1)
        start = {"limit": model.limits[resource], "use": model.in_use(resource), "nothing": 0}[base]
        limit = start + change * step
        ids: list[QuotaRequest] = []

        def done(out: Outcome) -> None:
            if out.ok:
                ids.append(QuotaRequest(tenant, out.value, resource, limit))

        self._request(tenant, RequestQuotaChange(resource, limit), True, done, (),
                      (InvalidRequest,) if limit < 0 else ())
        return multiple(*ids)

    @rule(request=requests, by_another=st.booleans())
    def accept_quota_change(self, request: QuotaRequest, by_another: bool) -> None:
        """The provider accepts a request (through its tenant, or wrongly through another one)."""
        tenant = TENANTS[(TENANTS.index(request.tenant) + by_another) % len(TENANTS)]
        model = self.model[request.tenant]
        predicted: tuple[type[CloudError], ...] = ()
        allowed: tuple[type[CloudError], ...] = ()
        if tenant != request.tenant:
            predicted = (NotFound,)  # TEN-1: a request id means nothing to another tenant
        elif request.id in model.accepted:
            predicted = (Conflict,)
        elif not self._quiet(tenant):
            allowed = (InvalidRequest,)
        elif request.limit < model.in_use(request.resource):
            predicted = (InvalidRequest,)  # never below what is in use (TEN-3)

        def done(out: Outcome) -> None:
            if out.ok:
                model.accepted.add(request.id)
                model.limits[request.resource] = request.limit

        self._request(tenant, AcceptQuotaChange(request.id), True, done, allowed, predicted)

    @rule(tenant=tenants, resource=st.sampled_from(RESOURCES), base=st.sampled_from(["limit", "use"]),
          change=st.integers(-3, 3))
    def change_quota(self, tenant: str, resource: str, base: str, change: int) -> None:
        """The usual path: a request the provider accepts at once."""
        for request in self.request_quota_change(tenant, resource, base, change).values:
            self.accept_quota_change(request, False)

    # -- faults and time -------------------------------------------------------------------
    @rule(data=st.data(), fault=st.sampled_from(FAULTS), delay=delays)
    def inject_fault(self, data: st.DataObject, fault: str, delay: float) -> None:
        """A host crashes or is cut off from its AZ, or a rack loses power; now or a little later."""
        targets = self.cloud.racks if fault == "power" else sorted(self.cloud.world.hosts)
        self.cloud.inject(fault, data.draw(st.sampled_from(targets), label="target"), delay)
        self._reap()

    @rule(server=servers, fault=st.sampled_from(FAULTS), delay=delays,
          then=st.sampled_from([None, "start", "stop", "reboot", "delete"]), wait=waits)
    def fault_under_server(self, server: Server, fault: str, delay: float, then: str | None, wait: bool) -> None:
        """The host (or rack) of a given server fails, and its user may act on it before the AZ notices."""
        host = next((v.host for az in self.cloud.snapshot().azs for v in az.servers if v.id == server.id), None)
        if host is None:
            return
        self.cloud.inject(fault, self.cloud.host_spec(host).rack if fault == "power" else host, delay)
        self._reap()
        if then == "delete":
            self.delete_server(server, wait)
        elif then is not None:
            self.act_on_server(server, then, wait)

    @precondition(lambda self: self._cloud is not None and bool(self.cloud.faults_now()))
    @rule(data=st.data())
    def repair_fault(self, data: st.DataObject) -> None:
        fault, target = data.draw(st.sampled_from(self.cloud.faults_now()), label="fault")
        self.cloud.repair(fault, target)
        self._reap()

    @rule(seconds=durations)
    def let_time_pass(self, seconds: float) -> None:
        self.cloud.advance(seconds)
        self._reap()

    @rule()
    def settle(self) -> None:
        """Operators repair everything; after a quiet hour, every server is back where it belongs."""
        cloud = self.cloud
        cloud.wait(*[p.ticket for p in self.inflight])
        self._reap()
        cloud.advance(DETECTED_S)  # every delayed fault happened and was noticed
        assert cloud.faults_pending == 0
        for _ in range(SETTLE_ROUNDS):
            cloud.repair_everything()
            cloud.advance(SETTLE_ROUND_S)
        cloud.advance(QUIET_S)
        obs = checks.Observation.take(cloud)
        expected = {sid: s.expected for m in self.model.values() for sid, s in m.servers.items()}
        checks.settled(cloud, obs, expected)
        self.settled_servers = len(obs.views)

    # -- invariants --------------------------------------------------------------------------
    @invariant()
    def control_plane_is_consistent(self) -> None:
        if self._cloud is None:
            return
        cloud = self.cloud
        self._reap()
        checks.actor_tree_alive(cloud)
        obs = checks.Observation.take(cloud)
        checks.quotas_hold_TEN_3(obs, {t: m.limits for t, m in self.model.items()})
        checks.listing_matches_azs(obs)
        for tenant, model in self.model.items():
            if self._quiet(tenant):
                checks.quiet_tenant_is_consistent(obs, tenant, model.servers, model.usage())
        checks.no_split_brain(cloud)
        checks.no_server_lost(cloud, obs, self._busy())
        policies = {f"{t}/{g}": p for t, m in self.model.items() for g, p in m.groups.items()}
        checks.anti_affinity_GEO_4(cloud, obs, policies)
        checks.dedicated_hosts_ECS_5(cloud, obs)
        checks.hosts_not_overcommitted(cloud)
        if not self.inflight:
            checks.system_volumes_ECS_3(cloud, obs)

    def teardown(self) -> None:
        cloud = self._cloud
        if cloud is None:
            return
        replica: Cloud | None = None
        try:
            if sys.exception() is None:  # a failed step is reported as it is, not buried under these
                self.settle()
                event("servers at the end", self.settled_servers)
                event("faults injected", cloud.faults_injected)
                event("virtual hours", round(cloud.now / 3600))
                replica = replay(cloud.config, cloud.script)
                assert replica.sha256 == cloud.sha256, _first_difference(cloud, replica)
        finally:
            cloud.close()
            if replica is not None:
                replica.close()


def _first_difference(a: Cloud, b: Cloud) -> str:
    left, right = a.lines.getvalue().splitlines(), b.lines.getvalue().splitlines()
    for i, (x, y) in enumerate(itertools.zip_longest(left, right)):
        if x != y:
            return f"the replay differs from the run at event {i}:\n  run:    {x}\n  replay: {y}"
    return "the event logs have equal lines but different hashes"


TestCloudStateMachine = CloudMachine.TestCase
TestCloudStateMachine.settings = settings(stateful_step_count=50)


def test_the_replay_check_can_fail() -> None:
    """A different seed gives a different history: the determinism check is not vacuous."""
    config = CloudConfig(seed=1, hosts_per_az=(3, 2, 2), host_vcpus=16, host_ram_mb=65536, dedicated_hosts=1,
                         quotas=tuple((t, ()) for t in TENANTS))
    with Cloud(config) as run:
        run.ask("alpha", CreateServer("a", "s3.large.2", AZS[0], True))
        run.inject("crash", f"{AZS[0]}-h00002")
        run.advance(3600)
        with replay(config, run.script) as same, replay(attrs.evolve(config, seed=2), run.script) as other:
            assert same.sha256 == run.sha256
            assert other.sha256 != run.sha256


@pytest.mark.parametrize("fencing", [True, False])
def test_the_split_brain_check_fails_without_fencing_ECS_4(fencing: bool) -> None:
    """A partitioned host keeps running its servers: only fencing prevents a second copy."""
    config = CloudConfig(seed=3, hosts_per_az=(3, 2, 2), host_vcpus=16, host_ram_mb=65536, dedicated_hosts=1,
                         quotas=tuple((t, ()) for t in TENANTS), fencing=fencing)
    with Cloud(config) as cloud:
        assert cloud.ask("alpha", CreateServer("a", "s3.large.2", AZS[0], True)).ok
        host = cloud.snapshot().azs[0].servers[0].host
        assert host is not None
        cloud.inject("partition", host)
        cloud.advance(600)
        if fencing:
            checks.no_split_brain(cloud)
        else:
            with pytest.raises(AssertionError, match="two hosts"):
                checks.no_split_brain(cloud)

"""Invariants of a live region, judged against the ground truth of the host models.

Each check takes an `Observation` (what the control plane says, asked through its
messages) and the `Cloud` (whose `World` says where servers really run) and fails
with a message that names the server, host or tenant and the rule broken.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Mapping

import attrs

from actors.az import ServerView
from actors.region import RegionSnapshot
from actors.tenant import Quotas, TenantServer
from tests.properties.harness import Cloud

# States in which a server is not running and need not be (a user action, a failure
# being handled, or a failed operation the user sees).
NOT_RUNNING_OK = frozenset({"building", "shutoff", "resizing", "down", "recovering", "error"})
# States a running server may be in. "rebooting" ends when the reboot is done; "error"
# (a failed operation) says nothing about whether it runs.
RUNNING_OK = frozenset({"active", "rebooting", "error"})
SETTLED = frozenset({"active", "shutoff", "error"})


@attrs.frozen
class Observation:
    """The control plane's answers at one instant: AZ snapshots, and each tenant's quotas and servers."""

    snapshot: RegionSnapshot
    quotas: Mapping[str, Quotas]
    listings: Mapping[str, list[TenantServer]]

    @classmethod
    def take(cls, cloud: Cloud) -> Observation:
        tenants = sorted(cloud.tenants)
        return cls(cloud.snapshot(), {t: cloud.quotas(t) for t in tenants}, {t: cloud.servers(t) for t in tenants})

    @property
    def views(self) -> dict[str, tuple[str, ServerView]]:
        """Every server the AZs know, by id, with its AZ."""
        return {v.id: (az.az, v) for az in self.snapshot.azs for v in az.servers}

    @property
    def hosts_down(self) -> set[str]:
        return {h for az in self.snapshot.azs for h in az.hosts_down}

    def tenant_ids_in_azs(self, tenant: str) -> set[str]:
        return {sid for sid, (_, v) in self.views.items() if v.tenant == tenant}


def actor_tree_alive(cloud: Cloud) -> None:
    assert not cloud._main.done, f"the actor tree ended: {cloud._main.error!r}"
    assert cloud.system.restarts == 0, (
        f"{cloud.system.restarts} actor restart(s): an actor crashed (a restarted AZ forgets its servers); "
        "see the ActorRestarted events in cloud.lines")


def quotas_hold_TEN_3(obs: Observation, limits: Mapping[str, Mapping[str, int]]) -> None:
    """Usage never exceeds a limit, and limits are those the tenant asked for and the provider accepted."""
    for tenant, q in obs.quotas.items():
        for resource, used in q.used.items():
            assert 0 <= used <= q.limits[resource], (
                f"tenant {tenant} uses {used} {resource} with a quota of {q.limits[resource]} (TEN-3)")
        assert dict(q.limits) == dict(limits[tenant]), (
            f"tenant {tenant}'s limits {dict(q.limits)} differ from the accepted ones {dict(limits[tenant])} (TEN-3)")
        sizes = Counter(s.group for s in obs.listings[tenant] if s.group is not None)
        for group, n in sizes.items():
            assert n <= q.limits["server_group_members"], (
                f"server group {group} of {tenant} has {n} members with a quota of "
                f"{q.limits['server_group_members']} server_group_members (TEN-3)")


def listing_matches_azs(obs: Observation) -> None:
    """Every server a tenant lists is known to its AZ, as the tenant's (no lost server, TEN-1)."""
    views = obs.views
    for tenant, servers in obs.listings.items():
        for s in servers:
            assert s.id in views, f"tenant {tenant} lists server {s.id} ({s.name}) that no AZ knows: lost"
            az, view = views[s.id]
            assert az == s.az and view.tenant == tenant, (
                f"server {s.id} is listed by {tenant} in {s.az} but {az} has it for tenant {view.tenant}")


def quiet_tenant_is_consistent(obs: Observation, tenant: str, model_ids: Collection[str],
                               model_usage: Mapping[str, int]) -> None:
    """With no request of the tenant in flight: tenant, AZs and test model agree, and usage is exact."""
    listed = {s.id for s in obs.listings[tenant]}
    in_azs = obs.tenant_ids_in_azs(tenant)
    assert listed == in_azs, (
        f"tenant {tenant} lists {sorted(listed - in_azs)} unknown to the AZs and the AZs hold "
        f"{sorted(in_azs - listed)} it does not list (half-created or half-deleted servers)")
    assert listed == set(model_ids), (
        f"tenant {tenant} lists {sorted(listed)}, but the requests that succeeded leave {sorted(model_ids)}")
    used = obs.quotas[tenant].used
    for resource, n in model_usage.items():
        assert used[resource] == n, (
            f"tenant {tenant} is charged {used[resource]} {resource}, but its servers and groups need {n} (TEN-3)")
    for s in obs.listings[tenant]:
        assert obs.views[s.id][1].tenant == tenant


def no_split_brain(cloud: Cloud) -> None:
    """No server ever ran on two hosts at once (ECS-4: fencing before recovery)."""
    world = cloud.world
    twice = {sid: sorted(hosts) for sid, hosts in world.running_on.items() if len(hosts) > 1}
    assert not twice, f"servers running on two hosts now: {twice}"
    assert not world.split_brain, f"servers that ran on two hosts at once: {sorted(world.split_brain)}"


def no_server_lost(cloud: Cloud, obs: Observation, busy: Collection[str]) -> None:
    """Each server runs where its AZ says, or is legitimately not running.

    Legitimately: stopped, being built/resized/recovered, down, waiting for capacity,
    in error after a failed operation, on a host that is down or unreachable (the AZ
    notices within the keepalive time), or with a user request in flight (`busy`).
    """
    world = cloud.world
    down = obs.hosts_down
    for sid, (az, v) in obs.views.items():
        truth = world.running_on.get(sid, set())
        if truth:
            assert truth == {v.host}, f"server {sid} runs on {sorted(truth)} but {az} says it is on {v.host}"
            # A returning host is reconciled in one batch: its servers run before the AZ marks them active.
            returning = v.state == "down" and v.host in down
            assert v.state in RUNNING_OK or sid in busy or returning, (
                f"server {sid} runs on {v.host} but {az} says it is {v.state}")
            continue
        host_unwell = v.host is not None and (not world.hosts[v.host].reachable or v.host in down)
        ok = (v.state in NOT_RUNNING_OK or v.waiting_capacity or v.recovery_pending or host_unwell or sid in busy)
        assert ok, (f"server {sid} of {v.tenant} is lost: {az} says {v.state} on {v.host} "
                    f"(host reachable: {v.host is not None and world.hosts[v.host].reachable}, AZ hosts down: "
                    f"{sorted(down)}) but it runs nowhere, and nothing is recovering it")


def anti_affinity_GEO_4(cloud: Cloud, obs: Observation, policies: Mapping[str, str]) -> None:
    """Members of an anti-affinity group are on distinct hosts, by the AZ's claims and by the truth."""
    claimed: dict[str, list[tuple[str, str]]] = defaultdict(list)
    running: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for sid, (_, v) in obs.views.items():
        if v.group is None or policies.get(v.group) != "anti-affinity":
            continue
        if v.host is not None:
            claimed[v.group].append((v.host, sid))
        for host in cloud.world.running_on.get(sid, ()):
            running[v.group].append((host, sid))
    for kind, table in (("placed", claimed), ("running", running)):
        for group, members in table.items():
            hosts = [h for h, _ in members]
            assert len(hosts) == len(set(hosts)), (
                f"anti-affinity group {group} has members {kind} on one host: {sorted(members)} (GEO-4)")


def dedicated_hosts_ECS_5(cloud: Cloud, obs: Observation) -> None:
    """A dedicated host holds only its tenant's dedicated servers; those go nowhere else."""
    views = obs.views
    owner = {h.name: h.dedicated_to for h in cloud.topology.hosts}
    for sid, (_, v) in views.items():
        if v.host is not None:
            expected = v.tenant if v.dedicated else None
            assert owner[v.host] == expected, (
                f"server {sid} of {v.tenant} (dedicated={v.dedicated}) is placed on {v.host}, "
                f"dedicated to {owner[v.host]} (ECS-5)")
    for host, model in cloud.world.hosts.items():
        if owner[host] is None:
            continue
        for sid, dom in model.domains.items():
            if dom.running:
                view = views.get(sid)
                assert view is not None and view[1].tenant == owner[host] and view[1].dedicated, (
                    f"server {sid} ({view and view[1].tenant}) runs on {host}, dedicated to {owner[host]} (ECS-5)")


def hosts_not_overcommitted(cloud: Cloud) -> None:
    """What runs on a host fits in it (the scheduler's accounting matches the hardware)."""
    for name, model in cloud.world.hosts.items():
        doms = [d.spec for d in model.domains.values() if d.running]
        vcpus, ram = sum(d.vcpus for d in doms), sum(d.ram_mb for d in doms)
        assert vcpus <= model.capacity.vcpus and ram <= model.capacity.ram_mb, (
            f"host {name} runs {vcpus} vCPUs and {ram} MB of servers with {model.capacity} "
            f"({sorted(d.server_id for d in doms)})")


def settled(cloud: Cloud, obs: Observation, expected: Mapping[str, str | None]) -> None:
    """After every fault is repaired and enough quiet time: everything is back (ECS-4).

    Every host is up; every server is active and running where its AZ says, or stopped
    (by its user), or in error (after a failed operation); each is in the state its
    last successful request left it (`expected`, None when unknown); nothing else runs
    or is defined anywhere.
    """
    world = cloud.world
    assert not obs.hosts_down, f"hosts still down after every fault was repaired: {sorted(obs.hosts_down)}"
    views = obs.views
    tenant_flavor = {s.id: s.flavor for servers in obs.listings.values() for s in servers}
    for sid, (az, v) in views.items():
        truth = world.running_on.get(sid, set())
        assert v.state in SETTLED and not v.waiting_capacity and not v.recovery_pending, (
            f"server {sid} of {v.tenant} is still {v.state} (waiting for capacity: {v.waiting_capacity}, "
            f"recovery pending: {v.recovery_pending}) on {v.host} after every fault was repaired")
        want = expected.get(sid)
        assert want is None or v.state == want, (
            f"server {sid} of {v.tenant} is {v.state}; its last successful request left it {want}")
        assert v.host is not None
        if v.state == "active":
            assert truth == {v.host}, (
                f"server {sid} of {v.tenant} is active on {v.host} in {az} but runs on {sorted(truth) or 'no host'}; "
                f"its events: {history(cloud, sid, v.host)}")
        else:
            assert not truth, f"server {sid} of {v.tenant} is {v.state} but runs on {sorted(truth)}"
        dom = world.hosts[v.host].domains.get(sid)
        assert dom is not None, f"server {sid} of {v.tenant} is on {v.host} by {az}, but not defined there"
        flavor = tenant_flavor.get(sid)
        assert flavor is None or (dom.spec.vcpus, dom.spec.ram_mb) == (flavor.vcpus, flavor.ram_mb), (
            f"server {sid} is defined on {v.host} as {dom.spec}, but its flavor is {flavor}")
    for host, model in world.hosts.items():
        assert model.running and model.reachable, f"host {host} is still off or cut off after the repairs"
        stale = sorted(sid for sid in model.domains if sid not in views or views[sid][1].host != host)
        assert not stale, (f"host {host} still holds domains of servers that are deleted or live elsewhere: {stale}; "
                           f"events: {history(cloud, host, *stale)}")


def system_volumes_ECS_3(cloud: Cloud, obs: Observation) -> None:
    """With no request in flight: every server has its system volume in its AZ's block store,
    and the stores hold no other volume (none left behind by a refused or deleted server)."""
    expected = set()
    for tenant, servers in obs.listings.items():
        for s in servers:
            assert s.system_volume is not None, f"server {s.id} of {tenant} has no system volume (ECS-3)"
            expected.add((s.az, s.system_volume))
    stored = {(az, vid) for az in cloud.storage.volumes for vid in cloud.storage.volume_ids(az)}
    assert stored == expected, (f"block stores hold volumes of no server: {sorted(stored - expected)}; servers whose "
                                f"system volume is missing: {sorted(expected - stored)} (ECS-3)")


def history(cloud: Cloud, *names: str) -> list[str]:
    """The event-log lines that mention any of `names` (for failure messages)."""
    return [line for line in cloud.lines.getvalue().splitlines() if any(n in line for n in names)][-25:]

"""Placement of servers on the hosts of one AZ, Nova style: hard filters, then weighers.

Filters (a host failing one is never chosen):
    enabled     a disabled host (down, suspect, fenced) takes nothing new;
    pool        ECS-5: a host dedicated to tenant T takes only T's requests with
                `dedicated=True`, and such requests go only to T's dedicated hosts;
    resources   enough free vCPUs and RAM, after the allocation ratios;
    exclude     hosts the caller rules out (e.g. the failed host of a recovery);
    GEO-4       anti-affinity: no two members of a group on one host.
Weighers: most free RAM first (spread); soft anti-affinity puts fewest group members
first; ties go to the smallest host name, so placement is deterministic.
A group (scoped to its tenant, TEN-1) has one policy, fixed by its first member, as
in Nova; it lives while it has members.

Invariant: for every host, free = capacity - sum of its claims, never negative, and
every enabled host with a free vCPU is in exactly one index list: the one of its pool
and of its free-vCPU bucket, keyed by (-free RAM, name). `place` walks the lists of
the buckets that can hold the request, merged in weight order, and stops at the first
host that passes the filters, or as soon as RAM runs short: no full scan unless
nothing fits.
"""

from __future__ import annotations

import enum
import heapq
import math
from collections.abc import Collection, Iterator

import attrs
from sortedcontainers import SortedList

from actors.flavors import Flavor
from runtime.errors import Conflict, InvalidRequest, NoCapacity, NotFound

SOFT_ANTI_AFFINITY_SCAN = 256
"""Soft anti-affinity looks at most this many fitting hosts for one with fewer members."""


class GroupPolicy(enum.Enum):
    ANTI_AFFINITY = "anti-affinity"
    SOFT_ANTI_AFFINITY = "soft-anti-affinity"


@attrs.frozen
class PlacementRequest:
    """What the scheduler needs to place one server."""

    server_id: str
    tenant: str
    vcpus: int
    ram_mb: int
    group: str | None = None
    policy: GroupPolicy | None = None
    dedicated: bool = False

    def __attrs_post_init__(self) -> None:
        if self.vcpus < 1 or self.ram_mb < 1:
            raise InvalidRequest(
                f"server {self.server_id} needs at least 1 vCPU and 1 MB of RAM, got {self.vcpus} and {self.ram_mb}"
            )
        if (self.group is None) != (self.policy is None):
            raise InvalidRequest(
                f"server {self.server_id}: a server group needs a policy and a policy needs a group, "
                f"got group={self.group!r} policy={self.policy}"
            )

    @classmethod
    def for_flavor(
        cls,
        server_id: str,
        tenant: str,
        flavor: Flavor,
        *,
        group: str | None = None,
        policy: GroupPolicy | None = None,
        dedicated: bool = False,
    ) -> PlacementRequest:
        return cls(server_id, tenant, flavor.vcpus, flavor.ram_mb, group, policy, dedicated)

    def describe(self) -> str:
        return f"server {self.server_id} ({self.vcpus} vCPUs, {self.ram_mb} MB RAM)"


@attrs.define
class _Group:
    policy: GroupPolicy
    hosts: dict[str, int] = attrs.Factory(dict)


@attrs.define(eq=False)
class _Host:
    name: str
    dedicated_to: str | None
    free_vcpus: int
    free_ram: int
    enabled: bool = True
    servers: dict[str, PlacementRequest] = attrs.Factory(dict)


def _bucket(vcpus: int) -> int:
    """Bucket b >= 1 holds hosts with 2**(b-1) <= free vCPUs < 2**b; every host in a bucket
    above the request's own has enough vCPUs."""
    return vcpus.bit_length()


def _in_weight_order(lists: list[SortedList]) -> Iterator[tuple[int, str]]:
    """The entries of non-empty sorted lists, merged.

    The best head usually passes every filter, so the merge itself is only built when
    a second entry is asked for.
    """
    if len(lists) == 1:
        yield from lists[0]
        return
    if lists:
        head: tuple[int, str] = min(entries[0] for entries in lists)
        yield head
        merged = heapq.merge(*lists)
        next(merged)
        yield from merged


def _pool_name(tenant: str | None) -> str:
    return "shared hosts" if tenant is None else f"dedicated hosts of tenant {tenant} (ECS-5)"


class Scheduler:
    """Free capacity of the hosts of one placement domain (an AZ), and who runs where."""

    def __init__(self, name: str, cpu_ratio: float = 1.0, ram_ratio: float = 1.0) -> None:
        if not (cpu_ratio > 0 and ram_ratio > 0 and math.isfinite(cpu_ratio) and math.isfinite(ram_ratio)):
            raise InvalidRequest(f"scheduler {name}: allocation ratios must be positive, got {cpu_ratio}, {ram_ratio}")
        self.name = name
        self.cpu_ratio = cpu_ratio
        self.ram_ratio = ram_ratio
        self._hosts: dict[str, _Host] = {}
        self._where: dict[str, _Host] = {}
        # pool (None: shared, else the owning tenant) -> vCPU bucket -> [(-free RAM, host)]
        self._index: dict[str | None, dict[int, SortedList]] = {}
        # (tenant, group) -> its policy and members per host; a group lives while it has members
        self._groups: dict[tuple[str, str], _Group] = {}

    # -- hosts ---------------------------------------------------------------------------

    def add_host(self, host: str, vcpus: int, ram_mb: int, dedicated_to: str | None = None) -> None:
        """Add an enabled, empty host; capacity is the physical size times the allocation ratios."""
        if host in self._hosts:
            raise Conflict(f"host {host} is already known to scheduler {self.name}")
        if vcpus < 1 or ram_mb < 1:
            raise InvalidRequest(f"host {host} needs at least 1 vCPU and 1 MB of RAM, got {vcpus} and {ram_mb}")
        cap_vcpus, cap_ram = math.floor(vcpus * self.cpu_ratio), math.floor(ram_mb * self.ram_ratio)
        h = _Host(host, dedicated_to, cap_vcpus, cap_ram)
        self._hosts[host] = h
        self._index.setdefault(dedicated_to, {})
        self._add_to_index(h)

    def set_enabled(self, host: str, enabled: bool) -> None:
        h = self._host(host)
        if h.enabled != enabled:
            self._remove_from_index(h)
            h.enabled = enabled
            self._add_to_index(h)

    def enabled(self, host: str) -> bool:
        return self._host(host).enabled

    def free(self, host: str) -> tuple[int, int]:
        """(vCPUs, RAM MB) not claimed on `host`."""
        h = self._host(host)
        return h.free_vcpus, h.free_ram

    def servers_on(self, host: str) -> list[str]:
        """Servers claimed on `host`, in claim order."""
        return list(self._host(host).servers)

    def host_of(self, server_id: str) -> str | None:
        h = self._where.get(server_id)
        return None if h is None else h.name

    # -- placement -----------------------------------------------------------------------

    def place(self, req: PlacementRequest, exclude: Collection[str] = ()) -> str:
        """Choose a host for `req`, claim its capacity there and return its name.

        Raises `NoCapacity` saying which filter left no host, `Conflict` if the server
        is already placed, `InvalidRequest` if its group has another policy.
        """
        self._refuse_placed(req)
        excluded = exclude if isinstance(exclude, set | frozenset) else frozenset(exclude)
        members = self._members(req)
        hard = req.policy is GroupPolicy.ANTI_AFFINITY
        best: _Host | None = None
        best_members = 0
        fitting = n_excluded = n_grouped = soft_seen = 0
        for h in self._fitting(req):
            fitting += 1
            if h.name in excluded:
                n_excluded += 1
                continue
            n = members.get(h.name, 0)
            if n and hard:
                n_grouped += 1
                continue
            if n == 0:
                best = h
                break
            # Only soft anti-affinity gets here: keep the host with the fewest members.
            if best is None or n < best_members:
                best, best_members = h, n
            soft_seen += 1
            if soft_seen >= SOFT_ANTI_AFFINITY_SCAN:
                break
        if best is None:
            raise NoCapacity(self.name, self._shortfall(req, fitting, n_excluded, n_grouped))
        self._claim(best, req)
        return best.name

    def claim(self, host: str, req: PlacementRequest) -> None:
        """Claim `req` on `host`, even a disabled one (to restore a known placement).

        Every other filter still holds: `InvalidRequest` if the host's pool refuses the
        request (ECS-5) or its group has another policy, `NoCapacity` if the host lacks
        room, `Conflict` if anti-affinity (GEO-4) forbids it or the server is already placed.
        """
        h = self._host(host)
        self._refuse_placed(req)
        members = self._members(req)
        if h.dedicated_to is None and req.dedicated:
            raise InvalidRequest(f"{req.describe()} asks for a dedicated host; {host} is a shared host (ECS-5)")
        if h.dedicated_to is not None and (h.dedicated_to != req.tenant or not req.dedicated):
            raise InvalidRequest(
                f"{req.describe()}: host {host} is not one of tenant {req.tenant}'s dedicated hosts, "
                "or the request does not ask for one (ECS-5)"
            )
        if h.free_vcpus < req.vcpus or h.free_ram < req.ram_mb:
            raise NoCapacity(
                f"{self.name} host {host}",
                f"{req.describe()}: only {h.free_vcpus} vCPUs and {h.free_ram} MB RAM free",
            )
        if req.policy is GroupPolicy.ANTI_AFFINITY and members.get(host, 0):
            raise Conflict(
                f"{req.describe()} cannot go to host {host}: it already holds a member of "
                f"anti-affinity group {req.group!r} (GEO-4); pick another host"
            )
        self._claim(h, req)

    def release(self, server_id: str) -> None:
        """Free the server's capacity and group membership; an unknown id is a no-op."""
        h = self._where.pop(server_id, None)
        if h is None:
            return
        req = h.servers.pop(server_id)
        self._remove_from_index(h)
        h.free_vcpus += req.vcpus
        h.free_ram += req.ram_mb
        self._add_to_index(h)
        if req.group is not None:
            key = (req.tenant, req.group)
            members = self._groups[key].hosts
            members[h.name] -= 1
            if not members[h.name]:
                del members[h.name]
                if not members:
                    del self._groups[key]

    # -- internals -----------------------------------------------------------------------

    def _host(self, host: str) -> _Host:
        try:
            return self._hosts[host]
        except KeyError:
            raise NotFound("host", host) from None

    def _refuse_placed(self, req: PlacementRequest) -> None:
        h = self._where.get(req.server_id)
        if h is not None:
            raise Conflict(f"server {req.server_id} is already placed on host {h.name}; release it first")

    def _members(self, req: PlacementRequest) -> dict[str, int]:
        """Members of the request's group per host; `InvalidRequest` if the group has another policy."""
        if req.group is None:
            return {}
        group = self._groups.get((req.tenant, req.group))
        if group is None:
            return {}
        if group.policy is not req.policy:
            raise InvalidRequest(
                f"{req.describe()} asks for group {req.group!r} with policy {req.policy and req.policy.value}, "
                f"but the group's members have policy {group.policy.value}"
            )
        return group.hosts

    def _claim(self, h: _Host, req: PlacementRequest) -> None:
        self._remove_from_index(h)
        h.free_vcpus -= req.vcpus
        h.free_ram -= req.ram_mb
        self._add_to_index(h)
        h.servers[req.server_id] = req
        self._where[req.server_id] = h
        if req.group is not None and req.policy is not None:
            members = self._groups.setdefault((req.tenant, req.group), _Group(req.policy)).hosts
            members[h.name] = members.get(h.name, 0) + 1

    def _add_to_index(self, h: _Host) -> None:
        if h.enabled and h.free_vcpus > 0:
            buckets = self._index[h.dedicated_to]
            bucket = buckets.get(_bucket(h.free_vcpus))
            if bucket is None:
                bucket = buckets[_bucket(h.free_vcpus)] = SortedList()
            bucket.add((-h.free_ram, h.name))

    def _remove_from_index(self, h: _Host) -> None:
        if h.enabled and h.free_vcpus > 0:
            self._index[h.dedicated_to][_bucket(h.free_vcpus)].remove((-h.free_ram, h.name))

    def _lists(self, req: PlacementRequest) -> list[SortedList]:
        buckets = self._index.get(req.tenant if req.dedicated else None, {})
        low = _bucket(req.vcpus)
        return [entries for b, entries in buckets.items() if b >= low and entries]

    def _fitting(self, req: PlacementRequest) -> Iterator[_Host]:
        """Enabled hosts of the request's pool with room for it, most free RAM first."""
        for neg_free_ram, name in _in_weight_order(self._lists(req)):
            if -neg_free_ram < req.ram_mb:
                return
            h = self._hosts[name]
            # Only hosts of the request's own bucket can be short of vCPUs.
            if h.free_vcpus >= req.vcpus:
                yield h

    def _shortfall(self, req: PlacementRequest, fitting: int, excluded: int, grouped: int) -> str:
        owner = req.tenant if req.dedicated else None
        pool = _pool_name(owner)
        if not fitting:
            indexed = sum(len(entries) for entries in self._index.get(owner, {}).values())
            if not indexed:
                return f"{req.describe()}: no enabled host with free vCPUs among the {pool}"
            most = next(self._fitting(attrs.evolve(req, ram_mb=1, group=None, policy=None)), None)
            best = f"{most.free_ram} MB on host {most.name}" if most else "none has the vCPUs"
            return (
                f"{req.describe()}: none of the {indexed} enabled {pool} with free vCPUs has "
                f"{req.vcpus} vCPUs and {req.ram_mb} MB RAM free (most free RAM with enough vCPUs: {best})"
            )
        reasons = []
        if excluded:
            reasons.append(f"{excluded} excluded by the caller")
        if grouped:
            reasons.append(f"{grouped} already hold a member of anti-affinity group {req.group!r} (GEO-4)")
        return f"{req.describe()}: {fitting} of the {pool} have room, but {' and '.join(reasons)}"

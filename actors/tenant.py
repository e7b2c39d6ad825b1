"""The tenant actor (SPEC TEN-1, TEN-3): a tenant's quotas, server groups and servers.

Every request that consumes resources reserves quota first and gives it back if the
AZ refuses, so a refused request leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import attrs

from actors.az import DeleteServer, PlaceServer, ResizeServer, ServerCommand
from actors.flavors import Flavor, get_flavor
from actors.quotas import RESOURCES, ChangeState, QuotaChange, QuotaLedger
from actors.scheduler import GroupPolicy
from runtime.actor import Actor, ActorRef
from runtime.errors import CloudError, Conflict, InvalidRequest, NotFound, QuotaExceeded


@attrs.frozen
class CreateServer:
    name: str
    flavor: str
    az: str
    auto_recovery: bool = False
    group: str | None = None
    dedicated: bool = False


@attrs.frozen
class RemoveServer:
    server_id: str


@attrs.frozen
class ActOnServer:
    server_id: str
    action: str  # start | stop | reboot


@attrs.frozen
class ChangeFlavor:
    server_id: str
    flavor: str


@attrs.frozen
class CreateServerGroup:
    name: str
    policy: str


@attrs.frozen
class RequestQuotaChange:
    resource: str
    limit: int


@attrs.frozen
class AcceptQuotaChange:
    """The provider accepts a pending request (TEN-3: only path to new limits)."""

    request_id: str


@attrs.frozen
class GetQuotas:
    pass


@attrs.frozen
class Quotas:
    limits: Mapping[str, int]
    used: Mapping[str, int]


@attrs.frozen
class ListServers:
    pass


@attrs.frozen
class TenantServer:
    id: str
    name: str
    flavor: Flavor
    az: str
    group: str | None


def _needs(flavor: Flavor) -> dict[str, int]:
    return {"instances": 1, "vcpus": flavor.vcpus, "ram_mb": flavor.ram_mb}


class Tenant(Actor):
    def __init__(self, name: str, azs: Mapping[str, ActorRef], quotas: Mapping[str, int] | None = None) -> None:
        self.name = name
        self.azs = dict(azs)
        self.quota = QuotaLedger.with_defaults(quotas)
        self.servers: dict[str, TenantServer] = {}
        self.busy: set[str] = set()
        self.groups: dict[str, GroupPolicy] = {}
        self.group_members: dict[str, int] = {}
        self.changes: dict[str, QuotaChange] = {}

    async def receive(self, msg: Any) -> Any:
        match msg:
            case CreateServer():
                return self._create(msg)
            case RemoveServer(sid):
                return self._forward(sid, DeleteServer(sid), on_done=self._forget)
            case ActOnServer(sid, action):
                return self._forward(sid, ServerCommand(sid, action))
            case ChangeFlavor(sid, flavor):
                return self._resize(sid, get_flavor(flavor))
            case CreateServerGroup(name, policy):
                return self._create_group(name, policy)
            case RequestQuotaChange(resource, limit):
                return self._request_change(resource, limit)
            case AcceptQuotaChange(request_id):
                return self._accept_change(request_id)
            case GetQuotas():
                return Quotas(dict(self.quota.limits), dict(self.quota.used))
            case ListServers():
                return sorted(self.servers.values(), key=lambda s: s.id)
        return await super().receive(msg)

    def _reserve(self, amounts: Mapping[str, int]) -> None:
        try:
            self.quota.reserve(amounts)
        except QuotaExceeded as exc:
            self._refused(exc)

    def _refused(self, exc: QuotaExceeded) -> NoReturn:
        self.ctx.emit("QuotaRejected", tenant=self.name, resource=exc.resource, limit=exc.limit,
                      used=exc.used, requested=exc.requested)
        raise exc

    def _create(self, msg: CreateServer) -> None:
        flavor = get_flavor(msg.flavor)
        az = self.azs.get(msg.az)
        if az is None:
            raise InvalidRequest(f"availability zone {msg.az!r} is not in this region; valid: {', '.join(self.azs)}")
        if msg.auto_recovery and flavor.has_local_disk:
            raise InvalidRequest(f"flavor {flavor.name} has a local disk: auto-recovery is not available (ECS-4); "
                                 "choose a flavor without local disk or disable auto_recovery")
        policy = None
        if msg.group is not None:
            policy = self.groups.get(msg.group)
            if policy is None:
                raise NotFound("server group", msg.group)
            if self.group_members[msg.group] >= self.quota.limits["server_group_members"]:
                self._refused(QuotaExceeded("server_group_members", self.quota.limits["server_group_members"],
                                            self.group_members[msg.group], 1))
        needs = _needs(flavor)
        self._reserve(needs)
        if msg.group is not None:
            self._count_member(msg.group, +1)
        sid = self.ctx.new_id()
        reply = self.ctx.defer()
        place = PlaceServer(sid, self.name, flavor, msg.auto_recovery,
                            f"{self.name}/{msg.group}" if msg.group else None, policy, msg.dedicated)

        async def build() -> None:
            try:
                await az.ask(place, timeout=None)
            except CloudError as exc:
                self.quota.release(needs)
                if msg.group is not None:
                    self._count_member(msg.group, -1)
                reply.fail(exc)
            else:
                self.servers[sid] = TenantServer(sid, msg.name, flavor, msg.az, msg.group)
                reply.set(sid)
        self.ctx.start_soon(build)

    def _server(self, sid: str) -> TenantServer:
        server = self.servers.get(sid)
        if server is None:
            raise NotFound("server", sid)
        if sid in self.busy:
            raise Conflict(f"server {sid} has a request in progress; retry when it ends")
        return server

    def _forget(self, server: TenantServer) -> None:
        del self.servers[server.id]
        self.quota.release(_needs(server.flavor))
        if server.group is not None:
            self._count_member(server.group, -1)

    def _count_member(self, group: str, delta: int) -> None:
        # server_group_members limits each group; its "use" is the largest group, so that
        # a quota change can never go below a group that already exists (TEN-3).
        self.group_members[group] += delta
        self.quota.used["server_group_members"] = max(self.group_members.values())

    def _forward(self, sid: str, msg: Any, on_done: Any = None) -> None:
        server = self._server(sid)
        self.busy.add(sid)
        reply = self.ctx.defer()

        async def run() -> None:
            try:
                result = await self.azs[server.az].ask(msg, timeout=None)
            except CloudError as exc:
                reply.fail(exc)
            else:
                if on_done is not None:
                    on_done(server)
                reply.set(result)
            finally:
                self.busy.discard(sid)
        self.ctx.start_soon(run)

    def _resize(self, sid: str, flavor: Flavor) -> None:
        server = self._server(sid)
        old, new = _needs(server.flavor), _needs(flavor)
        delta = {k: new[k] - old[k] for k in new}
        grow = {k: max(0, v) for k, v in delta.items()}
        self._reserve(grow)
        self.busy.add(sid)
        reply = self.ctx.defer()

        async def run() -> None:
            try:
                await self.azs[server.az].ask(ResizeServer(sid, flavor), timeout=None)
            except CloudError as exc:
                self.quota.release(grow)
                reply.fail(exc)
            else:
                self.quota.release({k: max(0, -v) for k, v in delta.items()})
                self.servers[sid] = attrs.evolve(server, flavor=flavor)
                reply.set(None)
            finally:
                self.busy.discard(sid)
        self.ctx.start_soon(run)

    def _create_group(self, name: str, policy: str) -> str:
        try:
            parsed = GroupPolicy(policy)
        except ValueError:
            raise InvalidRequest(f"server group policy {policy!r} is not one of: "
                                 f"{', '.join(p.value for p in GroupPolicy)}") from None
        if name in self.groups:
            raise Conflict(f"server group {name!r} already exists")
        self._reserve({"server_groups": 1})
        self.groups[name] = parsed
        self.group_members[name] = 0
        return name

    def _request_change(self, resource: str, limit: int) -> str:
        if resource not in RESOURCES:
            raise InvalidRequest(f"unknown quota resource {resource!r}; valid: {', '.join(RESOURCES)}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidRequest(f"quota limit must be a whole number >= 0, got {limit!r}")
        change = QuotaChange(self.ctx.new_id(), resource, limit)
        self.changes[change.id] = change
        self.ctx.emit("QuotaChangeRequested", tenant=self.name, request=change.id, resource=resource, limit=limit)
        return change.id

    def _accept_change(self, request_id: str) -> None:
        change = self.changes.get(request_id)
        if change is None:
            raise NotFound("quota change request", request_id)
        if change.state is not ChangeState.PENDING:
            raise Conflict(f"quota change request {request_id} is already {change.state.value}")
        used = self.quota.used[change.resource]
        if change.limit < used:
            raise InvalidRequest(f"cannot set {change.resource} quota to {change.limit}: {used} already in use; "
                                 "free resources first or ask for at least the current use")
        self.quota.limits[change.resource] = change.limit
        change.state = ChangeState.ACCEPTED
        self.ctx.emit("QuotaChanged", tenant=self.name, resource=change.resource, limit=change.limit)

"""The availability-zone actor: placement, server lifecycle, failure detection, recovery.

It owns every server placed in the AZ (state machine in `actors.servers`), the
scheduler's view of its hosts, and one host agent per host.

Failure handling (SPEC ECS-4, REFERENCE "ECS auto-recovery"):
1. A host that stops answering its keepalive probes is SUSPECT: it takes no new
   servers.
2. It is FENCED through its power controller (power off, then status confirms OFF)
   before anything else happens; while the controller cannot confirm, nothing is
   rebuilt. So a server never runs on two hosts, even when the host was only cut off.
3. Each auto-recovery server of a fenced host (no local disk, not recovered in the
   last 12 h) is rebuilt on a healthy host of this AZ, `concurrency` at a time. With
   no capacity it waits, in order, and is retried whenever capacity comes back.
   Other servers stay DOWN on their host and restart when it returns.
4. A host that returns is reconciled: its stale copies of servers now running
   elsewhere are destroyed, the servers still bound to it are started (or found
   running). One left without a copy there (its rebuild elsewhere failed after the
   host returned) is rebuilt.
5. A start, stop or reboot that its host drops midway replies once the server is put
   back as the AZ holds it (a reboot: running), or its host is handed to 1-4.

Parking (for sDRS, SPEC SDRS-2): a parked server is kept stopped whatever happens,
because its copy runs in another AZ. Parking cancels its pending or waiting
recovery; a returning host does not restart it (it stays DOWN there until unparked);
the tenant cannot start or reboot it. `ParkServer` replies once it runs nowhere in
this AZ (stopped on its host, or down on a fenced one); `UnparkServer` starts it again.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from typing import Any

import attrs

from actors.flavors import Flavor
from actors.host import (
    BuildServer,
    DestroyServer,
    HostAgent,
    RebootServer,
    Reconcile,
    Reconciled,
    StartServer,
    StopServer,
)
from actors.host import ResizeServer as ResizeDomain
from actors.scheduler import GroupPolicy, PlacementRequest, Scheduler
from actors.servers import Action, ServerState, transition
from actors.topology import DEFAULTS, HostSpec
from runtime.actor import Actor, ActorRef, Reply
from runtime.errors import (
    BackendError,
    CloudError,
    Conflict,
    InvalidRequest,
    NoCapacity,
    NotFound,
)
from runtime.ports import DomainSpec, HostUnreachable, Hypervisor, Power, PowerState

HOST_OP_TIMEOUT = 600.0
RECONCILE_AGAIN_S = 5.0


@attrs.frozen
class RecoverySettings:
    concurrency: int = DEFAULTS["recovery"]["concurrency"]
    min_interval_s: float = DEFAULTS["recovery"]["min_interval_h"] * 3600.0
    fence_retry_s: float = DEFAULTS["recovery"]["fence_retry_s"]
    build_retry_s: float = DEFAULTS["recovery"]["build_retry_s"]
    fencing: bool = DEFAULTS["recovery"]["fencing"]


# -- messages ----------------------------------------------------------------------
@attrs.frozen
class PlaceServer:
    server_id: str
    tenant: str
    flavor: Flavor
    auto_recovery: bool
    group: str | None
    policy: GroupPolicy | None
    dedicated: bool


@attrs.frozen
class AdoptServer:
    """Take back a server the daemon's durable state holds (at start, once it has reconciled the
    hosts): its domain is on `host`, running or not. Without a host (its domain is on no host: a
    missing server) it is placed and built again, as a create. Reply: its host."""

    place: PlaceServer
    host: str | None
    running: bool


@attrs.frozen
class DeleteServer:
    server_id: str


@attrs.frozen
class ServerCommand:
    server_id: str
    action: str  # start | stop | reboot


@attrs.frozen
class ResizeServer:
    server_id: str
    flavor: Flavor


@attrs.frozen
class SetAutoRecovery:
    """Turn a server's auto-recovery on or off (ECS-4: the provider's `support_auto_recovery`);
    refused for a flavor with a local disk. Reply: None."""

    server_id: str
    enabled: bool


@attrs.frozen
class DescribeServer:
    """Ask for one server's record. Reply: ServerDescription."""

    server_id: str


@attrs.frozen
class ParkServer:
    """Keep a server stopped whatever its state (see the module docstring). Reply:
    ServerView, once it runs nowhere in this AZ. Idempotent."""

    server_id: str


@attrs.frozen
class UnparkServer:
    """Undo ParkServer and start the server again: on its host if that host is up, else
    through recovery or its host's return. Reply: ServerView (active once started)."""

    server_id: str


@attrs.frozen
class AwaitCapacity:
    """Reply (None) the next time capacity may have freed up in this AZ (a server
    deleted, a failed build released, a host back). One request per `waiter`: a newer
    one answers the older at once."""

    waiter: str


@attrs.frozen
class Snapshot:
    """Ask for the AZ's view of its servers and hosts (for reports and invariants)."""


@attrs.frozen
class ServerView:
    id: str
    tenant: str
    state: str
    host: str | None
    auto_recovery: bool
    group: str | None
    dedicated: bool
    waiting_capacity: bool
    recovery_pending: bool
    parked: bool = False


@attrs.frozen
class ServerDescription:
    id: str
    tenant: str
    flavor: Flavor
    state: str
    host: str | None
    parked: bool
    auto_recovery: bool
    group: str | None
    policy: GroupPolicy | None
    dedicated: bool

    def clone(self) -> PlaceServer:
        """The request that places this server, same id and all, in another AZ (sDRS)."""
        return PlaceServer(self.id, self.tenant, self.flavor, self.auto_recovery, self.group, self.policy,
                           self.dedicated)


@attrs.frozen
class AZSnapshot:
    az: str
    servers: tuple[ServerView, ...]
    hosts_down: tuple[str, ...]


class HostState(enum.Enum):
    UP = "up"
    SUSPECT = "suspect"
    DOWN = "down"  # fenced; its servers were handed to recovery
    RETURNING = "returning"


@attrs.define
class ServerRecord:
    id: str
    tenant: str
    flavor: Flavor
    auto_recovery: bool
    group: str | None
    policy: GroupPolicy | None
    dedicated: bool
    state: ServerState = ServerState.BUILDING
    host: str | None = None
    busy: bool = False
    last_recovered: float | None = None
    parked: bool = False

    def request(self) -> PlacementRequest:
        return PlacementRequest(self.id, self.tenant, self.flavor.vcpus, self.flavor.ram_mb,
                                self.group, self.policy, self.dedicated)

    def spec(self) -> DomainSpec:
        return DomainSpec(self.id, self.flavor.vcpus, self.flavor.ram_mb)


_COMMANDS = {"start": (Action.START, StartServer), "stop": (Action.STOP, StopServer),
             "reboot": (Action.REBOOT, RebootServer)}


class AvailabilityZone(Actor):
    def __init__(self, name: str, hosts: list[HostSpec], ports: Mapping[str, tuple[Hypervisor, Power]],
                 settings: RecoverySettings | None = None) -> None:
        self.name = name
        self.host_specs = hosts
        self.ports = ports
        self.settings = settings or RecoverySettings()
        self.scheduler = Scheduler(name)
        self.agents: dict[str, ActorRef] = {}
        self.host_state: dict[str, HostState] = {}
        self.servers: dict[str, ServerRecord] = {}
        self.waiting: dict[str, float] = {}  # server id -> since; insertion order is retry order
        self.pending: dict[str, None] = {}  # queued for a recovery attempt, in order
        self.recovering = 0  # attempts running now (at most settings.concurrency)
        self.capacity_waiters: dict[str, Reply] = {}

    async def started(self) -> None:
        for spec in self.host_specs:
            self.scheduler.add_host(spec.name, spec.vcpus, spec.ram_mb, spec.dedicated_to)
            self.host_state[spec.name] = HostState.UP
            self.agents[spec.name] = self.ctx.spawn(functools.partial(HostAgent, self.ports[spec.name][0]), spec.name)
            self.ctx.start_soon(self._watch, spec.name)

    async def receive(self, msg: Any) -> Any:
        match msg:
            case PlaceServer():
                return self._place(msg)
            case AdoptServer(place, host, running):
                return self._adopt(place, host, running)
            case ServerCommand(sid, action):
                return self._command(sid, action)
            case ResizeServer(sid, flavor):
                return self._resize(sid, flavor)
            case DeleteServer(sid):
                return self._delete(sid)
            case SetAutoRecovery(sid, enabled):
                return self._set_auto_recovery(sid, enabled)
            case Snapshot():
                return self._snapshot()
            case DescribeServer(sid):
                return self._describe(sid)
            case ParkServer(sid):
                return self._park(sid)
            case UnparkServer(sid):
                return self._unpark(sid)
            case AwaitCapacity(waiter):
                old = self.capacity_waiters.pop(waiter, None)
                if old is not None:
                    old.set(None)
                self.capacity_waiters[waiter] = self.ctx.defer()
                return None
        return await super().receive(msg)

    # -- tenant requests -------------------------------------------------------------
    def _record(self, sid: str) -> ServerRecord:
        rec = self.servers.get(sid)
        if rec is None:
            raise NotFound("server", sid)
        if rec.busy:
            raise Conflict(f"server {sid} is {rec.state.value} with an operation in progress; retry later")
        return rec

    def _background(self, reply: Reply, rec: ServerRecord, work: Any) -> None:
        rec.busy = True

        async def run() -> None:
            try:
                result = await work()
            except CloudError as exc:
                reply.fail(exc)
            else:
                reply.set(result)
            finally:
                rec.busy = False
        self.ctx.start_soon(run)

    def _place(self, msg: PlaceServer) -> None:
        if msg.server_id in self.servers:
            raise Conflict(f"server {msg.server_id} already exists")
        rec = ServerRecord(msg.server_id, msg.tenant, msg.flavor, msg.auto_recovery, msg.group, msg.policy,
                           msg.dedicated)
        host = self.scheduler.place(rec.request())
        rec.host = host
        self.servers[rec.id] = rec

        async def build() -> str:
            try:
                await self.agents[host].ask(BuildServer(rec.spec()), timeout=HOST_OP_TIMEOUT)
            except CloudError as exc:
                self.scheduler.release(rec.id)
                del self.servers[rec.id]
                self.ctx.emit("ServerBuildFailed", server=rec.id, tenant=rec.tenant, host=host, error=str(exc))
                self.ctx.start_soon(self._resync, host)
                self._retry_waiting()
                raise
            rec.state = transition(rec.id, rec.state, Action.BUILT)
            self.ctx.emit("ServerCreated", server=rec.id, tenant=rec.tenant, host=host, flavor=rec.flavor.name,
                          auto_recovery=rec.auto_recovery)
            return host
        self._background(self.ctx.defer(), rec, build)

    def _adopt(self, msg: PlaceServer, host: str | None, running: bool) -> str | None:
        if host is None:
            self.ctx.emit("ServerMissing", server=msg.server_id, tenant=msg.tenant)
            self._place(msg)  # replies once built
            return None
        if msg.server_id in self.servers:
            raise Conflict(f"server {msg.server_id} already exists")
        rec = ServerRecord(msg.server_id, msg.tenant, msg.flavor, msg.auto_recovery, msg.group, msg.policy,
                           msg.dedicated, ServerState.ACTIVE if running else ServerState.SHUTOFF, host)
        self.scheduler.claim(host, rec.request())
        self.servers[rec.id] = rec
        self.ctx.emit("ServerAdopted", server=rec.id, tenant=rec.tenant, host=host, running=running)
        return host

    def _command(self, sid: str, action: str) -> None:
        if action not in _COMMANDS:
            raise InvalidRequest(f"unknown server action {action!r}; valid: {', '.join(_COMMANDS)}")
        rec = self._record(sid)
        if rec.parked:
            raise Conflict(f"server {sid} is parked: its disaster-recovery copy runs in another AZ; "
                           "fail back through its sDRS protection group first")
        act, message = _COMMANDS[action]
        new_state = transition(sid, rec.state, act)
        host = rec.host
        assert host is not None

        # The state changes when the host has done it; only a reboot has a state of its own meanwhile.
        before = rec.state
        if new_state is ServerState.REBOOTING:
            rec.state = new_state

        async def run() -> None:
            try:
                await self.agents[host].ask(message(sid), timeout=HOST_OP_TIMEOUT)
            except BackendError:
                # The host stopped answering midway: whatever was done, the server is put
                # back as the AZ holds it (a reboot: running) before the request replies.
                await self._put_back(rec, host)
                if rec.state is ServerState.REBOOTING:
                    rec.state = transition(sid, rec.state, Action.DONE)
                raise
            except CloudError:
                if rec.state is ServerState.REBOOTING:  # not overtaken by a host failure meanwhile
                    rec.state = transition(sid, rec.state, Action.FAILED)
                raise
            if rec.state is ServerState.REBOOTING:
                rec.state = transition(sid, rec.state, Action.DONE)
            elif rec.state is before:
                rec.state = new_state
            else:  # its host failed meanwhile: the failure handling owns the state now
                return
            self.ctx.emit("ServerStateChanged", server=sid, tenant=rec.tenant, state=rec.state.value)
        self._background(self.ctx.defer(), rec, run)

    def _resize(self, sid: str, flavor: Flavor) -> None:
        rec = self._record(sid)
        new_state = transition(sid, rec.state, Action.RESIZE)
        host = rec.host
        assert host is not None
        old = rec.flavor
        free_vcpus, free_ram = self.scheduler.free(host)
        if flavor.vcpus - old.vcpus > free_vcpus or flavor.ram_mb - old.ram_mb > free_ram:
            raise NoCapacity(host, f"{flavor.name} in place of {old.name} (resize happens on the same host)")
        # While it resizes it holds room for the larger of both flavors: the flavor it ends
        # with then fits whatever was placed on the host meanwhile.
        self.scheduler.release(sid)
        self.scheduler.claim(host, attrs.evolve(rec.request(), vcpus=max(old.vcpus, flavor.vcpus),
                                                ram_mb=max(old.ram_mb, flavor.ram_mb)))
        rec.state = new_state

        def end_with(kept: Flavor) -> None:
            self.scheduler.release(sid)
            rec.flavor = kept
            self.scheduler.claim(host, rec.request())

        async def run() -> None:
            try:
                await self.agents[host].ask(ResizeDomain(sid, flavor.vcpus, flavor.ram_mb),
                                            timeout=HOST_OP_TIMEOUT)
            except CloudError as exc:
                end_with(old)
                if rec.state is ServerState.RESIZING:  # not overtaken by a host failure meanwhile
                    rec.state = transition(sid, rec.state, Action.FAILED)
                if isinstance(exc, BackendError):
                    self.ctx.start_soon(self._resync, host)
                raise
            end_with(flavor)
            if rec.state is ServerState.RESIZING:
                rec.state = transition(sid, rec.state, Action.DONE)
            self.ctx.emit("ServerResized", server=sid, tenant=rec.tenant, flavor=flavor.name)
        self._background(self.ctx.defer(), rec, run)

    def _set_auto_recovery(self, sid: str, enabled: bool) -> None:
        """ECS-4. Turned off: a rebuild not begun yet is dropped (one under way ends). Turned on
        for a server down on a fenced host: it is rebuilt now, as if its host had failed with
        auto-recovery on (or once its 12 h since the last recovery are over)."""
        rec = self.servers.get(sid)
        if rec is None:
            raise NotFound("server", sid)
        if enabled and rec.flavor.has_local_disk:
            raise InvalidRequest(f"server {sid} has flavor {rec.flavor.name}, with a local disk: auto-recovery is not "
                                 "available (ECS-4); resize it to a flavor without local disk first")
        if rec.auto_recovery == enabled:
            return
        rec.auto_recovery = enabled
        self.ctx.emit("AutoRecoveryChanged", server=sid, tenant=rec.tenant, enabled=enabled)
        if not enabled:
            self.pending.pop(sid, None)
            self.waiting.pop(sid, None)
            return
        host = rec.host
        if rec.state is ServerState.DOWN and host is not None and self.host_state[host] is HostState.DOWN \
                and not rec.busy and not rec.parked and sid not in self.waiting:
            if not self._not_recoverable(rec, self.ctx.now()):
                self._enqueue(sid)
            elif rec.last_recovered is not None:
                self.ctx.start_soon(self._recover_when_allowed, sid, rec.last_recovered)

    def _delete(self, sid: str) -> None:
        rec = self._record(sid)
        transition(sid, rec.state, Action.DELETE)
        host = rec.host

        async def run() -> None:
            if host is not None and self.host_state[host] is not HostState.DOWN:
                try:
                    await self.agents[host].ask(DestroyServer(sid), timeout=HOST_OP_TIMEOUT)
                except NotFound:
                    pass
            # a host that is down keeps a stale copy, destroyed when it returns
            self.scheduler.release(sid)
            rec.state = ServerState.DELETED
            del self.servers[sid]
            self.waiting.pop(sid, None)
            self.pending.pop(sid, None)
            self.ctx.emit("ServerDeleted", server=sid, tenant=rec.tenant)
            self._retry_waiting()
        self._background(self.ctx.defer(), rec, run)

    def _snapshot(self) -> AZSnapshot:
        views = tuple(self._view(r) for r in self.servers.values())
        down = tuple(h for h, s in self.host_state.items() if s is not HostState.UP)
        return AZSnapshot(self.name, views, down)

    def _view(self, r: ServerRecord) -> ServerView:
        return ServerView(r.id, r.tenant, r.state.value, r.host, r.auto_recovery, r.group, r.dedicated,
                          r.id in self.waiting, r.id in self.pending, r.parked)

    def _describe(self, sid: str) -> ServerDescription:
        r = self.servers.get(sid)
        if r is None:
            raise NotFound("server", sid)
        return ServerDescription(r.id, r.tenant, r.flavor, r.state.value, r.host, r.parked, r.auto_recovery,
                                 r.group, r.policy, r.dedicated)

    # -- parking (sDRS) ------------------------------------------------------------------
    def _park(self, sid: str) -> None:
        rec = self.servers.get(sid)
        if rec is None:
            raise NotFound("server", sid)
        if not rec.parked:
            rec.parked = True
            self.ctx.emit("ServerParked", server=sid, tenant=rec.tenant, state=rec.state.value)
        self.waiting.pop(sid, None)
        self.pending.pop(sid, None)
        self.ctx.start_soon(self._settle_parked, self.ctx.defer(), rec)

    async def _settle_parked(self, reply: Reply, rec: ServerRecord) -> None:
        """Stop it where it runs; on a host not yet fenced, wait for the fencing."""
        sid = rec.id
        while rec.parked:
            if self.servers.get(sid) is not rec:
                reply.fail(NotFound("server", sid))
                return
            if not rec.busy and rec.state is not ServerState.ACTIVE:
                reply.set(self._view(rec))  # shutoff, down (its host fenced), error: it does not run
                return
            host = rec.host
            if not rec.busy and host is not None and self.host_state[host] is HostState.UP:
                rec.busy = True
                try:
                    await self.agents[host].ask(StopServer(sid), timeout=HOST_OP_TIMEOUT)  # stopped already: done
                except NotFound:
                    pass  # no domain at all on its host: it does not run either
                except CloudError:
                    # Unreachable, timed out, or the domain is gone: the host is made to match
                    # the AZ (a parked server does not run) and we look again. Never let it
                    # escape: this runs in the AZ's own task group.
                    rec.busy = False
                    self.ctx.start_soon(self._resync, host)
                    await self.ctx.sleep(RECONCILE_AGAIN_S)
                    continue
                finally:
                    rec.busy = False
                if rec.state is ServerState.ACTIVE:
                    rec.state = transition(sid, rec.state, Action.STOP)
                    self.ctx.emit("ServerStateChanged", server=sid, tenant=rec.tenant, state=rec.state.value)
                continue
            await self.ctx.sleep(RECONCILE_AGAIN_S)
        reply.fail(Conflict(f"server {sid} was unparked before it stopped"))

    def _unpark(self, sid: str) -> None:
        rec = self.servers.get(sid)
        if rec is None:
            raise NotFound("server", sid)
        if rec.parked:
            rec.parked = False
            self.ctx.emit("ServerUnparked", server=sid, tenant=rec.tenant, state=rec.state.value)
        self.ctx.start_soon(self._settle_unparked, self.ctx.defer(), rec)

    async def _settle_unparked(self, reply: Reply, rec: ServerRecord) -> None:
        sid = rec.id
        while not rec.parked:
            if self.servers.get(sid) is not rec:
                reply.fail(NotFound("server", sid))
                return
            host = rec.host
            host_state = self.host_state[host] if host is not None else None
            if rec.busy or host_state in (HostState.SUSPECT, HostState.RETURNING):
                await self.ctx.sleep(RECONCILE_AGAIN_S)  # let the operation, fencing or reconcile end
                continue
            if rec.state in (ServerState.SHUTOFF, ServerState.DOWN) and host_state is HostState.UP:
                assert host is not None
                rec.busy = True
                try:
                    await self.agents[host].ask(StartServer(sid), timeout=HOST_OP_TIMEOUT)  # running already: done
                except BackendError:
                    self.ctx.start_soon(self._resync, host)
                    continue
                except CloudError as exc:
                    reply.fail(exc)
                    return
                finally:
                    rec.busy = False
                if rec.state in (ServerState.SHUTOFF, ServerState.DOWN) and not rec.parked:
                    act = Action.START if rec.state is ServerState.SHUTOFF else Action.HOST_RETURNED
                    rec.state = transition(sid, rec.state, act)
                    self.ctx.emit("ServerStateChanged", server=sid, tenant=rec.tenant, state=rec.state.value)
                continue
            if rec.state is ServerState.DOWN and not self._not_recoverable(rec, self.ctx.now()):
                self._enqueue(sid)  # its host is fenced: rebuild it elsewhere, as any recovery
            reply.set(self._view(rec))  # running, or runs once recovered or its host is back
            return
        reply.fail(Conflict(f"server {sid} was parked again before it started"))

    # -- failure detection and fencing -------------------------------------------------
    async def _watch(self, host: str) -> None:
        hv = self.ports[host][0]
        while True:
            await hv.wait_unreachable()
            self._suspect(host)
            await hv.wait_reachable()
            self._returned(host)

    def _suspect(self, host: str) -> None:
        if self.host_state[host] not in (HostState.UP, HostState.RETURNING):
            return
        self.host_state[host] = HostState.SUSPECT
        self.scheduler.set_enabled(host, False)
        self.ctx.emit("HostSuspected", host=host)
        self.ctx.start_soon(self._fence, host)

    async def _fence(self, host: str) -> None:
        power = self.ports[host][1]
        while self.host_state[host] is HostState.SUSPECT:
            if not self.settings.fencing:
                self._host_down(host, fenced=False)
                return
            try:
                state = await power.status()
                if state is PowerState.ON and self.host_state[host] is HostState.SUSPECT:
                    await power.power_off()
                    state = await power.status()
                if state is PowerState.OFF and self.host_state[host] is HostState.SUSPECT:
                    self._host_down(host)
                    return
            except CloudError as exc:
                self.ctx.emit("FenceFailed", host=host, error=str(exc))
            await self.ctx.sleep(self.settings.fence_retry_s)

    def _host_down(self, host: str, fenced: bool = True) -> None:
        """Hand the servers of a fenced host to recovery; one event says what became of each."""
        self.host_state[host] = HostState.DOWN
        now = self.ctx.now()
        queued: list[str] = []
        down: dict[str, list[str]] = {}
        for sid in self.scheduler.servers_on(host):
            rec = self.servers[sid]
            if rec.state is ServerState.DOWN and not rec.busy and sid not in self.waiting:
                if not rec.parked and not self._not_recoverable(rec, now):  # was being restarted here when lost again
                    queued.append(sid)
                continue
            if rec.state not in (ServerState.ACTIVE, ServerState.REBOOTING, ServerState.RESIZING):
                continue
            rec.state = transition(sid, rec.state, Action.HOST_FAILED)
            reason = "parked" if rec.parked else self._not_recoverable(rec, now)
            if not reason:
                queued.append(sid)
                continue
            down.setdefault(reason, []).append(sid)
            if not rec.parked and rec.auto_recovery and not rec.flavor.has_local_disk \
                    and rec.last_recovered is not None:
                # the 12 h limit is a rate limit: if its host is still down then, rebuild it
                self.ctx.start_soon(self._recover_when_allowed, sid, rec.last_recovered)
        self.ctx.emit("HostFenced" if fenced else "HostPresumedDown", host=host, recovering=queued, down=down)
        for sid in queued:
            self._enqueue(sid)

    def _not_recoverable(self, rec: ServerRecord, now: float) -> str:
        if not rec.auto_recovery:
            return "auto-recovery disabled"
        if rec.flavor.has_local_disk:
            return "flavor has a local disk"
        if rec.last_recovered is not None and now - rec.last_recovered < self.settings.min_interval_s:
            return f"recovered less than {self.settings.min_interval_s / 3600:g} h ago"
        return ""

    # -- recovery -----------------------------------------------------------------------
    def _enqueue(self, sid: str) -> None:
        self.pending[sid] = None
        while self.pending and self.recovering < self.settings.concurrency:
            next_sid = next(iter(self.pending))
            del self.pending[next_sid]
            self.recovering += 1
            self.ctx.start_soon(self._attempt, next_sid)

    async def _attempt(self, sid: str) -> None:
        try:
            await self._recover(sid)
        finally:
            self.recovering -= 1
            if self.pending:
                self._enqueue(next(iter(self.pending)))

    async def _recover(self, sid: str) -> None:
        rec = self.servers.get(sid)
        if rec is None or rec.state is not ServerState.DOWN or rec.parked or not rec.auto_recovery:
            return  # (auto-recovery turned off since it was queued)
        if rec.busy:  # an operation that its host's failure will end: try again after it
            self.ctx.start_soon(self._requeue_later, sid)
            return
        old = rec.host
        assert old is not None
        # A host that is up again has reconciled: every server bound to it with a copy there
        # runs. One still down there has no copy (it was being rebuilt elsewhere when the host
        # returned, so its copy was removed as stale, then that rebuild failed): rebuild it,
        # that host included.
        exclude = () if self.host_state[old] is HostState.UP else (old,)
        self.scheduler.release(sid)
        try:
            new = self.scheduler.place(rec.request(), exclude=exclude)
        except NoCapacity as exc:
            self.scheduler.claim(old, rec.request())
            if sid not in self.waiting:
                self.waiting[sid] = self.ctx.now()
                self.ctx.emit("RecoveryWaiting", server=sid, tenant=rec.tenant, reason=str(exc))
            return
        self.waiting.pop(sid, None)
        rec.state = transition(sid, rec.state, Action.RECOVER)
        rec.host, rec.busy = new, True
        try:
            await self.agents[new].ask(BuildServer(rec.spec()), timeout=HOST_OP_TIMEOUT)
        except CloudError as exc:
            self.scheduler.release(sid)
            back = self._rebind(rec, old, new)
            rec.host, rec.state = back, transition(sid, rec.state, Action.FAILED)
            self.ctx.emit("RecoveryFailed", server=sid, tenant=rec.tenant, host=new, error=str(exc))
            self.ctx.start_soon(self._resync, new)
            self.ctx.start_soon(self._requeue_later, sid)
            return
        finally:
            rec.busy = False
        rec.state = transition(sid, rec.state, Action.RECOVERED)
        rec.last_recovered = self.ctx.now()
        self.ctx.emit("ServerRecovered", server=sid, tenant=rec.tenant, from_host=old, to_host=new)

    def _rebind(self, rec: ServerRecord, old: str, new: str) -> str:
        """Place a server whose rebuild on `new` failed: back on its old host, where it
        restarts if that host returns. Its room there was given up for the attempt: if the
        host returned meanwhile (removing its copy, stale then) and its room is taken, the
        server stays on `new`, which had room for it a moment ago."""
        try:
            self.scheduler.claim(old, rec.request())
            return old
        except CloudError:
            self.scheduler.claim(new, rec.request())
            return new

    async def _recover_when_allowed(self, sid: str, last_recovered: float) -> None:
        await self.ctx.sleep(last_recovered + self.settings.min_interval_s - self.ctx.now())
        rec = self.servers.get(sid)
        if rec is not None and rec.state is ServerState.DOWN and rec.host is not None and not rec.parked \
                and self.host_state[rec.host] is not HostState.UP:
            self.ctx.emit("RecoveryRetried", server=sid, tenant=rec.tenant, host=rec.host)
            self._enqueue(sid)

    async def _put_back(self, rec: ServerRecord, host: str) -> None:
        """`host` dropped an operation on `rec` midway (a reboot may have stopped it and
        not started it again): run or stop its domain as the AZ holds it. Until then the
        operation is not over: the server stays busy and the request has no reply, so the
        AZ never calls active a server that does not run. Retried while the host is up: an
        unreachable host is suspected within the keepalive time, and then its fencing and
        reconcile own the server (which stays busy meanwhile, so the host cannot be up again
        before this ends)."""
        put_back = StartServer if rec.state in (ServerState.ACTIVE, ServerState.REBOOTING) else StopServer
        while self.host_state[host] is HostState.UP:
            try:
                await self.agents[host].ask(put_back(rec.id), timeout=HOST_OP_TIMEOUT)  # so already: done
            except HostUnreachable:
                await self.ctx.sleep(RECONCILE_AGAIN_S)
                continue
            except CloudError:
                self.ctx.start_soon(self._resync, host)  # not this server alone: the host's resync
            return

    async def _resync(self, host: str) -> None:
        """After an operation on `host` failed midway: make the host match what the AZ
        holds (no leftover domains; active servers run, stopped ones do not), once it
        answers. A host that goes down meanwhile is reconciled when it returns."""
        while True:
            await self.ctx.sleep(self.settings.build_retry_s)
            if self.host_state[host] is not HostState.UP:
                return
            bound = [self.servers[sid] for sid in self.scheduler.servers_on(host)]
            if any(rec.busy for rec in bound):
                continue  # another operation is under way: look again after it
            wanted: dict[ServerState, set[str]] = {ServerState.ACTIVE: set(), ServerState.SHUTOFF: set()}
            for rec in bound:
                wanted.get(ServerState.SHUTOFF if rec.parked else rec.state, set()).add(rec.id)
            try:
                done = await self.agents[host].ask(
                    Reconcile(frozenset(r.id for r in bound), frozenset(wanted[ServerState.ACTIVE]),
                              frozenset(wanted[ServerState.SHUTOFF])), timeout=HOST_OP_TIMEOUT)
            except CloudError:
                continue
            if done.removed or done.started:
                self.ctx.emit("HostResynced", host=host, removed=list(done.removed), restarted=list(done.started))
            return

    async def _requeue_later(self, sid: str) -> None:
        await self.ctx.sleep(self.settings.build_retry_s)
        self._enqueue(sid)

    def _retry_waiting(self) -> None:
        for sid in self.waiting:
            self._enqueue(sid)
        waiters, self.capacity_waiters = self.capacity_waiters, {}
        for reply in waiters.values():
            reply.set(None)

    # -- hosts coming back ----------------------------------------------------------------
    def _returned(self, host: str) -> None:
        """Back, fenced or not: nothing was moved if it was not, but it may have rebooted."""
        if self.host_state[host] in (HostState.SUSPECT, HostState.DOWN):
            self.host_state[host] = HostState.RETURNING
            self.ctx.start_soon(self._reconcile, host)

    async def _reconcile(self, host: str) -> None:
        """Destroy stale copies, restart what is still bound here; retry until done or lost again."""
        while self.host_state[host] is HostState.RETURNING:
            skipped = self._busy_on(host)  # the pass leaves these alone
            try:
                done = await self._reconcile_once(host)
            except CloudError as exc:
                self.ctx.emit("HostReconcileFailed", host=host, error=str(exc))
                await self.ctx.sleep(self.settings.build_retry_s)
                continue
            if self.host_state[host] is not HostState.RETURNING:
                return
            if skipped or self._busy_on(host):
                # an operation begun before the host went away (it may have ended during the
                # pass, which did not look at its server): look again once none is under way
                await self.ctx.sleep(RECONCILE_AGAIN_S)
                continue
            now = self.ctx.now()
            for sid in self.scheduler.servers_on(host):
                rec = self.servers[sid]
                if rec.state is ServerState.DOWN and not rec.busy and not rec.parked \
                        and not self._not_recoverable(rec, now):
                    self._enqueue(sid)  # its copy on this host is gone: rebuild it
            self.host_state[host] = HostState.UP
            self.scheduler.set_enabled(host, True)
            self.ctx.emit("HostReturned", host=host, removed=list(done.removed), restarted=list(done.started),
                          running=list(done.running))
            self._retry_waiting()

    def _busy_on(self, host: str) -> bool:
        return any(self.servers[sid].busy for sid in self.scheduler.servers_on(host))

    async def _reconcile_once(self, host: str) -> Reconciled:
        bound = {sid: self.servers[sid] for sid in self.scheduler.servers_on(host)}
        # Start what should run here: servers left down, and active ones that a reboot stopped;
        # never a parked one (its copy runs in another AZ): that one is stopped if it runs.
        restart = {sid for sid, rec in bound.items()
                   if rec.state in (ServerState.DOWN, ServerState.ACTIVE) and not rec.busy and not rec.parked}
        parked = frozenset(sid for sid, rec in bound.items() if rec.parked)
        for sid in restart:
            rec = bound[sid]
            rec.busy = True  # no recovery attempt may start it elsewhere meanwhile
            self.waiting.pop(sid, None)
            self.pending.pop(sid, None)
        try:
            done: Reconciled = await self.agents[host].ask(Reconcile(frozenset(bound), frozenset(restart), parked),
                                                          timeout=HOST_OP_TIMEOUT)
        finally:
            for sid in restart:
                bound[sid].busy = False
        for sid in done.running:  # started, or running already (e.g. a boot that ended after the host returned)
            rec = bound[sid]
            if rec.state is ServerState.DOWN:
                rec.state = transition(sid, rec.state, Action.HOST_RETURNED)
        return done

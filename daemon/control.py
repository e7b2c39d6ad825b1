"""`Control`: the one door from the API to the actor tree, and where the daemon's state becomes
durable (issue 5; DESIGN.md "Production daemon").

Every API module asks the actors through `Control.ask(project, message)`. A request that
changes what a tenant owns is journaled in the StateStore around the actors' work:

1. an `intent` record (what is asked, with the ids of everything it may make: the daemon
   names new servers and volumes itself, so it knows them before anything exists);
2. the actors do it;
3. one atomic batch writes the outcome (the server, volume or group records as they now
   are) and deletes the intent; only then does the API answer. A refusal deletes the intent.

So every acknowledged operation is in the store, and a crash leaves at most the intents of the
requests in flight, which `daemon.restore` settles at the next start (creates are undone,
deletes are finished, the rest fall back to the last acknowledged state).

The records (kind: key -> value):
- `server`: id -> tenant, name, flavor, az, group, auto_recovery, dedicated, power ("on"/"off",
  what the tenant last asked), host (where it was built; auto-recovery may have moved it since),
  system_volume (its system disk: one it owns, `<id>-sys`, or the volume it boots from);
- `volume`: id -> tenant, az, size_gb, kind, bootable, server (attached to);
- `group`: "<tenant>/<name>" -> tenant, name, policy;
- `project`: name -> quotas; `user`: "<project>/<name>", `token`: id, `sts`: access key ->
  the Directory's records (`save_identity`, after every change of the Directory);
- `intent`: a random id -> op, project, and the fields of the request.

- `backups`: "region" -> the BackupService's whole state (daemon.backup_state; written after
  each backup request through `after_backups`, and after the service's events).

What is not journaled (stays in memory, documented in the README): sDRS protection groups,
quota change requests.
"""

from __future__ import annotations

import logging
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import cattrs.preconf.json

from actors.az import DescribeServer, ServerDescription, SetAutoRecovery
from actors.backups import GetBackup, ListBackups, RestoreBackup
from actors.identity import Directory, Project, ProjectName, TemporaryCredentials, Token, User
from actors.region import CreateTenant, GetServices, GetTenant, RegionServices
from actors.tenant import (
    _BACKUP_REQUESTS,
    ActOnServer,
    ChangeFlavor,
    CreateServer,
    CreateServerGroup,
    DeleteServerGroup,
    ListServers,
    RemoveServer,
    TenantServer,
    system_volume_id,
)
from actors.volumes import (
    AttachVolume,
    CreateVolume,
    DeleteVolume,
    DetachVolume,
    ExpandVolume,
    GetVolume,
    VolumeView,
)
from runtime.actor import ActorRef
from runtime.state import Delete, Put, Record, StateStore, Write

log = logging.getLogger(__name__)

# How long a request waits for the actors: a create builds a domain on a real host.
ASK_TIMEOUT_S = 600.0
# The ids the daemon gives servers and volumes (and the system disks it derives from them):
# a domain or an RBD image of this shape that no record names is an orphan (daemon.restore).
OURS = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}(-sys)?")
IDENTITY_KINDS = ("project", "user", "token", "sts")

_json = cattrs.preconf.json.make_converter()

Value = dict[str, Any]
After = Callable[[Any], Awaitable[list[Write]]]


def new_id() -> str:
    """A random UUID (the OS CSPRNG: the daemon is not an actor, nothing here needs a seed)."""
    return str(uuid.UUID(bytes=secrets.token_bytes(16), version=4))


async def write_mirrored(store: StateStore | None, records: dict[tuple[str, str], Value],
                         batch: Sequence[Write]) -> None:
    """Apply `batch` to `store` (durable on return), then to its in-memory mirror `records`."""
    if not batch:
        return
    if store is not None:
        await store.apply(batch)
    for op in batch:
        if isinstance(op, Put):
            records[(op.kind, op.key)] = op.value
        else:
            records.pop((op.kind, op.key), None)


def identity_records(directory: Directory) -> dict[tuple[str, str], Value]:
    """The Directory as records (roles sorted, so equal state gives equal records)."""
    def plain(obj: Any) -> Value:
        value: Value = _json.unstructure(obj)
        if "roles" in value:
            value["roles"] = sorted(value["roles"])
        return value
    records: dict[tuple[str, str], Value] = {}
    records.update({("project", name): {} for name in directory.projects})
    records.update({("user", f"{p}/{n}"): plain(u) for (p, n), u in directory.users.items()})
    records.update({("token", t): plain(token) for t, token in directory.tokens.items()})
    records.update({("sts", k): plain(c) for k, c in directory.temporary.items()})
    return records


def load_identity(directory: Directory, records: Iterable[Record]) -> None:
    """Put stored identity records back into `directory` (at start)."""
    for r in records:
        if r.kind == "project":
            directory.projects[ProjectName(r.key)] = Project(ProjectName(r.key))
        elif r.kind == "user":
            user = _json.structure(r.value, User)
            directory.users[(user.project, user.name)] = user
        elif r.kind == "token":
            token = _json.structure(r.value, Token)
            directory.tokens[token.id] = token
        elif r.kind == "sts":
            cred = _json.structure(r.value, TemporaryCredentials)
            directory.temporary[cred.access_key] = cred


class Control:
    """The region actor, seen from the API; with a `store`, the journal described above.

    `records` mirrors the stored server, volume, group and identity records (the store is
    written first, the mirror after), so journaling reads nothing back from the store.
    """

    def __init__(self, region: ActorRef, store: StateStore | None = None, directory: Directory | None = None,
                 records: dict[tuple[str, str], Value] | None = None) -> None:
        self.region = region
        self.store = store
        self.directory = directory
        self.records: dict[tuple[str, str], Value] = dict(records or {})
        self.after_backups: Callable[[], Awaitable[None]] | None = None  # awaited after each backup request

    async def tenant(self, project: str) -> ActorRef:
        """The tenant actor of `project` (NotFound if the project has none)."""
        ref = await self.region.ask(GetTenant(project), timeout=ASK_TIMEOUT_S)
        assert isinstance(ref, ActorRef)
        return ref

    async def services(self) -> RegionServices:
        """The region's AZ, volume, backup and sDRS actors."""
        services = await self.region.ask(GetServices(), timeout=ASK_TIMEOUT_S)
        assert isinstance(services, RegionServices)
        return services

    async def ask(self, project: str, msg: Any, fields: Mapping[str, Any] | None = None) -> Any:
        """Ask `project`'s tenant actor; its reply once durable (see the module docstring),
        or the CloudError it raised (then nothing was written but the intent, now deleted).
        `fields`: the API's own fields (e.g. Cinder's name) for the record a create makes, written
        in the same batch as the outcome. After a backup request, `after_backups` (daemon.backup_state)."""
        result = await self._ask(project, msg, fields)
        if self.after_backups is not None and isinstance(msg, _BACKUP_REQUESTS) \
                and not isinstance(msg, GetBackup | ListBackups):  # reads change nothing
            await self.after_backups()
        return result

    async def _ask(self, project: str, msg: Any, fields: Mapping[str, Any] | None) -> Any:
        tenant = await self.tenant(project)
        journaled = self._journal(project, msg) if self.store is not None else None
        if journaled is None:
            return await tenant.ask(msg, timeout=ASK_TIMEOUT_S)
        msg, intent, after = journaled
        if fields:
            made = {"create_server": "server", "create_volume": "volume"}.get(intent["op"])
            assert made is not None, f"{intent['op']} makes no record to add fields to"
            after = _with_fields(after, made, intent[made], fields)
        key = new_id()
        await self.write([Put("intent", key, {"project": project, **intent})])
        try:
            result = await tenant.ask(msg, timeout=ASK_TIMEOUT_S)
        except BaseException:
            await self.write([Delete("intent", key)])
            raise
        await self.write([*await after(result), Delete("intent", key)])
        return result

    async def write(self, batch: Sequence[Write]) -> None:
        """Apply `batch` to the store (durable on return), then to the mirror."""
        await write_mirrored(self.store, self.records, batch)

    async def create_project(self, name: str, quotas: Mapping[str, int] | None = None) -> None:
        """A new project and its tenant in the region (TEN-1), durable on return; nothing is left
        half-made (the records are written only once the tenant exists)."""
        assert self.directory is not None, "a Control without a Directory makes no projects"
        self.directory.create_project(name)
        try:
            await self.region.ask(CreateTenant(name, dict(quotas or {})), timeout=ASK_TIMEOUT_S)
        except BaseException:
            del self.directory.projects[ProjectName(name)]
            raise
        await self.write([Put("tenant", name, {"quotas": dict(quotas or {})})])
        await self.save_identity()

    async def save_identity(self) -> None:
        """Write what changed in the Directory since the last call (one batch)."""
        if self.store is None or self.directory is None:
            return
        now = identity_records(self.directory)
        old = {k: v for k, v in self.records.items() if k[0] in IDENTITY_KINDS}
        batch: list[Write] = [Put(kind, key, value) for (kind, key), value in now.items()
                              if old.get((kind, key)) != value]
        batch += [Delete(kind, key) for kind, key in old if (kind, key) not in now]
        await self.write(batch)

    async def annotate(self, kind: str, key: str, **fields: Any) -> None:
        """Set API-level fields of a stored server or volume (Nova's `resized_from`, Cinder's name and
        description), durably; nothing if there is no such record."""
        await self.write(await self._update(kind, key, **fields))

    def record(self, kind: str, key: str) -> Value | None:
        """The stored record of a server or volume (acknowledged state), or None."""
        return self.records.get((kind, key))

    def of(self, kind: str, **match: Any) -> dict[str, Value]:
        """The mirrored records of `kind` whose fields equal `match`, by key."""
        return {key: value for (k, key), value in self.records.items()
                if k == kind and all(value.get(f) == v for f, v in match.items())}

    # -- what each request writes --------------------------------------------------------------
    def _journal(self, project: str, msg: Any) -> tuple[Any, Value, After] | None:
        match msg:
            case CreateServer():
                if msg.server_id is None:
                    msg = attrs.evolve(msg, server_id=new_id())
                sid = msg.server_id
                assert sid is not None
                intent = {"op": "create_server", "server": sid, "az": msg.az, "boot_volume": msg.boot_volume,
                          "system_volume": system_volume_id(sid)}
                return msg, intent, lambda _: self._created_server(project, sid)
            case RemoveServer(sid):
                return msg, {"op": "delete_server", "server": sid}, lambda _: self._removed_server(sid)
            case ActOnServer(sid, action):
                power = "off" if action == "stop" else "on"
                return msg, {"op": "server_action", "server": sid, "action": action}, \
                    lambda _: self._update("server", sid, power=power)
            case ChangeFlavor(sid, flavor):
                return msg, {"op": "resize", "server": sid, "flavor": flavor}, \
                    lambda _: self._update("server", sid, flavor=flavor)
            case CreateServerGroup(name, policy):
                group = {"tenant": project, "name": name, "policy": policy}
                return msg, {"op": "create_group", **group}, \
                    lambda _: _writes(Put("group", f"{project}/{name}", group))
            case DeleteServerGroup(name):
                return msg, {"op": "delete_group", "tenant": project, "name": name}, \
                    lambda _: _writes(Delete("group", f"{project}/{name}"))
            case SetAutoRecovery(sid, enabled):
                return msg, {"op": "auto_recovery", "server": sid, "enabled": enabled}, \
                    lambda _: self._update("server", sid, auto_recovery=enabled)
            case CreateVolume():
                if msg.volume_id is None:
                    msg = attrs.evolve(msg, volume_id=new_id())
                assert msg.volume_id is not None
                return msg, {"op": "create_volume", "volume": msg.volume_id, "az": msg.az}, self._volume_view
            case RestoreBackup(volume_id=None):
                if msg.new_volume_id is None:
                    msg = attrs.evolve(msg, new_volume_id=new_id())
                vid = msg.new_volume_id
                assert vid is not None
                return msg, {"op": "create_volume", "volume": vid, "az": msg.az}, \
                    lambda _: self._fetched_volume(project, vid)
            case ExpandVolume(_, vid, size_gb):
                return msg, {"op": "expand_volume", "volume": vid, "size_gb": size_gb}, self._volume_view
            case AttachVolume(_, vid, sid):
                return msg, {"op": "attach", "volume": vid, "server": sid}, self._volume_view
            case DetachVolume(_, vid):
                return msg, {"op": "detach", "volume": vid}, self._volume_view
            case DeleteVolume(_, vid):
                return msg, {"op": "delete_volume", "volume": vid}, lambda _: _writes(Delete("volume", vid))
        return None

    async def _created_server(self, project: str, sid: str) -> list[Write]:
        servers: list[TenantServer] = await self.ask(project, ListServers())
        server = next(s for s in servers if s.id == sid)
        described = await (await self.services()).azs[server.az].ask(DescribeServer(sid), timeout=ASK_TIMEOUT_S)
        assert isinstance(described, ServerDescription)
        writes: list[Write] = [Put("server", sid, {
            "tenant": project, "name": server.name, "flavor": server.flavor.name, "az": server.az,
            "group": server.group, "auto_recovery": described.auto_recovery, "dedicated": described.dedicated,
            "power": "on", "host": described.host, "system_volume": server.system_volume})]
        if server.system_volume is not None:
            writes += await self._fetched_volume(project, server.system_volume)
        return writes

    async def _removed_server(self, sid: str) -> list[Write]:
        writes: list[Write] = [Delete("server", sid)]
        for vid, vol in self.of("volume", server=sid).items():
            # as the tenant does (actors.tenant._release_volumes): a bootable volume goes with its server
            writes.append(Delete("volume", vid) if vol["bootable"] else Put("volume", vid, {**vol, "server": None}))
        return writes

    async def _fetched_volume(self, project: str, vid: str) -> list[Write]:
        view = await self.ask(project, GetVolume(project, vid))
        return await self._volume_view(view)

    async def _volume_view(self, view: Any) -> list[Write]:
        assert isinstance(view, VolumeView), view
        old = self.records.get(("volume", view.id), {})  # keeps the API's fields (e.g. Cinder's label)
        return [Put("volume", view.id, {**old, "tenant": view.tenant, "az": view.az, "size_gb": view.size_gb,
                                        "kind": view.kind.value, "bootable": view.bootable,
                                        "server": view.server_id})]

    async def _update(self, kind: str, key: str, **fields: Any) -> list[Write]:
        old = self.records.get((kind, key))
        return [] if old is None else [Put(kind, key, {**old, **fields})]


def _with_fields(after: After, kind: str, key: str, fields: Mapping[str, Any]) -> After:
    async def with_fields(result: Any) -> list[Write]:
        return [Put(op.kind, op.key, {**op.value, **fields}) if isinstance(op, Put) and (op.kind, op.key) == (kind, key)
                else op for op in await after(result)]
    return with_fields


async def _writes(*ops: Write) -> list[Write]:
    return list(ops)

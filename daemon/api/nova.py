"""Nova v2.1 compute routes (issue 5; TEN-1, TEN-3, ECS-1, ECS-3, ECS-4, GEO-4): the subset
openstacksdk and the `openstack` CLI use for servers, flavors, server groups, availability
zones, quotas and limits, under `/compute/v2.1`.

- `GET /compute` and `GET /compute/v2.1`: version discovery (microversion 2.1 only: every
  response has the 2.1 shape).
- `GET /flavors`, `GET /flavors/detail`, `GET /flavors/{id}`: the bundled catalogue; a
  flavor's id is its name. `disk` is 0 (the system disk is an EVS volume, ECS-3) and a local
  disk shows as `OS-FLV-EXT-DATA:ephemeral`.
- `POST /servers` (`name`, `flavorRef`, `availability_zone`), `GET /servers[/detail]`,
  `GET /servers/{id}`, `DELETE /servers/{id}`. The server boots either
  - as `imageRef` says, which is accepted and ignored (the runtime boots no image yet; a new
    system disk is made), also when it comes as the one block device `{source_type: image,
    destination_type: local, boot_index: 0}` that `openstack server create --image` adds; or
  - from an existing volume of the project (`openstack server create --volume`): exactly one
    `block_device_mapping_v2` entry `{boot_index: 0, uuid: VOLUME, source_type: volume,
    destination_type: volume}`, `imageRef` empty or absent. The volume must be available, in
    the server's AZ, in a region with block storage. `delete_on_termination` may be left out;
    given, it must say what happens (ECS-3): a bootable volume (a system disk) is deleted with
    the server, a data volume is kept.
  Refused with 400, naming the field: several block devices (attach data volumes afterwards),
  sources `image` to a volume, `snapshot` and `blank` (no image service, no ephemeral or swap
  disks), `min_count`/`max_count` other than 1, scheduler hints other than `group`.
  `os:scheduler_hints` (or `OS-SCH-HNT:scheduler_hints`, as openstacksdk sends it)
  `{"group": NAME}` puts the server in that server group.
- `POST /servers/{id}/action`: `os-start`, `os-stop`, `reboot` (202); `resize` with
  `flavorRef` (202; the server must be stopped first, as on the provider: ECS-1), after which
  the server shows `VERIFY_RESIZE` until `confirmResize` (204; it shows its state again) or
  `revertResize` (202; the old flavor back). Meanwhile other actions are refused (409).
- `GET/POST /os-server-groups`, `GET/DELETE /os-server-groups/{id}`: the 2.1 shape with
  `policies: [POLICY]`; `anti-affinity` and `soft-anti-affinity` (GEO-4) are the policies the
  scheduler has (`affinity`, `soft-affinity`: 400). A group's id is its name, unique in the
  project (letters, digits, `.`, `_`, `-`). A group with members is not deleted (409).
- `GET /os-availability-zone`: the region's AZs, `zoneState.available`; `/detail` (hosts)
  only for the provider's cloud admin, as Nova keeps it to admins; it shows no hosts yet.
- `GET /os-quota-sets/{project}[/detail]` and `GET /limits`: the tenant's compute quotas.

The tenant actor answers a create once the server is built, and an action once it is done,
so these calls return then (Nova answers 202 earlier, at BUILD): clients that wait for ACTIVE
(or VERIFY_RESIZE) see it at their first poll.

Every route takes the caller's token, asks `Directory.authorize` (TEN-1: the one place where
tenant isolation is decided) for READ or WRITE on the token's project, and then asks that
project's tenant actor through `Control.ask` (where changes are journaled). A server of
another project is simply not in the caller's tenant: 404, as Nova answers. Errors leave in
Nova's format `{"<kind>": {"code", "message"}}`: QuotaExceeded and refusals 403 `forbidden`
(with Nova's "Quota exceeded for instances: Requested 1, but already used 10 of 10
instances"), NotFound 404 `itemNotFound`, bad input 400 `badRequest`, state clashes and
refused transitions 409 `conflictingRequest`, no host with room 409 too (no server record is
kept for a refused placement), an API outage 503 `serviceUnavailable`, anything else 500
`computeFault` with no detail (the log has it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from actors.az import DescribeServer, ServerDescription
from actors.flavors import FLAVORS, Flavor
from actors.identity import Action, Directory, Forbidden, Token
from actors.scheduler import GroupPolicy
from actors.tenant import (
    ActOnServer,
    ChangeFlavor,
    CreateServer,
    CreateServerGroup,
    DeleteServerGroup,
    GetQuotas,
    ListServerGroups,
    ListServers,
    Quotas,
    RemoveServer,
    TenantServer,
)
from actors.volumes import GetVolume, VolumeView
from daemon.api import Handler, in_format, read_json, token_of
from daemon.control import ASK_TIMEOUT_S, Control
from runtime.errors import (
    CloudError,
    Conflict,
    InvalidRequest,
    InvalidTransition,
    NoCapacity,
    NotFound,
    QuotaExceeded,
    ServiceUnavailable,
)

log = logging.getLogger(__name__)

PREFIX = "/compute/v2.1"
VERSION = {"id": "v2.1", "status": "CURRENT", "version": "2.1", "min_version": "2.1",
           "updated": "2013-07-23T11:33:21Z"}

# Nova's status (and vm_state) of each server state of actors.servers.ServerState.
_STATUS = {"building": "BUILD", "active": "ACTIVE", "shutoff": "SHUTOFF", "resizing": "RESIZE",
           "rebooting": "REBOOT", "recovering": "REBUILD", "down": "UNKNOWN", "error": "ERROR",
           "deleted": "DELETED"}
# libvirt/Nova power_state codes: 1 RUNNING, 4 SHUTDOWN, 0 NOSTATE.
_POWER = {"active": 1, "rebooting": 1, "resizing": 1, "shutoff": 4}
# Nova's quota names of the tenant's compute quotas (volumes and gigabytes are Cinder's).
_QUOTA_NAMES = {"instances": "instances", "cores": "vcpus", "ram": "ram_mb", "server_groups": "server_groups",
                "server_group_members": "server_group_members"}
_LIMIT_NAMES = {"maxTotalInstances": "instances", "maxTotalCores": "vcpus", "maxTotalRAMSize": "ram_mb",
                "maxServerGroups": "server_groups", "maxServerGroupMembers": "server_group_members"}
_USED_NAMES = {"totalInstancesUsed": "instances", "totalCoresUsed": "vcpus", "totalRAMUsed": "ram_mb",
               "totalServerGroupsUsed": "server_groups"}
_ACTIONS = {"os-start": "start", "os-stop": "stop", "reboot": "reboot"}
_RESIZES = ("resize", "confirmResize", "revertResize")
_HINT_KEYS = ("os:scheduler_hints", "OS-SCH-HNT:scheduler_hints")
_GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
# Nova's server group policies the scheduler does not have (it spreads a group, never packs one).
_UNSUPPORTED_POLICIES = ("affinity", "soft-affinity")
_BDM = "body.server.block_device_mapping_v2"


def nova_error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({kind: {"code": status, "message": message}}, status_code=status)


def error_of(error: CloudError) -> JSONResponse:
    """A runtime error as Nova reports it (see the module docstring)."""
    if isinstance(error, QuotaExceeded):
        return nova_error(403, "forbidden", f"Quota exceeded for {error.resource}: Requested {error.requested}, "
                                            f"but already used {error.used} of {error.limit} {error.resource}")
    if isinstance(error, Forbidden):
        return nova_error(403, "forbidden", str(error))
    if isinstance(error, NotFound):
        return nova_error(404, "itemNotFound", str(error))
    if isinstance(error, InvalidTransition | Conflict | NoCapacity):
        return nova_error(409, "conflictingRequest", str(error))
    if isinstance(error, InvalidRequest):
        return nova_error(400, "badRequest", str(error))
    if isinstance(error, ServiceUnavailable):
        return nova_error(503, "serviceUnavailable", str(error))
    log.error("unmapped runtime error in the compute API", exc_info=error)
    return nova_error(500, "computeFault", "internal error; the daemon's log has the details")


def _body_object(payload: Any, key: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise InvalidRequest(f"body: must be a JSON object, got {type(payload).__name__}")
    value = payload.get(key)
    if not isinstance(value, dict):
        raise InvalidRequest(f"body.{key}: required, must be a JSON object, got {type(value).__name__}")
    return value


def _text(obj: Mapping[str, Any], path: str, key: str, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{path}.{key}: {'required, ' if value is None else ''}must be a non-empty string, "
                             f"got {value!r:.40}")
    return value


def _flavor_ref(obj: Mapping[str, Any], path: str) -> str:
    flavor = _text(obj, path, "flavorRef")
    assert flavor is not None
    return flavor.rstrip("/").rsplit("/", 1)[-1]  # Nova accepts a flavor's id or its link


def _image_ref(body: Mapping[str, Any]) -> str | None:
    """`imageRef`: a string, "" meaning none (what clients send when booting from a volume)."""
    image = body.get("imageRef")
    if image is not None and not isinstance(image, str):
        raise InvalidRequest(f"body.server.imageRef: must be a string, got {image!r:.40}")
    return image or None


def _one_server(body: Mapping[str, Any]) -> None:
    for key in ("min_count", "max_count"):
        value = body.get(key)
        if value is not None and str(value) != "1":
            raise InvalidRequest(f"body.server.{key}: {value!r:.20} is not supported; valid: 1 (one server per "
                                 "request)")


def _group_hint(payload: Mapping[str, Any]) -> str | None:
    """The server group of `os:scheduler_hints` (the only hint the scheduler takes)."""
    given = [key for key in _HINT_KEYS if payload.get(key) is not None]
    if not given:
        return None
    if len(given) > 1:
        raise InvalidRequest(f"body: both {' and '.join(given)} given; send the scheduler hints once")
    hints = payload[given[0]]
    if not isinstance(hints, dict):
        raise InvalidRequest(f"body.{given[0]}: must be a JSON object, got {type(hints).__name__}")
    other = sorted(set(hints) - {"group"})
    if other:
        raise InvalidRequest(f"body.{given[0]}: {', '.join(other)} not supported; valid: group (a server group)")
    return _text(hints, f"body.{given[0]}", "group", required=False)


def _boot_volume(body: Mapping[str, Any], image: str | None) -> tuple[str, bool | None] | None:
    """The volume to boot from and the `delete_on_termination` asked (None: not given), from
    `block_device_mapping_v2`; None to boot as `imageRef` says (see the module docstring)."""
    mappings = body.get("block_device_mapping_v2")
    if mappings is None:
        return None
    if not isinstance(mappings, list) or not mappings:
        raise InvalidRequest(f"{_BDM}: must be a non-empty list of objects, got {mappings!r:.60}")
    if len(mappings) > 1:
        raise InvalidRequest(f"{_BDM}: {len(mappings)} block devices; valid: exactly one, the boot device (a "
                             "volume, or the image); attach data volumes once the server exists")
    bdm, path = mappings[0], f"{_BDM}[0]"
    if not isinstance(bdm, dict):
        raise InvalidRequest(f"{path}: must be a JSON object, got {type(bdm).__name__}")
    if str(bdm.get("boot_index")) != "0":
        raise InvalidRequest(f"{path}.boot_index: {bdm.get('boot_index')!r:.20}; valid: 0 (the boot device)")
    source, target = bdm.get("source_type"), bdm.get("destination_type")
    uuid = _text(bdm, path, "uuid")
    assert uuid is not None
    if source == "image" and target in (None, "local"):
        if image is not None and image != uuid:
            raise InvalidRequest(f"{path}.uuid: image {uuid!r} differs from body.server.imageRef {image!r}")
        return None  # the image as the root disk: the same as imageRef alone
    if source != "volume":
        raise InvalidRequest(f"{path}.source_type: {source!r:.20} with destination_type {target!r:.20} is not "
                             "supported; valid: volume (boot from one of your volumes), or image to local (as "
                             "imageRef); fe-runtime makes no volume from an image or snapshot, and no blank disk")
    if target not in (None, "volume"):
        raise InvalidRequest(f"{path}.destination_type: {target!r:.20}; valid: volume (a volume boots as it is)")
    if image is not None:
        raise InvalidRequest(f"body.server.imageRef: {image!r:.40} given with a boot volume; valid: \"\" or absent")
    delete = bdm.get("delete_on_termination")
    if isinstance(delete, str) and delete.lower() in ("true", "false"):
        delete = delete.lower() == "true"
    if delete is not None and not isinstance(delete, bool):
        raise InvalidRequest(f"{path}.delete_on_termination: {delete!r:.20}; valid: true or false")
    return uuid, delete


class Nova:
    """The compute routes over one `Directory` and the actors (through `Control`); `public_url` as Keystone's."""

    def __init__(self, directory: Directory, control: Control, public_url: str) -> None:
        self.directory, self.control = directory, control
        self.url = f"{public_url.rstrip('/')}{PREFIX}"

    def _resized_from(self, server_id: str) -> str | None:
        """The flavor a resized server had before, while it awaits confirmation (Nova's VERIFY_RESIZE):
        the stored server record's `resized_from`, set when a resize is done and cleared by
        confirmResize or revertResize (durable: a restart keeps it)."""
        record = self.control.record("server", server_id)
        return None if record is None else record.get("resized_from")

    def routes(self) -> list[Route]:
        def route(path: str, handler: Callable[[Request], Awaitable[Response]], method: str) -> Route:
            return Route(path, self._nova(handler), methods=[method])
        return [
            route("/compute", self.versions, "GET"),
            route(PREFIX, self.version, "GET"),
            route(f"{PREFIX}/flavors", self.flavors, "GET"),
            route(f"{PREFIX}/flavors/detail", self.flavors_detail, "GET"),
            route(f"{PREFIX}/flavors/{{flavor_id}}", self.flavor, "GET"),
            route(f"{PREFIX}/servers", self.create, "POST"),
            route(f"{PREFIX}/servers", self.servers, "GET"),
            route(f"{PREFIX}/servers/detail", self.servers_detail, "GET"),
            route(f"{PREFIX}/servers/{{server_id}}", self.server, "GET"),
            route(f"{PREFIX}/servers/{{server_id}}", self.delete, "DELETE"),
            route(f"{PREFIX}/servers/{{server_id}}/action", self.action, "POST"),
            route(f"{PREFIX}/os-server-groups", self.server_groups, "GET"),
            route(f"{PREFIX}/os-server-groups", self.create_server_group, "POST"),
            route(f"{PREFIX}/os-server-groups/{{group_id}}", self.server_group, "GET"),
            route(f"{PREFIX}/os-server-groups/{{group_id}}", self.delete_server_group, "DELETE"),
            route(f"{PREFIX}/os-availability-zone", self.availability_zones, "GET"),
            route(f"{PREFIX}/os-availability-zone/detail", self.availability_zones_detail, "GET"),
            route(f"{PREFIX}/os-quota-sets/{{project}}", self.quota_set, "GET"),
            route(f"{PREFIX}/os-quota-sets/{{project}}/detail", self.quota_detail, "GET"),
            route(f"{PREFIX}/limits", self.limits, "GET"),
        ]

    @staticmethod
    def _nova(handler: Handler) -> Handler:
        return in_format(error_of, handler)

    # -- plumbing ---------------------------------------------------------------------------
    def _caller(self, request: Request, action: Action, project: str | None = None) -> Token:
        """The caller's token, once `Directory.authorize` allowed `action` on its project (TEN-1)."""
        token = token_of(request)
        self.directory.authorize(token, action, token.project if project is None else project)
        return token

    async def _ask(self, project: str, msg: Any) -> Any:
        return await self.control.ask(project, msg)

    async def _own_server(self, project: str, server_id: str) -> TenantServer:
        servers: list[TenantServer] = await self._ask(project, ListServers())
        found = next((s for s in servers if s.id == server_id), None)
        if found is None:
            raise NotFound("server", server_id)
        return found

    async def _describe(self, server: TenantServer) -> ServerDescription:
        services = await self.control.services()
        described = await services.azs[server.az].ask(DescribeServer(server.id), timeout=ASK_TIMEOUT_S)
        assert isinstance(described, ServerDescription)
        return described

    def _links(self, kind: str, ident: str) -> list[dict[str, str]]:
        return [{"rel": "self", "href": f"{self.url}/{kind}/{ident}"},
                {"rel": "bookmark", "href": f"{self.url.removesuffix('/v2.1')}/{kind}/{ident}"}]

    # -- versions ---------------------------------------------------------------------------
    def _version_doc(self) -> dict[str, Any]:
        return {**VERSION, "links": [{"rel": "self", "href": f"{self.url}/"}],
                "media-types": [{"base": "application/json",
                                 "type": "application/vnd.openstack.compute+json;version=2.1"}]}

    async def versions(self, request: Request) -> Response:
        return JSONResponse({"versions": [self._version_doc()]})

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": self._version_doc()})

    # -- flavors ----------------------------------------------------------------------------
    def _flavor(self, flavor: Flavor, detail: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"id": flavor.name, "name": flavor.name, "links": self._links("flavors", flavor.name)}
        if detail:
            body.update({"vcpus": flavor.vcpus, "ram": flavor.ram_mb, "disk": 0,
                         "OS-FLV-EXT-DATA:ephemeral": flavor.local_disk_gb, "swap": "", "rxtx_factor": 1.0,
                         "os-flavor-access:is_public": True, "OS-FLV-DISABLED:disabled": False})
        return body

    async def flavors(self, request: Request) -> Response:
        self._caller(request, Action.READ)
        return JSONResponse({"flavors": [self._flavor(f, False) for f in FLAVORS.values()]})

    async def flavors_detail(self, request: Request) -> Response:
        self._caller(request, Action.READ)
        return JSONResponse({"flavors": [self._flavor(f, True) for f in FLAVORS.values()]})

    async def flavor(self, request: Request) -> Response:
        self._caller(request, Action.READ)
        name = request.path_params["flavor_id"]
        if name not in FLAVORS:
            raise NotFound("flavor", name)
        return JSONResponse({"flavor": self._flavor(FLAVORS[name], True)})

    # -- servers ----------------------------------------------------------------------------
    def _server(self, server: TenantServer, project: str, described: ServerDescription) -> dict[str, Any]:
        status = _STATUS.get(described.state, "UNKNOWN")
        verify = self._resized_from(server.id) is not None and described.state == "shutoff"
        return {
            "id": server.id, "name": server.name, "tenant_id": project,
            "status": "VERIFY_RESIZE" if verify else status,
            "OS-EXT-STS:vm_state": "resized" if verify else status.lower(),
            "OS-EXT-STS:power_state": _POWER.get(described.state, 0), "OS-EXT-STS:task_state": None,
            "OS-EXT-AZ:availability_zone": server.az,
            "flavor": {"id": server.flavor.name, "links": self._links("flavors", server.flavor.name)[1:]},
            "image": "",  # no image: Nova shows "" for a server booted from a volume
            "addresses": {}, "metadata": {}, "links": self._links("servers", server.id),
        }

    async def create(self, request: Request) -> Response:
        token = self._caller(request, Action.WRITE)
        payload = await read_json(request)
        body = _body_object(payload, "server")
        name = _text(body, "body.server", "name")
        flavor = _flavor_ref(body, "body.server")
        az = _text(body, "body.server", "availability_zone", required=False)
        assert name is not None
        if az is None:
            raise InvalidRequest("body.server.availability_zone: required, missing (valid: an AZ of this region; "
                                 "fe-runtime does not pick one for you)")
        _one_server(body)
        group = _group_hint(payload)
        boot = _boot_volume(body, _image_ref(body))
        volume = None if boot is None else await self._checked_boot_volume(token.project, *boot)
        sid = await self._ask(token.project, CreateServer(name, flavor, az, group=group, boot_volume=volume))
        return JSONResponse({"server": {"id": sid, "links": self._links("servers", sid),
                                        "OS-DCF:diskConfig": "MANUAL", "security_groups": []}}, status_code=202)

    async def _checked_boot_volume(self, project: str, volume_id: str, delete: bool | None) -> str:
        """`volume_id`, once it is the project's and `delete` (delete_on_termination) says what
        becomes of it with the server (ECS-3)."""
        path = f"{_BDM}[0]"
        if not (await self.control.services()).volumes:
            raise InvalidRequest(f"{path}: this region has no block storage ([storage] in the daemon's "
                                 "configuration): servers cannot boot from a volume here; use imageRef")
        try:
            view: VolumeView = await self._ask(project, GetVolume(project, volume_id))
        except NotFound:
            raise InvalidRequest(f"{path}.uuid: volume {volume_id!r} not found in project {project}") from None
        if delete is not None and delete != view.bootable:
            what = ("a system disk (bootable): it is deleted with the server" if view.bootable
                    else "a data volume: it is kept when the server is deleted")
            raise InvalidRequest(f"{path}.delete_on_termination: {str(delete).lower()}, but volume {volume_id} is "
                                 f"{what} (ECS-3); valid: {str(view.bootable).lower()} or absent")
        return volume_id

    async def _listed(self, request: Request) -> tuple[str, list[TenantServer]]:
        token = self._caller(request, Action.READ)
        servers: list[TenantServer] = await self._ask(token.project, ListServers())
        name = request.query_params.get("name")
        return token.project, [s for s in servers if name is None or s.name == name]

    async def servers(self, request: Request) -> Response:
        _, servers = await self._listed(request)
        return JSONResponse({"servers": [{"id": s.id, "name": s.name, "links": self._links("servers", s.id)}
                                         for s in servers]})

    async def servers_detail(self, request: Request) -> Response:
        project, servers = await self._listed(request)
        shown = []
        for s in servers:
            try:
                shown.append(self._server(s, project, await self._describe(s)))
            except NotFound:  # deleted between the list and its description
                continue
        return JSONResponse({"servers": shown})

    async def server(self, request: Request) -> Response:
        token = self._caller(request, Action.READ)
        server = await self._own_server(token.project, request.path_params["server_id"])
        return JSONResponse({"server": self._server(server, token.project, await self._describe(server))})

    async def delete(self, request: Request) -> Response:
        token = self._caller(request, Action.WRITE)
        server = await self._own_server(token.project, request.path_params["server_id"])
        await self._ask(token.project, RemoveServer(server.id))
        return Response(status_code=204)

    async def action(self, request: Request) -> Response:
        token = self._caller(request, Action.WRITE)
        payload = await read_json(request)
        if not isinstance(payload, dict) or len(payload) != 1 or next(iter(payload)) not in (*_ACTIONS, *_RESIZES):
            raise InvalidRequest(f"body: {str(payload)[:60]!r} is not a server action (valid: one of "
                                 f"{', '.join((*_ACTIONS, *_RESIZES))}, e.g. {{\"os-stop\": null}})")
        (name, args), = payload.items()
        server = await self._own_server(token.project, request.path_params["server_id"])
        if name in ("confirmResize", "revertResize"):
            return await self._end_resize(token.project, server, name)
        if self._resized_from(server.id) is not None:
            raise Conflict(f"server {server.id} is resized and awaits confirmResize or revertResize "
                           f"(VERIFY_RESIZE); {name} refused")
        if name == "resize":
            if not isinstance(args, dict):
                raise InvalidRequest(f"body.resize: must be a JSON object with flavorRef, got {args!r:.40}")
            flavor = _flavor_ref(args, "body.resize")
            if flavor == server.flavor.name:
                raise InvalidRequest(f"body.resize.flavorRef: server {server.id} has flavor {flavor} already; "
                                     "valid: another flavor")
            await self._ask(token.project, ChangeFlavor(server.id, flavor))
            await self.control.annotate("server", server.id, resized_from=server.flavor.name)
            return Response(status_code=202)
        await self._ask(token.project, ActOnServer(server.id, _ACTIONS[name]))
        return Response(status_code=202)

    async def _end_resize(self, project: str, server: TenantServer, name: str) -> Response:
        """confirmResize keeps the new flavor (204); revertResize gives the old one back (202)."""
        old = self._resized_from(server.id)
        if old is None:
            raise Conflict(f"server {server.id} has no resize awaiting confirmation; {name} refused")
        if name == "confirmResize":
            await self.control.annotate("server", server.id, resized_from=None)
            return Response(status_code=204)
        await self._ask(project, ChangeFlavor(server.id, old))
        await self.control.annotate("server", server.id, resized_from=None)
        return Response(status_code=202)

    # -- server groups (GEO-4) ----------------------------------------------------------------
    def _group(self, name: str, policy: GroupPolicy, servers: list[TenantServer]) -> dict[str, Any]:
        return {"id": name, "name": name, "policies": [policy.value], "metadata": {},
                "members": [s.id for s in servers if s.group == name]}

    async def _groups(self, project: str) -> tuple[dict[str, GroupPolicy], list[TenantServer]]:
        groups: dict[str, GroupPolicy] = await self._ask(project, ListServerGroups())
        servers: list[TenantServer] = await self._ask(project, ListServers())
        return groups, servers

    async def server_groups(self, request: Request) -> Response:
        token = self._caller(request, Action.READ)
        groups, servers = await self._groups(token.project)
        return JSONResponse({"server_groups": [self._group(n, p, servers) for n, p in sorted(groups.items())]})

    async def server_group(self, request: Request) -> Response:
        token = self._caller(request, Action.READ)
        name = request.path_params["group_id"]
        groups, servers = await self._groups(token.project)
        if name not in groups:
            raise NotFound("server group", name)
        return JSONResponse({"server_group": self._group(name, groups[name], servers)})

    async def create_server_group(self, request: Request) -> Response:
        token = self._caller(request, Action.WRITE)
        body = _body_object(await read_json(request), "server_group")
        name = _text(body, "body.server_group", "name")
        assert name is not None
        if not _GROUP_NAME.fullmatch(name):
            raise InvalidRequest(f"body.server_group.name: {name!r:.60} is not valid: it is the group's id, 1 to 255 "
                                 "letters, digits, '.', '_' or '-', starting with a letter or digit")
        policies = body.get("policies")
        valid = ", ".join(p.value for p in GroupPolicy)
        if not isinstance(policies, list) or len(policies) != 1 or not isinstance(policies[0], str):
            raise InvalidRequest(f"body.server_group.policies: {policies!r:.60}; valid: a list of exactly one of "
                                 f"{valid}")
        if policies[0] in _UNSUPPORTED_POLICIES:
            raise InvalidRequest(f"body.server_group.policies: {policies[0]} is not supported (the scheduler spreads "
                                 f"a group's servers, it never packs them); valid: {valid}")
        if policies[0] not in {p.value for p in GroupPolicy}:
            raise InvalidRequest(f"body.server_group.policies: {policies[0]!r:.40} is not a policy; valid: {valid}")
        await self._ask(token.project, CreateServerGroup(name, policies[0]))
        return JSONResponse({"server_group": self._group(name, GroupPolicy(policies[0]), [])})

    async def delete_server_group(self, request: Request) -> Response:
        token = self._caller(request, Action.WRITE)
        await self._ask(token.project, DeleteServerGroup(request.path_params["group_id"]))
        return Response(status_code=204)

    # -- availability zones -------------------------------------------------------------------
    async def _zones(self) -> list[dict[str, Any]]:
        azs = (await self.control.services()).azs
        return [{"zoneName": az, "zoneState": {"available": True}, "hosts": None} for az in sorted(azs)]

    async def availability_zones(self, request: Request) -> Response:
        self._caller(request, Action.READ)
        return JSONResponse({"availabilityZoneInfo": await self._zones()})

    async def availability_zones_detail(self, request: Request) -> Response:
        self._caller(request, Action.OPERATE)  # Nova: admins only (host names are the provider's)
        return JSONResponse({"availabilityZoneInfo": await self._zones()})

    # -- quotas and limits --------------------------------------------------------------------
    async def _quotas(self, request: Request) -> tuple[str, Quotas]:
        project = request.path_params["project"]
        self._caller(request, Action.READ, project)
        quotas: Quotas = await self._ask(project, GetQuotas())
        return project, quotas

    async def quota_set(self, request: Request) -> Response:
        project, quotas = await self._quotas(request)
        return JSONResponse({"quota_set": {"id": project, **{nova: quotas.limits[ours]
                                                             for nova, ours in _QUOTA_NAMES.items()}}})

    async def quota_detail(self, request: Request) -> Response:
        project, quotas = await self._quotas(request)
        return JSONResponse({"quota_set": {"id": project, **{
            nova: {"limit": quotas.limits[ours], "in_use": quotas.used[ours], "reserved": 0}
            for nova, ours in _QUOTA_NAMES.items()}}})

    async def limits(self, request: Request) -> Response:
        token = self._caller(request, Action.READ)
        quotas: Quotas = await self._ask(token.project, GetQuotas())
        absolute = {**{k: quotas.limits[v] for k, v in _LIMIT_NAMES.items()},
                    **{k: quotas.used[v] for k, v in _USED_NAMES.items()}}
        return JSONResponse({"limits": {"rate": [], "absolute": absolute}})


_JSON: dict[str, Any] = {"description": "success", "content": {"application/json": {"schema": {"type": "object"}}}}
_ITEM = {**_JSON, "description": "error in Nova's format {KIND: {code, message}}"}


def _op(summary: str, ok: str, *errors: int, body: bool = False) -> dict[str, Any]:
    """An operation: `ok` is the success status, or several ("202|204"); a JSON body unless 204
    or an action's."""
    plain = ok == "204" or summary.startswith("os-start")
    success = {"description": "success"} if plain else _JSON
    operation: dict[str, Any] = {"summary": summary, "responses": {
        **dict.fromkeys(ok.split("|"), success), **{str(code): _ITEM for code in (*errors, 401)}}}
    if body:
        operation["requestBody"] = {"required": True, "content": _JSON["content"]}
    return operation


_SERVER = "/compute/v2.1/servers/{server_id}"
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/compute"): _op("Compute API versions", "200"),
    ("GET", PREFIX): _op("Compute v2.1 version document", "200"),
    ("GET", f"{PREFIX}/flavors"): _op("List flavors", "200", 403),
    ("GET", f"{PREFIX}/flavors/detail"): _op("List flavors with details", "200", 403),
    ("GET", f"{PREFIX}/flavors/{{flavor_id}}"): _op("Show a flavor", "200", 403, 404),
    ("POST", f"{PREFIX}/servers"): _op("Create a server (imageRef ignored), or boot it from a volume "
                                       "(block_device_mapping_v2)", "202", 400, 403, 404, 409, 503,
                                       body=True),
    ("GET", f"{PREFIX}/servers"): _op("List the project's servers", "200", 403),
    ("GET", f"{PREFIX}/servers/detail"): _op("List the project's servers with details", "200", 403),
    ("GET", _SERVER): _op("Show a server", "200", 403, 404),
    ("DELETE", _SERVER): _op("Delete a server", "204", 403, 404, 409),
    ("POST", f"{_SERVER}/action"): _op("os-start, os-stop, reboot, resize, revertResize (202) or confirmResize "
                                       "(204)", "202|204", 400, 403, 404, 409, body=True),
    ("GET", f"{PREFIX}/os-server-groups"): _op("List the project's server groups", "200", 403),
    ("POST", f"{PREFIX}/os-server-groups"): _op("Create a server group (anti-affinity, soft-anti-affinity)", "200",
                                                400, 403, 409, body=True),
    ("GET", f"{PREFIX}/os-server-groups/{{group_id}}"): _op("Show a server group", "200", 403, 404),
    ("DELETE", f"{PREFIX}/os-server-groups/{{group_id}}"): _op("Delete a server group without members", "204",
                                                               403, 404, 409),
    ("GET", f"{PREFIX}/os-availability-zone"): _op("List the region's availability zones", "200", 403),
    ("GET", f"{PREFIX}/os-availability-zone/detail"): _op("Availability zones, for the cloud admin", "200", 403),
    ("GET", f"{PREFIX}/os-quota-sets/{{project}}"): _op("Show a project's compute quotas", "200", 403, 404),
    ("GET", f"{PREFIX}/os-quota-sets/{{project}}/detail"): _op("Quotas with usage", "200", 403, 404),
    ("GET", f"{PREFIX}/limits"): _op("Absolute limits and usage of the caller's project", "200", 403),
}

"""Nova v2.1 compute routes (issue 5; TEN-1, TEN-3, ECS-1): the subset openstacksdk and the
`openstack` CLI use for servers, flavors, quotas and limits, under `/compute/v2.1`.

- `GET /compute` and `GET /compute/v2.1`: version discovery (microversion 2.1 only: every
  response has the 2.1 shape).
- `GET /flavors`, `GET /flavors/detail`, `GET /flavors/{id}`: the bundled catalogue; a
  flavor's id is its name. `disk` is 0 (the system disk is an EVS volume, ECS-3) and a local
  disk shows as `OS-FLV-EXT-DATA:ephemeral`.
- `POST /servers` (`name`, `flavorRef`, `availability_zone`; `imageRef` is accepted and
  ignored: the runtime boots no image yet), `GET /servers[/detail]`, `GET /servers/{id}`,
  `DELETE /servers/{id}`, `POST /servers/{id}/action` with `os-start`, `os-stop`, `reboot`.
  The tenant actor answers a create once the server is built and a start/stop/reboot once it
  is done, so these calls return then (Nova answers 202 earlier, at BUILD): clients that
  wait for ACTIVE see it at their first poll.
- `GET /os-quota-sets/{project}[/detail]` and `GET /limits`: the tenant's compute quotas.

Every route takes the caller's token, asks `Directory.authorize` (TEN-1: the one place where
tenant isolation is decided) for READ or WRITE on the token's project, and then asks that
project's tenant actor. A server of another project is simply not in the caller's tenant:
404, as Nova answers. Errors leave in Nova's format `{"<kind>": {"code", "message"}}`:
QuotaExceeded and refusals 403 `forbidden` (with Nova's "Quota exceeded for instances:
Requested 1, but already used 10 of 10 instances"), NotFound 404 `itemNotFound`, bad input
400 `badRequest`, state clashes and refused transitions 409 `conflictingRequest`, no host
with room 409 too (no server record is kept for a refused placement), an API outage 503
`serviceUnavailable`, anything else 500 `computeFault` with no detail (the log has it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from actors.az import DescribeServer, ServerDescription
from actors.flavors import FLAVORS, Flavor
from actors.identity import Action, Directory, Forbidden, Token
from actors.tenant import ActOnServer, CreateServer, GetQuotas, ListServers, Quotas, RemoveServer, TenantServer
from daemon.api import read_json, token_of
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


class Nova:
    """The compute routes over one `Directory` and the actors (through `Control`); `public_url` as Keystone's."""

    def __init__(self, directory: Directory, control: Control, public_url: str) -> None:
        self.directory, self.control = directory, control
        self.url = f"{public_url.rstrip('/')}{PREFIX}"

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
            route(f"{PREFIX}/os-quota-sets/{{project}}", self.quota_set, "GET"),
            route(f"{PREFIX}/os-quota-sets/{{project}}/detail", self.quota_detail, "GET"),
            route(f"{PREFIX}/limits", self.limits, "GET"),
        ]

    @staticmethod
    def _nova(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            try:
                return await handler(request)
            except CloudError as error:
                return error_of(error)
        return wrapped

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
        return {
            "id": server.id, "name": server.name, "tenant_id": project,
            "status": _STATUS.get(described.state, "UNKNOWN"),
            "OS-EXT-STS:vm_state": _STATUS.get(described.state, "UNKNOWN").lower(),
            "OS-EXT-STS:power_state": _POWER.get(described.state, 0), "OS-EXT-STS:task_state": None,
            "OS-EXT-AZ:availability_zone": server.az,
            "flavor": {"id": server.flavor.name, "links": self._links("flavors", server.flavor.name)[1:]},
            "image": "",  # no image: Nova shows "" for a server booted from a volume
            "addresses": {}, "metadata": {}, "links": self._links("servers", server.id),
        }

    async def create(self, request: Request) -> Response:
        token = self._caller(request, Action.WRITE)
        body = _body_object(await read_json(request), "server")
        name = _text(body, "body.server", "name")
        flavor = _text(body, "body.server", "flavorRef")
        az = _text(body, "body.server", "availability_zone", required=False)
        _text(body, "body.server", "imageRef", required=False)  # accepted, ignored: no images yet
        assert name is not None and flavor is not None
        flavor = flavor.rstrip("/").rsplit("/", 1)[-1]  # Nova accepts a flavor's id or its link
        if az is None:
            raise InvalidRequest("body.server.availability_zone: required, missing (valid: an AZ of this region; "
                                 "fe-runtime does not pick one for you)")
        sid = await self._ask(token.project, CreateServer(name, flavor, az))
        return JSONResponse({"server": {"id": sid, "links": self._links("servers", sid),
                                        "OS-DCF:diskConfig": "MANUAL", "security_groups": []}}, status_code=202)

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
        if not isinstance(payload, dict) or len(payload) != 1 or next(iter(payload)) not in _ACTIONS:
            raise InvalidRequest(f"body: {str(payload)[:60]!r} is not a server action "
                                 f"(valid: one of {', '.join(_ACTIONS)}, e.g. {{\"os-stop\": null}})")
        server = await self._own_server(token.project, request.path_params["server_id"])
        await self._ask(token.project, ActOnServer(server.id, _ACTIONS[next(iter(payload))]))
        return Response(status_code=202)

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
    """An operation: `ok` is the success status (JSON body unless 204, or a 202 of an action)."""
    plain = ok == "204" or summary.startswith("os-start")
    success = {"description": "success"} if plain else _JSON
    operation: dict[str, Any] = {"summary": summary,
                                 "responses": {ok: success, **{str(code): _ITEM for code in (*errors, 401)}}}
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
    ("POST", f"{PREFIX}/servers"): _op("Create a server (imageRef ignored)", "202", 400, 403, 404, 409, 503,
                                       body=True),
    ("GET", f"{PREFIX}/servers"): _op("List the project's servers", "200", 403),
    ("GET", f"{PREFIX}/servers/detail"): _op("List the project's servers with details", "200", 403),
    ("GET", _SERVER): _op("Show a server", "200", 403, 404),
    ("DELETE", _SERVER): _op("Delete a server", "204", 403, 404, 409),
    ("POST", f"{_SERVER}/action"): _op("os-start, os-stop or reboot", "202", 400, 403, 404, 409, body=True),
    ("GET", f"{PREFIX}/os-quota-sets/{{project}}"): _op("Show a project's compute quotas", "200", 403, 404),
    ("GET", f"{PREFIX}/os-quota-sets/{{project}}/detail"): _op("Quotas with usage", "200", 403, 404),
    ("GET", f"{PREFIX}/limits"): _op("Absolute limits and usage of the caller's project", "200", 403),
}

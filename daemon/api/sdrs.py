"""The provider's own sDRS API (issue 5; SDRS-1, SDRS-2, TEN-1) in its shapes
(`/v1/{project_id}/server-groups`...: REFERENCE "Storage disaster recovery"), under `/sdrs`,
over the region's `DisasterRecovery` actor (`actors.sdrs`):

- `POST /sdrs/v1/{project_id}/server-groups` with `{"server_group": {name, source_availability_zone,
  target_availability_zone, source_vpc_id, description?, domain_id?, dr_type?}}` -> 200 `{"job_id"}`.
  The group replicates from the source AZ to the target AZ of the daemon's region; the actor
  decides which target AZs are allowed (SDRS-1: in eu-west-0 it is eu-west-0a). `domain_id`
  (the provider's active-active domain) is accepted and not used: a region has one.
  `dr_type` may only be "migration", the provider's one deployment model.
- `GET .../server-groups` -> `{"server_groups": [...], "count"}` (the caller's, in creation
  order); `GET .../server-groups/{id}` -> `{"server_group": {...}}`; `DELETE` -> `{"job_id"}`.
  A group shows `status` as the provider names it (available, protected, failed-over,
  error-failing-over...), and `priority_station` (`source` or `target`: where its servers run).
- `POST .../server-groups/{id}/action` with exactly one of `start-server-group` (start
  protection; from failed-over or error-reprotecting it re-protects, as the provider's one
  action does both), `stop-server-group`, `failover-server-group` and `reverse-server-group`
  `{"priority_station": "source" | "target"}` (the planned switchover to that station)
  -> `{"job_id"}`.
- `POST .../protected-instances` with `{"protected_instance": {server_group_id, server_id, name?,
  description?}}` -> 200 `{"protected_instance": {...}}`; `GET .../protected-instances[?server_group_id=]`,
  `GET`/`DELETE .../protected-instances/{id}` (204). A protected instance's id is its server's id
  (a server is in one group at most; its DR copy in the other AZ has the same id).
- `GET .../jobs/{job_id}` -> `{job_id, job_type, status (INIT, RUNNING, SUCCESS, FAIL), begin_time,
  end_time, error_code, fail_reason, entities: {server_group_id}}`, with the provider's job types
  (`failoverProtectionGroupNoCG`...). A job is seen by the project that started it only.

Deviations from the provider, and why:
- Adding or removing a protected instance answers when done (the actor replies then), with the
  instance, not a job id; the DR server is not a server of its own but the same server's copy
  (`actors.sdrs`), so `source_server` and `target_server` are the same id.
- Not found answers 404 with the provider's code (it answers 400 `SDRS.1013` for a group it
  does not find: clients key on the code); a refused transition answers the provider's 400 with
  its code, `SDRS.1019` for an action that needs protection started (a failover of an
  unprotected group), `SDRS.1018` for one that needs it stopped, `SDRS.1002` otherwise; a group
  busy with another job or a name taken 409 `SDRS.1002`. Replication pairs
  (`/replications`) and drills are not served: the actor exposes no read of its pairs.
- Instance names and descriptions, group descriptions, and which project started which job, are
  kept here, in memory (the actor keeps none of them), like Cinder's labels.

State: the daemon's journal (daemon.control) does not cover sDRS groups: they live in the actor's
memory, and a restart forgets them (the volumes and servers they protected stay, as the tenant's).

Every route asks `Directory.authorize` (TEN-1) for READ or WRITE on the project of the path (another
project's id there: 403); a group, instance or job that is not the project's is not found (404).
The sDRS actor is the region's service: it is asked directly, with the project as the tenant.
A server to protect is looked up in the project's tenant first: the actor answers "already
protected by group G" before it checks the tenant, which would show another tenant's group.
Errors leave in the provider's format `{"error": {"code": "SDRS.xxxx", "message"}}`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from actors.identity import Action, Directory, Forbidden
from actors.sdrs import (
    CreateGroup,
    DeleteGroup,
    Failover,
    GetGroup,
    GetJob,
    GroupAction,
    GroupReport,
    GroupView,
    JobAccepted,
    JobView,
    ProtectServer,
    ReportGroups,
    Reprotect,
    StartProtection,
    StopProtection,
    Switchover,
    UnprotectServer,
)
from actors.tenant import ListServers, TenantServer
from daemon.api import Handler, in_format, read_json, token_of
from daemon.control import ASK_TIMEOUT_S, Control
from runtime.actor import ActorRef
from runtime.errors import CloudError, Conflict, InvalidRequest, InvalidTransition, NotFound, ServiceUnavailable

log = logging.getLogger(__name__)

PREFIX = "/sdrs/v1"
_GROUPS = f"{PREFIX}/{{project_id}}/server-groups"
_GROUP = f"{_GROUPS}/{{server_group_id}}"
_ACTION = f"{_GROUP}/action"
_INSTANCES = f"{PREFIX}/{{project_id}}/protected-instances"
_INSTANCE = f"{_INSTANCES}/{{protected_instance_id}}"
_JOB = f"{PREFIX}/{{project_id}}/jobs/{{job_id}}"

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")  # the provider's names: 64 bytes of letters, digits, . _ -
_STATIONS = ("source", "target")
_ACTIONS = ("start-server-group", "stop-server-group", "failover-server-group", "reverse-server-group")
_JOB_TYPES = {
    GroupAction.CREATE: "createProtectionGroupNoCG", GroupAction.DELETE: "deleteProtectionGroupNoCG",
    GroupAction.START_PROTECTION: "startProtectionGroupNoCG", GroupAction.REPROTECT: "reprotectProtectionGroupNoCG",
    GroupAction.STOP_PROTECTION: "stopProtectionGroupNoCG", GroupAction.FAILOVER: "failoverProtectionGroupNoCG",
    GroupAction.REVERSE: "reverseProtectionGroupNoCG", GroupAction.CREATE_DRILL: "createDisasterRecoveryDrill",
    GroupAction.DELETE_DRILL: "deleteDisasterRecoveryDrill",
}
# The provider's error code of a failed job, by its action ("Failed to enable protection"...).
_JOB_ERRORS = {
    GroupAction.CREATE: "SDRS.1014", GroupAction.DELETE: "SDRS.1016", GroupAction.START_PROTECTION: "SDRS.1027",
    GroupAction.STOP_PROTECTION: "SDRS.1028", GroupAction.REVERSE: "SDRS.1029", GroupAction.FAILOVER: "SDRS.1030",
    GroupAction.REPROTECT: "SDRS.1032",
}
_JOB_STATUS = {"running": "RUNNING", "success": "SUCCESS", "failed": "FAIL"}
# The provider's code of a thing not found, by the kind the actors name.
_NOT_FOUND = {"protection group": "SDRS.1013", "protected server": "SDRS.1320", "server": "SDRS.0210"}
_NOT_STARTED = frozenset({GroupAction.STOP_PROTECTION.value, GroupAction.FAILOVER.value,
                          GroupAction.REVERSE.value})
_STATE_CODES = {  # refused transitions: (action, state) -> the provider's code and message
    "not started": ("SDRS.1019", "Operation not allowed because the protection status of the protection group "
                                 "not started"),
    "not stopped": ("SDRS.1018", "Operation not allowed because the protection status of the protection group "
                                 "not stopped"),
    "other": ("SDRS.1002", "Operation not allowed for the protection group in the current state"),
}


def sdrs_error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def error_of(error: CloudError) -> JSONResponse:
    """A runtime error in the provider's sDRS format (see the module docstring)."""
    if isinstance(error, Forbidden):
        return sdrs_error(403, "SDRS.0005", f"No permission for the operation: {error}")
    if isinstance(error, NotFound):
        return sdrs_error(404, _NOT_FOUND.get(error.kind, "SDRS.0201"), str(error))
    if isinstance(error, InvalidTransition):
        if error.action in _NOT_STARTED and error.state == "available":
            code, phrase = _STATE_CODES["not started"]
        elif error.action == GroupAction.START_PROTECTION.value and error.state == "protected":
            code, phrase = _STATE_CODES["not stopped"]
        else:
            code, phrase = _STATE_CODES["other"]
        return sdrs_error(400, code, f"{phrase}: {error}")
    if isinstance(error, InvalidRequest):
        return sdrs_error(400, "SDRS.0201", f"Invalid request parameters: {error}")
    if isinstance(error, Conflict):
        return sdrs_error(409, "SDRS.1002", f"{_STATE_CODES['other'][1]}: {error}")
    if isinstance(error, ServiceUnavailable):
        return sdrs_error(503, "SDRS.0008", str(error))
    log.error("unmapped runtime error in the sDRS API", exc_info=error)
    return sdrs_error(500, "SDRS.0013", "Internal error; the daemon's log has the details")


def _iso(moment: float | None) -> str | None:
    """The provider's job time format; `moment` is the actors' clock (epoch seconds on the production driver)."""
    if moment is None:
        return None
    at = datetime.fromtimestamp(moment, UTC)
    return f"{at:%Y-%m-%dT%H:%M:%S}.{at.microsecond // 1000:03d}Z"


def _object(payload: Any, path: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise InvalidRequest(f"{path}: must be a JSON object, got {type(payload).__name__}")
    return payload


def _fields(obj: Mapping[str, Any], path: str, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise InvalidRequest(f"{path}: unknown field(s) {', '.join(unknown)} (valid: {', '.join(allowed) or 'none'})")


def _text(obj: Mapping[str, Any], path: str, key: str, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{path}.{key}: {'required, ' if value is None else ''}must be a non-empty string, "
                             f"got {value!r:.40}")
    return value


def _name(obj: Mapping[str, Any], path: str, required: bool) -> str | None:
    name = _text(obj, path, "name", required)
    if name is not None and not _NAME.fullmatch(name):
        raise InvalidRequest(f"{path}.name: {name!r:.70} (valid: 1 to 64 letters, digits, '.', '_' or '-')")
    return name


def _description(obj: Mapping[str, Any], path: str) -> str | None:
    value = obj.get("description")
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64 or "<" in value or ">" in value:
        raise InvalidRequest(f"{path}.description: {value!r:.70} (valid: a string of at most 64 characters "
                             "without '<' or '>')")
    return value


class Sdrs:
    """The sDRS routes over one `Directory` and the region's sDRS actor (through `Control`)."""

    def __init__(self, directory: Directory, control: Control) -> None:
        self.directory, self.control = directory, control
        self.job_owner: dict[str, str] = {}  # job id -> the project that started it
        self.group_descriptions: dict[str, str | None] = {}  # group id -> its description
        self.labels: dict[str, tuple[str | None, str | None]] = {}  # instance id -> (name, description)

    def routes(self) -> list[Route]:
        def route(path: str, handler: Callable[[Request], Awaitable[Response]], method: str) -> Route:
            return Route(path, self._sdrs(handler), methods=[method])
        return [
            route(_GROUPS, self.create_group, "POST"),
            route(_GROUPS, self.groups, "GET"),
            route(_GROUP, self.group, "GET"),
            route(_GROUP, self.delete_group, "DELETE"),
            route(_ACTION, self.action, "POST"),
            route(_INSTANCES, self.protect, "POST"),
            route(_INSTANCES, self.instances, "GET"),
            route(_INSTANCE, self.instance, "GET"),
            route(_INSTANCE, self.unprotect, "DELETE"),
            route(_JOB, self.job, "GET"),
        ]

    @staticmethod
    def _sdrs(handler: Handler) -> Handler:
        return in_format(error_of, handler)

    # -- plumbing ---------------------------------------------------------------------------
    def _project(self, request: Request, action: Action) -> str:
        """The project of the path, once the caller may `action` it (TEN-1)."""
        project: str = request.path_params["project_id"]
        self.directory.authorize(token_of(request), action, project)
        return project

    async def _service(self) -> ActorRef:
        sdrs = (await self.control.services()).sdrs
        if sdrs is None:
            raise InvalidRequest("this daemon has no sDRS: its configuration has no [storage] (SDRS-1 replicates "
                                 "volumes between the pools of two AZs)")
        return sdrs

    async def _ask(self, msg: Any) -> Any:
        return await (await self._service()).ask(msg, timeout=ASK_TIMEOUT_S)

    async def _group(self, project: str, group_id: str) -> GroupView:
        """The project's group `group_id`; another tenant's group does not exist for it (TEN-1)."""
        view: GroupView = await self._ask(GetGroup(group_id))
        if view.tenant != project:
            raise NotFound("protection group", group_id)
        return view

    async def _groups(self, project: str) -> list[GroupView]:
        reports: tuple[GroupReport, ...] = await self._ask(ReportGroups())
        views = []
        for report in reports:
            if report.tenant == project:
                try:
                    views.append(await self._ask(GetGroup(report.group)))
                except NotFound:
                    continue  # deleted meanwhile
        return views

    def _accepted(self, project: str, accepted: JobAccepted) -> Response:
        self.job_owner[accepted.job] = project
        return JSONResponse({"job_id": accepted.job})

    def _group_body(self, view: GroupView) -> dict[str, Any]:
        return {
            "id": view.id, "name": view.name, "description": self.group_descriptions.get(view.id),
            "status": view.state, "source_availability_zone": view.production_az,
            "target_availability_zone": view.recovery_az,
            "priority_station": "source" if view.active_az == view.production_az else "target",
            "protected_instance_num": len(view.servers), "replication_num": view.volumes,
            "disaster_recovery_drill_num": 0 if view.drill_vpc is None else 1,
            "source_vpc_id": view.vpc, "dr_type": "migration", "server_type": "ECS",
        }

    def _instance_body(self, view: GroupView, sid: str, servers: Mapping[str, TenantServer]) -> dict[str, Any]:
        name, description = self.labels.get(sid, (None, None))
        server = servers.get(sid)
        return {
            "id": sid, "name": name or (server.name if server is not None else None), "description": description,
            "server_group_id": view.id, "status": view.state, "source_server": sid, "target_server": sid,
            "priority_station": "source" if view.active_az == view.production_az else "target",
        }

    async def _servers(self, project: str) -> dict[str, TenantServer]:
        listed: list[TenantServer] = await self.control.ask(project, ListServers())
        return {s.id: s for s in listed}

    # -- protection groups --------------------------------------------------------------------
    async def create_group(self, request: Request) -> Response:
        project = self._project(request, Action.WRITE)
        path = "body.server_group"
        body = _object(_object(await read_json(request), "body").get("server_group"), path)
        _fields(body, path, ("name", "description", "source_availability_zone", "target_availability_zone",
                             "domain_id", "source_vpc_id", "dr_type"))
        name = _name(body, path, required=True)
        description = _description(body, path)
        source = _text(body, path, "source_availability_zone")
        target = _text(body, path, "target_availability_zone")
        vpc = _text(body, path, "source_vpc_id")
        _text(body, path, "domain_id", required=False)
        dr_type = _text(body, path, "dr_type", required=False)
        if dr_type not in (None, "migration"):
            raise InvalidRequest(f"{path}.dr_type: {dr_type!r:.40} (valid: migration)")
        assert name is not None and source is not None and target is not None and vpc is not None
        accepted: JobAccepted = await self._ask(CreateGroup(name, project, vpc, source, target))
        self.group_descriptions[accepted.group] = description
        return self._accepted(project, accepted)

    async def groups(self, request: Request) -> Response:
        project = self._project(request, Action.READ)
        views = await self._groups(project)
        return JSONResponse({"server_groups": [self._group_body(v) for v in views], "count": len(views)})

    async def group(self, request: Request) -> Response:
        project = self._project(request, Action.READ)
        view = await self._group(project, request.path_params["server_group_id"])
        return JSONResponse({"server_group": self._group_body(view)})

    async def delete_group(self, request: Request) -> Response:
        project = self._project(request, Action.WRITE)
        view = await self._group(project, request.path_params["server_group_id"])
        return self._accepted(project, await self._ask(DeleteGroup(view.id)))

    async def action(self, request: Request) -> Response:
        project = self._project(request, Action.WRITE)
        body = _object(await read_json(request), "body")
        given = [key for key in _ACTIONS if key in body]
        if len(given) != 1 or len(body) != 1:
            raise InvalidRequest(f"body: {', '.join(sorted(body)) or 'no action'}; valid: exactly one of "
                                 f"{', '.join(_ACTIONS)}")
        key = given[0]
        params = _object(body[key] if body[key] is not None else {}, f"body.{key}")
        _fields(params, f"body.{key}", ("priority_station",) if key == "reverse-server-group" else ())
        view = await self._group(project, request.path_params["server_group_id"])
        msg: Any
        if key == "start-server-group":  # the provider's one action starts protection or re-protects
            reprotect = view.state in ("failed-over", "error-reprotecting")
            msg = Reprotect(view.id) if reprotect else StartProtection(view.id)
        elif key == "stop-server-group":
            msg = StopProtection(view.id)
        elif key == "failover-server-group":
            msg = Failover(view.id)
        else:
            station = _text(params, f"body.{key}", "priority_station")
            if station not in _STATIONS:
                raise InvalidRequest(f"body.{key}.priority_station: {station!r:.40} (valid: source or target)")
            now = "source" if view.active_az == view.production_az else "target"
            if station == now:
                raise InvalidRequest(f"body.{key}.priority_station: the group already runs at {station} "
                                     f"({view.active_az}); valid: {'target' if now == 'source' else 'source'}")
            msg = Switchover(view.id)
        return self._accepted(project, await self._ask(msg))

    # -- protected instances ------------------------------------------------------------------
    async def protect(self, request: Request) -> Response:
        project = self._project(request, Action.WRITE)
        path = "body.protected_instance"
        body = _object(_object(await read_json(request), "body").get("protected_instance"), path)
        _fields(body, path, ("server_group_id", "server_id", "name", "description"))
        gid, sid = _text(body, path, "server_group_id"), _text(body, path, "server_id")
        name, description = _name(body, path, required=False), _description(body, path)
        assert gid is not None and sid is not None
        await self._group(project, gid)
        if sid not in await self._servers(project):  # first: the actor would say which group protects it
            raise NotFound("server", sid)
        await self._ask(ProtectServer(gid, sid))
        self.labels[sid] = (name, description)
        view = await self._group(project, gid)
        return JSONResponse({"protected_instance": self._instance_body(view, sid, await self._servers(project))})

    async def _instance(self, project: str, sid: str) -> GroupView:
        """The project's group that protects server `sid`."""
        view = next((v for v in await self._groups(project) if sid in v.servers), None)
        if view is None:
            raise NotFound("protected server", sid)
        return view

    async def instances(self, request: Request) -> Response:
        project = self._project(request, Action.READ)
        unknown = sorted(set(request.query_params) - {"server_group_id"})
        if unknown:
            raise InvalidRequest(f"query: unknown filter(s) {', '.join(unknown)} (valid: server_group_id)")
        wanted = request.query_params.get("server_group_id")
        views = [v for v in await self._groups(project) if wanted is None or v.id == wanted]
        servers = await self._servers(project)
        listed = [self._instance_body(v, sid, servers) for v in views for sid in v.servers]
        return JSONResponse({"protected_instances": listed, "count": len(listed)})

    async def instance(self, request: Request) -> Response:
        project = self._project(request, Action.READ)
        sid = request.path_params["protected_instance_id"]
        view = await self._instance(project, sid)
        return JSONResponse({"protected_instance": self._instance_body(view, sid, await self._servers(project))})

    async def unprotect(self, request: Request) -> Response:
        project = self._project(request, Action.WRITE)
        sid = request.path_params["protected_instance_id"]
        view = await self._instance(project, sid)
        await self._ask(UnprotectServer(view.id, sid))
        self.labels.pop(sid, None)
        return Response(status_code=204)

    # -- jobs ---------------------------------------------------------------------------------
    async def job(self, request: Request) -> Response:
        project = self._project(request, Action.READ)
        job_id = request.path_params["job_id"]
        if self.job_owner.get(job_id) != project:
            raise NotFound("sDRS job", job_id)
        job: JobView = await self._ask(GetJob(job_id))
        action = GroupAction(job.action)
        failed = job.status == "failed"
        return JSONResponse({
            "job_id": job.id, "job_type": _JOB_TYPES[action], "status": _JOB_STATUS[job.status],
            "begin_time": _iso(job.started_at), "end_time": _iso(job.finished_at),
            "error_code": _JOB_ERRORS.get(action, "SDRS.0405") if failed else None,
            "fail_reason": job.error if failed else None,
            "entities": {"server_group_id": job.group},
        })


_ERROR = {"description": "error in the provider's format {error: {code: SDRS.xxxx, message}}",
          "content": {"application/json": {"schema": {
              "type": "object", "required": ["error"], "properties": {"error": {
                  "type": "object", "required": ["code", "message"],
                  "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}}}}


# A missing or bad token is refused before any route, by daemon.api.AuthMiddleware, in Keystone's format.
_UNAUTHENTICATED = {"description": "no valid token (Keystone's error format)",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema or {"type": "object"}}}}


def _op(summary: str, status: str, answer: dict[str, Any], errors: tuple[int, ...],
        body: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {
        status: answer, **{str(c): _UNAUTHENTICATED if c == 401 else _ERROR for c in errors}}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


_JOB_ID = _json("the job started (poll GET .../jobs/{job_id})",
                {"type": "object", "required": ["job_id"], "properties": {"job_id": {"type": "string"}}})
_STR = {"type": "string"}
_GROUP_BODY = {"type": "object", "required": ["server_group"], "properties": {"server_group": {
    "type": "object", "required": ["name", "source_availability_zone", "target_availability_zone", "source_vpc_id"],
    "properties": {"name": _STR, "description": _STR, "source_availability_zone": _STR,
                   "target_availability_zone": _STR, "source_vpc_id": _STR, "domain_id": _STR,
                   "dr_type": {"type": "string", "enum": ["migration"]}}}}}
_ACTION_BODY = {"type": "object", "minProperties": 1, "maxProperties": 1, "properties": {
    "start-server-group": {"type": "object"}, "stop-server-group": {"type": "object"},
    "failover-server-group": {"type": "object"},
    "reverse-server-group": {"type": "object", "required": ["priority_station"],
                             "properties": {"priority_station": {"type": "string", "enum": list(_STATIONS)}}}}}
_INSTANCE_BODY = {"type": "object", "required": ["protected_instance"], "properties": {"protected_instance": {
    "type": "object", "required": ["server_group_id", "server_id"],
    "properties": {"server_group_id": _STR, "server_id": _STR, "name": _STR, "description": _STR}}}}
_READ = (400, 401, 403, 404)
_WRITE = (400, 401, 403, 404, 409)
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", _GROUPS): _op("Create a protection group (SDRS-1)", "200", _JOB_ID, _WRITE, _GROUP_BODY),
    ("GET", _GROUPS): _op("The project's protection groups", "200", _json("server_groups and count"), _READ),
    ("GET", _GROUP): _op("A protection group", "200", _json("server_group"), _READ),
    ("DELETE", _GROUP): _op("Delete a protection group", "200", _JOB_ID, _WRITE),
    ("POST", _ACTION): _op("Start protection or re-protect, stop protection, fail over, or switch over (SDRS-2)",
                           "200", _JOB_ID, _WRITE, _ACTION_BODY),
    ("POST", _INSTANCES): _op("Protect a server of the project in a group (SDRS-1)", "200",
                              _json("protected_instance"), _WRITE, _INSTANCE_BODY),
    ("GET", _INSTANCES): {**_op("The project's protected instances", "200", _json("protected_instances and count"),
                                _READ),
                          "parameters": [{"name": "server_group_id", "in": "query", "required": False,
                                          "schema": _STR}]},
    ("GET", _INSTANCE): _op("A protected instance", "200", _json("protected_instance"), _READ),
    ("DELETE", _INSTANCE): _op("Stop protecting a server", "204", {"description": "no longer protected"}, _WRITE),
    ("GET", _JOB): _op("An sDRS job's status", "200", _json("the job"), _READ),
}

"""The provider's own ECS API for VM auto-recovery (issue 5; ECS-4, TEN-1), in its shape
(`/v1/{project_id}/cloudservers/{server_id}/autorecovery`), under `/ecs`:

- `GET  /ecs/v1/{project_id}/cloudservers/{server_id}/autorecovery` ->
  200 `{"support_auto_recovery": "true" | "false"}`;
- `PUT  /ecs/v1/{project_id}/cloudservers/{server_id}/autorecovery` with
  `{"support_auto_recovery": "true" | "false"}` (strings, as the provider documents; JSON
  booleans are taken too) -> 204, once the server's AZ applies it. Turning it on is refused
  (400) for a flavor with a local disk (ECS-4). Turned on for a server that is down on a
  fenced host, the server is rebuilt then; turned off, a rebuild not begun yet is dropped.

Servers are created with auto-recovery off through Nova's `POST /servers`: the provider sets
it at creation only in its own create API (`extendparam.support_auto_recovery`), which is not
served here, so a server gets it with the PUT above.

Every route asks `Directory.authorize` (TEN-1) for READ or WRITE on the project of the path,
so a token of another project gets 403; a server that is not the project's gets 404. Changes
go through `Control.ask`. Errors leave in the provider's format `{"error": {"code",
"message"}}` with its documented codes: Ecs.0000 (request error: 400, and 404/409 with their
HTTP status), Ecs.0003 (no permission: 403), Ecs.0002 (system exception: 500 and 503).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from actors.az import DescribeServer, ServerDescription, SetAutoRecovery
from actors.identity import Action, Directory, Forbidden
from actors.tenant import ListServers, TenantServer
from daemon.api import Handler, in_format, read_json, token_of
from daemon.control import ASK_TIMEOUT_S, Control
from runtime.errors import CloudError, Conflict, InvalidRequest, NotFound, ServiceUnavailable

log = logging.getLogger(__name__)

PREFIX = "/ecs/v1"
_AUTORECOVERY = f"{PREFIX}/{{project_id}}/cloudservers/{{server_id}}/autorecovery"
_FLAGS = {"true": True, "false": False, True: True, False: False}


def ecs_error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def error_of(error: CloudError) -> JSONResponse:
    """A runtime error in the provider's ECS format (see the module docstring)."""
    if isinstance(error, Forbidden):
        return ecs_error(403, "Ecs.0003", str(error))
    if isinstance(error, NotFound):
        return ecs_error(404, "Ecs.0000", str(error))
    if isinstance(error, Conflict):
        return ecs_error(409, "Ecs.0000", str(error))
    if isinstance(error, InvalidRequest):
        return ecs_error(400, "Ecs.0000", str(error))
    if isinstance(error, ServiceUnavailable):
        return ecs_error(503, "Ecs.0002", str(error))
    log.error("unmapped runtime error in the ECS API", exc_info=error)
    return ecs_error(500, "Ecs.0002", "internal error; the daemon's log has the details")


class Ecs:
    """The auto-recovery routes over one `Directory` and the actors (through `Control`)."""

    def __init__(self, directory: Directory, control: Control) -> None:
        self.directory, self.control = directory, control

    def routes(self) -> list[Route]:
        return [Route(_AUTORECOVERY, self._ecs(self.auto_recovery), methods=["GET"]),
                Route(_AUTORECOVERY, self._ecs(self.set_auto_recovery), methods=["PUT"])]

    @staticmethod
    def _ecs(handler: Handler) -> Handler:
        return in_format(error_of, handler)

    async def _server(self, request: Request, action: Action) -> tuple[str, TenantServer]:
        """The project of the path, once the caller may `action` it (TEN-1), and its server."""
        project = request.path_params["project_id"]
        self.directory.authorize(token_of(request), action, project)
        sid = request.path_params["server_id"]
        servers: list[TenantServer] = await self.control.ask(project, ListServers())
        server = next((s for s in servers if s.id == sid), None)
        if server is None:
            raise NotFound("server", sid)
        return project, server

    async def auto_recovery(self, request: Request) -> Response:
        _, server = await self._server(request, Action.READ)
        services = await self.control.services()
        described = await services.azs[server.az].ask(DescribeServer(server.id), timeout=ASK_TIMEOUT_S)
        assert isinstance(described, ServerDescription)
        return JSONResponse({"support_auto_recovery": str(described.auto_recovery).lower()})

    async def set_auto_recovery(self, request: Request) -> Response:
        project, server = await self._server(request, Action.WRITE)
        payload: Any = await read_json(request)
        value = payload.get("support_auto_recovery") if isinstance(payload, dict) else None
        if not isinstance(value, str | bool) or value not in _FLAGS:
            raise InvalidRequest(f"body.support_auto_recovery: {value!r:.40}; valid: \"true\" or \"false\"")
        await self.control.ask(project, SetAutoRecovery(server.id, _FLAGS[value]))
        return Response(status_code=204)


_JSON: dict[str, Any] = {"description": "success", "content": {"application/json": {"schema": {
    "type": "object", "required": ["support_auto_recovery"],
    "properties": {"support_auto_recovery": {"type": "string", "enum": ["true", "false"]}}}}}}
_ERROR = {"description": "error in the provider's format {error: {code, message}}",
          "content": {"application/json": {"schema": {"type": "object"}}}}
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", _AUTORECOVERY): {"summary": "Whether a server has auto-recovery (ECS-4)", "responses": {
        "200": _JSON, **{str(code): _ERROR for code in (401, 403, 404)}}},
    ("PUT", _AUTORECOVERY): {"summary": "Turn a server's auto-recovery on or off (ECS-4)",
                             "requestBody": {"required": True, "content": _JSON["content"]},
                             "responses": {"204": {"description": "applied"},
                                           **{str(code): _ERROR for code in (400, 401, 403, 404, 409)}}},
}

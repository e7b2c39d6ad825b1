"""Nova v2.1 volume attachment routes (issue 5; EVS-2, ECS-3, TEN-1): what `openstack server add
volume` / `server remove volume` and openstacksdk's `create_volume_attachment` use.

- `GET /compute/v2.1/servers/{server_id}/os-volume_attachments`: the server's volumes, its
  system disk included (its root device).
- `POST .../os-volume_attachments` (`volumeAttachment.volumeId`; `device` is accepted and
  ignored, as Nova's libvirt driver ignores it) -> 200 with the attachment: an available volume
  of the caller's tenant, in the server's AZ, becomes in-use.
- `GET`/`DELETE .../os-volume_attachments/{volume_id}`: one attachment; deleting detaches
  (202): the volume becomes available. The root device (the server's system disk) is not
  detached: 400, as Nova answers.

Attachments are control-plane records only: the volume service records them, but the libvirt
domain does not get the disk yet (the Hypervisor port has no disk calls), so `device` is null.
The attachment's `id` is the volume's id, as in Nova 2.1.

Each route asks `Directory.authorize` (TEN-1) for the token's project and then that project's
tenant actor, through `Control.ask`; a server or volume of another project is 404. Errors are
Nova's (daemon.api.nova.error_of).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from actors.identity import Action, Directory
from actors.tenant import ListServers, TenantServer
from actors.volumes import AttachVolume, DetachVolume, ListVolumes, VolumeView
from daemon.api import Handler, in_format, read_json, token_of
from daemon.api.nova import PREFIX, error_of
from daemon.control import Control
from runtime.errors import InvalidRequest, NotFound

_ATTACHMENTS = f"{PREFIX}/servers/{{server_id}}/os-volume_attachments"
_FIELDS = {"volumeId", "device"}


class NovaVolumes:
    """The attachment routes over one `Directory` and the actors (through `Control`)."""

    def __init__(self, directory: Directory, control: Control) -> None:
        self.directory, self.control = directory, control

    def routes(self) -> list[Route]:
        def route(path: str, handler: Callable[[Request], Awaitable[Response]], method: str) -> Route:
            return Route(path, self._nova(handler), methods=[method])
        return [
            route(_ATTACHMENTS, self.attachments, "GET"),
            route(_ATTACHMENTS, self.attach, "POST"),
            route(f"{_ATTACHMENTS}/{{volume_id}}", self.attachment, "GET"),
            route(f"{_ATTACHMENTS}/{{volume_id}}", self.detach, "DELETE"),
        ]

    @staticmethod
    def _nova(handler: Handler) -> Handler:
        return in_format(error_of, handler)

    async def _server(self, request: Request, action: Action) -> tuple[str, TenantServer]:
        """The caller's project (authorized for `action`, TEN-1) and its server of the URL."""
        token = token_of(request)
        self.directory.authorize(token, action, token.project)
        servers: list[TenantServer] = await self.control.ask(token.project, ListServers())
        server_id = request.path_params["server_id"]
        found = next((s for s in servers if s.id == server_id), None)
        if found is None:
            raise NotFound("server", server_id)
        return token.project, found

    async def _attached(self, project: str, server: TenantServer) -> list[VolumeView]:
        volumes: list[VolumeView] = await self.control.ask(project, ListVolumes(project))
        return [v for v in volumes if v.server_id == server.id]

    @staticmethod
    def _shown(v: VolumeView) -> dict[str, Any]:
        return {"id": v.id, "volumeId": v.id, "serverId": v.server_id, "device": None}

    async def _one(self, request: Request, action: Action) -> tuple[str, VolumeView]:
        project, server = await self._server(request, action)
        volume_id = request.path_params["volume_id"]
        found = next((v for v in await self._attached(project, server) if v.id == volume_id), None)
        if found is None:
            raise NotFound("volume attachment", f"{volume_id} on server {server.id}")
        return project, found

    async def attachments(self, request: Request) -> Response:
        project, server = await self._server(request, Action.READ)
        return JSONResponse({"volumeAttachments": [self._shown(v) for v in await self._attached(project, server)]})

    async def attachment(self, request: Request) -> Response:
        _, volume = await self._one(request, Action.READ)
        return JSONResponse({"volumeAttachment": self._shown(volume)})

    async def attach(self, request: Request) -> Response:
        project, server = await self._server(request, Action.WRITE)
        payload = await read_json(request)
        body = payload.get("volumeAttachment") if isinstance(payload, dict) else None
        if not isinstance(body, dict):
            raise InvalidRequest(f"body.volumeAttachment: required, must be a JSON object, got {str(body)[:40]!r}")
        unknown = sorted(set(body) - _FIELDS)
        if unknown:
            raise InvalidRequest(f"body.volumeAttachment: unknown field(s) {', '.join(unknown)} (valid at "
                                 f"microversion 2.1: {', '.join(sorted(_FIELDS))})")
        volume_id = body.get("volumeId")
        if not isinstance(volume_id, str) or not volume_id:
            raise InvalidRequest(f"body.volumeAttachment.volumeId: required, must be a volume id, "
                                 f"got {volume_id!r:.40}")
        if body.get("device") is not None and not isinstance(body["device"], str):
            raise InvalidRequest(f"body.volumeAttachment.device: must be a string or null, got {body['device']!r:.40}")
        view: VolumeView = await self.control.ask(project, AttachVolume(project, volume_id, server.id))
        return JSONResponse({"volumeAttachment": self._shown(view)})

    async def detach(self, request: Request) -> Response:
        project, volume = await self._one(request, Action.WRITE)
        if volume.bootable:  # attached and bootable: the server's system disk (ECS-3)
            raise InvalidRequest(f"Cannot detach a root device volume: {volume.id} is the system disk of server "
                                 f"{volume.server_id}; it goes with the server")
        await self.control.ask(project, DetachVolume(project, volume.id))
        return Response(status_code=202)


_JSON: dict[str, Any] = {"description": "success", "content": {"application/json": {"schema": {"type": "object"}}}}
_ITEM = {**_JSON, "description": "error in Nova's format {KIND: {code, message}}"}


def _op(summary: str, ok: str, *errors: int, body: bool = False) -> dict[str, Any]:
    success = {"description": "success"} if ok == "202" else _JSON
    operation: dict[str, Any] = {"summary": summary,
                                 "responses": {ok: success, **{str(code): _ITEM for code in (*errors, 401)}}}
    if body:
        operation["requestBody"] = {"required": True, "content": _JSON["content"]}
    return operation


OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", _ATTACHMENTS): _op("List a server's volume attachments", "200", 403, 404),
    ("POST", _ATTACHMENTS): _op("Attach a volume to a server (control-plane record)", "200", 400, 403, 404, 409,
                                body=True),
    ("GET", f"{_ATTACHMENTS}/{{volume_id}}"): _op("Show a volume attachment", "200", 403, 404),
    ("DELETE", f"{_ATTACHMENTS}/{{volume_id}}"): _op("Detach a volume from a server", "202", 400, 403, 404, 409),
}

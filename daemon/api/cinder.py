"""Cinder v3 block storage routes (issue 5; EVS-1, EVS-2, VBS-1, VBS-2, TEN-1, TEN-3): the subset
openstacksdk and the `openstack` CLI use for volumes, volume types, backups, quotas and limits,
under `/volume/v3/{project_id}` (the project id is in the URL, as Cinder's catalog endpoint has it).

- `GET /volume` (300) and `GET /volume/v3`: version discovery. Microversions 3.0 to 3.42 are
  accepted (`OpenStack-API-Version: volume X.Y`, echoed in the answer; outside: 406). Bodies have
  the 3.0 shapes; 3.42 only allows extending an in-use volume (EVS-2). The resources that later
  microversions add (attachments API, groups, messages...) are not served (404).
- `POST /volumes` (`size`, `availability_zone` required: fe-runtime picks no zone for you;
  `volume_type` SATA or SSD, default SATA; `name`, `description`), `GET /volumes[/detail]`
  (filters `name`, `status`; `limit`, `marker`), `GET`/`DELETE /volumes/{id}`,
  `POST /volumes/{id}/action` with `os-extend`. The tenant actor answers a create once the
  volume exists in its store, an extend or delete once done, so these calls return then (Cinder
  answers 202 earlier): a client polling for `available` or for the 404 sees it at once.
- `GET /types[/{id}]`: the volume kinds of EVS-1 (id = name); `GET /os-availability-zone`: the
  AZs with a volume store.
- `POST /backups` (`volume_id`, `name`, `description`; `incremental` and `force` are accepted and
  the runtime decides: a chain's first backup is full, later ones incremental, VBS-1; an in-use
  volume is backed up without `force`), `GET /backups[/detail]`, `GET`/`DELETE /backups/{id}`,
  `POST /backups/{id}/restore` into the named volume (available, large enough) or, without
  `volume_id`, into a new volume (named `name`, or `restore_backup_<id>` as Cinder does) in the
  backup's AZ. Backups of whole servers (CSBS) have several volumes and are not Cinder backups:
  they are not listed here.
- `GET /os-quota-sets/{project}[?usage=True]`: `volumes` and `gigabytes` (TEN-3), `backups`
  (VBS-2, when the region has a backup service) and `per_volume_gigabytes` (EVS-1's largest
  volume); `GET /limits`: the same as Cinder's absolute limits.

Names, descriptions and creation times of volumes are kept here, in memory, per daemon (the
actors' volume records have none): a restart forgets them like everything else in this slice.
Attachments are control-plane records only (EVS-2): the libvirt domain does not get the disk
yet, so an attachment shows `device` null, and its `attachment_id` is the volume's id (a volume
has at most one attachment).

Every route asks `Directory.authorize` (TEN-1) for the URL's project: another project's id
there, or a role without the right, is 403 `forbidden` (Cinder itself answers 400 "Malformed
request url" for the former; 403 keeps one meaning for every refusal of Directory.authorize);
a volume or backup of another project is not in the caller's tenant: 404. Changes go through `Control.ask`. Errors
leave in Cinder's format `{"<kind>": {"code", "message"}}`: quota 413 `overLimit` with Cinder's
messages ("VolumeLimitExceeded: Maximum number of volumes allowed (10) exceeded for quota
'volumes'."), NotFound 404 `itemNotFound`, bad input and refused transitions 400 `badRequest`,
a request in progress 409 `conflictingRequest`, an API outage 503, anything else 500
`computeFault` (Cinder's name) with no detail (the log has it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from actors.backups import BackupLimits, BackupView, CreateBackup, DeleteBackup, GetBackup, ListBackups, RestoreBackup
from actors.identity import Action, Directory, Forbidden
from actors.tenant import GetQuotas, Quotas
from actors.volumes import MAX_GB, CreateVolume, DeleteVolume, ExpandVolume, GetVolume, ListVolumes, VolumeView
from daemon.api import read_json, token_of
from daemon.control import Control
from runtime.errors import CloudError, Conflict, InvalidRequest, NoCapacity, NotFound, QuotaExceeded, ServiceUnavailable
from runtime.storage import VolumeKind

log = logging.getLogger(__name__)

PREFIX = "/volume/v3/{project_id}"
MIN_VERSION, MAX_VERSION = (3, 0), (3, 42)
EXTEND_IN_USE = (3, 42)  # Cinder's microversion that allows extending an in-use volume
VERSION_HEADER = "OpenStack-API-Version"
_VERSION_KEY = "fe.volume_version"
# Cinder's status of each VolumeState value that is named differently.
_STATUS = {"restoring": "restoring-backup"}
_BACKUP_STATUS = {"queued": "creating"}
_TYPES = {VolumeKind.SATA: "standard disk (EVS-1)", VolumeKind.SSD: "high I/O disk (EVS-1)"}
_VOLUME_FIELDS = {"size", "availability_zone", "volume_type", "name", "description", "metadata", "snapshot_id",
                  "source_volid", "imageRef", "backup_id", "consistencygroup_id", "group_id", "multiattach",
                  "OS-SCH-HNT:scheduler_hints"}
_BACKUP_FIELDS = {"volume_id", "name", "description", "incremental", "force", "container", "snapshot_id"}
_LIST_QUERY = {"name", "status", "limit", "marker", "all_tenants", "all_projects"}


def _version_text(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def cinder_error(status: int, kind: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": status, "message": message}
    if status == 413:
        body["retryAfter"] = "0"
    return JSONResponse({kind: body}, status_code=status, headers=headers)


class Fault(Exception):
    """A refusal in Cinder's format that no runtime error describes (e.g. an unsupported microversion)."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        self.status, self.kind, self.message = status, kind, message
        super().__init__(message)


def _quota_message(error: QuotaExceeded) -> str:
    """Cinder's own message for the volume and backup quotas; the runtime's for the others."""
    if error.resource == "volumes":
        return f"VolumeLimitExceeded: Maximum number of volumes allowed ({error.limit}) exceeded for quota 'volumes'."
    if error.resource == "gigabytes":
        return (f"VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. "
                f"Requested {error.requested}G, quota is {error.limit}G and {error.used}G has been consumed.")
    if error.resource == "backups":
        return f"BackupLimitExceeded: Maximum number of backups allowed ({error.limit}) exceeded"
    if error.resource == "backup_gb":
        return (f"VolumeBackupSizeExceedsAvailableQuota: Requested backup exceeds allowed Backup gigabytes quota. "
                f"Requested {error.requested}G, quota is {error.limit}G and {error.used}G has been consumed.")
    return f"QuotaError: {error}"


def error_of(error: CloudError) -> JSONResponse:
    """A runtime error as Cinder reports it (see the module docstring)."""
    if isinstance(error, QuotaExceeded):
        return cinder_error(413, "overLimit", _quota_message(error), {"Retry-After": "0"})
    if isinstance(error, Forbidden):
        return cinder_error(403, "forbidden", str(error))
    if isinstance(error, NotFound):
        return cinder_error(404, "itemNotFound", f"{error.kind.capitalize()} {error.ident} could not be found.")
    if isinstance(error, InvalidRequest):
        return cinder_error(400, "badRequest", str(error))
    if isinstance(error, Conflict | NoCapacity):
        return cinder_error(409, "conflictingRequest", str(error))
    if isinstance(error, ServiceUnavailable):
        return cinder_error(503, "serviceUnavailable", str(error))
    log.error("unmapped runtime error in the block storage API", exc_info=error)
    return cinder_error(500, "computeFault", "internal error; the daemon's log has the details")


def parse_version(header: str | None) -> tuple[int, int]:
    """The volume microversion a request asks for (3.0 without the header), or a 400/406 Fault."""
    if header is None:
        return MIN_VERSION
    asked = next((part.split()[1:] for part in header.split(",") if part.split()[:1] == ["volume"]), None)
    if asked is None:
        return MIN_VERSION
    text = asked[0] if len(asked) == 1 else " ".join(asked)
    if text == "latest":
        return MAX_VERSION
    match = re.fullmatch(r"([1-9]\d*)\.(0|[1-9]\d*)", text)
    if match is None:
        raise Fault(400, "badRequest", f"{VERSION_HEADER}: {text!r} is not a version (valid: 'volume 3.0' to "
                                       f"'volume {_version_text(MAX_VERSION)}', or 'volume latest')")
    version = (int(match[1]), int(match[2]))
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise Fault(406, "computeFault", f"Version {text} is not supported by the API. Minimum is "
                                         f"{_version_text(MIN_VERSION)} and maximum is {_version_text(MAX_VERSION)}.")
    return version


def _object(payload: Any, key: str, fields: set[str]) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise InvalidRequest(f"body: must be a JSON object, got {type(payload).__name__}")
    value = payload.get(key)
    if not isinstance(value, dict):
        raise InvalidRequest(f"body.{key}: required, must be a JSON object, got {type(value).__name__}")
    unknown = sorted(set(value) - fields)
    if unknown:
        raise InvalidRequest(f"body.{key}: unknown field(s) {', '.join(unknown)} (valid: {', '.join(sorted(fields))})")
    return value


def _text(obj: Mapping[str, Any], path: str, required: bool = False) -> str | None:
    key = path.rsplit(".", 1)[-1]
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value) or len(value) > 255:
        raise InvalidRequest(f"{path}: {'required, ' if value is None else ''}must be a "
                             f"{'non-empty ' if required else ''}string of at most 255 characters, got {value!r:.40}")
    return value


def _whole(value: Any, path: str) -> int:
    """A whole number, given as a JSON integer or a string of digits (as Cinder accepts)."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{path}: {'required, ' if value is None else ''}must be a whole number, "
                             f"got {value!r:.40}")
    return value


def _unsupported(obj: Mapping[str, Any], path: str, keys: tuple[str, ...]) -> None:
    for key in keys:
        if obj.get(key) not in (None, {}, False):
            raise InvalidRequest(f"{path}.{key}: not supported by fe-runtime (valid: null or absent)")


def _flag(value: str | None, name: str) -> bool:
    if value is None:
        return False
    if value.lower() in ("true", "1", "yes", "on"):
        return True
    if value.lower() in ("false", "0", "no", "off"):
        return False
    raise InvalidRequest(f"query {name}={value!r}: must be a boolean (true or false)")


def _iso(moment: datetime | float | None) -> str | None:
    """Cinder's timestamp format; a float is the actors' clock (epoch seconds on the production driver)."""
    if moment is None:
        return None
    if isinstance(moment, float | int):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


@attrs.frozen
class Label:
    """What Cinder shows of a volume that the actors do not keep."""

    name: str | None
    description: str | None
    created_at: datetime | None
    user_id: str | None


def _label_value(label: Label) -> dict[str, Any]:
    return {"name": label.name, "description": label.description, "user_id": label.user_id,
            "created_at": None if label.created_at is None else label.created_at.isoformat()}


class Cinder:
    """The block storage routes over one `Directory` and the actors (through `Control`); `clock` gives
    aware UTC datetimes (volumes' creation times); `public_url` as Keystone's."""

    def __init__(self, directory: Directory, control: Control, public_url: str,
                 clock: Callable[[], datetime]) -> None:
        self.directory, self.control, self.clock = directory, control, clock
        self.root = f"{public_url.rstrip('/')}/volume"
        self.backup_descriptions: dict[str, str | None] = {}

    def _label(self, volume_id: str) -> Label:
        """A volume's name, description, creation time and creator: kept in its stored record."""
        value = (self.control.record("volume", volume_id) or {}).get("label") or {}
        created = value.get("created_at")
        return Label(value.get("name"), value.get("description"),
                     None if created is None else datetime.fromisoformat(created), value.get("user_id"))

    def routes(self) -> list[Route]:
        def route(path: str, handler: Callable[[Request], Awaitable[Response]], method: str) -> Route:
            return Route(path, self._cinder(handler), methods=[method])
        p = PREFIX
        return [
            Route("/volume", self._cinder(self.versions, versioned=False), methods=["GET"]),
            Route("/volume/v3", self._cinder(self.version, versioned=False), methods=["GET"]),
            route(f"{p}/volumes", self.create, "POST"),
            route(f"{p}/volumes", self.volumes, "GET"),
            route(f"{p}/volumes/detail", self.volumes_detail, "GET"),
            route(f"{p}/volumes/{{volume_id}}", self.volume, "GET"),
            route(f"{p}/volumes/{{volume_id}}", self.delete, "DELETE"),
            route(f"{p}/volumes/{{volume_id}}/action", self.action, "POST"),
            route(f"{p}/types", self.types, "GET"),
            route(f"{p}/types/{{type_id}}", self.type, "GET"),
            route(f"{p}/os-availability-zone", self.zones, "GET"),
            route(f"{p}/backups", self.create_backup, "POST"),
            route(f"{p}/backups", self.backups, "GET"),
            route(f"{p}/backups/detail", self.backups_detail, "GET"),
            route(f"{p}/backups/{{backup_id}}", self.backup, "GET"),
            route(f"{p}/backups/{{backup_id}}", self.delete_backup, "DELETE"),
            route(f"{p}/backups/{{backup_id}}/restore", self.restore, "POST"),
            route(f"{p}/os-quota-sets/{{target}}", self.quota_set, "GET"),
            route(f"{p}/limits", self.limits, "GET"),
        ]

    @staticmethod
    def _cinder(handler: Callable[[Request], Awaitable[Response]],
                versioned: bool = True) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            headers: dict[str, str] = {}
            try:
                if versioned:
                    version = parse_version(request.headers.get(VERSION_HEADER))
                    request.scope[_VERSION_KEY] = version
                    headers = {VERSION_HEADER: f"volume {_version_text(version)}", "Vary": VERSION_HEADER}
                response = await handler(request)
            except Fault as fault:
                response = cinder_error(fault.status, fault.kind, fault.message)
            except CloudError as error:
                response = error_of(error)
            response.headers.update(headers)
            return response
        return wrapped

    # -- plumbing ---------------------------------------------------------------------------
    def _caller(self, request: Request, action: Action) -> str:
        """The URL's project, once `Directory.authorize` allowed `action` on it (TEN-1)."""
        project: str = request.path_params["project_id"]
        self.directory.authorize(token_of(request), action, project)
        return project

    async def _ask(self, project: str, msg: Any) -> Any:
        return await self.control.ask(project, msg)

    def _link(self, project: str, kind: str, ident: str) -> list[dict[str, str]]:
        return [{"rel": "self", "href": f"{self.root}/v3/{project}/{kind}/{ident}"},
                {"rel": "bookmark", "href": f"{self.root}/{project}/{kind}/{ident}"}]

    # -- versions ---------------------------------------------------------------------------
    def _version_doc(self) -> dict[str, Any]:
        return {"id": "v3.0", "status": "CURRENT", "version": _version_text(MAX_VERSION),
                "min_version": _version_text(MIN_VERSION), "updated": "2017-09-19T20:18:14Z",
                "links": [{"rel": "self", "href": f"{self.root}/v3/"}],
                "media-types": [{"base": "application/json",
                                 "type": "application/vnd.openstack.volume+json;version=3"}]}

    async def versions(self, request: Request) -> Response:
        return JSONResponse({"versions": [self._version_doc()]}, status_code=300)

    async def version(self, request: Request) -> Response:
        return JSONResponse({"versions": [self._version_doc()]})

    # -- volumes ----------------------------------------------------------------------------
    def _volume(self, project: str, v: VolumeView) -> dict[str, Any]:
        label = self._label(v.id)
        attachments = [] if v.server_id is None else [
            {"id": v.id, "attachment_id": v.id, "volume_id": v.id, "server_id": v.server_id, "host_name": None,
             "device": None, "attached_at": None}]
        return {
            "id": v.id, "name": label.name, "description": label.description,
            "status": _STATUS.get(v.state, v.state), "size": v.size_gb, "availability_zone": v.az,
            "bootable": "true" if v.bootable else "false", "volume_type": v.kind.value,
            "attachments": attachments, "created_at": _iso(label.created_at), "updated_at": None,
            "user_id": label.user_id, "os-vol-tenant-attr:tenant_id": project, "encrypted": False,
            "multiattach": False, "metadata": {}, "snapshot_id": None, "source_volid": None,
            "consistencygroup_id": None, "replication_status": None, "migration_status": None,
            "links": self._link(project, "volumes", v.id),
        }

    async def create(self, request: Request) -> Response:
        project = self._caller(request, Action.WRITE)
        body = _object(await read_json(request), "volume", _VOLUME_FIELDS)
        size = _whole(body.get("size"), "body.volume.size")
        az = _text(body, "body.volume.availability_zone")
        kind = _text(body, "body.volume.volume_type") or VolumeKind.SATA.value
        name, description = _text(body, "body.volume.name"), _text(body, "body.volume.description")
        _unsupported(body, "body.volume", ("metadata", "snapshot_id", "source_volid", "imageRef", "backup_id",
                                           "consistencygroup_id", "group_id", "multiattach",
                                           "OS-SCH-HNT:scheduler_hints"))
        zones = sorted((await self.control.services()).volumes)
        if not zones:
            raise InvalidRequest("this daemon stores no volumes: its configuration has no [storage]")
        if az is None:
            raise InvalidRequest(f"body.volume.availability_zone: required, missing (valid: {', '.join(zones)}; "
                                 f"fe-runtime does not pick one for you)")
        token = token_of(request)
        label = Label(name, description, self.clock(), f"{token.project}:{token.user}")
        view: VolumeView = await self.control.ask(project, CreateVolume(project, az, size, kind),
                                                  fields={"label": _label_value(label)})
        return JSONResponse({"volume": self._volume(project, view)}, status_code=202)

    async def _listed(self, request: Request) -> tuple[str, list[VolumeView]]:
        project = self._caller(request, Action.READ)
        query = request.query_params
        unknown = sorted(set(query) - _LIST_QUERY)
        if unknown:
            raise InvalidRequest(f"query: unknown filter(s) {', '.join(unknown)} (valid: "
                                 f"{', '.join(sorted(_LIST_QUERY))}; all_tenants and all_projects list the URL's "
                                 f"project only)")
        views: list[VolumeView] = await self._ask(project, ListVolumes(project))
        name, status = query.get("name"), query.get("status")
        views = [v for v in views if (name is None or self._label(v.id).name == name)
                 and (status is None or _STATUS.get(v.state, v.state) == status)]
        return project, _page(views, query.get("limit"), query.get("marker"))

    async def volumes(self, request: Request) -> Response:
        project, views = await self._listed(request)
        return JSONResponse({"volumes": [{"id": v.id, "name": self._volume(project, v)["name"],
                                          "links": self._link(project, "volumes", v.id)} for v in views]})

    async def volumes_detail(self, request: Request) -> Response:
        project, views = await self._listed(request)
        return JSONResponse({"volumes": [self._volume(project, v) for v in views]})

    async def volume(self, request: Request) -> Response:
        project = self._caller(request, Action.READ)
        view: VolumeView = await self._ask(project, GetVolume(project, request.path_params["volume_id"]))
        return JSONResponse({"volume": self._volume(project, view)})

    async def delete(self, request: Request) -> Response:
        project = self._caller(request, Action.WRITE)
        volume_id = request.path_params["volume_id"]
        await self._ask(project, DeleteVolume(project, volume_id))
        return Response(status_code=202)

    async def action(self, request: Request) -> Response:
        project = self._caller(request, Action.WRITE)
        payload = await read_json(request)
        if not isinstance(payload, dict) or list(payload) != ["os-extend"] or \
                not isinstance(payload["os-extend"], dict):
            raise InvalidRequest(f"body: {str(payload)[:60]!r} is not a volume action fe-runtime serves (valid: "
                                 f"{{\"os-extend\": {{\"new_size\": GB}}}}; attach and detach through the compute API)")
        size = _whole(payload["os-extend"].get("new_size"), "body.os-extend.new_size")
        volume_id = request.path_params["volume_id"]
        if request.scope[_VERSION_KEY] < EXTEND_IN_USE:
            view: VolumeView = await self._ask(project, GetVolume(project, volume_id))
            if view.state != "available":
                raise InvalidRequest(f"Invalid volume: volume {volume_id} is {view.state}: at microversion "
                                     f"{_version_text(request.scope[_VERSION_KEY])} only an available volume is "
                                     f"extended (ask for volume {_version_text(EXTEND_IN_USE)} to extend it in use)")
        await self._ask(project, ExpandVolume(project, volume_id, size))
        return Response(status_code=202)

    # -- types and zones --------------------------------------------------------------------
    def _type(self, kind: VolumeKind) -> dict[str, Any]:
        return {"id": kind.value, "name": kind.value, "description": _TYPES[kind], "is_public": True,
                "os-volume-type-access:is_public": True, "extra_specs": {}, "qos_specs_id": None}

    async def types(self, request: Request) -> Response:
        self._caller(request, Action.READ)
        return JSONResponse({"volume_types": [self._type(k) for k in VolumeKind]})

    async def type(self, request: Request) -> Response:
        self._caller(request, Action.READ)
        name = request.path_params["type_id"]
        kind = next((k for k in VolumeKind if k.value == name), None)
        if kind is None:
            raise NotFound("volume type", name)
        return JSONResponse({"volume_type": self._type(kind)})

    async def zones(self, request: Request) -> Response:
        self._caller(request, Action.READ)
        zones = sorted((await self.control.services()).volumes)
        return JSONResponse({"availabilityZoneInfo": [{"zoneName": az, "zoneState": {"available": True}}
                                                      for az in zones]})

    # -- backups ----------------------------------------------------------------------------
    def _backup(self, project: str, b: BackupView, bases: set[str]) -> dict[str, Any]:
        part = b.parts[0]
        return {
            "id": b.id, "name": b.name or None, "description": self.backup_descriptions.get(b.id),
            "status": _BACKUP_STATUS.get(b.state, b.state), "size": part.size_gb, "volume_id": part.volume_id,
            "availability_zone": part.az, "is_incremental": part.base is not None,
            "has_dependent_backups": b.id in bases, "fail_reason": b.error, "snapshot_id": None, "container": None,
            "created_at": _iso(b.requested_at), "updated_at": None, "data_timestamp": _iso(b.taken_at),
            "os-backup-project-attr:project_id": project, "links": self._link(project, "backups", b.id),
        }

    async def _all_backups(self, project: str) -> tuple[list[BackupView], set[str]]:
        """The project's volume backups (not CSBS server backups), and the ids other backups are diffs from."""
        views: list[BackupView] = await self._ask(project, ListBackups(project))
        bases = {p.base for b in views for p in b.parts if p.base is not None}
        return [b for b in views if b.server_id is None], bases

    async def create_backup(self, request: Request) -> Response:
        project = self._caller(request, Action.WRITE)
        body = _object(await read_json(request), "backup", _BACKUP_FIELDS)
        volume_id = _text(body, "body.backup.volume_id", required=True)
        name, description = _text(body, "body.backup.name"), _text(body, "body.backup.description")
        for key in ("incremental", "force"):
            if not isinstance(body.get(key, False), bool):
                raise InvalidRequest(f"body.backup.{key}: must be true or false, got {body[key]!r:.40}")
        _unsupported(body, "body.backup", ("container", "snapshot_id"))
        assert volume_id is not None
        view: BackupView = await self._ask(project, CreateBackup(project, volume_id, name or ""))
        self.backup_descriptions[view.id] = description
        return JSONResponse({"backup": {"id": view.id, "name": name, "links": self._link(project, "backups", view.id)}},
                            status_code=202)

    async def _listed_backups(self, request: Request) -> tuple[str, list[BackupView], set[str]]:
        project = self._caller(request, Action.READ)
        query = request.query_params
        valid = _LIST_QUERY | {"volume_id"}
        unknown = sorted(set(query) - valid)
        if unknown:
            raise InvalidRequest(f"query: unknown filter(s) {', '.join(unknown)} (valid: {', '.join(sorted(valid))})")
        views, bases = await self._all_backups(project)
        name, status, volume = query.get("name"), query.get("status"), query.get("volume_id")
        views = [b for b in views if (name is None or b.name == name)
                 and (volume is None or b.parts[0].volume_id == volume)
                 and (status is None or _BACKUP_STATUS.get(b.state, b.state) == status)]
        return project, _page(views, query.get("limit"), query.get("marker")), bases

    async def backups(self, request: Request) -> Response:
        project, views, _ = await self._listed_backups(request)
        return JSONResponse({"backups": [{"id": b.id, "name": b.name or None,
                                          "links": self._link(project, "backups", b.id)} for b in views]})

    async def backups_detail(self, request: Request) -> Response:
        project, views, bases = await self._listed_backups(request)
        return JSONResponse({"backups": [self._backup(project, b, bases) for b in views]})

    async def _own_backup(self, project: str, backup_id: str) -> BackupView:
        view: BackupView = await self._ask(project, GetBackup(project, backup_id))
        if view.server_id is not None:  # a CSBS server backup is no Cinder backup
            raise NotFound("backup", backup_id)
        return view

    async def backup(self, request: Request) -> Response:
        project = self._caller(request, Action.READ)
        view = await self._own_backup(project, request.path_params["backup_id"])
        return JSONResponse({"backup": self._backup(project, view, (await self._all_backups(project))[1])})

    async def delete_backup(self, request: Request) -> Response:
        project = self._caller(request, Action.WRITE)
        view = await self._own_backup(project, request.path_params["backup_id"])
        await self._ask(project, DeleteBackup(project, view.id))
        self.backup_descriptions.pop(view.id, None)
        return Response(status_code=202)

    async def restore(self, request: Request) -> Response:
        project = self._caller(request, Action.WRITE)
        body = _object(await read_json(request), "restore", {"volume_id", "name"})
        volume_id, name = _text(body, "body.restore.volume_id"), _text(body, "body.restore.name")
        backup = await self._own_backup(project, request.path_params["backup_id"])
        if volume_id is not None:
            target: VolumeView = await self._ask(project, GetVolume(project, volume_id))
            job = await self._ask(project, RestoreBackup(project, backup.id, volume_id, az=target.az))
        else:
            token = token_of(request)
            label = Label(name or f"restore_backup_{backup.id}", None, self.clock(), f"{token.project}:{token.user}")
            job = await self.control.ask(project, RestoreBackup(project, backup.id),
                                         fields={"label": _label_value(label)})
        return JSONResponse({"restore": {"backup_id": backup.id, "volume_id": job.volume_id,
                                         "volume_name": self._label(job.volume_id).name}}, status_code=202)

    # -- quotas and limits --------------------------------------------------------------------
    async def _usage(self, project: str) -> dict[str, tuple[int, int]]:
        """resource -> (limit, in use) of what Cinder calls quotas."""
        quotas: Quotas = await self._ask(project, GetQuotas())
        usage = {name: (quotas.limits[name], quotas.used[name]) for name in ("volumes", "gigabytes")}
        usage["per_volume_gigabytes"] = (MAX_GB, 0)
        if (await self.control.services()).backups is not None:
            held: list[BackupView] = await self._ask(project, ListBackups(project))
            usage["backups"] = (BackupLimits().per_tenant, len(held))
        return usage

    async def quota_set(self, request: Request) -> Response:
        self._caller(request, Action.READ)
        target = request.path_params["target"]
        self.directory.authorize(token_of(request), Action.READ, target)
        detail = _flag(request.query_params.get("usage"), "usage")
        usage = await self._usage(target)
        shown: dict[str, Any] = {name: {"limit": limit, "in_use": used, "reserved": 0} if detail else limit
                                 for name, (limit, used) in usage.items()}
        return JSONResponse({"quota_set": {"id": target, **shown}})

    async def limits(self, request: Request) -> Response:
        project = self._caller(request, Action.READ)
        usage = await self._usage(project)
        absolute = {"maxTotalVolumes": usage["volumes"][0], "totalVolumesUsed": usage["volumes"][1],
                    "maxTotalVolumeGigabytes": usage["gigabytes"][0], "totalGigabytesUsed": usage["gigabytes"][1]}
        if "backups" in usage:
            absolute.update(maxTotalBackups=usage["backups"][0], totalBackupsUsed=usage["backups"][1])
        return JSONResponse({"limits": {"rate": [], "absolute": absolute}})


def _page(items: list[Any], limit: str | None, marker: str | None) -> list[Any]:
    """Cinder's pagination: the items after `marker` (an id), at most `limit` of them."""
    if marker is not None:
        ids = [item.id for item in items]
        if marker not in ids:
            raise InvalidRequest(f"query marker={marker!r}: not found among the listed items (valid: an id they show)")
        items = items[ids.index(marker) + 1:]
    if limit is not None:
        if not limit.isdigit():
            raise InvalidRequest(f"query limit={limit!r}: must be a whole number >= 0")
        items = items[:int(limit)]
    return items


_JSON: dict[str, Any] = {"description": "success", "content": {"application/json": {"schema": {"type": "object"}}}}
_FAULT = {**_JSON, "description": "error in Cinder's format {KIND: {code, message}}"}


def _op(summary: str, ok: str, *errors: int, body: bool = False) -> dict[str, Any]:
    """An operation: `ok` is the success status (JSON body unless 202 without one)."""
    plain = ok == "202" and not summary.startswith(("Create", "Restore"))
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": [{"name": VERSION_HEADER, "in": "header", "required": False, "schema": {"type": "string"},
                        "description": f"volume 3.0 to volume {_version_text(MAX_VERSION)}"}],
        "responses": {ok: {"description": "success"} if plain else _JSON,
                      **{str(code): _FAULT for code in (*errors, 400, 401, 406)}}}
    if body:
        operation["requestBody"] = {"required": True, "content": _JSON["content"]}
    return operation


_V = PREFIX
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/volume"): {"summary": "Block storage API versions", "responses": {"300": _JSON, "401": _FAULT}},
    ("GET", "/volume/v3"): {"summary": "Block storage v3 version document", "responses": {"200": _JSON, "401": _FAULT}},
    ("POST", f"{_V}/volumes"): _op("Create a volume (returns once it exists)", "202", 403, 404, 409, 413, 503,
                                   body=True),
    ("GET", f"{_V}/volumes"): _op("List the project's volumes", "200", 403),
    ("GET", f"{_V}/volumes/detail"): _op("List the project's volumes with details", "200", 403),
    ("GET", f"{_V}/volumes/{{volume_id}}"): _op("Show a volume", "200", 403, 404),
    ("DELETE", f"{_V}/volumes/{{volume_id}}"): _op("Delete an available volume", "202", 403, 404, 409),
    ("POST", f"{_V}/volumes/{{volume_id}}/action"): _op("os-extend", "202", 403, 404, 409, 413, body=True),
    ("GET", f"{_V}/types"): _op("List volume types (SATA, SSD)", "200", 403),
    ("GET", f"{_V}/types/{{type_id}}"): _op("Show a volume type", "200", 403, 404),
    ("GET", f"{_V}/os-availability-zone"): _op("Availability zones with a volume store", "200", 403),
    ("POST", f"{_V}/backups"): _op("Create a backup of a volume (queued)", "202", 403, 404, 409, 413, body=True),
    ("GET", f"{_V}/backups"): _op("List the project's volume backups", "200", 403),
    ("GET", f"{_V}/backups/detail"): _op("List the project's volume backups with details", "200", 403),
    ("GET", f"{_V}/backups/{{backup_id}}"): _op("Show a backup", "200", 403, 404),
    ("DELETE", f"{_V}/backups/{{backup_id}}"): _op("Delete a backup", "202", 403, 404, 409),
    ("POST", f"{_V}/backups/{{backup_id}}/restore"): _op("Restore a backup into a volume or a new one", "202", 403,
                                                         404, 409, 413, body=True),
    ("GET", f"{_V}/os-quota-sets/{{target}}"): _op("A project's block storage quotas (usage=True: with use)", "200",
                                                   403, 404),
    ("GET", f"{_V}/limits"): _op("Absolute limits and usage of the URL's project", "200", 403),
}

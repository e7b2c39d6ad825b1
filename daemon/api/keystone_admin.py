"""Keystone v3 management of projects, users and role assignments (issue 5; TEN-1, TEN-2), the
subset an operator needs to open tenants on a running daemon:

- `GET /identity/v3/projects`: the cloud admin sees every project, anyone else their own;
  `GET /identity/v3/projects/{project_id}` (READ on it).
- `POST /identity/v3/projects` `{"project": {"name": N}}`: the cloud admin only (the
  `cloud_admin` role of the `provider` project); the project becomes a tenant of the region
  (default quotas), durably (`Control.create_project`).
- `POST /identity/v3/users` `{"user": {"name", "password", "default_project_id"}}`: an admin of
  that project, or the cloud admin, makes a user there with the `member` role
  (`Directory.invite`).
- `PUT /identity/v3/projects/{project_id}/users/{user_id}/roles/{role_id}`: grant a role
  (reader, member, admin; cloud_admin only in `provider`); the user's tokens are revoked,
  as they carry the old roles. A user's id is `project:name`, as in tokens.
- `GET /identity/v3/roles`: the roles.

Every change is written to the state store before the answer. Errors leave in Keystone's
format (the app's handlers).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from actors.identity import PROVIDER_PROJECT, Action, Directory, Role, Token
from daemon.api import read_json, token_of
from daemon.control import Control
from runtime.errors import InvalidRequest, NotFound

V3 = "/identity/v3"
DOMAIN_ID = "default"


def _text(obj: dict[str, Any], path: str, key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{path}.{key}: required, must be a non-empty string, got {value!r:.40}")
    return value


def _object(payload: Any, key: str) -> dict[str, Any]:
    if not isinstance(payload, dict) or not isinstance(payload.get(key), dict):
        raise InvalidRequest(f"body: must be {{\"{key}\": {{...}}}}, got {str(payload)[:60]!r}")
    value: dict[str, Any] = payload[key]
    return value


class KeystoneAdmin:
    def __init__(self, directory: Directory, control: Control, public_url: str) -> None:
        self.directory, self.control = directory, control
        self.url = f"{public_url.rstrip('/')}{V3}"

    def routes(self) -> list[Route]:
        return [
            Route(f"{V3}/projects", self.projects, methods=["GET"]),
            Route(f"{V3}/projects", self.create_project, methods=["POST"]),
            Route(f"{V3}/projects/{{project_id}}", self.project, methods=["GET"]),
            Route(f"{V3}/users", self.create_user, methods=["POST"]),
            Route(f"{V3}/projects/{{project_id}}/users/{{user_id}}/roles/{{role_id}}", self.grant, methods=["PUT"]),
            Route(f"{V3}/roles", self.roles, methods=["GET"]),
        ]

    def _cloud_admin(self, token: Token) -> bool:
        return token.project == PROVIDER_PROJECT and Role.CLOUD_ADMIN in token.roles

    def _project(self, name: str) -> dict[str, Any]:
        return {"id": name, "name": name, "domain_id": DOMAIN_ID, "enabled": True, "is_domain": False,
                "parent_id": DOMAIN_ID, "description": "", "links": {"self": f"{self.url}/projects/{name}"}}

    async def projects(self, request: Request) -> Response:
        token = token_of(request)
        names = sorted(self.directory.projects) if self._cloud_admin(token) else [token.project]
        name = request.query_params.get("name")
        return JSONResponse({"projects": [self._project(p) for p in names if name is None or p == name],
                             "links": {"self": f"{self.url}/projects", "next": None, "previous": None}})

    async def project(self, request: Request) -> Response:
        name = request.path_params["project_id"]
        self.directory.authorize(token_of(request), Action.READ, name)
        if name not in self.directory.projects:
            raise NotFound("project", name)
        return JSONResponse({"project": self._project(name)})

    async def create_project(self, request: Request) -> Response:
        self.directory.authorize(token_of(request), Action.OPERATE, PROVIDER_PROJECT)
        name = _text(_object(await read_json(request), "project"), "body.project", "name")
        await self.control.create_project(name)
        return JSONResponse({"project": self._project(name)}, status_code=201)

    async def create_user(self, request: Request) -> Response:
        body = _object(await read_json(request), "user")
        name = _text(body, "body.user", "name")
        password = _text(body, "body.user", "password")
        project = _text(body, "body.user", "default_project_id")
        user = self.directory.invite(token_of(request), project, name, password)
        await self.control.save_identity()
        return JSONResponse({"user": {"id": f"{project}:{name}", "name": name, "domain_id": DOMAIN_ID,
                                      "default_project_id": project, "enabled": user.enabled,
                                      "links": {"self": f"{self.url}/users/{project}:{name}"}}}, status_code=201)

    async def grant(self, request: Request) -> Response:
        project, user_id, role_id = (request.path_params[k] for k in ("project_id", "user_id", "role_id"))
        owner, _, name = user_id.rpartition(":")
        if owner not in ("", project):
            raise NotFound("user", f"{user_id} in project {project}")
        try:
            role = Role(role_id)
        except ValueError:
            raise NotFound("role", f"{role_id} (valid: {', '.join(r.value for r in Role)})") from None
        self.directory.authorize(token_of(request), Action.MANAGE_USERS, project)  # before anything is looked up
        current = self.directory.describe_user(project, name).roles
        self.directory.set_roles(token_of(request), project, name, current | {role})
        await self.control.save_identity()
        return Response(status_code=204)

    async def roles(self, request: Request) -> Response:
        token_of(request)
        return JSONResponse({"roles": [{"id": r.value, "name": r.value, "domain_id": None} for r in Role]})


def _json(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"type": "object"}}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _json("error in Keystone's format") for code in codes}


_BODY = {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", f"{V3}/projects"): {"summary": "List projects (all for the cloud admin, else the caller's)",
                                "responses": {"200": _json("the projects"), **_errors(401)}},
    ("POST", f"{V3}/projects"): {"summary": "Create a project and its tenant (cloud admin)", "requestBody": _BODY,
                                 "responses": {"201": _json("the project"), **_errors(400, 401, 403, 409)}},
    ("GET", f"{V3}/projects/{{project_id}}"): {"summary": "Show a project",
                                              "responses": {"200": _json("the project"),
                                                            **_errors(401, 403, 404)}},
    ("POST", f"{V3}/users"): {"summary": "Create a member user in a project (its admin or the cloud admin)",
                              "requestBody": _BODY,
                              "responses": {"201": _json("the user"), **_errors(400, 401, 403, 404, 409)}},
    ("PUT", f"{V3}/projects/{{project_id}}/users/{{user_id}}/roles/{{role_id}}"): {
        "summary": "Grant a role to a user of the project", "responses": {
            "204": {"description": "granted"}, **_errors(400, 401, 403, 404)}},
    ("GET", f"{V3}/roles"): {"summary": "List the roles", "responses": {"200": _json("the roles"), **_errors(401)}},
}

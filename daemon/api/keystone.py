"""Keystone v3 identity routes (issue 5, TEN-1, TEN-2, SEC-1): the subset openstacksdk and the
`openstack` CLI use for password authentication.

- `GET /identity` and `GET /identity/v3`: version discovery.
- `POST /identity/v3/auth/tokens`: password (and, for users enrolled in TOTP, "totp") methods,
  scoped to a project by name (domain "Default") or by id (a project's name is its id) -> 201,
  the token id in `X-Subject-Token`, the token in the body with a catalog that lists only what
  this daemon serves (identity; compute when the app has the region;
  block storage, `volumev3` and `block-storage`, when the region stores volumes).
- `GET`/`HEAD`/`DELETE /identity/v3/auth/tokens`: validate or revoke the `X-Subject-Token`.
  A token may validate or revoke itself; any other token needs the provider's cloud admin
  (Keystone's "token_subject or system reader" policy), decided by `Directory.authorize`.

There is one domain, "Default" (id "default"): users belong to a project (a tenant), and a
user's Keystone id is "PROJECT:NAME" (`:` cannot appear in a name). Unscoped tokens do not
exist here: every token acts on one project.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from actors.identity import Action, Directory, Token, Unauthenticated
from daemon.api import ApiError, read_json, token_of
from runtime.errors import InvalidRequest

DOMAIN = {"id": "default", "name": "Default"}
# The v3 API as Keystone documents it; fe-runtime serves the subset listed in the module docstring.
VERSION_ID = "v3.14"
VERSION_UPDATED = "2020-04-07T00:00:00Z"
MEDIA_TYPE = {"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}


def _iso(moment: datetime) -> str:
    """Keystone's timestamp format: UTC, microseconds, 'Z'."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Body:
    """Reads a JSON request body field by field; every error names the field's full path."""

    def __init__(self, value: Any, path: str) -> None:
        self.value, self.path = value, path

    def obj(self, key: str) -> _Body:
        found = self.opt(key)
        if found is None:
            raise InvalidRequest(f"{self.path}.{key}: required, missing (valid: a JSON object)")
        return found

    def opt(self, key: str) -> _Body | None:
        if not isinstance(self.value, dict):
            raise InvalidRequest(f"{self.path}: must be a JSON object, got {type(self.value).__name__}")
        if key not in self.value or self.value[key] is None:
            return None
        child = _Body(self.value[key], f"{self.path}.{key}")
        if not isinstance(child.value, dict):
            raise InvalidRequest(f"{child.path}: must be a JSON object, got {type(child.value).__name__}")
        return child

    def text(self, key: str) -> str:
        found = self.opt_text(key)
        if found is None:
            raise InvalidRequest(f"{self.path}.{key}: required, missing (valid: a non-empty string)")
        return found

    def opt_text(self, key: str) -> str | None:
        assert isinstance(self.value, dict)  # callers reached this node through obj()/opt()
        value = self.value.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise InvalidRequest(f"{self.path}.{key}: must be a non-empty string, got {value!r:.40}")
        return value

    def texts(self, key: str) -> list[str]:
        assert isinstance(self.value, dict)
        value = self.value.get(key)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise InvalidRequest(f"{self.path}.{key}: must be a non-empty list of strings, got {value!r:.40}")
        return value


def _check_domain(owner: _Body) -> None:
    domain = owner.obj("domain")
    name, ident = domain.opt_text("name"), domain.opt_text("id")
    if name is None and ident is None:
        raise InvalidRequest(f"{domain.path}: needs 'name' or 'id' (valid: name 'Default' or id 'default')")
    if (name is not None and name != DOMAIN["name"]) or (ident is not None and ident != DOMAIN["id"]):
        raise InvalidRequest(f"{domain.path}: unknown domain {name or ident!r} "
                             f"(valid: name 'Default' or id 'default', the only domain)")


def _user(user: _Body) -> tuple[str | None, str]:
    """(project if the id names it, user name) of a Keystone user reference."""
    name = user.opt_text("name")
    if name is not None:
        _check_domain(user)
        return None, name
    ident = user.opt_text("id")
    if ident is None:
        raise InvalidRequest(f"{user.path}: needs 'name' (with 'domain') or 'id'")
    project, _, name = ident.partition(":")
    if not project or not name:
        raise InvalidRequest(f"{user.path}.id: {ident!r} is not a user id (valid: 'PROJECT:NAME', as tokens show)")
    return project, name


def parse_password_auth(payload: Any) -> tuple[str, str, str, str | None]:
    """(user, project, password, TOTP code or None) from a Keystone v3 `auth` body."""
    auth = _Body(payload, "body").obj("auth")
    identity = auth.obj("identity")
    methods = identity.texts("methods")
    if "password" not in methods or not set(methods) <= {"password", "totp"}:
        raise InvalidRequest(f"{identity.path}.methods: {methods!r} is not supported "
                             f"(valid: ['password'] or ['password', 'totp'])")
    password_user = identity.obj("password").obj("user")
    user = _user(password_user)
    password = password_user.text("password")
    code = None
    if "totp" in methods:
        totp_user = identity.obj("totp").obj("user")
        if _user(totp_user)[1] != user[1]:
            raise InvalidRequest(f"{totp_user.path}: must be the same user as {password_user.path}")
        code = totp_user.text("passcode")
    scope = auth.opt("scope")
    if scope is None:
        raise InvalidRequest(f"{auth.path}.scope: required, missing (valid: {{'project': {{'name': ..., "
                             f"'domain': {{'name': 'Default'}}}}}}; every token is scoped to one project)")
    project_ref = scope.obj("project")
    project = project_ref.opt_text("name")
    if project is not None:
        _check_domain(project_ref)
    else:
        project = project_ref.opt_text("id")
        if project is None:
            raise InvalidRequest(f"{project_ref.path}: needs 'name' (with 'domain') or 'id'")
    if user[0] is not None and user[0] != project:
        raise InvalidRequest(f"{password_user.path}.id: the user belongs to project {user[0]!r}, "
                             f"the scope names {project!r}")
    return user[1], project, password, code


class Keystone:
    """The identity routes over one `Directory`; `clock` gives aware UTC datetimes."""

    def __init__(self, directory: Directory, clock: Callable[[], datetime], public_url: str,
                 compute: bool = False, saved: Callable[[], Awaitable[None]] | None = None,
                 volume: Callable[[], Awaitable[bool]] | None = None,
                 sdrs: Callable[[], Awaitable[bool]] | None = None) -> None:
        """`saved` is awaited after each change of the Directory (a token issued or revoked), before
        the answer: the daemon writes the change durably there (daemon.control.Control.save_identity)."""
        self.directory, self.clock, self.compute = directory, clock, compute
        self.saved = saved
        # `volume` says whether the region stores volumes (daemon.api.cinder): asked once, at the first token
        self.volume_check, self.volume = volume, False
        # `sdrs` says whether the region runs sDRS (daemon.api.sdrs): asked once too
        self.sdrs_check, self.sdrs = sdrs, False
        self.public_url = public_url.rstrip("/")

    @property
    def v3_url(self) -> str:
        return f"{self.public_url}/identity/v3"

    def routes(self) -> list[Route]:
        return [
            Route("/identity", self.versions, methods=["GET"]),
            Route("/identity/v3", self.version, methods=["GET"]),
            Route("/identity/v3/auth/tokens", self.issue, methods=["POST"]),
            Route("/identity/v3/auth/tokens", self.validate, methods=["GET"]),
            Route("/identity/v3/auth/tokens", self.revoke, methods=["DELETE"]),
        ]

    def _version_doc(self) -> dict[str, Any]:
        return {"id": VERSION_ID, "status": "stable", "updated": VERSION_UPDATED,
                "links": [{"rel": "self", "href": self.v3_url}], "media-types": [MEDIA_TYPE]}

    async def versions(self, request: Request) -> Response:
        return JSONResponse({"versions": {"values": [self._version_doc()]}}, status_code=300)

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": self._version_doc()})

    async def issue(self, request: Request) -> Response:
        user, project, password, code = parse_password_auth(await read_json(request))
        token = self.directory.authenticate(user, project, password, now=self.clock(), totp=code)
        await self._check_volume()
        if self.saved is not None:
            await self.saved()
        return JSONResponse(self.token_body(token), status_code=201, headers={"X-Subject-Token": token.id})

    def _subject(self, request: Request) -> Token:
        """The X-Subject-Token, if the caller may see it: itself, or anything for the cloud admin."""
        caller = token_of(request)
        subject_id = request.headers.get("x-subject-token")
        if not subject_id:
            raise InvalidRequest("X-Subject-Token header: required, missing (valid: the token to validate)")
        if subject_id != caller.id:
            self.directory.authorize(caller, Action.OPERATE, caller.project)
        try:
            return self.directory.validate(subject_id, self.clock())
        except Unauthenticated:  # about the subject, not the caller: Keystone answers 404
            raise ApiError(404, "the X-Subject-Token is unknown, expired or revoked") from None

    async def _check_volume(self) -> None:
        if self.volume_check is not None:
            self.volume, self.volume_check = await self.volume_check(), None
        if self.sdrs_check is not None:
            self.sdrs, self.sdrs_check = await self.sdrs_check(), None

    async def validate(self, request: Request) -> Response:
        subject = self._subject(request)
        await self._check_volume()
        return JSONResponse(self.token_body(subject), headers={"X-Subject-Token": subject.id})

    async def revoke(self, request: Request) -> Response:
        self.directory.revoke(self._subject(request).id)
        if self.saved is not None:
            await self.saved()
        return Response(status_code=204)

    def token_body(self, token: Token) -> dict[str, Any]:
        methods = ["password", "totp"] if token.mfa else ["password"]
        return {"token": {
            "methods": methods,
            "user": {"id": f"{token.project}:{token.user}", "name": token.user, "domain": DOMAIN,
                     "password_expires_at": None},
            "project": {"id": token.project, "name": token.project, "domain": DOMAIN},
            "is_domain": False,
            "roles": [{"id": role.value, "name": role.value} for role in sorted(token.roles, key=lambda r: r.value)],
            "issued_at": _iso(token.issued_at),
            "expires_at": _iso(token.expires_at),
            "catalog": self.catalog(token.project),
        }}

    def catalog(self, project: str = "") -> list[Mapping[str, Any]]:
        """Only the services this daemon serves: identity, compute when the Nova routes are served, block
        storage (Cinder v3, its URL ends with the token's `project`) when the region stores volumes, and the
        provider's sDRS (type "sdrs", `/sdrs/v1/{project}`) when the region runs it."""
        services = [("identity", "keystone", self.v3_url)]
        if self.compute:
            services.append(("compute", "nova", f"{self.public_url}/compute/v2.1"))
        if self.volume:
            services += [(kind, name, f"{self.public_url}/volume/v3/{project}")
                         for kind, name in (("volumev3", "cinderv3"), ("block-storage", "cinder"))]
        if self.sdrs:
            services.append(("sdrs", "sdrs", f"{self.public_url}/sdrs/v1/{project}"))
        return [{"id": kind, "type": kind, "name": name, "endpoints": [
            {"id": f"{kind}-{interface}", "interface": interface, "region": None, "region_id": None, "url": url}
            for interface in ("public", "internal", "admin")]} for kind, name, url in services]

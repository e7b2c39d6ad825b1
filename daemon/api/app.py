"""The ASGI app of `fe daemon` (issue 5): `create_app` assembles the routes, the token
middleware, the error mapping and the OpenAPI description of exactly those routes.

The daemon serves it with uvicorn and gives it the wall clock (the API layer is not an actor);
tests give a fake clock. Every error leaves as JSON in Keystone's format: runtime errors with
their status (`daemon.api.status_of`), unknown paths 404, wrong methods 405, and anything
unexpected 500 with no detail (the detail goes to the log, never to the caller).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from actors.identity import Directory
from daemon.api import ApiError, AuthMiddleware, error_response, status_of
from daemon.api.cinder import OPERATIONS as CINDER_OPERATIONS
from daemon.api.cinder import Cinder
from daemon.api.cts import OPERATIONS as CTS_OPERATIONS
from daemon.api.cts import TraceMiddleware, TraceRecorder, cts_routes
from daemon.api.ecs import OPERATIONS as ECS_OPERATIONS
from daemon.api.ecs import Ecs
from daemon.api.keystone import Keystone
from daemon.api.keystone_admin import OPERATIONS as KEYSTONE_ADMIN_OPERATIONS
from daemon.api.keystone_admin import KeystoneAdmin
from daemon.api.nova import OPERATIONS as NOVA_OPERATIONS
from daemon.api.nova import Nova
from daemon.api.nova_volumes import OPERATIONS as NOVA_VOLUMES_OPERATIONS
from daemon.api.nova_volumes import NovaVolumes
from daemon.api.sdrs import OPERATIONS as SDRS_OPERATIONS
from daemon.api.sdrs import Sdrs
from daemon.control import Control
from daemon.observability import OPERATIONS as METRICS_OPERATIONS
from daemon.observability import Metrics, metrics_route
from runtime.errors import CloudError

log = logging.getLogger(__name__)

OPENAPI_PATH = "/openapi.json"


def create_app(directory: Directory, clock: Callable[[], datetime], public_url: str,
               control: Control | None = None, *, traces: TraceRecorder | None = None,
               metrics: Metrics | None = None) -> Starlette:
    """The API over `directory`; `clock` gives aware UTC datetimes; `public_url` (scheme://host:port,
    as clients reach the daemon) is what the version documents and the service catalog advertise.
    With `control` (the actors), the Nova compute routes (daemon.api.nova) are served and cataloged too.
    With `control`, the Cinder v3 and Nova volume attachment routes (daemon.api.cinder, daemon.api.nova_volumes)
    are served too, and cataloged when the region stores volumes; so are the provider's sDRS routes
    (daemon.api.sdrs), cataloged when the region runs sDRS.
    With `traces`, every call is traced (CTS-1, daemon.api.cts) and `GET /v3/{project_id}/traces` served; with
    `metrics`, `GET /metrics` (daemon.observability). With either, every answer has `X-Openstack-Request-Id`."""
    keystone = Keystone(directory, clock, public_url, compute=control is not None,
                        saved=None if control is None else control.save_identity,
                        volume=None if control is None else _stores_volumes(control),
                        sdrs=None if control is None else _runs_sdrs(control))

    async def cloud_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, CloudError)
        status = status_of(error)
        if status == 500:
            log.error("unmapped runtime error on %s %s", request.method, request.url.path, exc_info=error)
            return error_response(500, "internal error; the daemon's log has the details", public_url)
        return error_response(status, str(error), public_url)

    async def api_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, ApiError)
        return error_response(error.status, error.message, public_url)

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        message = {404: f"no such path: {request.url.path}",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(error.status_code, error.detail)
        response = error_response(error.status_code, message, public_url)
        response.headers.update(error.headers or {})
        return response

    async def server_error(request: Request, error: Exception) -> Response:
        return error_response(500, "internal error; the daemon's log has the details", public_url)

    routes = keystone.routes() + (Nova(directory, control, public_url).routes() if control is not None else [])
    routes += Ecs(directory, control).routes() if control is not None else []
    routes += KeystoneAdmin(directory, control, public_url).routes() if control is not None else []
    routes += [*Cinder(directory, control, public_url, clock).routes(),
               *NovaVolumes(directory, control).routes()] if control is not None else []
    routes += Sdrs(directory, control).routes() if control is not None else []
    routes += cts_routes(directory, clock, traces) if traces is not None else []
    routes += [metrics_route(metrics, directory, clock, public_url, control)] if metrics is not None else []
    document = openapi(routes, public_url)

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(document)

    routes.append(Route(OPENAPI_PATH, openapi_json, methods=["GET"]))
    traced = [Middleware(TraceMiddleware, directory=directory, clock=clock, public_url=public_url, routes=routes,
                         recorder=traces, metrics=metrics)] if traces is not None or metrics is not None else []
    return Starlette(
        routes=routes,
        middleware=[*traced, Middleware(AuthMiddleware, directory=directory, clock=clock, public_url=public_url)],
        exception_handlers={CloudError: cloud_error, ApiError: api_error, HTTPException: http_error,
                            Exception: server_error},
    )


def _stores_volumes(control: Control) -> Callable[[], Awaitable[bool]]:
    """Whether the region has volume services (a [storage] section): then Keystone catalogs Cinder."""
    async def check() -> bool:
        return bool((await control.services()).volumes)
    return check


def _runs_sdrs(control: Control) -> Callable[[], Awaitable[bool]]:
    """Whether the region runs sDRS (block stores in its AZs): then Keystone catalogs it (daemon.api.sdrs)."""
    async def check() -> bool:
        return (await control.services()).sdrs is not None
    return check


_ERROR = {"$ref": "#/components/schemas/Error"}
_NAMED = {"type": "object", "properties": {"name": {"type": "string"}, "id": {"type": "string"},
                                           "domain": {"$ref": "#/components/schemas/Domain"}}}
_AUTH_REQUEST = {
    "type": "object", "required": ["auth"], "properties": {"auth": {
        "type": "object", "required": ["identity", "scope"], "properties": {
            "identity": {"type": "object", "required": ["methods", "password"], "properties": {
                "methods": {"type": "array", "items": {"type": "string", "enum": ["password", "totp"]}},
                "password": {"type": "object", "required": ["user"], "properties": {"user": {
                    "allOf": [_NAMED, {"type": "object", "required": ["password"],
                                       "properties": {"password": {"type": "string"}}}]}}},
                "totp": {"type": "object", "required": ["user"], "properties": {"user": {
                    "allOf": [_NAMED, {"type": "object", "required": ["passcode"],
                                       "properties": {"passcode": {"type": "string"}}}]}}},
            }},
            "scope": {"type": "object", "required": ["project"], "properties": {"project": _NAMED}},
        }}},
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _json(_ERROR, "error in Keystone's format") for code in codes}


_SUBJECT = [{"name": "X-Subject-Token", "in": "header", "required": True, "schema": {"type": "string"}}]
_OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/identity"): {"summary": "Identity API versions", "security": [],
                           "responses": {"300": _json({"type": "object"}, "the versions (v3 only)")}},
    ("GET", "/identity/v3"): {"summary": "Identity v3 version document", "security": [],
                              "responses": {"200": _json({"type": "object"}, "the v3 version")}},
    ("POST", "/identity/v3/auth/tokens"): {
        "summary": "Authenticate (password, optional TOTP), project-scoped", "security": [],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _AUTH_REQUEST}}},
        "responses": {"201": {**_json({"$ref": "#/components/schemas/Token"}, "the token"),
                              "headers": {"X-Subject-Token": {"schema": {"type": "string"}}}},
                      **_errors(400, 401)}},
    ("GET", "/identity/v3/auth/tokens"): {
        "summary": "Validate X-Subject-Token (its own, or any for the cloud admin)", "parameters": _SUBJECT,
        "responses": {"200": _json({"$ref": "#/components/schemas/Token"}, "the subject token"),
                      **_errors(400, 401, 403, 404)}},
    ("DELETE", "/identity/v3/auth/tokens"): {
        "summary": "Revoke X-Subject-Token (its own, or any for the cloud admin)", "parameters": _SUBJECT,
        "responses": {"204": {"description": "revoked"}, **_errors(400, 401, 403, 404)}},
    ("GET", OPENAPI_PATH): {"summary": "This description", "security": [],
                            "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1 document")}},
}

_OPERATIONS.update({**CTS_OPERATIONS, **METRICS_OPERATIONS})  # daemon.api.cts, daemon.observability


def openapi(routes: list[Route], public_url: str) -> dict[str, Any]:
    """The OpenAPI 3.1 description of `routes` plus itself; refuses a route it does not describe."""
    paths: dict[str, dict[str, Any]] = {}
    served = [(method, route.path) for route in routes for method in sorted(route.methods or ()) if method != "HEAD"]
    described = {**_OPERATIONS, **KEYSTONE_ADMIN_OPERATIONS, **NOVA_OPERATIONS, **ECS_OPERATIONS,
                 **CINDER_OPERATIONS, **NOVA_VOLUMES_OPERATIONS, **SDRS_OPERATIONS}
    for method, path in [*served, ("GET", OPENAPI_PATH)]:
        paths.setdefault(path, {})[method.lower()] = described[(method, path)]
    return {
        "openapi": "3.1.0",
        "info": {"title": "fe-runtime", "version": "0.1.0",
                 "description": "OpenStack-compatible API of fe-runtime: Keystone v3 identity, Nova v2.1 compute, "
                                "Cinder v3 block storage (subsets)"},
        "servers": [{"url": public_url.rstrip("/")}],
        "paths": paths,
        "security": [{"token": []}],
        "components": {
            "securitySchemes": {"token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "title", "message"],
                    "properties": {"code": {"type": "integer"}, "title": {"type": "string"},
                                   "message": {"type": "string"}}}}},
                "Domain": {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}}},
                "Token": {"type": "object", "required": ["token"], "properties": {"token": {
                    "type": "object",
                    "required": ["methods", "user", "project", "roles", "issued_at", "expires_at", "catalog"],
                    "properties": {"methods": {"type": "array", "items": {"type": "string"}},
                                   "user": {"type": "object"}, "project": {"type": "object"},
                                   "roles": {"type": "array", "items": {"type": "object"}},
                                   "issued_at": {"type": "string", "format": "date-time"},
                                   "expires_at": {"type": "string", "format": "date-time"},
                                   "catalog": {"type": "array", "items": {"type": "object"}}}}}},
            },
        },
    }

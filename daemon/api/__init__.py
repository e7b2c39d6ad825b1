"""The daemon's REST API (issue 5): an ASGI app (`daemon.api.app.create_app`) and the plumbing
every API's routes share, so that each rule is decided once:

- `error_response`/`status_of`: runtime errors -> HTTP status, body in Keystone's format
  `{"error": {"code", "title", "message"}}` (SEC-1: a message never holds a secret).
- `read_json`: a request body as JSON, or a 400 that says why (never a 500 for bad input).
- `AuthMiddleware`: every route that is not in `PUBLIC` needs a valid `X-Auth-Token`; the
  validated `Token` is then `token_of(request)`. Tenant isolation and roles stay in
  `Directory.authorize` (TEN-1), which the routes call with that token.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from http import HTTPStatus
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from actors.identity import Directory, Forbidden, Token, Unauthenticated
from runtime.errors import CloudError, Conflict, InvalidRequest, NotFound, ServiceUnavailable

TOKEN_KEY = "fe.token"  # where AuthMiddleware puts the validated Token in the ASGI scope

# (method, path) pairs that need no token: discovery, authentication itself, the API description.
PUBLIC: frozenset[tuple[str, str]] = frozenset({
    ("GET", "/identity"), ("HEAD", "/identity"),
    ("GET", "/identity/v3"), ("HEAD", "/identity/v3"),
    ("POST", "/identity/v3/auth/tokens"),
    ("GET", "/openapi.json"), ("HEAD", "/openapi.json"),
    ("GET", "/metrics"),  # daemon.observability decides: loopback clients, or a cloud admin's token
})

_STATUS: tuple[tuple[type[CloudError], int], ...] = (
    (Unauthenticated, 401), (Forbidden, 403), (NotFound, 404), (InvalidRequest, 400), (Conflict, 409),
    (ServiceUnavailable, 503),
)


class ApiError(Exception):
    """An HTTP-level refusal that no runtime error describes (e.g. Keystone's 404 for a bad subject token)."""

    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message
        super().__init__(message)


def status_of(error: CloudError) -> int:
    """The HTTP status of a runtime error; one not listed is the server's fault (500)."""
    return next((status for kind, status in _STATUS if isinstance(error, kind)), 500)


def error_response(status: int, message: str, public_url: str) -> JSONResponse:
    """Keystone's error body; a 401 also says where to authenticate, as Keystone does."""
    headers = {"WWW-Authenticate": f'Keystone uri="{public_url.rstrip("/")}/identity/v3"'} if status == 401 else None
    body = {"error": {"code": status, "title": HTTPStatus(status).phrase, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


async def read_json(request: Request) -> Any:
    """The body as JSON, or InvalidRequest naming what is wrong with it."""
    raw = await request.body()
    if not raw:
        raise InvalidRequest("body: required, missing (valid: a JSON object)")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidRequest(f"body: not valid JSON ({error})") from None


Handler = Callable[[Request], Awaitable[Response]]


def in_format(errors: Callable[[CloudError], Response], handler: Handler) -> Handler:
    """`handler`, whose runtime errors leave in its API's own error format (`errors`)."""
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except CloudError as error:
            return errors(error)
    return wrapped


def token_of(request: Request) -> Token:
    """The caller's validated token (AuthMiddleware put it there; public routes have none)."""
    token = request.scope.get(TOKEN_KEY)
    if not isinstance(token, Token):
        raise RuntimeError(f"{request.method} {request.url.path} is public: it has no caller token")
    return token


class AuthMiddleware:
    """Turns `X-Auth-Token` into a validated `Token` for every route outside `PUBLIC` (fail closed:
    a route added later is protected unless listed there); 401 in Keystone's format otherwise."""

    def __init__(self, app: ASGIApp, directory: Directory, clock: Callable[[], datetime], public_url: str) -> None:
        self.app, self.directory, self.clock, self.public_url = app, directory, clock, public_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"].rstrip("/") or "/") in PUBLIC:
            await self.app(scope, receive, send)
            return
        token_id = dict(scope["headers"]).get(b"x-auth-token", b"").decode("latin-1")
        if not token_id:
            response = error_response(401, "X-Auth-Token header: required, missing (valid: a token from "
                                           "POST /identity/v3/auth/tokens)", self.public_url)
            await response(scope, receive, send)
            return
        try:
            scope[TOKEN_KEY] = self.directory.validate(token_id, self.clock())
        except Unauthenticated as error:
            await error_response(401, error.reason, self.public_url)(scope, receive, send)
            return
        await self.app(scope, receive, send)

"""Cloud Trace Service in the daemon (CTS-1, issue 5 item 5): every API call traced, traces
stored through the StateStore and queried per tenant at `GET /v3/{project_id}/traces`.

- `TraceMiddleware` (outside the token middleware, so 401s are traced too) gives every
  request a request id (`req-<trace id>`), answered as `X-Openstack-Request-Id` on every
  response and set in the log context (daemon.observability.REQUEST_ID); when the answer is
  sent it builds the `Trace` (actors.cts) and hands it to the recorder, and observes the
  latency histogram. Caller: the validated token's user, project and auth method; for a
  successful `POST /identity/v3/auth/tokens`, the user the new token is for; on another public
  route, the owner of a valid `X-Auth-Token` sent anyway; without a valid token, nobody,
  under the provider project. Source IP: the ASGI client address (uvicorn
  takes it from `X-Forwarded-For` only when the peer is in its `forwarded_allow_ips`).
- `TraceRecorder` buffers traces and writes them in one StateStore batch every
  `FLUSH_INTERVAL_S` (0.2 s) or `FLUSH_BATCH` (500) traces, whichever comes first, and on
  shutdown; a trace query writes what is pending first, so a caller sees its own calls.
  One batch per call would cap the API at the store's commit rate (~1,500/s on SQLite).
  Crash window, honestly: a trace is durable at most 0.2 s plus one commit after its
  answer was sent; a SIGKILL or power cut loses the traces of the calls answered in that
  window (the calls themselves are not undone). While the store fails, traces wait in
  memory (retried every interval, `fe_cts_flush_failures_total`); past `MAX_PENDING` the
  oldest are dropped and counted (`fe_cts_traces_dropped_total`) rather than exhaust memory.
- The query route: `Directory.authorize(token, READ, project_id)` is the isolation decision
  (TEN-1): a tenant's token reads its own project's traces only (403 otherwise), the cloud
  admin any project's, including the provider's, where calls without a valid token are.
  Errors in CTS's format `{"error_code", "error_msg"}`: `CTS.0005` (bad query, 400) and
  `CTS.0004` (no such project, 404) as the provider's error table lists them; a refusal (403)
  and a store outage (503) have no code there and answer `FE.0403` and `FE.0503`.
Traces are kept forever in this version (CTS keeps 7 days): nothing purges them yet.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import anyio
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from actors.cts import (
    NO_PROJECT,
    TRACE_KIND,
    Trace,
    TraceQuery,
    error_message,
    id_in_response,
    name_in_request,
    new_trace_id,
    page_body,
    resource_of,
)
from actors.identity import Action, Directory, Forbidden, Token, Unauthenticated
from daemon.api import TOKEN_KEY, error_response, token_of
from daemon.observability import REQUEST_ID, Metrics
from runtime.errors import BackendError, CloudError, InvalidRequest, NotFound
from runtime.state import Put, StateStore

log = logging.getLogger(__name__)

TRACES_PATH = "/v3/{project_id}/traces"
REQUEST_ID_HEADER = "X-Openstack-Request-Id"
FLUSH_INTERVAL_S = 0.2
FLUSH_BATCH = 500
MAX_PENDING = 100_000
BODY_CAP = 64 * 1024  # bytes of a body read for a resource name, id or error message; larger ones are not
_AUTH_PATH = "/identity/v3/auth/tokens"
_UNMATCHED = "unmatched"
_NO_ANSWER = "the call ended before an answer was sent (cancelled, or the daemon stopped)"


class TraceRecorder:
    """The trace buffer in front of a StateStore (see the module docstring); `run()` is its flusher task."""

    def __init__(self, store: StateStore, metrics: Metrics | None = None, *, interval_s: float = FLUSH_INTERVAL_S,
                 batch: int = FLUSH_BATCH, max_pending: int = MAX_PENDING) -> None:
        self.store, self.metrics = store, metrics
        self.interval_s, self.batch, self.max_pending = interval_s, batch, max_pending
        self._pending: list[Trace] = []
        self._lock = anyio.Lock()
        self._arrived = anyio.Event()  # set when the buffer becomes non-empty
        self._full = anyio.Event()  # set when it holds a whole batch

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, trace: Trace) -> None:
        """Buffer one trace (never blocks: the request is answered already)."""
        self._pending.append(trace)
        if len(self._pending) > self.max_pending:
            dropped = len(self._pending) - self.max_pending
            del self._pending[:dropped]
            log.error("CTS: %d traces dropped: the state store has failed for too long", dropped)
            if self.metrics is not None:
                self.metrics.traces_dropped.inc(dropped)
        self._arrived.set()
        if len(self._pending) >= self.batch:
            self._full.set()
        self._show()

    async def flush(self) -> None:
        """Write every trace pending now, a batch at a time; BackendError leaves the unwritten ones pending."""
        async with self._lock:
            while self._pending:
                chunk = self._pending[:self.batch]
                try:
                    await self.store.apply([Put(TRACE_KIND, t.key, t.to_record()) for t in chunk])
                except BackendError:
                    if self.metrics is not None:
                        self.metrics.flush_failures.inc()
                    raise
                del self._pending[:len(chunk)]
                self._show()
            self._arrived, self._full = anyio.Event(), anyio.Event()

    async def run(self) -> None:
        """Flush within `interval_s` of a trace's arrival, at once for a full batch; flush on cancellation."""
        try:
            while True:
                await self._arrived.wait()
                with anyio.move_on_after(self.interval_s):
                    await self._full.wait()
                try:
                    await self.flush()
                except BackendError as error:
                    log.error("CTS: %d traces not written yet (retried in %g s): %s", len(self._pending),
                              self.interval_s, error)
                    await anyio.sleep(self.interval_s)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self.flush()
                except BackendError as error:
                    log.error("CTS: %d traces lost at shutdown: %s", len(self._pending), error)

    async def query(self, query: TraceQuery) -> tuple[list[Trace], str | None]:
        """One page of `query`, after writing what is pending."""
        await self.flush()
        records = await self.store.list(TRACE_KIND, query.prefix)
        return query.page(Trace.from_record(r.value) for r in records)

    def _show(self) -> None:
        if self.metrics is not None:
            self.metrics.traces_pending.set(len(self._pending))


def _template(scope: Scope, routes: Sequence[BaseRoute]) -> tuple[str | None, dict[str, Any]]:
    """The route template the request went to (or would have: a 401 stops before routing) and its path params."""
    route = scope.get("route")
    if isinstance(route, Route):
        return route.path, dict(scope.get("path_params", {}))
    for candidate in routes:
        match, child = candidate.matches(scope)
        if match is not Match.NONE and isinstance(candidate, Route):
            return candidate.path, dict(child.get("path_params", {}))
    return None, {}


class TraceMiddleware:
    """Request ids, traces and latency of every HTTP request (see the module docstring)."""

    def __init__(self, app: ASGIApp, directory: Directory, clock: Callable[[], datetime], public_url: str,
                 routes: Sequence[BaseRoute], recorder: TraceRecorder | None = None,
                 metrics: Metrics | None = None) -> None:
        self.app, self.directory, self.clock, self.public_url = app, directory, clock, public_url
        self.routes, self.recorder, self.metrics = routes, recorder, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrived, started = self.clock(), time.perf_counter()
        trace_id = new_trace_id(arrived, secrets.randbits(74))
        request_id = f"req-{trace_id}"
        context = REQUEST_ID.set(request_id)
        method = scope["method"]
        request_body, response_body = bytearray(), bytearray()
        answer: dict[str, Any] = {"status": None, "subject": None, "capture": False}

        async def receive_body() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(request_body) < BODY_CAP:
                request_body.extend(message.get("body", b""))
            return message

        async def send_traced(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = answer["status"] = int(message["status"])
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                if status == 201 and method == "POST" and scope["path"].rstrip("/") == _AUTH_PATH:
                    answer["subject"] = headers.get("x-subject-token")
                answer["capture"] = status >= 400 or (method == "POST" and status < 300)
            elif message["type"] == "http.response.body" and answer["capture"] and len(response_body) < BODY_CAP:
                response_body.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive_body if method in ("POST", "PUT", "PATCH") else receive, send_traced)
        except Exception:
            if answer["status"] is not None:
                raise
            log.exception("unhandled error on %s %s", method, scope["path"])
            answer["capture"] = True
            await error_response(500, "internal error; the daemon's log has the details",
                                 self.public_url)(scope, receive, send_traced)
        finally:
            try:
                self._done(scope, trace_id, request_id, arrived, time.perf_counter() - started, answer,
                           bytes(request_body), bytes(response_body))
            except Exception:  # a trace must never break the call it traces
                log.exception("CTS: could not trace %s %s", method, scope["path"])
            finally:
                REQUEST_ID.reset(context)

    def _caller(self, scope: Scope, subject: str | None) -> Token | None:
        """The token AuthMiddleware validated; on a public route, the new token of a login, or a valid
        `X-Auth-Token` the caller sent anyway; None for nobody."""
        token = scope.get(TOKEN_KEY)
        if isinstance(token, Token):
            return token
        for token_id in (subject, dict(scope["headers"]).get(b"x-auth-token", b"").decode("latin-1")):
            if token_id:
                try:
                    return self.directory.validate(token_id, self.clock())
                except Unauthenticated:
                    continue
        return None

    def _done(self, scope: Scope, trace_id: str, request_id: str, arrived: datetime, seconds: float,
              answer: dict[str, Any], request_body: bytes, response_body: bytes) -> None:
        method, status = scope["method"], answer["status"] if answer["status"] is not None else 500
        template, params = _template(scope, self.routes)
        if self.metrics is not None:
            self.metrics.observe(method, template or _UNMATCHED, status, seconds)
        if self.recorder is None:
            return
        path = template or scope["path"][:200]
        resource = resource_of(method, path, params)
        resource_id = resource.resource_id
        if resource_id is None and method == "POST" and status < 300:
            resource_id = id_in_response(response_body)
        token = self._caller(scope, answer["subject"])
        client = scope.get("client")
        self.recorder.record(Trace(
            trace_id=trace_id, project=token.project if token is not None else NO_PROJECT, time=arrived,
            record_time=self.clock(), user=token.user if token is not None else None,
            auth_method=token.method.value if token is not None else None, method=method, path=path,
            service_type=resource.service_type, resource_type=resource.resource_type, resource_id=resource_id,
            resource_name=name_in_request(request_body) if request_body else None, trace_name=resource.trace_name,
            api_version=resource.api_version, status=status,
            message=(error_message(response_body) if answer["status"] is not None else _NO_ANSWER)
            if status >= 400 else None, request_id=request_id,
            source_ip=str(client[0]) if client else None))


def cts_error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error_code": code, "error_msg": message}, status_code=status)


def cts_routes(directory: Directory, clock: Callable[[], datetime], recorder: TraceRecorder) -> list[Route]:
    """`GET /v3/{project_id}/traces` (see the module docstring)."""

    async def traces(request: Request) -> Response:
        project = request.path_params["project_id"]
        try:
            directory.authorize(token_of(request), Action.READ, project)
            if len(request.query_params.multi_items()) != len(request.query_params):
                raise InvalidRequest("query parameters: each may be given once")
            query = TraceQuery.parse(project, dict(request.query_params), clock())
            page, marker = await recorder.query(query)
        except Forbidden as error:
            return cts_error(403, "FE.0403", str(error))
        except NotFound as error:
            return cts_error(404, "CTS.0004", str(error))
        except InvalidRequest as error:
            return cts_error(400, "CTS.0005", str(error))
        except CloudError as error:
            log.error("CTS: trace query failed: %s", error)
            return cts_error(503, "FE.0503", "the trace store is unavailable; retry later")
        return JSONResponse(page_body(page, marker))

    return [Route(TRACES_PATH, traces, methods=["GET"])]


_ERROR = {"description": "error in CTS's format {error_code, error_msg}",
          "content": {"application/json": {"schema": {"type": "object", "properties": {
              "error_code": {"type": "string"}, "error_msg": {"type": "string"}}}}}}


def _query(name: str, kind: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": {"type": kind}, "description": description}


OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", TRACES_PATH): {
        "summary": "Query a project's traces (CTS v3): newest first, paged with next/meta_data.marker",
        "parameters": [
            {"name": "project_id", "in": "path", "required": True, "schema": {"type": "string"}},
            _query("trace_type", "string", "system (default) or data"),
            _query("limit", "integer", "1 to 200, default 10"),
            _query("from", "integer", "UTC ms; default: an hour before `to`"),
            _query("to", "integer", "UTC ms; default: now"),
            _query("next", "string", "meta_data.marker of the previous page"),
            _query("tracker_name", "string", "system"),
            *(_query(name, "string", "exact match") for name in (
                "service_type", "user", "resource_id", "resource_name", "resource_type", "trace_id", "trace_name")),
            _query("trace_rating", "string", "normal, warning or incident"),
        ],
        "responses": {"200": {"description": "traces and meta_data {count, marker}",
                              "content": {"application/json": {"schema": {"type": "object"}}}},
                      **{str(code): _ERROR for code in (400, 401, 403, 404, 503)}},
    },
}

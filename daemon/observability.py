"""Observability of `fe daemon` (issue 5 item 6): Prometheus metrics and JSON logs.

Metrics (`Metrics`, served at `GET /metrics` in Prometheus' text format), each in its own
registry so that two daemons in one process (tests) never share a series:
- `fe_servers{az,state}`: servers by AZ and state, from the Region's `Snapshot()` at scrape
  time (one ask per scrape; every state of `ServerState` is shown, 0 included).
  `fe_region_snapshot_ok` is 0 when that ask failed (the gauge is then empty, not stale).
- `fe_server_recoveries_total{outcome}`: the AZs' `ServerRecovered` (outcome="recovered") and
  `RecoveryFailed` (outcome="failed") events; `fe_actor_events_total{kind}` counts every event
  the actors emit, by kind (a bounded set: the kinds are written in the code).
- `fe_actor_restarts_total` and `fe_actor_escalations_total`: the runtime's supervision
  (runtime.actor): an actor that crashed is restarted (`ActorRestarted`); past its restart
  limit the crash escalates to its parent (`ActorEscalated`).
- `fe_api_request_duration_seconds{method,route,status}`: a histogram per route template
  (`unmatched` for paths no route serves, so a scan cannot blow up the label set).
- `fe_cts_traces_pending`, `fe_cts_traces_dropped_total`, `fe_cts_flush_failures_total`: the
  trace buffer (daemon.api.cts).
No metric has a tenant or user label (TEN-1: nothing of a tenant in them); still, `/metrics`
is not public: it answers without a token only to a client on the loopback address (a
Prometheus on the same host, or a local exporter/proxy that the operator controls), and to
any other address only with the `X-Auth-Token` of a cloud admin (`cloud_admin` on the
provider project). A reverse proxy on the same host must therefore not forward `/metrics`,
or must set `X-Forwarded-For` (uvicorn then sees the real client).

Logs (`setup_logging`): one JSON object per line on stderr: `time` (UTC, ISO 8601), `level`,
`logger`, `message`, `request_id` inside a request (the `X-Openstack-Request-Id` it answers
with), `exception` with the traceback, and every `extra=` field. uvicorn's access log goes
through the same handler, its fields (`client`, `method`, `path`, `http_version`,
`status`) split out.
"""

from __future__ import annotations

import contextvars
import ipaddress
import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from actors.az import Snapshot
from actors.identity import PROVIDER_PROJECT, Action, Directory, Forbidden, Unauthenticated
from actors.region import RegionSnapshot
from actors.servers import ServerState
from daemon.api import error_response
from daemon.control import Control
from runtime.errors import CloudError

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
SNAPSHOT_TIMEOUT_S = 5.0  # a scrape waits this long for the actors at most
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("fe_request_id", default=None)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_RECOVERY_OUTCOMES = {"ServerRecovered": "recovered", "RecoveryFailed": "failed"}


class Metrics:
    """The daemon's Prometheus metrics (see the module docstring); `on_event` is an EventLog sink."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.servers = Gauge("fe_servers", "Servers by availability zone and state, read from the actors at "
                             "scrape time", ["az", "state"], registry=r)
        self.snapshot_ok = Gauge("fe_region_snapshot_ok", "1 if the last scrape read the region's servers, "
                                 "0 if the actors did not answer", registry=r)
        self.recoveries = Counter("fe_server_recoveries", "Server auto-recovery attempts by outcome "
                                  "(ServerRecovered, RecoveryFailed events)", ["outcome"], registry=r)
        self.events = Counter("fe_actor_events", "Events emitted by the actors, by kind", ["kind"], registry=r)
        self.restarts = Counter("fe_actor_restarts", "Actors restarted by their supervisor after a crash",
                                registry=r)
        self.escalations = Counter("fe_actor_escalations", "Actor crashes past the restart limit, escalated "
                                   "to the parent", registry=r)
        self.latency = Histogram("fe_api_request_duration_seconds", "API request latency by method, route "
                                 "template and HTTP status", ["method", "route", "status"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.traces_pending = Gauge("fe_cts_traces_pending", "Traces not yet written to the state store",
                                    registry=r)
        self.traces_dropped = Counter("fe_cts_traces_dropped", "Traces dropped because the state store "
                                      "failed for too long (buffer full)", registry=r)
        self.flush_failures = Counter("fe_cts_flush_failures", "Failed writes of a batch of traces (retried)",
                                      registry=r)
        for outcome in _RECOVERY_OUTCOMES.values():
            self.recoveries.labels(outcome)

    def on_event(self, time: float, source: str, kind: str, fields: dict[str, Any]) -> None:
        """EventLog sink: count the actors' events (called inside the actors: cheap, never raises)."""
        self.events.labels(kind).inc()
        if kind in _RECOVERY_OUTCOMES:
            self.recoveries.labels(_RECOVERY_OUTCOMES[kind]).inc()
        elif kind == "ActorRestarted":
            self.restarts.inc()
        elif kind == "ActorEscalated":
            self.escalations.inc()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.latency.labels(method, route, str(status)).observe(seconds)

    def show_servers(self, snapshot: RegionSnapshot | None) -> None:
        """Set `fe_servers` from a region snapshot (None: the actors did not answer)."""
        self.servers.clear()
        self.snapshot_ok.set(0 if snapshot is None else 1)
        for az in snapshot.azs if snapshot is not None else ():
            counts = dict.fromkeys((s.value for s in ServerState), 0)
            for server in az.servers:
                counts[server.state] = counts.get(server.state, 0) + 1
            for state, count in counts.items():
                self.servers.labels(az.az, state).set(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def metrics_route(metrics: Metrics, directory: Directory, clock: Callable[[], datetime], public_url: str,
                  control: Control | None) -> Route:
    """`GET /metrics`: loopback clients, or a cloud admin's token (see the module docstring)."""

    async def scrape(request: Request) -> Response:
        if not _loopback(request.client.host if request.client is not None else None):
            token_id = request.headers.get("x-auth-token", "")
            try:
                if not token_id:
                    raise Unauthenticated("X-Auth-Token header: required from a non-loopback address (valid: a "
                                          "cloud admin's token from POST /identity/v3/auth/tokens)")
                directory.authorize(directory.validate(token_id, clock()), Action.OPERATE, PROVIDER_PROJECT)
            except Unauthenticated as error:
                return error_response(401, error.reason, public_url)
            except Forbidden as error:
                return error_response(403, f"metrics are for the cloud admin: {error.reason}", public_url)
        if control is not None:
            try:
                snapshot = await control.region.ask(Snapshot(), timeout=SNAPSHOT_TIMEOUT_S)
                assert isinstance(snapshot, RegionSnapshot)
                metrics.show_servers(snapshot)
            except CloudError as error:
                log.warning("metrics: the region did not give its servers: %s", error)
                metrics.show_servers(None)
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return Route(METRICS_PATH, scrape, methods=["GET"])


OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", METRICS_PATH): {
        "summary": "Prometheus metrics", "security": [],
        "description": "No token from a loopback address; from any other address, a cloud admin's X-Auth-Token "
                       "(401 without a valid one, 403 for anyone else).",
        "responses": {"200": {"description": "Prometheus text format",
                              "content": {"text/plain": {"schema": {"type": "string"}}}},
                      **{str(code): {"description": "error in Keystone's format",
                                     "content": {"application/json": {"schema": {"type": "object"}}}}
                         for code in (401, 403)}}},
}

# Attributes every LogRecord has: the rest came from `extra=` and are logged as fields.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            out["request_id"] = request_id
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            out.update(zip(_ACCESS_FIELDS, record.args, strict=True))
        out.update((k, v) for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_"))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str)


def setup_logging(level: int = logging.INFO, stream: IO[str] | None = None) -> logging.Handler:
    """Make every log record of the process (uvicorn's included) one JSON line on `stream` (stderr)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    return handler

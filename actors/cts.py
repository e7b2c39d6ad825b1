"""Cloud Trace Service (CTS-1): what a trace of one API call holds, and how traces are queried.

Plain rules, no I/O: the daemon's middleware (daemon.api.cts) builds a `Trace` per API call
and stores it through the StateStore; the query route parses a `TraceQuery` and pages the
stored traces with it. Time comes in as aware datetimes, randomness as integers.

Shapes follow the provider's CTS v3 API (`GET /v3/{project_id}/traces`, Huawei Cloud /
Flexible Engine): query parameters `trace_type`, `limit` (default 10, at most 200), `from` and
`to` (UTC milliseconds; default: the last hour), `next` (the `marker` of the previous page:
traces older than it), `tracker_name` (`system`: one tracker per tenant), and the exact-match
filters `service_type`, `user`, `resource_id`, `resource_name`, `resource_type`, `trace_id`,
`trace_name`, `trace_rating` (normal, warning, incident). Answer: `{"traces": [...],
"meta_data": {"count", "marker"}}`, newest first; `marker` is the last trace's id, null on the
last page.

Invariants:
- A trace belongs to exactly one project (`Trace.project`): the caller's token's project, or
  `PROVIDER_PROJECT` for a call with no valid token (401s, public routes), so that only the
  provider's cloud admin sees those. A query lists one project's key range only (TEN-1).
- A trace's id is a UUIDv7 (RFC 9562): its first 48 bits are the call's time in ms, so
  store keys `PROJECT/TRACE_ID` sort by time within a project, and the `marker` is the id.
- A trace never holds a secret: no token, no request or response body (only a resource's
  `name` from a create's body and its `id` from the answer, and the error message).
"""

from __future__ import annotations

import enum
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import attrs

from actors.identity import PROVIDER_PROJECT
from runtime.errors import InvalidRequest

TRACE_KIND = "trace"  # StateStore kind of traces; key: PROJECT/TRACE_ID
NO_PROJECT = PROVIDER_PROJECT  # where calls without a valid token are traced (cloud admin only)
DEFAULT_LIMIT = 10
MAX_LIMIT = 200
DEFAULT_WINDOW = timedelta(hours=1)
MESSAGE_MAX = 512  # characters of an error message kept in a trace
TRACKER = "system"  # CTS-1: one (management) tracker per tenant

# Service type of each API, by the first segment of its path (the provider's service acronyms).
SERVICES: dict[str, str] = {"identity": "IAM", "compute": "ECS", "volume": "EVS", "block-storage": "EVS",
                            "network": "VPC", "v3": "CTS"}
DAEMON_SERVICE = "FE"  # the daemon's own routes (API description, metrics)
_VERSION = re.compile(r"v\d+(\.\d+)?")
_NOT_RESOURCES = frozenset({"action", "detail"})
_TRACE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_VERBS = {"POST": "create", "DELETE": "delete", "PUT": "update", "PATCH": "update", "HEAD": "head"}
QUERY_PARAMETERS = ("trace_type", "limit", "from", "to", "next", "tracker_name", "service_type", "user",
                    "resource_id", "resource_name", "resource_type", "trace_id", "trace_name", "trace_rating")
_FILTERS = ("service_type", "user", "resource_id", "resource_name", "resource_type", "trace_id", "trace_name")


class TraceRating(enum.Enum):
    """CTS's trace status: normal (the call succeeded), warning (it failed: refused, bad input),
    incident (a fault worse than a failure: the service broke, 5xx)."""

    NORMAL = "normal"
    WARNING = "warning"
    INCIDENT = "incident"

    @classmethod
    def of(cls, status: int) -> TraceRating:
        if status >= 500:
            return cls.INCIDENT
        return cls.WARNING if status >= 400 else cls.NORMAL


def new_trace_id(moment: datetime, random_bits: int) -> str:
    """A UUIDv7: `moment` in ms, then 74 of `random_bits` (the caller draws them from a CSPRNG)."""
    ms = _ms(moment)
    rand_a, rand_b = (random_bits >> 62) & 0xFFF, random_bits & ((1 << 62) - 1)
    return str(uuid.UUID(int=(ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b))


def time_of(trace_id: str) -> int:
    """The ms timestamp a UUIDv7 trace id carries."""
    return int(trace_id[:8] + trace_id[9:13], 16)


def _ms(moment: datetime) -> int:
    if moment.utcoffset() is None:
        raise InvalidRequest(f"trace time must be an aware datetime, got {moment!r}")
    return int(moment.timestamp() * 1000)


def _id_prefix(ms: int) -> str:
    digits = f"{ms:012x}"
    return f"{digits[:8]}-{digits[8:]}"


def key_of(project: str, trace_id: str) -> str:
    """The StateStore key of a trace: sorts by time within `project`; '/' never occurs in a project name."""
    return f"{project}/{trace_id}"


@attrs.frozen
class Resource:
    """What a call acted on, as far as the route, the path and the bodies tell."""

    service_type: str
    resource_type: str
    resource_id: str | None
    trace_name: str
    api_version: str | None


def _singular(collection: str) -> str:
    name = collection.removeprefix("os-")
    if name.endswith("ies"):
        return name[:-3] + "y"
    return name[:-1] if name.endswith("s") and not name.endswith("ss") else name


def resource_of(method: str, template: str, path_params: Mapping[str, Any]) -> Resource:
    """Service, resource type and id, and trace name (e.g. `deleteServer`) of a call on route `template`.

    The resource is the last collection named in the path (its plural made singular, `os-`
    dropped), its id the path parameter that follows it; `action` and `detail` name none.
    """
    segments = [s for s in template.strip("/").split("/") if s]
    service = SERVICES.get(segments[0], DAEMON_SERVICE) if segments else DAEMON_SERVICE
    version = next((s for s in segments if _VERSION.fullmatch(s)), None)
    kind: str | None = None
    ident: str | None = None
    for i, segment in enumerate(segments):
        if segment.startswith("{") and segment.endswith("}"):
            if kind is not None:
                value = path_params.get(segment[1:-1].split(":")[0])
                ident = None if value is None else str(value)
        elif not (segment in _NOT_RESOURCES or _VERSION.fullmatch(segment) or (i == 0 and segment in SERVICES)):
            kind, ident = segment, None
    resource_type = _singular(kind) if kind is not None else "version"
    if segments and segments[-1] == "action" and method == "POST":
        verb = "action"
    elif method == "GET":
        verb = "show" if ident is not None else "list"
    else:
        verb = _VERBS.get(method, method.lower())
    camel = "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_.]", resource_type))
    return Resource(service, resource_type, ident, f"{verb}{camel}"[:64], version)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _only_member(body: bytes, field: str) -> str | None:
    """`body.<X>.<field>` of a body `{X: {...}}` (one member, OpenStack's usual shape), if a string."""
    value = _json_object(body)
    if value is None or len(value) != 1:
        return None
    inner = next(iter(value.values()))
    found = inner.get(field) if isinstance(inner, dict) else None
    return found[:255] if isinstance(found, str) else None


def name_in_request(body: bytes) -> str | None:
    """The resource name a create or update request gives (`{"server": {"name": ...}}`)."""
    return _only_member(body, "name")


def id_in_response(body: bytes) -> str | None:
    """The id of the resource a create answers with (`{"server": {"id": ...}}`)."""
    return _only_member(body, "id")


def error_message(body: bytes) -> str | None:
    """The message of an error answer: Keystone's `error.message`, Nova's `<kind>.message`, CTS's
    `error_msg`; the start of a non-JSON body; at most MESSAGE_MAX characters."""
    value = _json_object(body)
    if value is None:
        text = body[:MESSAGE_MAX].decode("utf-8", "replace").strip()
        return text or None
    if isinstance(value.get("error_msg"), str):
        return str(value["error_msg"])[:MESSAGE_MAX]
    for inner in value.values():
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])[:MESSAGE_MAX]
    return None


@attrs.frozen
class Trace:
    """One API call (CTS-1): who, what, when, result."""

    trace_id: str  # UUIDv7 of `time`
    project: str  # whose trace it is (see the module docstring)
    time: datetime  # aware UTC: the call arrived
    record_time: datetime  # aware UTC: its answer was sent
    user: str | None  # None: no valid token
    auth_method: str | None  # "password" or "sts"
    method: str
    path: str  # route template, e.g. /compute/v2.1/servers/{server_id}; the raw path when no route matched
    service_type: str
    resource_type: str
    resource_id: str | None
    resource_name: str | None
    trace_name: str
    api_version: str | None
    status: int
    message: str | None  # the error message of a failed call
    request_id: str
    source_ip: str | None

    @property
    def rating(self) -> TraceRating:
        return TraceRating.of(self.status)

    @property
    def key(self) -> str:
        return key_of(self.project, self.trace_id)

    def to_record(self) -> dict[str, Any]:
        """The StateStore value (JSON): the fields, times as ISO 8601 with their offset."""
        record = attrs.asdict(self)
        record["time"], record["record_time"] = self.time.isoformat(), self.record_time.isoformat()
        return record

    @classmethod
    def from_record(cls, value: Mapping[str, Any]) -> Trace:
        fields = dict(value)
        fields["time"] = datetime.fromisoformat(fields["time"])
        fields["record_time"] = datetime.fromisoformat(fields["record_time"])
        return cls(**fields)

    def to_api(self) -> dict[str, Any]:
        """The trace as CTS v3 shows it, plus `project_id`, `http_method`, `path` and `user.auth_method`."""
        user = None if self.user is None else {"id": self.user, "name": self.user,
                                               "domain": {"id": "default", "name": "Default"},
                                               "auth_method": self.auth_method}
        return {
            "trace_id": self.trace_id, "trace_name": self.trace_name, "trace_rating": self.rating.value,
            "trace_type": "ApiCall", "code": str(self.status), "message": self.message,
            "api_version": self.api_version, "time": _ms(self.time), "record_time": _ms(self.record_time),
            "user": user, "service_type": self.service_type, "resource_type": self.resource_type,
            "resource_id": self.resource_id, "resource_name": self.resource_name, "source_ip": self.source_ip,
            "request_id": self.request_id, "project_id": self.project, "http_method": self.method,
            "path": self.path,
        }


def _text(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is not None and not value:
        raise InvalidRequest(f"query parameter {name}: empty (valid: leave it out, or give a value)")
    return value


def _int(params: Mapping[str, str], name: str, valid: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if not re.fullmatch(r"\d{1,16}", value):
        raise InvalidRequest(f"query parameter {name}: {value[:40]!r} is not a number (valid: {valid})")
    return int(value)


@attrs.frozen
class TraceQuery:
    """A parsed `GET /v3/{project_id}/traces` (see the module docstring for the parameters)."""

    project: str
    since_ms: int
    until_ms: int
    limit: int = DEFAULT_LIMIT
    data: bool = False  # trace_type=data: OBS data traces, which this cloud has none of
    next: str | None = None
    rating: TraceRating | None = None
    filters: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, project: str, params: Mapping[str, str], now: datetime) -> TraceQuery:
        """Validate the query parameters, or raise InvalidRequest naming the parameter and what is valid."""
        unknown = sorted(set(params) - set(QUERY_PARAMETERS))
        if unknown:
            raise InvalidRequest(f"query parameter {unknown[0]}: unknown (valid: {', '.join(QUERY_PARAMETERS)})")
        trace_type = params.get("trace_type", "system")
        if trace_type not in ("system", "data"):
            raise InvalidRequest(f"query parameter trace_type: {trace_type[:40]!r} is not a trace type "
                                 f"(valid: system, data)")
        tracker = params.get("tracker_name", TRACKER)
        if tracker != TRACKER:
            raise InvalidRequest(f"query parameter tracker_name: no tracker {tracker[:40]!r} "
                                 f"(valid: {TRACKER}, the one tracker of a tenant)")
        limit = _int(params, "limit", f"1 to {MAX_LIMIT}")
        if limit is not None and not 1 <= limit <= MAX_LIMIT:
            raise InvalidRequest(f"query parameter limit: {limit} is out of range (valid: 1 to {MAX_LIMIT})")
        until = _int(params, "to", "a UTC timestamp in milliseconds, 13 digits")
        until_ms = _ms(now) if until is None else until
        since = _int(params, "from", "a UTC timestamp in milliseconds, 13 digits")
        since_ms = until_ms - int(DEFAULT_WINDOW.total_seconds() * 1000) if since is None else since
        if since_ms > until_ms or until_ms >= 1 << 48:
            raise InvalidRequest(f"query parameters from/to: {since_ms} to {until_ms} is not a time range "
                                 f"(valid: from <= to, UTC milliseconds)")
        marker = _text(params, "next")
        if marker is not None and not _TRACE_ID.fullmatch(marker):
            raise InvalidRequest(f"query parameter next: {marker[:40]!r} is not a trace id "
                                 f"(valid: meta_data.marker of the previous page)")
        rating = _text(params, "trace_rating")
        if rating is not None and rating not in {r.value for r in TraceRating}:
            raise InvalidRequest(f"query parameter trace_rating: {rating[:40]!r} is not a rating "
                                 f"(valid: {', '.join(r.value for r in TraceRating)})")
        filters = tuple((name, value) for name in _FILTERS if (value := _text(params, name)) is not None)
        return cls(project, since_ms, until_ms, DEFAULT_LIMIT if limit is None else limit, trace_type == "data",
                   marker, None if rating is None else TraceRating(rating), filters)

    @property
    def prefix(self) -> str:
        """A StateStore key prefix that holds every trace of the project in [from, to] (and a few more)."""
        low, high = _id_prefix(self.since_ms), _id_prefix(self.until_ms)
        common = next((i for i, (a, b) in enumerate(zip(low, high, strict=True)) if a != b), len(low))
        return key_of(self.project, low[:common])

    def matches(self, trace: Trace) -> bool:
        if trace.project != self.project or not self.since_ms <= time_of(trace.trace_id) <= self.until_ms:
            return False
        if self.next is not None and trace.trace_id >= self.next:
            return False
        if self.rating is not None and trace.rating is not self.rating:
            return False
        shown = trace.to_api()
        return all((shown["user"] or {}).get("name") == value if name == "user" else shown[name] == value
                   for name, value in self.filters)

    def page(self, traces: Iterable[Trace]) -> tuple[list[Trace], str | None]:
        """The newest `limit` matching traces, newest first, and the marker of the next page (None: no more)."""
        if self.data:
            return [], None
        found = sorted((t for t in traces if self.matches(t)), key=lambda t: t.trace_id, reverse=True)
        shown = found[:self.limit]
        return shown, shown[-1].trace_id if len(found) > self.limit else None


def page_body(traces: list[Trace], marker: str | None) -> dict[str, Any]:
    """The CTS v3 answer of a trace query."""
    return {"traces": [t.to_api() for t in traces], "meta_data": {"count": len(traces), "marker": marker}}


"""CTS-1 domain rules (actors.cts): the trace of a call, its rating, its key, and the query
(filters, time window, paging) in the provider's CTS v3 shape; TEN-1: a query sees one project."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.cts import (
    DEFAULT_LIMIT,
    NO_PROJECT,
    Trace,
    TraceQuery,
    TraceRating,
    error_message,
    id_in_response,
    key_of,
    name_in_request,
    new_trace_id,
    resource_of,
    time_of,
)
from runtime.errors import InvalidRequest

T0 = datetime(2025, 3, 3, 9, 0, 0, tzinfo=UTC)
MS0 = int(T0.timestamp() * 1000)
times = st.integers(min_value=0, max_value=10 * 365 * 86400 * 1000).map(lambda ms: T0 + timedelta(milliseconds=ms))
randoms = st.integers(min_value=0, max_value=(1 << 74) - 1)


def trace(project: str = "acme", at: datetime = T0, status: int = 200, rand: int = 0, **fields: object) -> Trace:
    values: dict[str, object] = dict(
        trace_id=new_trace_id(at, rand), project=project, time=at, record_time=at + timedelta(milliseconds=3),
        user="alice", auth_method="password", method="GET", path="/compute/v2.1/servers/{server_id}",
        service_type="ECS", resource_type="server", resource_id="s-1", resource_name=None, trace_name="showServer",
        api_version="v2.1", status=status, message=None, request_id="req-1", source_ip="192.0.2.7")
    values.update(fields)
    return Trace(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(("status", "rating"), [(200, "normal"), (202, "normal"), (300, "normal"),
                                                (400, "warning"), (401, "warning"), (403, "warning"),
                                                (404, "warning"), (500, "incident"), (503, "incident")])
def test_cts1_rating_follows_the_status(status: int, rating: str) -> None:
    assert TraceRating.of(status).value == rating


@given(times, randoms)
def test_cts1_a_trace_id_is_a_uuid7_carrying_its_time(at: datetime, rand: int) -> None:
    trace_id = new_trace_id(at, rand)
    assert trace_id[14] == "7" and trace_id[19] in "89ab"
    assert time_of(trace_id) == int(at.timestamp() * 1000)


@given(times, times, randoms, randoms)
def test_cts1_keys_sort_by_time_within_a_project(a: datetime, b: datetime, ra: int, rb: int) -> None:
    ka, kb = key_of("acme", new_trace_id(a, ra)), key_of("acme", new_trace_id(b, rb))
    if int(a.timestamp() * 1000) < int(b.timestamp() * 1000):
        assert ka < kb


def test_cts1_the_trace_id_needs_an_aware_time() -> None:
    with pytest.raises(InvalidRequest, match="aware"):
        new_trace_id(datetime(2025, 1, 1), 0)


@pytest.mark.parametrize(("method", "template", "params", "expected"), [
    ("POST", "/compute/v2.1/servers", {}, ("ECS", "server", None, "createServer", "v2.1")),
    ("GET", "/compute/v2.1/servers/{server_id}", {"server_id": "s-1"}, ("ECS", "server", "s-1", "showServer", "v2.1")),
    ("POST", "/compute/v2.1/servers/{server_id}/action", {"server_id": "s-1"},
     ("ECS", "server", "s-1", "actionServer", "v2.1")),
    ("DELETE", "/compute/v2.1/servers/{server_id}", {"server_id": "s-1"},
     ("ECS", "server", "s-1", "deleteServer", "v2.1")),
    ("GET", "/compute/v2.1/servers/detail", {}, ("ECS", "server", None, "listServer", "v2.1")),
    ("GET", "/compute/v2.1/os-quota-sets/{project}/detail", {"project": "acme"},
     ("ECS", "quota-set", "acme", "showQuotaSet", "v2.1")),
    ("POST", "/identity/v3/auth/tokens", {}, ("IAM", "token", None, "createToken", "v3")),
    ("GET", "/identity", {}, ("IAM", "version", None, "listVersion", None)),
    ("GET", "/v3/{project_id}/traces", {"project_id": "acme"}, ("CTS", "trace", None, "listTrace", "v3")),
    ("GET", "/metrics", {}, ("FE", "metric", None, "listMetric", None)),
    ("GET", "/volume/v3/{project_id}/volumes/{volume_id}", {"project_id": "acme", "volume_id": "v-1"},
     ("EVS", "volume", "v-1", "showVolume", "v3")),
    ("PUT", "/network/v2.0/security-group-rules/{rule_id}", {"rule_id": "r-1"},
     ("VPC", "security-group-rule", "r-1", "updateSecurityGroupRule", "v2.0")),
    ("GET", "/network/v2.0/policies", {}, ("VPC", "policy", None, "listPolicy", "v2.0")),
])
def test_cts1_what_a_call_acted_on_comes_from_its_route(method: str, template: str, params: dict[str, str],
                                                        expected: tuple[object, ...]) -> None:
    r = resource_of(method, template, params)
    assert (r.service_type, r.resource_type, r.resource_id, r.trace_name, r.api_version) == expected


def test_cts1_names_ids_and_messages_come_from_the_bodies_never_secrets() -> None:
    assert name_in_request(b'{"server": {"name": "web-1", "flavorRef": "s3.medium.2"}}') == "web-1"
    login = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "alice", "password": "correct horse battery"}}}, "scope": {"project": {"name": "acme"}}}}
    assert name_in_request(json.dumps(login).encode()) is None
    assert name_in_request(b"not json") is None and name_in_request(b'{"a": 1, "b": 2}') is None
    assert id_in_response(b'{"server": {"id": "s-9", "links": []}}') == "s-9"
    assert id_in_response(b'{"token": {"methods": ["password"]}}') is None
    assert error_message(b'{"error": {"code": 401, "title": "Unauthorized", "message": "bad token"}}') == "bad token"
    assert error_message(b'{"forbidden": {"code": 403, "message": "Quota exceeded"}}') == "Quota exceeded"
    assert error_message(b'{"error_code": "CTS.0005", "error_msg": "limit"}') == "limit"
    assert error_message(b"plain text failure") == "plain text failure"
    assert error_message(b"") is None
    assert len(error_message(json.dumps({"error": {"message": "x" * 2000}}).encode()) or "") == 512


def test_cts1_a_trace_survives_the_store_and_shows_in_the_cts_v3_shape() -> None:
    t = trace(status=404, message="server s-1 not found", resource_name="web-1")
    stored = json.loads(json.dumps(t.to_record()))
    assert Trace.from_record(stored) == t
    shown = t.to_api()
    assert {"trace_id", "trace_name", "trace_rating", "trace_type", "code", "message", "api_version", "time",
            "record_time", "user", "service_type", "resource_type", "resource_id", "resource_name", "source_ip",
            "request_id"} <= set(shown)
    assert shown["code"] == "404" and shown["trace_rating"] == "warning" and shown["trace_type"] == "ApiCall"
    assert shown["time"] == MS0 and shown["record_time"] == MS0 + 3
    assert shown["user"] == {"id": "alice", "name": "alice", "domain": {"id": "default", "name": "Default"},
                             "auth_method": "password"}
    assert trace(user=None, auth_method=None).to_api()["user"] is None


def test_cts1_query_defaults_are_the_last_hour_and_ten_traces() -> None:
    q = TraceQuery.parse("acme", {}, T0)
    assert (q.since_ms, q.until_ms, q.limit, q.data, q.next) == (MS0 - 3_600_000, MS0, DEFAULT_LIMIT, False, None)


@pytest.mark.parametrize(("params", "complaint"), [
    ({"limit": "0"}, "limit: 0 is out of range"), ({"limit": "201"}, "limit: 201"), ({"limit": "ten"}, "limit"),
    ({"from": "2", "to": "1"}, "from/to"), ({"trace_type": "all"}, "trace_type"),
    ({"tracker_name": "mine"}, "tracker_name"), ({"next": "abc"}, "next"), ({"trace_rating": "bad"}, "trace_rating"),
    ({"color": "red"}, "color: unknown"), ({"user": ""}, "user: empty"),
])
def test_cts1_bad_queries_are_refused_precisely(params: dict[str, str], complaint: str) -> None:
    with pytest.raises(InvalidRequest, match=complaint):
        TraceQuery.parse("acme", params, T0)


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=1 << 40), st.integers(min_value=0, max_value=1 << 40),
       st.integers(min_value=0, max_value=1 << 40), randoms)
def test_cts1_the_listed_prefix_holds_every_trace_of_the_window(a: int, b: int, c: int, rand: int) -> None:
    since, until = sorted((MS0 + a, MS0 + b))
    at = since + c % (until - since + 1)
    q = TraceQuery.parse("acme", {"from": str(since), "to": str(until)}, T0)
    assert key_of("acme", new_trace_id(datetime.fromtimestamp(at / 1000, UTC), rand)).startswith(q.prefix)
    assert q.prefix.startswith("acme/")


def test_ten1_a_project_prefix_never_covers_another_project() -> None:
    """'acme-2' and 'acme.x' sort next to 'acme', but their keys are outside acme's prefix."""
    q = TraceQuery.parse("acme", {"from": "0", "to": str(MS0)}, T0)
    for other in ("acme-2", "acme.x", "acme2", "acm"):
        assert not key_of(other, new_trace_id(T0, 1)).startswith(q.prefix)
    assert not q.matches(trace(project="globex"))
    assert not q.matches(trace(project=NO_PROJECT))


def test_cts1_filters_are_exact_matches() -> None:
    t = trace(status=403)
    assert TraceQuery.parse("acme", {"resource_id": "s-1", "trace_rating": "warning", "user": "alice",
                                     "service_type": "ECS"}, T0).matches(t)
    for params in ({"resource_id": "s-2"}, {"trace_rating": "normal"}, {"user": "bob"}, {"service_type": "IAM"},
                   {"resource_type": "volume"}, {"trace_name": "deleteServer"}, {"trace_id": new_trace_id(T0, 9)}):
        assert not TraceQuery.parse("acme", params, T0).matches(t)
    assert not TraceQuery.parse("acme", {"from": str(MS0 + 1)}, T0 + timedelta(seconds=1)).matches(t)
    assert TraceQuery.parse("acme", {"trace_type": "data"}, T0).page([t]) == ([], None)


@settings(max_examples=50)
@given(st.lists(st.integers(min_value=0, max_value=3_599_000), max_size=40), st.integers(min_value=1, max_value=12))
def test_cts1_paging_with_next_gives_every_trace_once_newest_first(offsets: list[int], limit: int) -> None:
    traces = [trace(at=T0 - timedelta(milliseconds=o), rand=i) for i, o in enumerate(offsets)]
    traces += [trace(project="globex", at=T0 - timedelta(milliseconds=o), rand=i) for i, o in enumerate(offsets)]
    seen: list[Trace] = []
    params = {"limit": str(limit)}
    while True:
        page, marker = TraceQuery.parse("acme", params, T0).page(traces)
        assert len(page) <= limit
        seen += page
        if marker is None:
            break
        assert marker == page[-1].trace_id
        params = {"limit": str(limit), "next": marker}
    assert [t.trace_id for t in seen] == sorted((t.trace_id for t in traces if t.project == "acme"), reverse=True)

"""CTS-1 over HTTP (daemon.api.cts): every call traced with its request id, queried per tenant at
GET /v3/{project_id}/traces (TEN-1: a tenant sees only its own traces), written in batches
through the StateStore, and still there after a restart of the whole daemon on the same file."""

from __future__ import annotations

import socket
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.cts import TRACE_KIND, Trace, new_trace_id
from actors.identity import PROVIDER_PROJECT, Directory, Role
from daemon.api.app import create_app
from daemon.api.cts import TraceRecorder
from daemon.config import parse
from daemon.observability import Metrics
from daemon.service import Daemon
from runtime.backends.sqlite_state import SqliteStateStore
from runtime.errors import BackendError
from runtime.secrets import SeededSecrets, SystemSecrets
from runtime.state import RecordId, StateStore, Write
from tests.daemon.test_keystone_api import CHEAP, PASSWORD, TOKENS, URL, Clock, auth_body

T0 = datetime(2025, 3, 3, 9, 0, 0, tzinfo=UTC)
MS0 = int(T0.timestamp() * 1000)
REQUEST_ID = "X-Openstack-Request-Id"


def directory() -> Directory:
    d = Directory(SeededSecrets(1), hasher=CHEAP)
    for project in ("acme", "globex"):
        d.create_project(project)
        d.create_user(project, "alice", PASSWORD, frozenset({Role.ADMIN}))
        d.create_user(project, "rita", PASSWORD, frozenset({Role.READER}))
    d.create_user(PROVIDER_PROJECT, "root", PASSWORD, frozenset({Role.CLOUD_ADMIN}))
    return d


class Api:
    """The app with a trace recorder on an SQLite store, called through httpx's ASGI transport."""

    def __init__(self, store: StateStore, clock: Clock, client: str = "192.0.2.10") -> None:
        self.directory, self.clock = directory(), clock
        self.metrics = Metrics()
        self.recorder = TraceRecorder(store, self.metrics)
        self.app = create_app(self.directory, clock, URL, traces=self.recorder, metrics=self.metrics)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app, client=(client, 40000)),
                                      base_url=URL)
        self.tokens: dict[tuple[str, str], str] = {}

    async def call(self, method: str, path: str, token: str | None = None, headers: Mapping[str, str] | None = None,
                   **kwargs: Any) -> httpx.Response:
        sent = {**(headers or {}), **({"X-Auth-Token": token} if token else {})}
        response = await self.http.request(method, path, headers=sent, **kwargs)
        self.clock.now += timedelta(milliseconds=7)  # distinct, increasing trace times
        return response

    async def login(self, user: str, project: str) -> str:
        if (user, project) not in self.tokens:
            response = await self.call("POST", TOKENS, json=auth_body(user, project))
            assert response.status_code == 201, response.text
            self.tokens[(user, project)] = response.headers["X-Subject-Token"]
        return self.tokens[(user, project)]

    async def traces(self, project: str, token: str, **params: Any) -> httpx.Response:
        return await self.call("GET", f"/v3/{project}/traces", token, params={"from": "0", **params})

    async def all_traces(self, project: str, token: str) -> list[dict[str, Any]]:
        """Every trace of `project` as `token` sees it, following the markers."""
        found: list[dict[str, Any]] = []
        params: dict[str, str] = {"limit": "200"}
        while True:
            response = await self.traces(project, token, **params)
            assert response.status_code == 200, response.text
            body = response.json()
            found += body["traces"]
            assert body["meta_data"]["count"] == len(body["traces"])
            if body["meta_data"]["marker"] is None:
                return found
            params["next"] = body["meta_data"]["marker"]


def with_api(test: Callable[[Api], Awaitable[None]], path: Path | None = None,
             client: str = "192.0.2.10") -> None:
    """Run `test` with an Api on a fresh SQLite store (in `path`, or a temporary directory)."""
    async def main(where: Path) -> None:
        async with await SqliteStateStore.open(where / "state.db") as store:
            api = Api(store, Clock(T0), client)
            async with anyio.create_task_group() as tg:
                tg.start_soon(api.recorder.run)
                try:
                    await test(api)
                finally:
                    await api.http.aclose()
                    tg.cancel_scope.cancel()
    if path is not None:
        anyio.run(main, path)
        return
    with tempfile.TemporaryDirectory() as where:
        anyio.run(main, Path(where))


def test_cts1_every_answer_has_a_request_id_and_the_caller_finds_its_trace() -> None:
    async def test(api: Api) -> None:
        login = await api.call("POST", TOKENS, json=auth_body("alice", "acme"))
        token = login.headers["X-Subject-Token"]
        answers = [login, await api.call("GET", "/identity"), await api.call("GET", "/nowhere", token),
                   await api.call("GET", "/v3/acme/traces"), await api.call("GET", "/openapi.json")]
        ids = [a.headers[REQUEST_ID] for a in answers]
        assert all(i.startswith("req-") for i in ids) and len(set(ids)) == len(ids)
        assert [a.status_code for a in answers] == [201, 300, 404, 401, 200]
        [created] = [t for t in await api.all_traces("acme", token) if t["request_id"] == ids[0]]
        assert created["user"]["name"] == "alice" and created["user"]["auth_method"] == "password"
        assert (created["trace_name"], created["service_type"], created["resource_type"], created["code"],
                created["trace_rating"], created["source_ip"], created["project_id"], created["http_method"],
                created["path"]) == ("createToken", "IAM", "token", "201", "normal", "192.0.2.10", "acme",
                                     "POST", TOKENS)
        assert created["request_id"] == f"req-{created['trace_id']}"
        assert created["time"] == MS0 and created["record_time"] >= created["time"]
        [missing] = [t for t in await api.all_traces("acme", token) if t["request_id"] == ids[2]]
        assert missing["code"] == "404" and missing["trace_rating"] == "warning"
        assert missing["message"] == "no such path: /nowhere" and missing["path"] == "/nowhere"
    with_api(test)


def test_cts1_calls_without_a_valid_token_are_traced_for_the_cloud_admin_only() -> None:
    async def test(api: Api) -> None:
        refused = await api.call("GET", "/v3/acme/traces", "not-a-token")
        failed_login = await api.call("POST", TOKENS, json=auth_body("alice", "acme", password="wrong password"))
        assert refused.status_code == 401 and failed_login.status_code == 401
        root = await api.login("root", PROVIDER_PROJECT)
        provider = {t["request_id"]: t for t in await api.all_traces(PROVIDER_PROJECT, root)}
        unauthenticated = provider[refused.headers[REQUEST_ID]]
        assert unauthenticated["user"] is None and unauthenticated["path"] == "/v3/{project_id}/traces"
        assert unauthenticated["message"] == "the token is unknown, expired or revoked; authenticate again"
        assert provider[failed_login.headers[REQUEST_ID]]["trace_rating"] == "warning"
        alice = await api.login("alice", "acme")
        acme = await api.all_traces("acme", alice)
        assert {refused.headers[REQUEST_ID], failed_login.headers[REQUEST_ID]}.isdisjoint(
            t["request_id"] for t in acme)
        denied = await api.traces(PROVIDER_PROJECT, alice)
        assert denied.status_code == 403 and denied.json()["error_code"] == "FE.0403"
    with_api(test)


def test_ten1_a_tenant_is_refused_another_tenants_traces_and_the_refusal_is_its_own_trace() -> None:
    async def test(api: Api) -> None:
        alice = await api.login("alice", "acme")
        refused = await api.traces("globex", alice)
        assert refused.status_code == 403
        assert refused.json()["error_msg"].startswith("read on project 'globex' refused")
        [trace] = [t for t in await api.all_traces("acme", alice) if t["request_id"] == refused.headers[REQUEST_ID]]
        assert trace["code"] == "403" and trace["message"] == refused.json()["error_msg"]
        root = await api.login("root", PROVIDER_PROJECT)
        assert (await api.traces("globex", root)).status_code == 200  # the cloud admin reads any project
        missing = await api.traces("initech", root)
        assert missing.status_code == 404 and missing.json()["error_code"] == "CTS.0004"
    with_api(test)


def test_cts1_bad_queries_answer_400_in_the_cts_format() -> None:
    async def test(api: Api) -> None:
        alice = await api.login("alice", "acme")
        for params, complaint in (({"limit": "500"}, "limit: 500 is out of range (valid: 1 to 200)"),
                                  ({"trace_status": "normal"}, "trace_status: unknown"),
                                  ({"next": "nope"}, "next: 'nope' is not a trace id")):
            response = await api.traces("acme", alice, **params)
            assert response.status_code == 400, response.text
            assert response.json()["error_code"] == "CTS.0005" and complaint in response.json()["error_msg"]
        twice = await api.call("GET", "/v3/acme/traces?limit=1&limit=2", alice)
        assert twice.status_code == 400 and "once" in twice.json()["error_msg"]
    with_api(test)


def test_cts1_filters_and_paging_over_http() -> None:
    async def test(api: Api) -> None:
        alice = await api.login("alice", "acme")
        for _ in range(23):
            await api.call("GET", "/identity/v3/auth/tokens", alice, headers={"X-Subject-Token": alice})
        pages, params = [], {"limit": "10", "trace_name": "listToken"}
        while True:
            body = (await api.traces("acme", alice, **params)).json()
            pages.append(len(body["traces"]))
            if body["meta_data"]["marker"] is None:
                break
            params["next"] = body["meta_data"]["marker"]
        assert pages == [10, 10, 3]
        warnings = (await api.traces("acme", alice, trace_rating="warning")).json()["traces"]
        assert warnings == []
        window = (await api.traces("acme", alice, **{"from": str(MS0 + 7), "to": str(MS0 + 7 * 3)})).json()
        assert [t["time"] for t in window["traces"]] == [MS0 + 21, MS0 + 14, MS0 + 7]
    with_api(test)


calls = st.lists(st.tuples(st.sampled_from(["acme", "globex"]), st.sampled_from(["alice", "rita"]),
                           st.sampled_from(["/identity/v3", "/v3/acme/traces", "/v3/globex/traces",
                                            "/compute/v2.1/servers", "/v3/provider/traces"])), max_size=12)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls)
def test_ten1_a_tenant_never_sees_another_tenants_traces(script: list[tuple[str, str, str]]) -> None:
    """Whatever the calls, each tenant's traces are exactly the calls its own users made."""
    async def test(api: Api) -> None:
        made: dict[str, set[str]] = {"acme": set(), "globex": set()}
        for project, user, path in script:
            token = await api.login(user, project)
            response = await api.call("GET", path, token)
            made[project].add(response.headers[REQUEST_ID])
        for project in ("acme", "globex"):
            token = await api.login("rita", project)
            seen = await api.all_traces(project, token)
            assert {t["project_id"] for t in seen} <= {project}
            assert {t["user"]["name"] for t in seen} <= {"alice", "rita"}
            assert made[project] <= {t["request_id"] for t in seen}
            other = "globex" if project == "acme" else "acme"
            assert made[other].isdisjoint(t["request_id"] for t in seen)
            assert (await api.traces(other, token)).status_code == 403
    with_api(test)


class CountingStore:
    """A StateStore that counts batches and can be made to fail."""

    def __init__(self, inner: StateStore) -> None:
        self.inner, self.failing = inner, False
        self.batches: list[int] = []

    async def get(self, kind: str, key: str) -> Any:
        return await self.inner.get(kind, key)

    async def list(self, kind: str, prefix: str = "") -> Any:
        return await self.inner.list(kind, prefix)

    async def apply(self, batch: Sequence[Write], expect: Mapping[RecordId, int | None] | None = None) -> int:
        if self.failing:
            raise BackendError("disk on fire")
        self.batches.append(len(batch))
        return await self.inner.apply(batch, expect)

    async def close(self) -> None:
        await self.inner.close()


def traces(n: int) -> list[Trace]:
    return [Trace(new_trace_id(T0, i), "acme", T0, T0, "alice", "password", "GET", "/identity", "IAM", "version",
                  None, None, "listVersion", None, 300, None, f"req-{i}", "192.0.2.1") for i in range(n)]


def test_cts1_traces_are_written_in_batches_and_on_shutdown(tmp_path: Path) -> None:
    """1,201 traces: two full batches of 500 (written at once), the rest when the flusher is cancelled."""
    async def main() -> None:
        async with await SqliteStateStore.open(tmp_path / "state.db") as inner:
            store = CountingStore(inner)
            recorder = TraceRecorder(store, interval_s=3600.0)  # only a full batch or shutdown writes
            async with anyio.create_task_group() as tg:
                tg.start_soon(recorder.run)
                for t in traces(1201):
                    recorder.record(t)
                    if recorder.pending == 500:
                        with anyio.fail_after(30):
                            while recorder.pending >= 500:
                                await anyio.sleep(0.001)
                tg.cancel_scope.cancel()
            assert store.batches == [500, 500, 201] and recorder.pending == 0
            assert len(await inner.list(TRACE_KIND, "acme/")) == 1201
    anyio.run(main)


def test_cts1_a_failing_store_keeps_the_traces_then_drops_the_oldest_and_counts(tmp_path: Path) -> None:
    async def main() -> None:
        async with await SqliteStateStore.open(tmp_path / "state.db") as inner:
            store, metrics = CountingStore(inner), Metrics()
            recorder = TraceRecorder(store, metrics, max_pending=3)
            store.failing = True
            for t in traces(5):
                recorder.record(t)
            with pytest.raises(BackendError):
                await recorder.flush()
            assert recorder.pending == 3
            assert metrics.registry.get_sample_value("fe_cts_traces_dropped_total") == 2
            assert metrics.registry.get_sample_value("fe_cts_flush_failures_total") == 1
            store.failing = False
            await recorder.flush()
            assert [r.value["request_id"] for r in await inner.list(TRACE_KIND)] == ["req-2", "req-3", "req-4"]
            assert metrics.registry.get_sample_value("fe_cts_traces_pending") == 0
    anyio.run(main)


# -- the whole daemon, restarted on the same SQLite file ----------------------------------------

CONFIG = """
[daemon]
region = "eu-west-0"
listen = "127.0.0.1:{port}"
state = "sqlite://{state}"

[[hosts]]
name = "lab-h1"
az = "eu-west-0a"
uri = "test:///default"
vcpus = 64
ram_gb = 256
"""


def run_daemon(state: Path, script: Callable[[Daemon, anyio.from_thread.BlockingPortal], None]) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    config = parse(CONFIG.format(port=listener.getsockname()[1], state=state), "fe.toml", {})
    daemon = Daemon(config, {"FE_ADMIN_PASSWORD": PASSWORD}, directory=Directory(SystemSecrets(), hasher=CHEAP),
                    sock=listener, handle_signals=False)
    with anyio.from_thread.start_blocking_portal() as portal:
        done = portal.start_task_soon(daemon.run)
        while not daemon.ready and not done.done():
            time.sleep(0.01)
        assert daemon.ready, done.exception()
        try:
            script(daemon, portal)
        finally:
            daemon.stop()
            done.result(timeout=60)


def token(url: str, user: str, project: str) -> str:
    response = httpx.post(f"{url}{TOKENS}", json=auth_body(user, project), trust_env=False)
    assert response.status_code == 201, response.text
    return response.headers["X-Subject-Token"]


def test_cts1_traces_survive_a_restart_of_the_daemon(tmp_path: Path) -> None:
    """Run 1: acme creates, shows and deletes a server, globex lists; SIGTERM-like stop. Run 2 on the
    same SQLite file: every trace is there, with the server's id and name, each tenant's only."""
    state = tmp_path / "state.db"
    first: dict[str, Any] = {}

    def before(daemon: Daemon, portal: anyio.from_thread.BlockingPortal) -> None:
        portal.call(daemon.create_project, "acme")
        portal.call(daemon.create_project, "globex")
        for project in ("acme", "globex"):
            portal.call(daemon.create_user, project, "alice", PASSWORD, frozenset({Role.ADMIN}))
        url, compute = daemon.public_url, f"{daemon.public_url}/compute/v2.1"
        with httpx.Client(trust_env=False, timeout=60) as http:
            acme = {"X-Auth-Token": token(url, "alice", "acme")}
            created = http.post(f"{compute}/servers", headers=acme, json={"server": {
                "name": "cts-web", "flavorRef": "s3.medium.2", "availability_zone": "eu-west-0a"}})
            assert created.status_code == 202, created.text
            sid = created.json()["server"]["id"]
            shown = http.get(f"{compute}/servers/{sid}", headers=acme)
            deleted = http.delete(f"{compute}/servers/{sid}", headers=acme)
            listed = http.get(f"{compute}/servers", headers={"X-Auth-Token": token(url, "alice", "globex")})
            assert (shown.status_code, deleted.status_code, listed.status_code) == (200, 204, 200)
        first.update(sid=sid, ids={r.headers[REQUEST_ID] for r in (created, shown, deleted)},
                     globex=listed.headers[REQUEST_ID], created=created.headers[REQUEST_ID])

    def after(daemon: Daemon, portal: anyio.from_thread.BlockingPortal) -> None:
        url = daemon.public_url
        with httpx.Client(trust_env=False, timeout=60) as http:
            acme = http.get(f"{url}/v3/acme/traces", params={"from": "0", "limit": "200"},
                            headers={"X-Auth-Token": token(url, "alice", "acme")}).json()["traces"]
        by_id = {t["request_id"]: t for t in acme}
        assert first["ids"] <= set(by_id) and first["globex"] not in by_id
        created = by_id[first["created"]]
        assert (created["trace_name"], created["resource_id"], created["resource_name"], created["code"],
                created["service_type"]) == ("createServer", first["sid"], "cts-web", "202", "ECS")
        assert {by_id[i]["trace_name"] for i in first["ids"]} == {"createServer", "showServer", "deleteServer"}
        assert {t["project_id"] for t in acme} == {"acme"}

    run_daemon(state, before)
    run_daemon(state, after)

"""Observability of `fe daemon` (issue 5 item 6; TEN-1, SEC-1): Prometheus metrics from the actors'
events and snapshot, API latency by route template, who may scrape /metrics, and JSON logs."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.az import AZSnapshot, ServerView
from actors.identity import PROVIDER_PROJECT, Role
from actors.region import RegionSnapshot
from actors.servers import ServerState
from daemon.api.app import create_app
from daemon.observability import REQUEST_ID, JsonFormatter, Metrics, setup_logging
from daemon.service import Daemon
from runtime.actor import Actor, ActorSystem
from runtime.driver import AnyioDriver
from runtime.errors import ActorCrashed
from runtime.events import EventLog
from tests.daemon.test_cts_api import REQUEST_ID as REQUEST_ID_HEADER
from tests.daemon.test_cts_api import directory, run_daemon, token
from tests.daemon.test_keystone_api import PASSWORD, TOKENS, URL, Clock, auth_body


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def view(sid: str, state: ServerState) -> ServerView:
    return ServerView(sid, "acme", state.value, "h1", True, None, False, False, False)


def test_servers_by_state_come_from_the_region_snapshot_and_are_never_stale() -> None:
    metrics = Metrics()
    metrics.show_servers(RegionSnapshot((
        AZSnapshot("eu-west-0a", (view("a", ServerState.ACTIVE), view("b", ServerState.ACTIVE),
                                  view("c", ServerState.SHUTOFF)), ()),
        AZSnapshot("eu-west-0b", (view("d", ServerState.DOWN),), ("h2",)))))
    got = samples(metrics.render().decode())
    assert got[("fe_servers", (("az", "eu-west-0a"), ("state", "active")))] == 2
    assert got[("fe_servers", (("az", "eu-west-0a"), ("state", "shutoff")))] == 1
    assert got[("fe_servers", (("az", "eu-west-0a"), ("state", "down")))] == 0
    assert got[("fe_servers", (("az", "eu-west-0b"), ("state", "down")))] == 1
    assert len([k for k in got if k[0] == "fe_servers"]) == 2 * len(ServerState)
    assert got[("fe_region_snapshot_ok", ())] == 1
    metrics.show_servers(None)
    got = samples(metrics.render().decode())
    assert [k for k in got if k[0] == "fe_servers"] == [] and got[("fe_region_snapshot_ok", ())] == 0


def test_recoveries_and_events_are_counted_without_a_tenant_label() -> None:
    metrics = Metrics()
    for kind in ("ServerRecovered", "ServerRecovered", "RecoveryFailed", "ServerCreated"):
        metrics.on_event(12.0, "eu-west-0/eu-west-0a", kind, {"server": "s-1", "tenant": "acme"})
    got = samples(metrics.render().decode())
    assert got[("fe_server_recoveries_total", (("outcome", "recovered"),))] == 2
    assert got[("fe_server_recoveries_total", (("outcome", "failed"),))] == 1
    assert got[("fe_actor_events_total", (("kind", "ServerCreated"),))] == 1
    assert "acme" not in metrics.render().decode()  # TEN-1: nothing of a tenant in the metrics


class Fragile(Actor):
    async def receive(self, msg: Any) -> Any:
        if msg == "crash":
            raise RuntimeError("boom")
        return msg


def test_actor_restarts_are_counted_from_the_runtimes_supervision_events() -> None:
    metrics = Metrics()

    async def main() -> None:
        system = ActorSystem(AnyioDriver(), seed=1, events=EventLog(metrics.on_event))
        async with system.running():
            ref = system.spawn(Fragile, "fragile")
            with pytest.raises(ActorCrashed):
                await ref.ask("crash")
            assert await ref.ask("again") == "again"  # the restarted incarnation answers
    anyio.run(main)
    assert metrics.registry.get_sample_value("fe_actor_restarts_total") == 1
    assert metrics.registry.get_sample_value("fe_actor_escalations_total") == 0


class Scraper:
    """The app with metrics only, called from a chosen client address."""

    def __init__(self) -> None:
        self.directory, self.metrics = directory(), Metrics()
        self.app = create_app(self.directory, Clock(), URL, metrics=self.metrics)

    def call(self, method: str, path: str, client: str = "127.0.0.1", **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, client=(client, 50000))
            async with httpx.AsyncClient(transport=transport, base_url=URL) as http:
                return await http.request(method, path, **kwargs)
        return anyio.run(go)

    def login(self, user: str, project: str) -> str:
        response = self.call("POST", TOKENS, json=auth_body(user, project))
        assert response.status_code == 201, response.text
        return response.headers["X-Subject-Token"]


@pytest.mark.parametrize("client", ["127.0.0.1", "127.8.9.10", "::1"])
def test_sec1_metrics_answer_a_loopback_client_without_a_token(client: str) -> None:
    response = Scraper().call("GET", "/metrics", client)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    assert "fe_api_request_duration_seconds" in response.text and REQUEST_ID_HEADER in response.headers


def test_sec1_metrics_need_a_cloud_admin_token_from_any_other_address() -> None:
    scraper = Scraper()
    assert scraper.call("GET", "/metrics", "192.0.2.9").status_code == 401
    bad = scraper.call("GET", "/metrics", "192.0.2.9", headers={"X-Auth-Token": "forged"})
    assert bad.status_code == 401
    tenant_admin = {"X-Auth-Token": scraper.login("alice", "acme")}
    refused = scraper.call("GET", "/metrics", "192.0.2.9", headers=tenant_admin)
    assert refused.status_code == 403 and "cloud admin" in refused.json()["error"]["message"]
    root = {"X-Auth-Token": scraper.login("root", PROVIDER_PROJECT)}
    assert scraper.call("GET", "/metrics", "192.0.2.9", headers=root).status_code == 200


def test_api_latency_is_observed_by_method_route_template_and_status() -> None:
    scraper = Scraper()
    alice = {"X-Auth-Token": scraper.login("alice", "acme")}
    scraper.call("GET", TOKENS, headers={**alice, "X-Subject-Token": alice["X-Auth-Token"]})
    for path in ("/scan/1", "/scan/2", "/scan/3"):
        scraper.call("GET", path)
    get = scraper.metrics.registry.get_sample_value
    count = "fe_api_request_duration_seconds_count"
    assert get(count, {"method": "POST", "route": TOKENS, "status": "201"}) == 1
    assert get(count, {"method": "GET", "route": TOKENS, "status": "200"}) == 1
    assert get(count, {"method": "GET", "route": "unmatched", "status": "401"}) == 3  # not one label per path


def test_sec1_metrics_are_in_the_openapi_description() -> None:
    paths = Scraper().call("GET", "/openapi.json").json()["paths"]
    assert "get" in paths["/metrics"]


# -- JSON logs ------------------------------------------------------------------------------------

@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    """setup_logging on a buffer; the logging configuration as it was afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate)
                                            for n in ("uvicorn", "uvicorn.error", "uvicorn.access")})
    out = io.StringIO()
    setup_logging(stream=out)
    try:
        yield out
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        for name, (handlers, propagate) in saved[2].items():
            logging.getLogger(name).handlers[:] = handlers
            logging.getLogger(name).propagate = propagate


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_logs_are_one_json_object_per_line_with_the_request_id_and_extra_fields(logged: io.StringIO) -> None:
    log = logging.getLogger("fe.test")
    log.info("outside %s", "any request", extra={"host": "lab-h1"})
    context = REQUEST_ID.set("req-123")
    try:
        log.warning("inside a request\nwith two lines")
        try:
            raise ValueError("bad")
        except ValueError:
            log.exception("failed")
    finally:
        REQUEST_ID.reset(context)
    first, second, third = lines(logged)
    assert first["message"] == "outside any request" and first["host"] == "lab-h1" and "request_id" not in first
    assert (first["level"], first["logger"]) == ("INFO", "fe.test") and first["time"].endswith("+00:00")
    assert second["request_id"] == "req-123" and second["message"] == "inside a request\nwith two lines"
    assert third["level"] == "ERROR" and "ValueError: bad" in third["exception"]


def test_uvicorns_access_log_is_json_with_its_fields_split_out(logged: io.StringIO) -> None:
    logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/metrics", "1.1",
                                             200)
    [line] = lines(logged)
    assert (line["client"], line["method"], line["path"], line["http_version"], line["status"]) == \
        ("127.0.0.1:5000", "GET", "/metrics", "1.1", 200)
    assert line["message"] == '127.0.0.1:5000 - "GET /metrics HTTP/1.1" 200'


def test_the_daemon_serves_servers_by_state_and_logs_each_access_with_its_request_id(tmp_path: Path) -> None:
    """The whole daemon on test:///default: a server created through Nova shows in fe_servers, the
    create in the latency histogram, and uvicorn's access line carries the call's request id."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("uvicorn.access")
    access.addHandler(handler)

    def script(daemon: Daemon, portal: anyio.from_thread.BlockingPortal) -> None:
        portal.call(daemon.create_project, "acme")
        portal.call(daemon.create_user, "acme", "alice", PASSWORD, frozenset({Role.ADMIN}))
        url = daemon.public_url
        with httpx.Client(trust_env=False, timeout=60) as http:
            acme = {"X-Auth-Token": token(url, "alice", "acme")}
            created = http.post(f"{url}/compute/v2.1/servers", headers=acme, json={"server": {
                "name": "metrics-web", "flavorRef": "s3.medium.2", "availability_zone": "eu-west-0a"}})
            assert created.status_code == 202, created.text
            scraped = samples(http.get(f"{url}/metrics").text)
            http.delete(f"{url}/compute/v2.1/servers/{created.json()['server']['id']}", headers=acme)
        assert scraped[("fe_servers", (("az", "eu-west-0a"), ("state", "active")))] >= 1
        assert scraped[("fe_region_snapshot_ok", ())] == 1
        assert scraped[("fe_api_request_duration_seconds_count",
                        (("method", "POST"), ("route", "/compute/v2.1/servers"), ("status", "202")))] == 1
        assert scraped[("fe_actor_events_total", (("kind", "ServerCreated"),))] >= 1
        accessed = [line for line in lines(out) if line.get("path") == "/compute/v2.1/servers"]
        assert [line["request_id"] for line in accessed] == [created.headers[REQUEST_ID_HEADER]]

    try:
        run_daemon(tmp_path / "state.db", script)
    finally:
        access.removeHandler(handler)

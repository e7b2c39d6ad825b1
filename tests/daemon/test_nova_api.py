"""The whole daemon in-process (daemon.service.Daemon) on libvirt `test:///default`, driven by
openstacksdk and raw HTTP through the Nova v2.1 routes (issue 5; ECS-1, TEN-1, TEN-3)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.from_thread
import httpx
import libvirt
import pytest
from argon2 import PasswordHasher

from actors.identity import Directory, Role
from daemon.api.app import create_app
from daemon.api.cts import TraceRecorder
from daemon.config import parse
from daemon.observability import Metrics
from daemon.service import Daemon
from runtime.secrets import SystemSecrets

PASSWORD = "correct horse battery"
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)  # fast tests; production uses the defaults
FLAVOR = "s3.medium.2"
AZ = "eu-west-0a"
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
# openstacksdk 4.x warns about itself: it builds an all-None InfluxDB section and then warns that InfluxDB is
# deprecated, and its proxies call their own deprecated helpers (RemovedInSDK50Warning).
pytestmark = [pytest.mark.filterwarnings("ignore:Support for InfluxDB requires the influxdb library"),
              pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedInSDK50Warning")]


class Running:
    def __init__(self, daemon: Daemon, portal: anyio.from_thread.BlockingPortal) -> None:
        self.daemon, self.portal = daemon, portal
        self.url = daemon.public_url
        self.compute = f"{self.url}/compute/v2.1"

    def connect(self, user: str, project: str) -> Any:
        import openstack

        return openstack.connect(auth_url=f"{self.url}/identity/v3", username=user, password=PASSWORD,
                                 project_name=project, user_domain_name="Default", project_domain_name="Default",
                                 load_yaml_config=False, load_envvars=False)

    def token(self, user: str, project: str) -> str:
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": "Default"}, "password": PASSWORD}}},
            "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}}
        response = httpx.post(f"{self.url}/identity/v3/auth/tokens", json=body)
        assert response.status_code == 201, response.text
        return response.headers["X-Subject-Token"]

    def call(self, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.compute}{path}", headers={"X-Auth-Token": token}, timeout=60, **kwargs)


def nova_error(response: httpx.Response, code: int, kind: str) -> str:
    assert response.status_code == code, response.text
    body = response.json()
    assert list(body) == [kind] and body[kind]["code"] == code
    message = body[kind]["message"]
    assert isinstance(message, str)
    return message


def domains() -> dict[str, bool]:
    conn = libvirt.open("test:///default")
    try:
        return {d.name(): bool(d.isActive()) for d in conn.listAllDomains()}
    finally:
        conn.close()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The daemon on a free port of 127.0.0.1; projects acme (instances quota 2) and globex."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    config = parse(CONFIG.format(port=listener.getsockname()[1], state=tmp_path_factory.mktemp("nova") / "state.db"),
                   "fe.toml", {})
    directory = Directory(SystemSecrets(), hasher=CHEAP)
    daemon = Daemon(config, {"FE_ADMIN_PASSWORD": PASSWORD}, directory=directory, sock=listener,
                    handle_signals=False)
    saved = {name: os.environ.pop(name) for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                                                     "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY")
             if name in os.environ}
    with anyio.from_thread.start_blocking_portal() as portal:
        done = portal.start_task_soon(daemon.run)
        while not daemon.ready and not done.done():
            time.sleep(0.01)
        assert daemon.ready, done.exception()
        portal.call(daemon.create_project, "acme", {"instances": 2})
        portal.call(daemon.create_project, "globex")
        for project in ("acme", "globex"):
            portal.call(directory.create_user, project, "alice", PASSWORD, frozenset({Role.ADMIN}))
        portal.call(directory.create_user, "acme", "rita", PASSWORD, frozenset({Role.READER}))
        try:
            yield Running(daemon, portal)
        finally:
            daemon.stop()
            done.result(timeout=60)
            listener.close()
            os.environ.update(saved)


def test_ecs1_openstacksdk_creates_lists_shows_stops_starts_and_deletes_a_server(running: Running) -> None:
    import openstack

    conn = running.connect("alice", "acme")
    server = conn.compute.create_server(name="web-1", flavor_id=FLAVOR, image_id="ignored",
                                        availability_zone=AZ)
    server = conn.compute.wait_for_server(server, status="ACTIVE", wait=30, interval=0.2)
    assert domains()[server.id] is True  # a real libvirt domain, running
    assert (server.name, server.flavor["id"], server.availability_zone) == ("web-1", FLAVOR, AZ)
    assert server.id in [s.id for s in conn.compute.servers()]
    assert conn.compute.get_server(server.id).status == "ACTIVE"
    conn.compute.stop_server(server)
    assert conn.compute.wait_for_server(server, status="SHUTOFF", wait=30, interval=0.2).status == "SHUTOFF"
    assert domains()[server.id] is False
    conn.compute.start_server(server)
    conn.compute.wait_for_server(server, status="ACTIVE", wait=30, interval=0.2)
    conn.compute.reboot_server(server, "SOFT")
    assert conn.compute.get_server(server.id).status == "ACTIVE"
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, wait=30, interval=0.2)
    assert server.id not in domains()
    with pytest.raises(openstack.exceptions.NotFoundException):
        conn.compute.get_server(server.id)
    conn.close()


def test_ten3_over_quota_is_novas_403_and_creates_nothing(running: Running) -> None:
    import openstack

    conn = running.connect("alice", "acme")
    created = [conn.compute.create_server(name=f"q{i}", flavor_id=FLAVOR, image_id="x", availability_zone=AZ)
               for i in range(2)]
    before = set(domains())
    with pytest.raises(openstack.exceptions.ForbiddenException) as refused:
        conn.compute.create_server(name="q3", flavor_id=FLAVOR, image_id="x", availability_zone=AZ)
    assert "Quota exceeded for instances: Requested 1, but already used 2 of 2 instances" in str(refused.value)
    token = running.token("alice", "acme")
    raw = running.call("POST", "/servers", token, json={"server": {
        "name": "q4", "flavorRef": FLAVOR, "imageRef": "x", "availability_zone": AZ}})
    assert nova_error(raw, 403, "forbidden") == \
        "Quota exceeded for instances: Requested 1, but already used 2 of 2 instances"
    assert set(domains()) == before
    quota = running.call("GET", "/os-quota-sets/acme/detail", token).json()["quota_set"]
    assert quota["instances"] == {"limit": 2, "in_use": 2, "reserved": 0}
    limits = conn.compute.get_limits().absolute
    assert (limits.instances, limits.instances_used) == (2, 2)
    for server in created:
        conn.compute.delete_server(server)
        conn.compute.wait_for_delete(server, wait=30, interval=0.2)
    conn.close()


def test_ten1_another_projects_user_cannot_see_or_touch_a_server(running: Running) -> None:
    mine, theirs = running.connect("alice", "acme"), running.connect("alice", "globex")
    server = mine.compute.create_server(name="secret", flavor_id=FLAVOR, image_id="x", availability_zone=AZ)
    mine.compute.wait_for_server(server, status="ACTIVE", wait=30, interval=0.2)
    assert server.id not in [s.id for s in theirs.compute.servers()]
    token = running.token("alice", "globex")
    for method, path, kwargs in [("GET", f"/servers/{server.id}", {}), ("DELETE", f"/servers/{server.id}", {}),
                                 ("POST", f"/servers/{server.id}/action", {"json": {"os-stop": None}})]:
        assert server.id in nova_error(running.call(method, path, token, **kwargs), 404, "itemNotFound")
    assert "refused" in nova_error(running.call("GET", "/os-quota-sets/acme", token), 403, "forbidden")
    assert "secret" not in running.call("GET", "/servers/detail", token).text
    assert domains()[server.id] is True  # the refused stop and delete changed nothing
    reader = running.token("rita", "acme")
    assert [s["id"] for s in running.call("GET", "/servers", reader).json()["servers"]] == [server.id]
    nova_error(running.call("DELETE", f"/servers/{server.id}", reader), 403, "forbidden")  # READ only
    mine.compute.delete_server(server)
    mine.compute.wait_for_delete(server, wait=30, interval=0.2)
    mine.close()
    theirs.close()


def test_flavors_quotas_and_catalog_through_openstacksdk(running: Running) -> None:
    conn = running.connect("alice", "globex")
    flavor = conn.compute.get_flavor(FLAVOR)
    assert (flavor.vcpus, flavor.ram) == (1, 2048)
    assert FLAVOR in {f.name for f in conn.compute.flavors()}
    quotas = conn.compute.get_quota_set("globex")
    assert (quotas.instances, quotas.cores, quotas.ram) == (10, 20, 51200)  # the OpenStack defaults
    assert {s["type"] for s in conn.session.auth.get_access(conn.session).service_catalog.catalog} == \
        {"identity", "compute"}
    conn.close()


BAD_CREATES: list[tuple[Any, str]] = [
    ({"server": {"flavorRef": FLAVOR, "availability_zone": AZ}}, "body.server.name: required"),
    ({"server": {"name": "x", "availability_zone": AZ}}, "body.server.flavorRef: required"),
    ({"server": {"name": "x", "flavorRef": FLAVOR}}, "body.server.availability_zone: required"),
    ({"server": {"name": "x", "flavorRef": "s9.huge", "availability_zone": AZ}}, "unknown flavor 's9.huge'"),
    ({"server": {"name": "x", "flavorRef": FLAVOR, "availability_zone": "us-east-1a"}},
     "availability zone 'us-east-1a' is not in this region"),
    ({"server": {"name": 5, "flavorRef": FLAVOR, "availability_zone": AZ}}, "body.server.name: must be"),
    ([], "body: must be a JSON object"),
]


@pytest.mark.parametrize(("body", "expected"), BAD_CREATES)
def test_bad_creates_get_novas_400_naming_the_field(running: Running, body: Any, expected: str) -> None:
    token = running.token("alice", "globex")
    assert expected in nova_error(running.call("POST", "/servers", token, json=body), 400, "badRequest")
    assert running.call("GET", "/servers", token).json() == {"servers": []}


def test_a_refused_transition_is_409_and_a_bad_action_400(running: Running) -> None:
    token = running.token("alice", "globex")
    created = running.call("POST", "/servers", token, json={"server": {
        "name": "w", "flavorRef": FLAVOR, "availability_zone": AZ}})
    assert created.status_code == 202, created.text
    sid = created.json()["server"]["id"]
    assert "cannot start" in nova_error(running.call("POST", f"/servers/{sid}/action", token,
                                                     json={"os-start": None}), 409, "conflictingRequest")
    assert "is not a server action" in nova_error(running.call("POST", f"/servers/{sid}/action", token,
                                                               json={"migrate": None}), 400, "badRequest")
    assert "body.resize.flavorRef: required" in nova_error(running.call("POST", f"/servers/{sid}/action", token,
                                                                        json={"resize": {}}), 400, "badRequest")
    assert "not valid JSON" in nova_error(running.call("POST", f"/servers/{sid}/action", token,
                                                       content=b"{"), 400, "badRequest")
    assert running.call("DELETE", f"/servers/{sid}", token).status_code == 204
    nova_error(running.call("GET", f"/servers/{sid}", token), 404, "itemNotFound")


def test_the_openapi_description_lists_exactly_the_served_routes(running: Running) -> None:
    assert running.daemon.region is not None
    assert running.daemon.store is not None
    app = create_app(running.daemon.directory, lambda: None, running.url, running.daemon.control,  # type: ignore
                     traces=TraceRecorder(running.daemon.store), metrics=Metrics())
    served = {(route.path, method.lower()) for route in app.routes for method in getattr(route, "methods", ())
              if method != "HEAD"}
    document = httpx.get(f"{running.url}/openapi.json").json()
    described = {(path, method) for path, operations in document["paths"].items() for method in operations}
    assert described == served
    assert ("/compute/v2.1/servers/{server_id}/action", "post") in described


def test_sigterm_stops_the_daemon_with_exit_status_0(tmp_path: Path) -> None:
    """`fe daemon --config`: serves, then SIGTERM -> stops accepting, cancels the tree, exits 0.
    Without a power controller the host cannot be fenced, and the log says so."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    config = tmp_path / "fe.toml"
    config.write_text(CONFIG.format(port=port, state=tmp_path / "state.db"))
    env = {**os.environ, "FE_ADMIN_PASSWORD": PASSWORD}
    proc = subprocess.Popen([sys.executable, "-m", "sim.cli", "daemon", "--config", str(config)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=Path(__file__).parents[2])
    try:
        answered = None
        while answered is None and proc.poll() is None:
            try:
                answered = httpx.get(f"http://127.0.0.1:{port}/identity", timeout=1)
            except httpx.TransportError:
                time.sleep(0.05)
        assert answered is not None and answered.status_code == 300
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert "host lab-h1 has no power controller" in out
    assert "SIGTERM: stopping" in out and "reconciled: 0 servers adopted" in out


def test_the_daemon_needs_the_admin_password() -> None:
    config = parse(CONFIG.format(port=8774, state="/var/lib/fe/state.db"), "fe.toml", {})
    with pytest.raises(Exception, match="FE_ADMIN_PASSWORD"):
        Daemon(config, {})

"""The daemon's durable state (issue 5 item 2; TEN-1, TEN-3, ECS-1): what the API acknowledged is
there after a restart on the same state file, and the start reconciles the hosts against it
(orphan domains removed, missing servers built again, duplicates and power put right, intents
of a crash settled). In-process daemons on libvirt `test:///default`, whose domains outlive a
daemon as long as one connection stays open (the fixture keeps one)."""

from __future__ import annotations

import os
import socket
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
from daemon.config import parse
from daemon.control import new_id
from daemon.service import Daemon
from runtime.backends.sqlite_state import SqliteStateStore
from runtime.secrets import SystemSecrets
from runtime.state import Put

PASSWORD = "correct horse battery"
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
FLAVOR = "s3.medium.2"
CONFIG = """
[daemon]
region = "eu-west-0"
listen = "127.0.0.1:{port}"
state = "{scheme}://{state}"
orphans = "{orphans}"

[[hosts]]
name = "lab-h1"
az = "eu-west-0a"
uri = "test:///default"
vcpus = 64
ram_gb = 256
"""
# A domain of the daemon's (its metadata names the server), and one of someone else's (none).
OUR_DOMAIN = """<domain type='test'><name>{name}</name>
<metadata><fe:server xmlns:fe='urn:fe-runtime:server:1' id='{name}'/></metadata>
<memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>"""
FOREIGN_DOMAIN = """<domain type='test'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
<os><type>hvm</type></os></domain>"""


class Life:
    """One daemon's life on the shared state file."""

    def __init__(self, state: Path | str, orphans: str = "delete") -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        scheme = "sqlite" if isinstance(state, Path) or state.startswith("/") else "postgresql"
        config = parse(CONFIG.format(port=self.listener.getsockname()[1], scheme=scheme, state=state,
                                     orphans=orphans), "fe.toml", {})
        self.daemon = Daemon(config, {"FE_ADMIN_PASSWORD": PASSWORD}, directory=Directory(SystemSecrets(),
                                                                                          hasher=CHEAP),
                             sock=self.listener, handle_signals=False)
        self.url = self.daemon.public_url

    def __enter__(self) -> Life:
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self.portal = self._portal_cm.__enter__()
        self.done = self.portal.start_task_soon(self.daemon.run)
        while not self.daemon.ready and not self.done.done():
            time.sleep(0.01)
        assert self.daemon.ready, self.done.exception()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.daemon.stop()
        self.done.result(timeout=60)
        self._portal_cm.__exit__(None, None, None)
        self.listener.close()

    def token(self, user: str, project: str) -> str:
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": "Default"}, "password": PASSWORD}}},
            "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}}
        response = httpx.post(f"{self.url}/identity/v3/auth/tokens", json=body)
        assert response.status_code == 201, response.text
        return response.headers["X-Subject-Token"]

    def call(self, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.url}/compute/v2.1{path}", headers={"X-Auth-Token": token},
                             timeout=60, **kwargs)

    def create(self, token: str, name: str) -> str:
        response = self.call("POST", "/servers", token, json={"server": {
            "name": name, "flavorRef": FLAVOR, "availability_zone": "eu-west-0a", "imageRef": "none"}})
        assert response.status_code == 202, response.text
        return str(response.json()["server"]["id"])

    def statuses(self, token: str) -> dict[str, str]:
        response = self.call("GET", "/servers/detail", token)
        assert response.status_code == 200, response.text
        return {s["name"]: s["status"] for s in response.json()["servers"]}


pytestmark = pytest.mark.usefixtures("no_proxy")  # tests/daemon/conftest.py


def ours(conn: libvirt.virConnect) -> dict[str, bool]:
    return {d.name(): bool(d.isActive()) for d in conn.listAllDomains() if d.name() != "test"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where a test's daemons keep their state: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield str(tmp_path / "state.db")
        return
    import psycopg

    from tests.contract.state_fixtures import postgres_dsn
    schema = f"fe_daemon_{new_id()[:8]}"
    try:
        yield f"{postgres_dsn().removeprefix('postgresql://')}?schema={schema}"
    finally:
        with psycopg.connect(postgres_dsn(), autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_acknowledged_servers_users_tokens_and_quota_use_survive_a_restart(
        state: str, libvirt_test: libvirt.virConnect) -> None:
    """TEN-3: the usage after a restart is the usage before; a token issued before still works.
    On SQLite (the embedded default) and on PostgreSQL."""
    with Life(state) as first:
        first.portal.call(first.daemon.create_project, "acme", {"instances": 3})
        first.portal.call(first.daemon.create_user, "acme", "alice", PASSWORD, frozenset({Role.MEMBER}))
        token = first.token("alice", "acme")
        web, db = first.create(token, "web"), first.create(token, "db")
        assert first.call("POST", f"/servers/{db}/action", token, json={"os-stop": None}).status_code == 202
        before = first.statuses(token)
        assert before == {"web": "ACTIVE", "db": "SHUTOFF"}
        assert first.daemon.reconciled is not None and first.daemon.reconciled.adopted == 0
    assert ours(libvirt_test) == {web: True, db: False}
    with Life(state) as second:
        assert second.statuses(token) == before  # the old token, and the servers as they were
        report = second.daemon.reconciled
        assert report is not None and report.adopted == 2 and not report.orphans and not report.missing
        limits = second.call("GET", "/limits", second.token("alice", "acme")).json()["limits"]["absolute"]
        assert limits["totalInstancesUsed"] == 2 and limits["maxTotalInstances"] == 3
        third = second.create(token, "third")
        quota = second.call("POST", "/servers", token, json={"server": {
            "name": "fourth", "flavorRef": FLAVOR, "availability_zone": "eu-west-0a"}})
        assert quota.status_code == 403 and "already used 3 of 3 instances" in quota.text
        assert second.call("DELETE", f"/servers/{web}", token).status_code == 204
    assert ours(libvirt_test) == {db: False, third: True}
    with Life(state) as again:
        assert again.statuses(token) == {"db": "SHUTOFF", "third": "ACTIVE"}


def test_the_start_removes_orphans_rebuilds_missing_servers_and_puts_power_right(
        tmp_path: Path, libvirt_test: libvirt.virConnect) -> None:
    state = tmp_path / "state.db"
    with Life(state) as first:
        first.portal.call(first.daemon.create_project, "acme")
        first.portal.call(first.daemon.create_user, "acme", "alice", PASSWORD, frozenset({Role.MEMBER}))
        token = first.token("alice", "acme")
        kept, lost, stopped = first.create(token, "kept"), first.create(token, "lost"), first.create(token, "stopped")
        assert first.call("POST", f"/servers/{stopped}/action", token, json={"os-stop": None}).status_code == 202
    orphan, foreign = new_id(), "someone-elses-vm"
    libvirt_test.defineXML(OUR_DOMAIN.format(name=orphan)).create()
    libvirt_test.defineXML(FOREIGN_DOMAIN.format(name=foreign)).create()
    dom = libvirt_test.lookupByName(lost)
    dom.destroy()
    dom.undefine()  # the server's domain is gone
    libvirt_test.lookupByName(kept).destroy()  # stopped behind the daemon's back: it is to run
    libvirt_test.lookupByName(stopped).create()  # started behind its back: it is to be off
    with Life(state) as second:
        report = second.daemon.reconciled
        assert report is not None
        assert report.orphans == [f"domain {orphan} on lab-h1"] and report.orphans_removed == 1
        assert report.missing == [lost] and report.started == [kept] and report.stopped == [stopped]
        assert second.statuses(token) == {"kept": "ACTIVE", "lost": "ACTIVE", "stopped": "SHUTOFF"}
    assert ours(libvirt_test) == {kept: True, lost: True, stopped: False, foreign: True}


def test_orphans_are_only_reported_under_the_keep_policy(tmp_path: Path, libvirt_test: libvirt.virConnect) -> None:
    state = tmp_path / "state.db"
    with Life(state):
        pass
    orphan = new_id()
    libvirt_test.defineXML(OUR_DOMAIN.format(name=orphan))
    with Life(state, orphans="keep") as second:
        report = second.daemon.reconciled
        assert report is not None and report.orphans == [f"domain {orphan} on lab-h1"]
        assert report.orphans_removed == 0
    assert orphan in ours(libvirt_test)


def test_a_crash_mid_create_is_undone_and_a_crash_mid_delete_is_finished(
        tmp_path: Path, libvirt_test: libvirt.virConnect) -> None:
    """The journal's intents (daemon.control): a create never acknowledged leaves nothing; a
    delete in flight is carried out, whatever the crash left of it."""
    state = tmp_path / "state.db"
    with Life(state) as first:
        first.portal.call(first.daemon.create_project, "acme")
        first.portal.call(first.daemon.create_user, "acme", "alice", PASSWORD, frozenset({Role.MEMBER}))
        token = first.token("alice", "acme")
        doomed = first.create(token, "doomed")
    half_made = new_id()
    libvirt_test.defineXML(OUR_DOMAIN.format(name=half_made)).create()  # the crash came after the build

    async def crash_leftovers() -> None:
        store = await SqliteStateStore.open(state)
        try:
            await store.apply([
                Put("intent", "a", {"project": "acme", "op": "create_server", "server": half_made, "az": "eu-west-0a",
                                    "boot_volume": None, "system_volume": f"{half_made}-sys"}),
                Put("intent", "b", {"project": "acme", "op": "delete_server", "server": doomed})])
        finally:
            await store.close()
    anyio.run(crash_leftovers)
    with Life(state) as second:
        report = second.daemon.reconciled
        assert report is not None and report.intents == {"create_server": 1, "delete_server": 1}
        assert not report.orphans  # the half-made domain was the intent's, not an orphan
        assert second.statuses(token) == {}
        limits = second.call("GET", "/limits", token).json()["limits"]["absolute"]
        assert limits["totalInstancesUsed"] == 0
    assert ours(libvirt_test) == {}
    assert os.path.exists(state)

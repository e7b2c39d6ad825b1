"""The whole daemon in-process with [storage] on the one-node Ceph, driven by openstacksdk and raw
HTTP through the Cinder v3 routes and Nova's volume attachments (issue 5; EVS-1, EVS-2, VBS-1,
TEN-1, TEN-3). Every volume, server and backup a test makes is deleted at teardown."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio.from_thread
import httpx
import pytest

from actors.backups import DeleteBackup, ListBackups
from actors.identity import Directory, Role
from actors.tenant import ListServers, RemoveServer
from actors.volumes import DeleteVolume, DetachVolume, ListVolumes
from daemon.config import parse
from daemon.service import Daemon
from runtime.secrets import SystemSecrets
from tests.daemon.test_nova_api import AZ, CHEAP, FLAVOR, PASSWORD, Running, nova_error

CEPH_CONF = "/var/tmp/fe-ceph/ceph.conf"
# Not fe-eu-west-0a: the daemons of other test modules reconcile that pool with orphans = "delete" at
# every start, which would delete this module's volumes when both run at once.
POOL = "fe-eu-west-0b"
STORED = """
[daemon]
region = "eu-west-0"
listen = "127.0.0.1:{port}"
state = "sqlite://{state}"
orphans = "keep"          # other daemons share the pool: never delete what this one did not make

[[hosts]]
name = "lab-h1"
az = "eu-west-0a"
uri = "test:///default"
vcpus = 64
ram_gb = 256

[storage]
ceph_conf = "{ceph_conf}"
pools = {{ "eu-west-0a" = "{pool}" }}
s3 = {{ endpoint = "http://127.0.0.1:7480", access_key_env = "FE_S3_ACCESS_KEY", secret_key_env = "FE_S3_SECRET_KEY" }}
"""
ENVIRON = {"FE_S3_ACCESS_KEY": "TESTKEY", "FE_S3_SECRET_KEY": "TESTSECRET"}
PROJECTS = ("acme", "globex")
pytestmark = [pytest.mark.ceph,
              pytest.mark.filterwarnings("ignore:Support for InfluxDB requires the influxdb library"),
              pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedInSDK50Warning"),
              # its own proxies call find_* with ignore_missing=True, then warn about it
              pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedInSDK60Warning")]


class Stored(Running):
    def volume_url(self, project: str) -> str:
        return f"{self.url}/volume/v3/{project}"

    def cinder(self, method: str, path: str, token: str, project: str, version: str | None = None,
               **kwargs: Any) -> httpx.Response:
        headers = {"X-Auth-Token": token, **({"OpenStack-API-Version": f"volume {version}"} if version else {})}
        return httpx.request(method, f"{self.volume_url(project)}{path}", headers=headers, timeout=120, **kwargs)

    def ask(self, project: str, msg: Any) -> Any:
        control = self.daemon.control
        assert control is not None
        return self.portal.call(control.ask, project, msg)


def cinder_error(response: httpx.Response, code: int, kind: str) -> str:
    assert response.status_code == code, response.text
    body = response.json()
    assert list(body) == [kind] and body[kind]["code"] == code
    message = body[kind]["message"]
    assert isinstance(message, str)
    return message


def rbd_images() -> set[str]:
    done = subprocess.run(["rbd", "-c", CEPH_CONF, "-p", POOL, "ls"], capture_output=True, text=True, timeout=60,
                          check=True)
    return set(done.stdout.split())


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(0.2)


def clean(stored: Stored) -> None:
    """Delete what the tests left: servers (their system disks go with them), backups, volumes."""
    for project in PROJECTS:
        for server in stored.ask(project, ListServers()):
            stored.ask(project, RemoveServer(server.id))
        for backup in stored.ask(project, ListBackups(project)):
            if backup.state != "deleting":
                stored.ask(project, DeleteBackup(project, backup.id))

        def no_backups(project: str = project) -> bool:
            return not stored.ask(project, ListBackups(project))
        wait_until(no_backups, f"the backups of {project} deleted")
        for volume in stored.ask(project, ListVolumes(project)):
            if volume.server_id is not None:
                stored.ask(project, DetachVolume(project, volume.id))
            stored.ask(project, DeleteVolume(project, volume.id))


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stored]:
    yield from daemon_with_storage(tmp_path_factory)


def daemon_with_storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stored]:
    """The daemon with RBD volumes and S3 backups; acme (volumes quota 3, gigabytes 200), globex.
    Everything the tests leave is deleted at the end."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    text = STORED.format(port=listener.getsockname()[1], state=tmp_path_factory.mktemp("cinder") / "state.db",
                         ceph_conf=CEPH_CONF, pool=POOL)
    directory = Directory(SystemSecrets(), hasher=CHEAP)
    daemon = Daemon(parse(text, "fe.toml", ENVIRON), {"FE_ADMIN_PASSWORD": PASSWORD, **ENVIRON},
                    directory=directory, sock=listener, handle_signals=False)
    saved = {name: os.environ.pop(name) for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                                                     "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY")
             if name in os.environ}
    with anyio.from_thread.start_blocking_portal() as portal:
        done = portal.start_task_soon(daemon.run)
        while not daemon.ready and not done.done():
            time.sleep(0.01)
        assert daemon.ready, done.exception()
        portal.call(daemon.create_project, "acme", {"volumes": 3, "gigabytes": 200})
        portal.call(daemon.create_project, "globex")
        for project in PROJECTS:
            portal.call(directory.create_user, project, "alice", PASSWORD, frozenset({Role.ADMIN}))
        portal.call(directory.create_user, "acme", "rita", PASSWORD, frozenset({Role.READER}))
        running = Stored(daemon, portal)
        try:
            yield running
        finally:
            try:
                clean(running)
            finally:
                daemon.stop()
                done.result(timeout=120)
                listener.close()
                os.environ.update(saved)


def test_evs1_openstacksdk_creates_finds_extends_and_deletes_a_volume(stored: Stored) -> None:
    import openstack

    conn = stored.connect("alice", "globex")
    volume = conn.block_storage.create_volume(size=10, availability_zone=AZ, name="data-1", volume_type="SSD",
                                              description="logs")
    volume = conn.block_storage.wait_for_status(volume, status="available", wait=60, interval=0.2)
    assert (volume.size, volume.volume_type, volume.availability_zone, volume.is_bootable) == (10, "SSD", AZ, False)
    assert (volume.name, volume.description, volume.attachments) == ("data-1", "logs", [])
    assert volume.id in rbd_images()  # a real RBD image
    assert conn.block_storage.find_volume("data-1", ignore_missing=False).id == volume.id  # by name, as the CLI
    assert [v.id for v in conn.block_storage.volumes()] == [volume.id]
    conn.block_storage.extend_volume(volume, 20)
    assert conn.block_storage.get_volume(volume.id).size == 20
    conn.block_storage.delete_volume(volume)
    conn.block_storage.wait_for_delete(volume, wait=60, interval=0.2)
    with pytest.raises(openstack.exceptions.NotFoundException):
        conn.block_storage.get_volume(volume.id)
    assert volume.id not in rbd_images()
    conn.close()


def test_ten3_over_quota_is_cinders_413_and_creates_nothing(stored: Stored) -> None:
    import openstack

    conn = stored.connect("alice", "acme")
    made = [conn.block_storage.create_volume(size=50, availability_zone=AZ, name=f"q{i}") for i in range(3)]
    token = stored.token("alice", "acme")
    body = {"volume": {"size": 10, "availability_zone": AZ, "name": "q4"}}
    refused = stored.cinder("POST", "/volumes", token, "acme", json=body)
    assert cinder_error(refused, 413, "overLimit") == \
        "VolumeLimitExceeded: Maximum number of volumes allowed (3) exceeded for quota 'volumes'."
    assert refused.json()["overLimit"]["retryAfter"] == "0"
    with pytest.raises(openstack.exceptions.HttpException) as by_sdk:
        conn.block_storage.create_volume(size=10, availability_zone=AZ, name="q5")
    assert by_sdk.value.status_code == 413
    conn.block_storage.delete_volume(made[0])
    too_big = stored.cinder("POST", "/volumes", token, "acme", json={"volume": {**body["volume"], "size": 120}})
    assert cinder_error(too_big, 413, "overLimit") == (
        "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. "
        "Requested 120G, quota is 200G and 100G has been consumed.")
    assert {v.name for v in conn.block_storage.volumes()} == {"q1", "q2"}
    quota = stored.cinder("GET", "/os-quota-sets/acme?usage=True", token, "acme").json()["quota_set"]
    assert quota["volumes"] == {"limit": 3, "in_use": 2, "reserved": 0}
    assert quota["gigabytes"] == {"limit": 200, "in_use": 100, "reserved": 0}
    assert quota["backups"]["limit"] == 360
    assert conn.block_storage.get_quota_set("acme").volumes == 3
    limits = conn.block_storage.get_limits().absolute
    assert (limits.max_total_volumes, limits.total_volumes_used, limits.total_gigabytes_used) == (3, 2, 100)
    for volume in made[1:]:
        conn.block_storage.delete_volume(volume)
    conn.close()


def test_ten1_another_project_cannot_see_or_touch_a_volume(stored: Stored) -> None:
    conn = stored.connect("alice", "acme")
    volume = conn.block_storage.create_volume(size=10, availability_zone=AZ, name="secret")
    theirs = stored.token("alice", "globex")
    assert "may act on that project only" in cinder_error(stored.cinder("GET", "/volumes/detail", theirs, "acme"),
                                                          403, "forbidden")
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"/volumes/{volume.id}", {}), ("DELETE", f"/volumes/{volume.id}", {}),
        ("POST", f"/volumes/{volume.id}/action", {"json": {"os-extend": {"new_size": 30}}}),
        ("POST", "/backups", {"json": {"backup": {"volume_id": volume.id}}})]
    for method, path, kwargs in calls:
        assert cinder_error(stored.cinder(method, path, theirs, "globex", **kwargs), 404, "itemNotFound") == \
            f"Volume {volume.id} could not be found."
    assert "secret" not in stored.cinder("GET", "/volumes/detail", theirs, "globex").text
    cinder_error(stored.cinder("GET", "/os-quota-sets/acme", theirs, "globex"), 403, "forbidden")
    reader = stored.token("rita", "acme")
    assert [v["id"] for v in stored.cinder("GET", "/volumes", reader, "acme").json()["volumes"]] == [volume.id]
    cinder_error(stored.cinder("DELETE", f"/volumes/{volume.id}", reader, "acme"), 403, "forbidden")
    assert conn.block_storage.get_volume(volume.id).size == 10  # nothing changed
    conn.block_storage.delete_volume(volume)
    conn.close()


def test_evs2_attach_through_nova_extend_in_use_at_3_42_and_detach(stored: Stored) -> None:
    conn = stored.connect("alice", "globex")
    token = stored.token("alice", "globex")
    created = stored.call("POST", "/servers", token, json={"server": {"name": "db", "flavorRef": FLAVOR,
                                                                      "availability_zone": AZ}})
    assert created.status_code == 202, created.text
    sid = created.json()["server"]["id"]
    volume = conn.block_storage.create_volume(size=10, availability_zone=AZ, name="db-data")
    attachment = conn.compute.create_volume_attachment(sid, volume_id=volume.id)
    assert (attachment.volume_id, attachment.server_id) == (volume.id, sid)
    shown = conn.block_storage.get_volume(volume.id)
    assert shown.status == "in-use" and [a["server_id"] for a in shown.attachments] == [sid]
    listed = stored.call("GET", f"/servers/{sid}/os-volume_attachments", token).json()["volumeAttachments"]
    system = next(a["volumeId"] for a in listed if a["volumeId"] != volume.id)  # its system disk (ECS-3)
    assert {a["volumeId"] for a in listed} == {system, volume.id}
    assert "only an available volume is extended" in cinder_error(stored.cinder(
        "POST", f"/volumes/{volume.id}/action", token, "globex", json={"os-extend": {"new_size": 20}}),
        400, "badRequest")
    extended = stored.cinder("POST", f"/volumes/{volume.id}/action", token, "globex", version="3.42",
                             json={"os-extend": {"new_size": 20}})
    assert extended.status_code == 202 and extended.headers["OpenStack-API-Version"] == "volume 3.42"
    assert "cannot delete" in cinder_error(stored.cinder("DELETE", f"/volumes/{volume.id}", token, "globex"),
                                           400, "badRequest")
    assert "Cannot detach a root device volume" in nova_error(
        stored.call("DELETE", f"/servers/{sid}/os-volume_attachments/{system}", token), 400, "badRequest")
    conn.compute.delete_volume_attachment(sid, volume.id, ignore_missing=False)
    after = conn.block_storage.get_volume(volume.id)
    assert (after.status, after.size, after.attachments) == ("available", 20, [])
    nova_error(stored.call("GET", f"/servers/{sid}/os-volume_attachments/{volume.id}", token), 404, "itemNotFound")
    assert stored.call("DELETE", f"/servers/{sid}", token).status_code == 204
    conn.block_storage.delete_volume(volume)
    conn.close()


def test_vbs1_backup_restores_into_a_new_volume_and_into_the_original(stored: Stored) -> None:
    conn = stored.connect("alice", "globex")
    volume = conn.block_storage.create_volume(size=10, availability_zone=AZ, name="src")
    backup = conn.block_storage.create_backup(volume_id=volume.id, name="nightly", description="first")
    backup = conn.block_storage.wait_for_status(backup, status="available", wait=120, interval=0.3)
    assert (backup.volume_id, backup.size, backup.is_incremental, backup.description) == (volume.id, 10, False,
                                                                                           "first")
    assert conn.block_storage.find_backup("nightly", ignore_missing=False).id == backup.id
    restored = conn.block_storage.restore_backup(backup, name="copy")
    copy = conn.block_storage.find_volume("copy", ignore_missing=False)
    assert copy.id == restored.volume_id and copy.size == 10
    conn.block_storage.wait_for_status(copy, status="available", wait=120, interval=0.3)
    conn.block_storage.restore_backup(backup, volume_id=volume.id)
    wait_until(lambda: conn.block_storage.get_volume(volume.id).status == "available", "restored into the original")
    wait_until(lambda: conn.block_storage.get_backup(backup.id).status == "available", "the restores ended")
    conn.block_storage.delete_backup(backup)
    conn.block_storage.wait_for_delete(backup, wait=120, interval=0.3)
    for v in (volume, copy):
        conn.block_storage.delete_volume(v)
    conn.close()


BAD_CREATES: list[tuple[Any, str]] = [
    ({"volume": {"availability_zone": AZ}}, "body.volume.size: required, must be a whole number"),
    ({"volume": {"size": 5, "availability_zone": AZ}}, "outside the valid range of a data disk: 10 to 32768 GB"),
    ({"volume": {"size": 10}}, "body.volume.availability_zone: required, missing (valid: eu-west-0a"),
    ({"volume": {"size": 10, "availability_zone": AZ, "volume_type": "NVMe"}}, "valid: SATA, SSD"),
    ({"volume": {"size": 10, "availability_zone": "eu-west-0b"}}, "availability zone 'eu-west-0b' is not one of"),
    ({"volume": {"size": 10, "availability_zone": AZ, "snapshot_id": "s1"}}, "body.volume.snapshot_id: not supported"),
    ({"volume": {"size": 10, "availability_zone": AZ, "colour": "red"}}, "unknown field(s) colour"),
    ([], "body: must be a JSON object"),
]


@pytest.mark.parametrize(("body", "expected"), BAD_CREATES)
def test_bad_volume_creates_get_cinders_400_naming_the_field(stored: Stored, body: Any, expected: str) -> None:
    token = stored.token("alice", "globex")
    assert expected in cinder_error(stored.cinder("POST", "/volumes", token, "globex", json=body), 400, "badRequest")
    assert stored.cinder("GET", "/volumes", token, "globex").json() == {"volumes": []}


def test_versions_microversions_types_zones_and_the_catalog(stored: Stored) -> None:
    token = stored.token("alice", "globex")
    headers = {"X-Auth-Token": token}
    root = httpx.get(f"{stored.url}/volume", headers=headers)
    assert root.status_code == 300
    assert [(v["id"], v["min_version"], v["version"]) for v in root.json()["versions"]] == [("v3.0", "3.0", "3.42")]
    assert httpx.get(f"{stored.url}/volume/v3", headers=headers).json()["versions"][0]["version"] == "3.42"
    assert stored.cinder("GET", "/types", token, "globex", version="latest").headers["OpenStack-API-Version"] == \
        "volume 3.42"
    assert "maximum is 3.42" in cinder_error(stored.cinder("GET", "/types", token, "globex", version="3.60"),
                                             406, "computeFault")
    conn = stored.connect("alice", "globex")
    assert {t.name for t in conn.block_storage.types()} == {"SATA", "SSD"}
    assert [z.name for z in conn.block_storage.availability_zones()] == [AZ]
    catalog = conn.session.auth.get_access(conn.session).service_catalog.catalog
    urls = {s["type"]: s["endpoints"][0]["url"] for s in catalog}
    assert urls["volumev3"] == urls["block-storage"] == f"{stored.url}/volume/v3/globex"
    conn.close()

"""The provider's sDRS API (daemon.api.sdrs) on the whole daemon in-process, with [storage] on the
one-node Ceph: a pool per AZ (eu-west-0b production, eu-west-0a recovery: SDRS-1) and one libvirt
test host per AZ (issue 5; SDRS-1, SDRS-2, TEN-1).

The two hosts use libvirt's test driver from a node file (`test:///PATH`), not `test:///default`:
`test:///default` is one state shared by every connection of the process, so the two "hosts" would
be one, and a server's DR copy (same id, other AZ) would clash with its parked original there.

Everything a test makes (servers, groups, their volumes and replicas) is deleted at its end."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio.from_thread
import httpx
import pytest

from actors.az import DeleteServer, DescribeServer, ServerDescription
from actors.identity import Directory, Role
from actors.volumes import DeleteVolume, DetachVolume, ListVolumes, VolumeView
from daemon.config import parse
from daemon.service import Daemon
from runtime.errors import NotFound
from runtime.secrets import SystemSecrets
from tests.daemon.test_nova_api import CHEAP, FLAVOR, PASSWORD, Running

CEPH_CONF = "/var/tmp/fe-ceph/ceph.conf"
PRODUCTION, RECOVERY = "eu-west-0b", "eu-west-0a"
POOLS = {PRODUCTION: "fe-eu-west-0b", RECOVERY: "fe-eu-west-0a"}
NODE = """<node>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>64</cores><threads>1</threads><active>64</active>
       <mhz>2000</mhz><model>x86_64</model></cpu>
  <memory>268435456</memory>
</node>
"""
CONFIG = """
[daemon]
region = "eu-west-0"
listen = "127.0.0.1:{port}"
state = "sqlite://{state}"
orphans = "keep"          # other daemons share the pools: never delete what this one did not make

[[hosts]]
name = "lab-0a"
az = "eu-west-0a"
uri = "test://{node}"
vcpus = 64
ram_gb = 256

[[hosts]]
name = "lab-0b"
az = "eu-west-0b"
uri = "test://{node}"
vcpus = 64
ram_gb = 256

[storage]
ceph_conf = "{ceph_conf}"
pools = {{ "eu-west-0a" = "fe-eu-west-0a", "eu-west-0b" = "fe-eu-west-0b" }}
s3 = {{ endpoint = "http://127.0.0.1:7480", access_key_env = "FE_S3_ACCESS_KEY", secret_key_env = "FE_S3_SECRET_KEY" }}
"""
ENVIRON = {"FE_S3_ACCESS_KEY": "TESTKEY", "FE_S3_SECRET_KEY": "TESTSECRET"}
pytestmark = [pytest.mark.ceph]


class Site(Running):
    def sdrs(self, method: str, path: str, token: str, project: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.url}/sdrs/v1/{project}{path}", headers={"X-Auth-Token": token},
                             timeout=120, **kwargs)

    def job(self, token: str, project: str, job_id: str) -> dict[str, Any]:
        """The job once it has ended (SUCCESS or FAIL)."""
        seen: dict[str, Any] = {}

        def ended() -> bool:
            response = self.sdrs("GET", f"/jobs/{job_id}", token, project)
            assert response.status_code == 200, response.text
            seen.update(response.json())
            return seen["status"] in ("SUCCESS", "FAIL")
        wait_until(ended, f"job {job_id} ended")
        return seen

    def group(self, token: str, project: str, gid: str) -> dict[str, Any]:
        response = self.sdrs("GET", f"/server-groups/{gid}", token, project)
        assert response.status_code == 200, response.text
        group: dict[str, Any] = response.json()["server_group"]
        return group

    def act(self, token: str, project: str, gid: str, body: dict[str, Any]) -> dict[str, Any]:
        """Run a group action to its end."""
        response = self.sdrs("POST", f"/server-groups/{gid}/action", token, project, json=body)
        assert response.status_code == 200, response.text
        return self.job(token, project, response.json()["job_id"])

    def server(self, token: str, az: str) -> str:
        created = self.call("POST", "/servers", token, json={"server": {"name": "app-1", "flavorRef": FLAVOR,
                                                                        "availability_zone": az}})
        assert created.status_code == 202, created.text
        sid: str = created.json()["server"]["id"]
        return sid

    def described(self, az: str, sid: str) -> ServerDescription | None:
        control = self.daemon.control
        assert control is not None

        async def describe() -> ServerDescription | None:
            try:
                found = await (await control.services()).azs[az].ask(DescribeServer(sid), timeout=60)
            except NotFound:
                return None
            assert isinstance(found, ServerDescription)
            return found
        return self.portal.call(describe)

    def remove_dr_copy(self, project: str, sid: str) -> None:
        """Delete the copy of `sid` in the recovery AZ and the volumes left of it, through the AZ and its
        volume service. The tenant deletes a server in the AZ it created it in, and knows only the volumes
        it made: the copy an sDRS failover started in the other AZ, and the replica it adopted there, stay
        (a gap of the runtime, not of this API: reported)."""
        control = self.daemon.control
        assert control is not None

        async def remove() -> None:
            services = await control.services()
            try:
                await services.azs[RECOVERY].ask(DeleteServer(sid), timeout=120)
            except NotFound:
                pass
            for service in services.volumes.values():
                volumes: list[VolumeView] = await service.ask(ListVolumes(project), timeout=120)
                for volume in volumes:
                    if volume.id.startswith(sid):
                        if volume.server_id is not None:
                            await service.ask(DetachVolume(project, volume.id), timeout=120)
                        await service.ask(DeleteVolume(project, volume.id), timeout=120)
        self.portal.call(remove)


def sdrs_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and body["error"]["code"] == code, body
    message = body["error"]["message"]
    assert isinstance(message, str)
    return message


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(0.2)


def rbd_images(az: str) -> set[str]:
    done = subprocess.run(["rbd", "-c", CEPH_CONF, "-p", POOLS[az], "ls"], capture_output=True, text=True,
                          timeout=60, check=True)
    return set(done.stdout.split())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The daemon with two AZs (a libvirt test host and an RBD pool each); projects acme and globex."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    where: Path = tmp_path_factory.mktemp("sdrs")
    (where / "node.xml").write_text(NODE)
    text = CONFIG.format(port=listener.getsockname()[1], state=where / "state.db", node=where / "node.xml",
                         ceph_conf=CEPH_CONF)
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
        for project in ("acme", "globex"):
            portal.call(daemon.create_project, project)
            portal.call(directory.create_user, project, "alice", PASSWORD, frozenset({Role.ADMIN}))
        portal.call(directory.create_user, "acme", "rita", PASSWORD, frozenset({Role.READER}))
        try:
            yield Site(daemon, portal)
        finally:
            daemon.stop()
            done.result(timeout=120)
            listener.close()
            os.environ.update(saved)


def delete_everything(site: Site, token: str, project: str, gid: str, sid: str) -> None:
    """Unprotect, delete the group (its unused replicas go with it), then the server and its volumes."""
    group = site.group(token, project, gid)
    if group["status"] == "protected":
        assert site.act(token, project, gid, {"stop-server-group": {}})["status"] == "SUCCESS"
    if group["protected_instance_num"]:
        assert site.sdrs("DELETE", f"/protected-instances/{sid}", token, project).status_code == 204
    deleted = site.sdrs("DELETE", f"/server-groups/{gid}", token, project)
    assert deleted.status_code == 200, deleted.text
    assert site.job(token, project, deleted.json()["job_id"])["status"] == "SUCCESS"
    sdrs_error(site.sdrs("GET", f"/server-groups/{gid}", token, project), 404, "SDRS.1013")
    assert site.call("DELETE", f"/servers/{sid}", token).status_code == 204
    site.remove_dr_copy(project, sid)
    for az in (PRODUCTION, RECOVERY):
        assert site.described(az, sid) is None, f"server {sid} left in {az}"
        assert not {image for image in rbd_images(az) if image.startswith(sid)}, f"volumes of {sid} left in {az}"


def test_sdrs1_sdrs2_protect_start_failover_and_reprotect_with_the_providers_jobs_and_states(site: Site) -> None:
    token = site.token("alice", "acme")
    issued = httpx.post(f"{site.url}/identity/v3/auth/tokens", json={"auth": {"identity": {
        "methods": ["password"], "password": {"user": {"name": "alice", "domain": {"name": "Default"},
                                                        "password": PASSWORD}}},
        "scope": {"project": {"name": "acme", "domain": {"name": "Default"}}}}})
    (entry,) = [s for s in issued.json()["token"]["catalog"] if s["type"] == "sdrs"]
    assert {e["url"] for e in entry["endpoints"]} == {f"{site.url}/sdrs/v1/acme"}

    sid = site.server(token, PRODUCTION)
    created = site.sdrs("POST", "/server-groups", token, "acme", json={"server_group": {
        "name": "app", "description": "web tier", "source_availability_zone": PRODUCTION,
        "target_availability_zone": RECOVERY, "source_vpc_id": "vpc-1"}})
    assert created.status_code == 200, created.text
    job = site.job(token, "acme", created.json()["job_id"])
    assert (job["status"], job["job_type"], job["error_code"]) == ("SUCCESS", "createProtectionGroupNoCG", None)
    assert job["begin_time"].endswith("Z") and job["end_time"] >= job["begin_time"]
    gid = job["entities"]["server_group_id"]
    try:
        group = site.group(token, "acme", gid)
        assert {k: group[k] for k in ("name", "description", "status", "priority_station", "source_vpc_id")} == \
            {"name": "app", "description": "web tier", "status": "available", "priority_station": "source",
             "source_vpc_id": "vpc-1"}
        assert [g["id"] for g in site.sdrs("GET", "/server-groups", token, "acme").json()["server_groups"]] == [gid]

        protected = site.sdrs("POST", "/protected-instances", token, "acme", json={"protected_instance": {
            "server_group_id": gid, "server_id": sid, "name": "app-1-dr"}})
        assert protected.status_code == 200, protected.text
        instance = protected.json()["protected_instance"]
        assert (instance["id"], instance["name"], instance["server_group_id"]) == (sid, "app-1-dr", gid)
        listed = site.sdrs("GET", f"/protected-instances?server_group_id={gid}", token, "acme").json()
        assert [i["id"] for i in listed["protected_instances"]] == [sid] and listed["count"] == 1
        assert site.group(token, "acme", gid)["replication_num"] == 1  # its system disk (ECS-3)

        started = site.act(token, "acme", gid, {"start-server-group": {}})
        assert (started["status"], started["job_type"]) == ("SUCCESS", "startProtectionGroupNoCG")
        assert site.group(token, "acme", gid)["status"] == "protected"
        assert f"{sid}-sys-r" in rbd_images(RECOVERY)  # the replica, in the recovery AZ's pool

        failover = site.act(token, "acme", gid, {"failover-server-group": {}})
        assert (failover["status"], failover["job_type"]) == ("SUCCESS", "failoverProtectionGroupNoCG")
        group = site.group(token, "acme", gid)
        assert (group["status"], group["priority_station"]) == ("failed-over", "target")
        there, left = site.described(RECOVERY, sid), site.described(PRODUCTION, sid)
        assert there is not None and there.state == "active" and not there.parked  # runs in the recovery AZ
        assert left is not None and left.parked and left.state != "active"  # exactly once (SDRS-2)

        reprotect = site.act(token, "acme", gid, {"start-server-group": {}})
        assert (reprotect["status"], reprotect["job_type"]) == ("SUCCESS", "reprotectProtectionGroupNoCG")
        group = site.group(token, "acme", gid)
        assert (group["status"], group["priority_station"]) == ("protected", "target")
    finally:
        delete_everything(site, token, "acme", gid, sid)


def test_sdrs2_refusals_are_the_providers_errors_and_change_nothing(site: Site) -> None:
    token = site.token("alice", "acme")
    created = site.sdrs("POST", "/server-groups", token, "acme", json={"server_group": {
        "name": "refused", "source_availability_zone": PRODUCTION, "target_availability_zone": RECOVERY,
        "source_vpc_id": "vpc-1"}})
    gid = site.job(token, "acme", created.json()["job_id"])["entities"]["server_group_id"]
    sid = site.server(token, PRODUCTION)
    try:
        assert "no replication pair" in sdrs_error(
            site.sdrs("POST", f"/server-groups/{gid}/action", token, "acme", json={"start-server-group": {}}),
            400, "SDRS.0201")
        site.sdrs("POST", "/protected-instances", token, "acme",
                  json={"protected_instance": {"server_group_id": gid, "server_id": sid}})
        unprotected = site.sdrs("POST", f"/server-groups/{gid}/action", token, "acme",
                                json={"failover-server-group": {}})
        message = sdrs_error(unprotected, 400, "SDRS.1019")
        assert message.startswith("Operation not allowed because the protection status of the protection group "
                                  "not started") and "state available" in message
        assert site.group(token, "acme", gid)["status"] == "available"
        assert "exactly one of" in sdrs_error(site.sdrs("POST", f"/server-groups/{gid}/action", token, "acme",
                                                        json={"failover-server-group": {}, "stop-server-group": {}}),
                                              400, "SDRS.0201")
        assert "already runs at source" in sdrs_error(site.sdrs(
            "POST", f"/server-groups/{gid}/action", token, "acme",
            json={"reverse-server-group": {"priority_station": "source"}}), 400, "SDRS.0201")
        assert "recovery_az 'eu-west-0c'" in sdrs_error(site.sdrs("POST", "/server-groups", token, "acme", json={
            "server_group": {"name": "wrong", "source_availability_zone": PRODUCTION,
                             "target_availability_zone": "eu-west-0c", "source_vpc_id": "vpc-1"}}), 400, "SDRS.0201")
        assert "body.server_group.name" in sdrs_error(site.sdrs("POST", "/server-groups", token, "acme", json={
            "server_group": {"name": "no spaces", "source_availability_zone": PRODUCTION,
                             "target_availability_zone": RECOVERY, "source_vpc_id": "vpc-1"}}), 400, "SDRS.0201")
        reader = site.token("rita", "acme")
        sdrs_error(site.sdrs("POST", f"/server-groups/{gid}/action", reader, "acme",
                             json={"start-server-group": {}}), 403, "SDRS.0005")
        assert site.group(reader, "acme", gid)["status"] == "available"  # a reader reads
        assert [g["name"] for g in site.sdrs("GET", "/server-groups", token, "acme").json()["server_groups"]] == \
            ["refused"]
    finally:
        delete_everything(site, token, "acme", gid, sid)


def test_ten1_another_project_sees_nothing_of_a_group_its_instances_or_jobs(site: Site) -> None:
    token, theirs = site.token("alice", "acme"), site.token("alice", "globex")
    created = site.sdrs("POST", "/server-groups", token, "acme", json={"server_group": {
        "name": "private", "source_availability_zone": PRODUCTION, "target_availability_zone": RECOVERY,
        "source_vpc_id": "vpc-1"}})
    job_id = created.json()["job_id"]
    gid = site.job(token, "acme", job_id)["entities"]["server_group_id"]
    sid = site.server(token, PRODUCTION)
    try:
        assert site.sdrs("POST", "/protected-instances", token, "acme", json={
            "protected_instance": {"server_group_id": gid, "server_id": sid}}).status_code == 200
        sdrs_error(site.sdrs("GET", "/server-groups", theirs, "acme"), 403, "SDRS.0005")  # acme's URL
        for method, path, kwargs in [
                ("GET", f"/server-groups/{gid}", {}), ("DELETE", f"/server-groups/{gid}", {}),
                ("POST", f"/server-groups/{gid}/action", {"json": {"stop-server-group": {}}}),
                ("GET", f"/protected-instances/{sid}", {}), ("DELETE", f"/protected-instances/{sid}", {})]:
            code = "SDRS.1320" if "protected-instances" in path else "SDRS.1013"
            sdrs_error(site.sdrs(method, path, theirs, "globex", **kwargs), 404, code)
        sdrs_error(site.sdrs("GET", f"/jobs/{job_id}", theirs, "globex"), 404, "SDRS.0201")
        # globex's own group cannot take acme's server: it does not exist for globex
        mine = site.sdrs("POST", "/server-groups", theirs, "globex", json={"server_group": {
            "name": "mine", "source_availability_zone": PRODUCTION, "target_availability_zone": RECOVERY,
            "source_vpc_id": "vpc-2"}})
        their_gid = site.job(theirs, "globex", mine.json()["job_id"])["entities"]["server_group_id"]
        sdrs_error(site.sdrs("POST", "/protected-instances", theirs, "globex", json={
            "protected_instance": {"server_group_id": their_gid, "server_id": sid}}), 404, "SDRS.0210")
        listed = site.sdrs("GET", "/server-groups", theirs, "globex")
        assert [g["id"] for g in listed.json()["server_groups"]] == [their_gid] and gid not in listed.text
        assert site.sdrs("GET", "/protected-instances", theirs, "globex").json() == \
            {"protected_instances": [], "count": 0}
        deleted = site.sdrs("DELETE", f"/server-groups/{their_gid}", theirs, "globex")
        assert site.job(theirs, "globex", deleted.json()["job_id"])["status"] == "SUCCESS"
        assert site.group(token, "acme", gid)["protected_instance_num"] == 1  # nothing of acme's changed
    finally:
        delete_everything(site, token, "acme", gid, sid)


def test_the_openapi_description_lists_the_sdrs_routes(site: Site) -> None:
    paths = httpx.get(f"{site.url}/openapi.json").json()["paths"]
    sdrs = {(m.upper(), p) for p, ops in paths.items() if p.startswith("/sdrs/") for m in ops}
    assert ("POST", "/sdrs/v1/{project_id}/server-groups/{server_group_id}/action") in sdrs
    assert ("GET", "/sdrs/v1/{project_id}/jobs/{job_id}") in sdrs
    assert len(sdrs) == 10

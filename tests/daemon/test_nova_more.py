"""More of the Nova v2.1 subset, on the whole daemon in-process (libvirt `test:///default`):
resize with VERIFY_RESIZE (ECS-1), server groups (GEO-4, TEN-3), availability zones, boot
from a volume (ECS-3) and the provider's auto-recovery API (ECS-4), driven by openstacksdk,
the `openstack` CLI and raw HTTP; isolation through Directory.authorize (TEN-1)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import anyio.from_thread
import httpx
import pytest

from actors.identity import Directory, Role
from actors.tenant import ListServers
from actors.topology import REGIONS
from actors.volumes import CreateVolume, DeleteVolume, GetVolume, VolumeView
from daemon.config import parse
from daemon.service import Daemon
from runtime.secrets import SystemSecrets
from tests.daemon import test_nova_api as base
from tests.daemon.test_nova_api import AZ, CHEAP, CONFIG, FLAVOR, PASSWORD, Running, domains, nova_error

pytestmark = base.pytestmark
running = base.running  # the same daemon fixture: acme (instances quota 2, reader rita) and globex

BIGGER = "s3.large.2"  # 2 vCPUs, 4 GB: FLAVOR is 1 vCPU, 2 GB
LOCAL_DISK = "d2.xlarge.8"
CEPH_CONF = "/var/tmp/fe-ceph/ceph.conf"


def openstack(running: Running, project: str, *args: str, listing: bool = True) -> Any:
    """The `openstack` CLI against the daemon, as alice of `project`; its JSON output (with `listing`)."""
    env = {**os.environ, "OS_AUTH_URL": f"{running.url}/identity/v3", "OS_USERNAME": "alice",
           "OS_PASSWORD": PASSWORD, "OS_PROJECT_NAME": project, "OS_USER_DOMAIN_NAME": "Default",
           "OS_PROJECT_DOMAIN_NAME": "Default", "OS_IDENTITY_API_VERSION": "3", "OS_COMPUTE_API_VERSION": "2.1"}
    cli = shutil.which("openstack")
    assert cli is not None, "the openstack CLI (python-openstackclient) is not installed"
    done = subprocess.run([cli, *args, *(["-f", "json"] if listing else [])], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if listing else done.stdout


def create(running: Running, token: str, name: str, flavor: str = FLAVOR, **extra: Any) -> str:
    created = running.call("POST", "/servers", token, json={"server": {
        "name": name, "flavorRef": flavor, "availability_zone": AZ, **extra}})
    assert created.status_code == 202, created.text
    sid: str = created.json()["server"]["id"]
    return sid


def show(running: Running, token: str, sid: str) -> dict[str, Any]:
    response = running.call("GET", f"/servers/{sid}", token)
    assert response.status_code == 200, response.text
    server: dict[str, Any] = response.json()["server"]
    return server


def act(running: Running, token: str, sid: str, body: Any) -> httpx.Response:
    return running.call("POST", f"/servers/{sid}/action", token, json=body)


def delete(running: Running, token: str, *sids: str) -> None:
    for sid in sids:
        assert running.call("DELETE", f"/servers/{sid}", token).status_code == 204


# -- resize (ECS-1) ----------------------------------------------------------------------
def test_ecs1_resize_waits_in_verify_resize_until_confirmed_or_reverted(running: Running) -> None:
    conn = running.connect("alice", "globex")
    token = running.token("alice", "globex")
    server = conn.compute.create_server(name="grow", flavor_id=FLAVOR, image_id="x", availability_zone=AZ)
    conn.compute.wait_for_server(server, status="ACTIVE", wait=30, interval=0.2)
    refused = nova_error(act(running, token, server.id, {"resize": {"flavorRef": BIGGER}}), 409, "conflictingRequest")
    assert "cannot resize" in refused and "active" in refused  # stop it first, as on the provider
    conn.compute.stop_server(server)
    conn.compute.wait_for_server(server, status="SHUTOFF", wait=30, interval=0.2)
    assert "has flavor s3.medium.2 already" in nova_error(
        act(running, token, server.id, {"resize": {"flavorRef": FLAVOR}}), 400, "badRequest")
    conn.compute.resize_server(server, BIGGER)
    resized = conn.compute.wait_for_server(server, status="VERIFY_RESIZE", wait=30, interval=0.2)
    assert resized.flavor["id"] == BIGGER and show(running, token, server.id)["OS-EXT-STS:vm_state"] == "resized"
    assert running.call("GET", "/os-quota-sets/globex/detail", token).json()["quota_set"]["cores"]["in_use"] == 2
    assert "awaits confirmResize or revertResize" in nova_error(
        act(running, token, server.id, {"os-start": None}), 409, "conflictingRequest")
    conn.compute.revert_server_resize(server)
    reverted = conn.compute.wait_for_server(server, status="SHUTOFF", wait=30, interval=0.2)
    assert reverted.flavor["id"] == FLAVOR
    assert running.call("GET", "/os-quota-sets/globex/detail", token).json()["quota_set"]["cores"]["in_use"] == 1
    assert "no resize awaiting confirmation" in nova_error(
        act(running, token, server.id, {"confirmResize": None}), 409, "conflictingRequest")
    conn.compute.resize_server(server, BIGGER)
    conn.compute.wait_for_server(server, status="VERIFY_RESIZE", wait=30, interval=0.2)
    assert act(running, token, server.id, {"confirmResize": None}).status_code == 204
    confirmed = show(running, token, server.id)
    assert (confirmed["status"], confirmed["flavor"]["id"]) == ("SHUTOFF", BIGGER)
    conn.compute.start_server(server)
    assert conn.compute.wait_for_server(server, status="ACTIVE", wait=30, interval=0.2).status == "ACTIVE"
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, wait=30, interval=0.2)
    conn.close()


def test_ecs1_openstack_cli_resizes_with_wait_and_confirms(running: Running) -> None:
    token = running.token("alice", "globex")
    sid = create(running, token, "cli-resize")
    try:
        assert act(running, token, sid, {"os-stop": None}).status_code == 202
        openstack(running, "globex", "server", "resize", "--flavor", BIGGER, "--wait", sid, listing=False)
        assert show(running, token, sid)["status"] == "VERIFY_RESIZE"
        openstack(running, "globex", "server", "resize", "confirm", sid, listing=False)
        shown = openstack(running, "globex", "server", "show", sid)
        assert (shown["status"], shown["flavor"]) == ("SHUTOFF", f"{BIGGER} ({BIGGER})")
    finally:
        delete(running, token, sid)


def test_ten1_another_project_cannot_resize_or_confirm(running: Running) -> None:
    mine, theirs = running.token("alice", "globex"), running.token("alice", "acme")
    sid = create(running, mine, "private")
    for body in ({"resize": {"flavorRef": BIGGER}}, {"confirmResize": None}, {"revertResize": None}):
        nova_error(act(running, theirs, sid, body), 404, "itemNotFound")
    nova_error(act(running, running.token("rita", "acme"), sid, {"confirmResize": None}), 403, "forbidden")
    assert show(running, mine, sid)["flavor"]["id"] == FLAVOR
    delete(running, mine, sid)


# -- server groups (GEO-4, TEN-3) ---------------------------------------------------------
def test_geo4_server_groups_through_openstacksdk_and_the_group_hint(running: Running) -> None:
    import openstack as sdk

    conn = running.connect("alice", "globex")
    group = conn.compute.create_server_group(name="web", policies=["anti-affinity"])
    assert (group.id, group.name, group.policies) == ("web", "web", ["anti-affinity"])
    server = conn.compute.create_server(name="w1", flavor_id=FLAVOR, image_id="x", availability_zone=AZ,
                                        scheduler_hints={"group": "web"})
    assert conn.compute.get_server_group("web").member_ids == [server.id]
    assert [g.name for g in conn.compute.server_groups()] == ["web"]
    token = running.token("alice", "globex")
    assert "has 1 member(s)" in nova_error(running.call("DELETE", "/os-server-groups/web", token),
                                           409, "conflictingRequest")
    assert "server group 'nope' not found" in nova_error(
        running.call("POST", "/servers", token, json={
            "server": {"name": "x", "flavorRef": FLAVOR, "availability_zone": AZ},
            "os:scheduler_hints": {"group": "nope"}}), 404, "itemNotFound")
    nova_error(running.call("GET", "/os-server-groups/web", running.token("alice", "acme")), 404, "itemNotFound")
    assert running.call("GET", "/os-server-groups", running.token("alice", "acme")).json() == {"server_groups": []}
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, wait=30, interval=0.2)
    conn.compute.delete_server_group("web")
    with pytest.raises(sdk.exceptions.NotFoundException):
        conn.compute.get_server_group("web")
    limits = running.call("GET", "/limits", token).json()["limits"]["absolute"]
    assert limits["totalServerGroupsUsed"] == 0
    conn.close()


def test_geo4_openstack_cli_creates_shows_and_deletes_a_group(running: Running) -> None:
    group = openstack(running, "globex", "server", "group", "create", "--policy", "anti-affinity", "batch")
    assert (group["id"], group["name"]) == ("batch", "batch")
    token = running.token("alice", "globex")
    sid = create(running, token, "b1")
    assert running.call("DELETE", f"/servers/{sid}", token).status_code == 204
    sid = running.call("POST", "/servers", token, json={
        "server": {"name": "b2", "flavorRef": FLAVOR, "availability_zone": AZ},
        "os:scheduler_hints": {"group": "batch"}}).json()["server"]["id"]
    shown = openstack(running, "globex", "server", "group", "show", "batch")
    assert shown["members"] in ([sid], sid)
    delete(running, token, sid)
    openstack(running, "globex", "server", "group", "delete", "batch", listing=False)
    assert running.call("GET", "/os-server-groups", token).json() == {"server_groups": []}


BAD_GROUPS: list[tuple[Any, str]] = [
    ({"server_group": {"name": "g", "policies": ["affinity"]}}, "affinity is not supported"),
    ({"server_group": {"name": "g", "policies": ["cluster"]}}, "'cluster' is not a policy; valid: anti-affinity"),
    ({"server_group": {"name": "g", "policies": ["anti-affinity", "anti-affinity"]}}, "exactly one"),
    ({"server_group": {"name": "a/b", "policies": ["anti-affinity"]}}, "body.server_group.name: 'a/b' is not valid"),
    ({"server_group": {"policies": ["anti-affinity"]}}, "body.server_group.name: required"),
    ({"group": {}}, "body.server_group: required"),
]


@pytest.mark.parametrize(("body", "expected"), BAD_GROUPS)
def test_bad_server_groups_get_novas_400(running: Running, body: Any, expected: str) -> None:
    token = running.token("alice", "globex")
    assert expected in nova_error(running.call("POST", "/os-server-groups", token, json=body), 400, "badRequest")
    assert running.call("GET", "/os-server-groups", token).json() == {"server_groups": []}


def test_ten3_server_groups_over_quota_is_novas_403(running: Running) -> None:
    token = running.token("alice", "globex")
    names = [f"g{i}" for i in range(10)]  # the OpenStack default: 10 server groups
    for name in names:
        created = running.call("POST", "/os-server-groups", token,
                               json={"server_group": {"name": name, "policies": ["anti-affinity"]}})
        assert created.status_code == 200, created.text
    assert "Quota exceeded for server_groups: Requested 1, but already used 10 of 10" in nova_error(
        running.call("POST", "/os-server-groups", token,
                     json={"server_group": {"name": "g10", "policies": ["anti-affinity"]}}), 403, "forbidden")
    for name in names:
        assert running.call("DELETE", f"/os-server-groups/{name}", token).status_code == 204


# -- availability zones ---------------------------------------------------------------------
def test_availability_zones_list_the_region_and_detail_is_for_the_cloud_admin(running: Running) -> None:
    conn = running.connect("alice", "globex")
    zones = list(conn.compute.availability_zones())
    assert [(z.name, z.state) for z in zones] == [(az, {"available": True}) for az in REGIONS["eu-west-0"].azs]
    conn.close()
    token = running.token("alice", "globex")
    assert "operate" in nova_error(running.call("GET", "/os-availability-zone/detail", token), 403, "forbidden")


# -- boot from a volume (ECS-3), here in a region without block storage ----------------------
def _bdm(**fields: Any) -> dict[str, Any]:
    return {"boot_index": 0, "uuid": "vol-1", "source_type": "volume", "destination_type": "volume", **fields}


BAD_BOOTS: list[tuple[dict[str, Any], str]] = [
    ({"block_device_mapping_v2": [_bdm()]}, "this region has no block storage"),
    ({"block_device_mapping_v2": [_bdm(), _bdm(boot_index=-1, uuid="vol-2")]}, "2 block devices; valid: exactly one"),
    ({"block_device_mapping_v2": [_bdm(source_type="snapshot")]}, "source_type: 'snapshot'"),
    ({"block_device_mapping_v2": [_bdm(source_type="blank", destination_type="local")]}, "source_type: 'blank'"),
    ({"block_device_mapping_v2": [_bdm(source_type="image", uuid="img")]}, "makes no volume from an image"),
    ({"block_device_mapping_v2": [_bdm(destination_type="local")]}, "destination_type: 'local'"),
    ({"block_device_mapping_v2": [_bdm(boot_index=1)]}, "boot_index: 1; valid: 0"),
    ({"block_device_mapping_v2": [_bdm()], "imageRef": "img"}, "imageRef: 'img' given with a boot volume"),
    ({"block_device_mapping_v2": [_bdm(delete_on_termination="maybe")]}, "delete_on_termination: 'maybe'"),
    ({"block_device_mapping_v2": {}}, "must be a non-empty list"),
    ({"block_device_mapping_v2": [_bdm(uuid="")]}, "[0].uuid: must be a non-empty string"),
    ({"max_count": 3}, "body.server.max_count: 3 is not supported; valid: 1"),
]


@pytest.mark.parametrize(("extra", "expected"), BAD_BOOTS)
def test_ecs3_unsupported_block_devices_get_novas_400_naming_the_field(running: Running, extra: dict[str, Any],
                                                                        expected: str) -> None:
    token = running.token("alice", "globex")
    body = {"server": {"name": "v", "flavorRef": FLAVOR, "availability_zone": AZ, **extra}}
    assert expected in nova_error(running.call("POST", "/servers", token, json=body), 400, "badRequest")
    assert running.call("GET", "/servers", token).json() == {"servers": []}


def test_unsupported_scheduler_hints_get_400(running: Running) -> None:
    token = running.token("alice", "globex")
    body = {"server": {"name": "h", "flavorRef": FLAVOR, "availability_zone": AZ},
            "OS-SCH-HNT:scheduler_hints": {"different_host": ["x"]}}
    assert "different_host not supported; valid: group" in nova_error(
        running.call("POST", "/servers", token, json=body), 400, "badRequest")


def test_what_openstack_server_create_image_sends_is_accepted(running: Running) -> None:
    """`openstack server create --image IMG` adds the image as a local boot device: as imageRef."""
    token = running.token("alice", "globex")
    sid = create(running, token, "img", imageRef="cirros", min_count=1, max_count=1, networks=[],
                 block_device_mapping_v2=[{"uuid": "cirros", "boot_index": 0, "source_type": "image",
                                           "destination_type": "local", "delete_on_termination": True}])
    assert show(running, token, sid)["status"] == "ACTIVE"
    delete(running, token, sid)


# -- the provider's auto-recovery API (ECS-4) --------------------------------------------------
def autorecovery(running: Running, method: str, project: str, sid: str, token: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{running.url}/ecs/v1/{project}/cloudservers/{sid}/autorecovery",
                         headers={"X-Auth-Token": token}, timeout=60, **kwargs)


def ecs_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    message: str = error["message"]
    return message


def test_ecs4_auto_recovery_is_read_and_toggled_in_the_providers_shape(running: Running) -> None:
    token = running.token("alice", "globex")
    sid = create(running, token, "ar")
    assert autorecovery(running, "GET", "globex", sid, token).json() == {"support_auto_recovery": "false"}
    assert autorecovery(running, "PUT", "globex", sid, token, json={"support_auto_recovery": "true"}).status_code \
        == 204
    assert autorecovery(running, "GET", "globex", sid, token).json() == {"support_auto_recovery": "true"}
    assert autorecovery(running, "PUT", "globex", sid, token, json={"support_auto_recovery": False}).status_code \
        == 204
    assert autorecovery(running, "GET", "globex", sid, token).json() == {"support_auto_recovery": "false"}
    assert 'valid: "true" or "false"' in ecs_error(autorecovery(
        running, "PUT", "globex", sid, token, json={"support_auto_recovery": "yes"}), 400, "Ecs.0000")
    other = running.token("alice", "acme")
    assert "may act on that project only" in ecs_error(autorecovery(running, "GET", "globex", sid, other),
                                                       403, "Ecs.0003")
    assert sid in ecs_error(autorecovery(running, "PUT", "acme", sid, other, json={"support_auto_recovery": "true"}),
                            404, "Ecs.0000")
    reader = running.token("rita", "acme")
    ecs_error(autorecovery(running, "PUT", "acme", sid, reader, json={"support_auto_recovery": "true"}),
              403, "Ecs.0003")
    assert autorecovery(running, "GET", "globex", sid, token).json() == {"support_auto_recovery": "false"}
    delete(running, token, sid)


def test_ecs4_a_local_disk_flavor_cannot_get_auto_recovery(running: Running) -> None:
    token = running.token("alice", "globex")
    sid = create(running, token, "disky", flavor=LOCAL_DISK)
    message = ecs_error(autorecovery(running, "PUT", "globex", sid, token, json={"support_auto_recovery": "true"}),
                        400, "Ecs.0000")
    assert "local disk" in message and "ECS-4" in message
    assert autorecovery(running, "GET", "globex", sid, token).json() == {"support_auto_recovery": "false"}
    delete(running, token, sid)


# -- boot from a volume on Ceph (ECS-3) ---------------------------------------------------------
@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A daemon with [storage] on the one-node Ceph (pool of eu-west-0a); project acme."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    state = tmp_path_factory.mktemp("nova-ceph") / "state.db"
    text = CONFIG.format(port=listener.getsockname()[1], state=state) + (
        f'\n[storage]\nceph_conf = "{CEPH_CONF}"\npools = {{ "{AZ}" = "fe-{AZ}" }}\n')
    directory = Directory(SystemSecrets(), hasher=CHEAP)
    daemon = Daemon(parse(text, "fe.toml", {}), {"FE_ADMIN_PASSWORD": PASSWORD}, directory=directory,
                    sock=listener, handle_signals=False)
    with anyio.from_thread.start_blocking_portal() as portal:
        done = portal.start_task_soon(daemon.run)
        while not daemon.ready and not done.done():
            time.sleep(0.01)
        assert daemon.ready, done.exception()
        portal.call(daemon.create_project, "acme")
        portal.call(directory.create_user, "acme", "alice", PASSWORD, frozenset({Role.ADMIN}))
        try:
            yield Running(daemon, portal)
        finally:
            daemon.stop()
            done.result(timeout=120)
            listener.close()


def new_volume(stored: Running, size_gb: int, bootable: bool) -> VolumeView:
    control = stored.daemon.control
    assert control is not None
    view: VolumeView = stored.portal.call(control.ask, "acme", CreateVolume("acme", AZ, size_gb, bootable=bootable))
    return view


def drop_volume(stored: Running, volume_id: str) -> None:
    control = stored.daemon.control
    assert control is not None
    stored.portal.call(control.ask, "acme", DeleteVolume("acme", volume_id))


@pytest.mark.ceph
def test_ecs3_openstack_cli_boots_servers_from_a_volume_and_keeps_the_data_volume(stored: Running) -> None:
    volume = new_volume(stored, 40, bootable=False)
    try:
        token = stored.token("alice", "acme")
        refused = stored.call("POST", "/servers", token, json={"server": {
            "name": "bfv", "flavorRef": FLAVOR, "availability_zone": AZ, "imageRef": "",
            "block_device_mapping_v2": [_bdm(uuid=volume.id, delete_on_termination=True)]}})
        assert "it is kept when the server is deleted (ECS-3); valid: false or absent" in \
            nova_error(refused, 400, "badRequest")
        server = openstack(stored, "acme", "server", "create", "--flavor", FLAVOR, "--availability-zone", AZ,
                           "--block-device", f"uuid={volume.id},source_type=volume,destination_type=volume,"
                           "boot_index=0", "--wait", "bfv")
        assert server["status"] == "ACTIVE" and domains()[server["id"]] is True
        control = stored.daemon.control
        assert control is not None
        servers = stored.portal.call(control.ask, "acme", ListServers())
        assert [s.system_volume for s in servers] == [volume.id]
        openstack(stored, "acme", "server", "delete", "--wait", server["id"], listing=False)
        left = stored.portal.call(control.ask, "acme", GetVolume("acme", volume.id))
        assert (left.state, left.server_id) == ("available", None)  # a data volume outlives its server
        again = openstack(stored, "acme", "server", "create", "--volume", volume.id, "--flavor", FLAVOR,
                          "--availability-zone", AZ, "--wait", "bfv-2")  # --volume: OSC finds it through Cinder
        assert again["status"] == "ACTIVE"
        assert [s.system_volume for s in stored.portal.call(control.ask, "acme", ListServers())] == [volume.id]
        openstack(stored, "acme", "server", "delete", "--wait", again["id"], listing=False)
    finally:
        drop_volume(stored, volume.id)

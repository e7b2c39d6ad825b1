"""The real `openstack` CLI (python-openstackclient, a subprocess with OS_* variables) against the
in-process daemon with [storage] on Ceph: volume create/list/show/set --size/delete, server add
and remove volume, volume backup create/list/show/restore/delete and quota show (issue 5; EVS-1,
EVS-2, VBS-1, TEN-3). Servers are created through raw HTTP: `openstack server create --volume`
needs boot from volume in Nova's block_device_mapping_v2 (daemon.api.nova)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.daemon.test_cinder_api import Stored, daemon_with_storage, rbd_images, wait_until
from tests.daemon.test_cinder_api import pytestmark as pytestmark
from tests.daemon.test_nova_api import AZ, FLAVOR, PASSWORD


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stored]:
    """tests.daemon.test_cinder_api's daemon with [storage]: acme (volumes quota 3, gigabytes 200), globex."""
    yield from daemon_with_storage(tmp_path_factory)


def run(stored: Stored, project: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OS_AUTH_URL": f"{stored.url}/identity/v3", "OS_USERNAME": "alice",
           "OS_PASSWORD": PASSWORD, "OS_PROJECT_NAME": project, "OS_USER_DOMAIN_NAME": "Default",
           "OS_PROJECT_DOMAIN_NAME": "Default", "OS_IDENTITY_API_VERSION": "3"}
    cli = shutil.which("openstack")
    assert cli is not None, "the openstack CLI (python-openstackclient) is not installed"
    return subprocess.run([cli, *args], env=env, capture_output=True, text=True, timeout=300, check=False)


def openstack(stored: Stored, project: str, *args: str) -> Any:
    """The JSON output of a command that shows or lists something."""
    done = run(stored, project, *args, "-f", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else None


def new_server(stored: Stored, project: str, name: str) -> str:
    token = stored.token("alice", project)
    created = stored.call("POST", "/servers", token, json={"server": {"name": name, "flavorRef": FLAVOR,
                                                                      "availability_zone": AZ}})
    assert created.status_code == 202, created.text
    sid: str = created.json()["server"]["id"]
    return sid


def test_evs1_evs2_volume_commands_create_list_show_extend_attach_detach_delete(stored: Stored) -> None:
    created = openstack(stored, "globex", "volume", "create", "--size", "10", "--availability-zone", AZ,
                        "--type", "SSD", "vol1")
    assert (created["name"], created["size"], created["status"], created["type"]) == ("vol1", 10, "available", "SSD")
    assert created["id"] in rbd_images()
    listed = openstack(stored, "globex", "volume", "list")
    assert [(v["Name"], v["Size"], v["Status"]) for v in listed] == [("vol1", 10, "available")]
    assert run(stored, "globex", "volume", "set", "--size", "20", "vol1").returncode == 0
    assert openstack(stored, "globex", "volume", "show", "vol1")["size"] == 20
    sid = new_server(stored, "globex", "app")
    added = openstack(stored, "globex", "server", "add", "volume", sid, "vol1")
    assert (added["Server ID"], added["Volume ID"]) == (sid, created["id"])
    shown = openstack(stored, "globex", "volume", "show", "vol1")
    assert shown["status"] == "in-use" and [a["server_id"] for a in shown["attachments"]] == [sid]
    refused = run(stored, "globex", "volume", "delete", "vol1")
    assert refused.returncode != 0 and "cannot delete volume" in refused.stderr
    assert run(stored, "globex", "server", "remove", "volume", sid, "vol1").returncode == 0
    assert openstack(stored, "globex", "volume", "show", "vol1")["status"] == "available"
    assert run(stored, "globex", "volume", "delete", "vol1").returncode == 0
    assert run(stored, "globex", "server", "delete", "--wait", sid).returncode == 0  # and its system disk
    assert openstack(stored, "globex", "volume", "list") == []
    assert created["id"] not in rbd_images()


def test_vbs1_volume_backup_commands_create_list_show_restore_delete(stored: Stored) -> None:
    volume = openstack(stored, "globex", "volume", "create", "--size", "10", "--availability-zone", AZ, "src")
    backup = openstack(stored, "globex", "volume", "backup", "create", "--name", "b1", "src")
    wait_until(lambda: openstack(stored, "globex", "volume", "backup", "show", "b1")["status"] == "available",
               "backup b1 available")
    shown = openstack(stored, "globex", "volume", "backup", "show", "b1")
    assert (shown["id"], shown["volume_id"], shown["size"], shown["is_incremental"]) == (backup["id"], volume["id"],
                                                                                        10, False)
    assert [b["Name"] for b in openstack(stored, "globex", "volume", "backup", "list")] == ["b1"]
    restored = openstack(stored, "globex", "volume", "backup", "restore", "b1", "src-copy")
    assert restored["volume_name"] == "src-copy"
    copy = openstack(stored, "globex", "volume", "show", "src-copy")
    assert (copy["id"], copy["size"]) == (restored["volume_id"], 10)
    wait_until(lambda: openstack(stored, "globex", "volume", "backup", "show", "b1")["status"] == "available",
               "the restore of b1 ended")
    assert run(stored, "globex", "volume", "backup", "delete", "b1").returncode == 0
    wait_until(lambda: openstack(stored, "globex", "volume", "backup", "list") == [], "backup b1 deleted")
    wait_until(lambda: openstack(stored, "globex", "volume", "show", "src-copy")["status"] == "available",
               "src-copy restored")
    assert run(stored, "globex", "volume", "delete", "src", "src-copy").returncode == 0


def test_ten3_quota_show_reads_compute_and_volume_quotas_and_a_refusal_names_the_quota(stored: Stored) -> None:
    quotas = {q["Resource"]: q["Limit"] for q in openstack(stored, "acme", "quota", "show")}
    assert (quotas["instances"], quotas["cores"], quotas["ram"]) == (10, 20, 51200)  # compute (defaults)
    assert (quotas["volumes"], quotas["gigabytes"], quotas["backups"]) == (3, 200, 360)  # block storage
    assert quotas.get("networks") is None and "ports" not in quotas  # no network service in the catalog
    made = [openstack(stored, "acme", "volume", "create", "--size", "10", "--availability-zone", AZ, f"v{i}")
            for i in range(3)]
    usage = {q["Resource"]: q["In Use"] for q in openstack(stored, "acme", "quota", "show", "--usage")}
    assert (usage["volumes"], usage["gigabytes"]) == (3, 30)
    refused = run(stored, "acme", "volume", "create", "--size", "10", "--availability-zone", AZ, "v4")
    assert refused.returncode != 0
    assert "Maximum number of volumes allowed (3) exceeded for quota 'volumes'" in refused.stderr
    assert run(stored, "acme", "volume", "delete", *(v["id"] for v in made)).returncode == 0


@pytest.mark.parametrize("args", [("volume", "show", "nothing-here"), ("volume", "backup", "show", "nothing")])
def test_unknown_names_are_cli_errors(stored: Stored, args: tuple[str, ...]) -> None:
    done = run(stored, "globex", *args)
    assert done.returncode != 0 and "nothing" in done.stderr

"""Opening tenants on a running daemon through Keystone v3 (TEN-1, TEN-2): the bootstrap's cloud
admin creates a project, its first user, and grants the admin role; who may do what; it all
survives a restart. Daemons in-process on libvirt `test:///default` (tests.daemon.test_durable_state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import libvirt
import pytest

from tests.daemon.test_durable_state import PASSWORD, Life

pytestmark = pytest.mark.usefixtures("no_proxy")  # tests/daemon/conftest.py


def keystone(life: Life, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{life.url}/identity/v3{path}", headers={"X-Auth-Token": token}, timeout=60,
                         **kwargs)


def test_the_cloud_admin_opens_a_tenant_whose_admin_adds_users_and_it_survives_a_restart(
        tmp_path: Path, libvirt_test: libvirt.virConnect) -> None:
    state = tmp_path / "state.db"
    with Life(state) as first:
        root = first.token("admin", "provider")  # the bootstrap's cloud admin (FE_ADMIN_PASSWORD)
        made = keystone(first, "POST", "/projects", root, json={"project": {"name": "initech"}})
        assert made.status_code == 201, made.text
        assert made.json()["project"]["id"] == "initech"
        user = keystone(first, "POST", "/users", root, json={"user": {
            "name": "bob", "password": PASSWORD, "default_project_id": "initech"}})
        assert user.status_code == 201, user.text
        bob = first.token("bob", "initech")
        assert {p["id"] for p in keystone(first, "GET", "/projects", bob).json()["projects"]} == {"initech"}
        assert "initech" in {p["id"] for p in keystone(first, "GET", "/projects", root).json()["projects"]}
        # a member opens no project and adds no user
        refused = keystone(first, "POST", "/projects", bob, json={"project": {"name": "evil"}})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == 403
        refused = keystone(first, "POST", "/users", bob, json={"user": {
            "name": "eve", "password": PASSWORD, "default_project_id": "initech"}})
        assert refused.status_code == 403
        # another project's admin cannot even learn whether bob exists
        admin = first.token("admin", "admin")
        probe = keystone(first, "PUT", "/projects/initech/users/initech:bob/roles/admin", admin)
        ghost = keystone(first, "PUT", "/projects/initech/users/initech:nobody/roles/admin", admin)
        assert probe.status_code == ghost.status_code == 403
        granted = keystone(first, "PUT", "/projects/initech/users/initech:bob/roles/admin", root)
        assert granted.status_code == 204, granted.text
        assert first.call("GET", "/servers", bob).status_code == 401  # the old roles' token is revoked
        bob = first.token("bob", "initech")
        carol = keystone(first, "POST", "/users", bob, json={"user": {
            "name": "carol", "password": PASSWORD, "default_project_id": "initech"}})
        assert carol.status_code == 201, carol.text
        assert first.create(bob, "app") and first.statuses(bob) == {"app": "ACTIVE"}
        bad = keystone(first, "POST", "/projects", root, json={"project": {"name": ""}})
        assert bad.status_code == 400 and "body.project.name" in bad.text
    with Life(state) as second:
        carol_token = second.token("carol", "initech")
        assert second.statuses(carol_token) == {"app": "ACTIVE"}
        again = keystone(second, "POST", "/projects", second.token("admin", "provider"),
                         json={"project": {"name": "initech"}})
        assert again.status_code == 409

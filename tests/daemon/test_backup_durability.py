"""Backups survive a restart of `fe daemon` (issue 5; VBS-1): a backup made through the Cinder API
on the one-node Ceph is, after a stop and a start on the same SQLite state, listed, available,
restorable, and the head of its chain (the next backup is incremental). The backup service's
state is one record (daemon.backup_state). Everything the test makes is deleted at the end."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import anyio.from_thread
import pytest

from actors.identity import Directory, Role
from daemon.backup_state import KEY, KIND
from daemon.config import parse
from daemon.service import Daemon
from runtime.backends.sqlite_state import SqliteStateStore
from runtime.secrets import SystemSecrets
from tests.daemon.test_cinder_api import CEPH_CONF, ENVIRON, POOL, STORED, Stored, clean, wait_until
from tests.daemon.test_nova_api import AZ, CHEAP, PASSWORD

pytestmark = [pytest.mark.ceph, pytest.mark.timeout(600), pytest.mark.usefixtures("no_proxy"),
              pytest.mark.filterwarnings("ignore:Support for InfluxDB requires the influxdb library"),
              pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedInSDK50Warning"),
              pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedInSDK60Warning")]


class Life:
    """One daemon's life on the shared state file (pool fe-eu-west-0b, orphans kept: see test_cinder_api)."""

    def __init__(self, state: Path) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        text = STORED.format(port=self.listener.getsockname()[1], state=state, ceph_conf=CEPH_CONF, pool=POOL)
        self.daemon = Daemon(parse(text, "fe.toml", ENVIRON), {"FE_ADMIN_PASSWORD": PASSWORD, **ENVIRON},
                             directory=Directory(SystemSecrets(), hasher=CHEAP), sock=self.listener,
                             handle_signals=False)

    def __enter__(self) -> Stored:
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        portal = self._portal_cm.__enter__()
        self.done = portal.start_task_soon(self.daemon.run)
        while not self.daemon.ready and not self.done.done():
            time.sleep(0.01)
        assert self.daemon.ready, self.done.exception()
        return Stored(self.daemon, portal)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.daemon.stop()
        self.done.result(timeout=120)
        self._portal_cm.__exit__(None, None, None)
        self.listener.close()


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state.db"
    yield path
    with Life(path) as stored:  # whatever a failed test left
        clean(stored)


def stored_backups(path: Path) -> list[str]:
    async def read() -> list[str]:
        store = await SqliteStateStore.open(path)
        try:
            record = await store.get(KIND, KEY)
            return [] if record is None else [b["id"] for b in record.value["backups"]]
        finally:
            await store.close()
    return anyio.run(read)


def test_vbs1_an_available_backup_is_listed_available_and_restorable_after_a_restart(state: Path) -> None:
    with Life(state) as first:
        first.portal.call(first.daemon.create_project, "acme")
        first.portal.call(first.daemon.create_project, "globex")
        first.portal.call(first.daemon.create_user, "acme", "alice", PASSWORD, frozenset({Role.ADMIN}))
        conn = first.connect("alice", "acme")
        volume = conn.block_storage.create_volume(size=10, availability_zone=AZ, name="src")
        volume = conn.block_storage.wait_for_status(volume, status="available", wait=60, interval=0.2)
        made = conn.block_storage.create_backup(volume_id=volume.id, name="nightly")
        made = conn.block_storage.wait_for_status(made, status="available", wait=120, interval=0.3)
        assert not made.is_incremental
        conn.close()
    assert stored_backups(state) == [made.id]

    started = time.monotonic()
    with Life(state) as second:
        conn = second.connect("alice", "acme")
        listed = {b.id: b for b in conn.block_storage.backups(details=True)}
        assert list(listed) == [made.id]
        again = listed[made.id]
        assert (again.status, again.name, again.volume_id, again.size) == ("available", "nightly", volume.id, 10)
        assert again.created_at == made.created_at
        restored = conn.block_storage.restore_backup(again, name="copy")
        copy = conn.block_storage.find_volume("copy", ignore_missing=False)
        assert copy.id == restored.volume_id
        conn.block_storage.wait_for_status(copy, status="available", wait=120, interval=0.3)
        wait_until(lambda: conn.block_storage.get_backup(made.id).status == "available", "the restore ended")
        # the chain goes on from the imported head, whose snapshot stayed on the volume
        nxt = conn.block_storage.create_backup(volume_id=volume.id, name="next")
        nxt = conn.block_storage.wait_for_status(nxt, status="available", wait=120, interval=0.3)
        assert nxt.is_incremental
        conn.close()
        print(f"restart, list, restore and an incremental backup: {time.monotonic() - started:.1f} s")
    assert stored_backups(state) == [made.id, nxt.id]
    assert os.path.exists(state)

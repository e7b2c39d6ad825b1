"""A simulated region's storage, driven step by step from synchronous test code.

`Site` runs, on the `SimDriver` in virtual time, a `StorageModel` of eu-west-0 and
eu-west-1, one `VolumeService` per AZ of eu-west-0, the region's `BackupService` and one
`Tenant` (without compute: volume and backup requests only). `ask` runs virtual time
until the reply and returns it or raises the `CloudError`; `events` records the event
log with times.

"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import simpy

from actors.backups import BackupLimits, BackupService, BackupView, GetBackup
from actors.tenant import Tenant
from actors.volumes import AttachVolume, CreateVolume, RegisterServer, VolumeService, VolumeView
from runtime.actor import ActorRef, ActorSystem
from runtime.errors import CloudError
from runtime.events import EventLog
from runtime.storage import VolumeKind
from sim.driver import Handle, SimDriver
from sim.storage import StorageModel, StorageTiming

REGION = "eu-west-0"
AZS = ("eu-west-0a", "eu-west-0b", "eu-west-0c")
A, B, C = AZS
OTHER_REGION = "eu-west-1"
OTHER_AZS = ("eu-west-1a", "eu-west-1b", "eu-west-1c")
TENANT = "acme"
ASK_LIMIT_S = 7 * 86400.0


class Site:
    def __init__(self, limits: BackupLimits | None = None, quotas: Mapping[str, int] | None = None,
                 timing: StorageTiming | None = None, seed: int = 1) -> None:
        self.env = simpy.Environment()
        self.driver = SimDriver(self.env)
        self.model = StorageModel(self.driver, {REGION: AZS, OTHER_REGION: OTHER_AZS}, timing)
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        log = EventLog(lambda t, _src, kind, fields: self.events.append((t, kind, fields)))
        self.system = ActorSystem(self.driver, seed, log)
        self.volumes: dict[str, ActorRef] = {}
        refs: dict[str, ActorRef] = {}
        stores = {az: self.model.block_store(az) for az in AZS}
        stop = self.driver.event()
        self._stop = stop

        async def main() -> None:
            async with self.system.running():
                for az in AZS:
                    self.volumes[az] = self.system.spawn(functools.partial(VolumeService, az, stores[az]),
                                                         f"volumes-{az}")
                refs["backups"] = self.system.spawn(
                    lambda: BackupService(self.model.object_store(REGION), stores, self.volumes, limits), "backups")
                refs["tenant"] = self.system.spawn(
                    lambda: Tenant(TENANT, {}, quotas, self.volumes, refs["backups"]), f"tenant-{TENANT}")
                await stop.wait()

        self._main = self.driver.start(main)
        self.driver.advance(until=lambda: len(refs) == 2)
        self.backups = refs["backups"]
        self.tenant = refs["tenant"]

    @property
    def now(self) -> float:
        return float(self.env.now)

    def send(self, msg: Any, to: ActorRef | None = None) -> Handle:
        """Send `msg` (to the tenant by default) and run what is ready now."""
        target = self.tenant if to is None else to
        handle = self.driver.start(target.ask, msg, None)
        self.driver.advance(to=self.env.now)
        return handle

    def wait(self, *handles: Handle) -> None:
        self.driver.advance(until=lambda: all(h.done for h in handles), to=self.env.now + ASK_LIMIT_S)
        assert all(h.done for h in handles), "a request got no reply: an actor lost it"

    def result(self, handle: Handle) -> Any:
        self.wait(handle)
        if handle.error is not None:
            raise handle.error
        return handle.result

    def ask(self, msg: Any, to: ActorRef | None = None) -> Any:
        """The reply to `msg`, or its CloudError raised."""
        return self.result(self.send(msg, to))

    def run(self, coro_fn: Any, *args: Any) -> Any:
        """Run a coroutine function (e.g. a store call) in virtual time and return its result."""
        return self.result(self.driver.start(coro_fn, *args))

    def advance(self, seconds: float) -> None:
        self.driver.advance(to=self.env.now + seconds)

    def until_settled(self, backup_id: str, limit_s: float = 86400.0) -> BackupView:
        """Run until the backup is available, or in error with no retry due."""
        end = self.env.now + limit_s
        while True:
            view: BackupView = self.ask(GetBackup(TENANT, backup_id), to=self.backups)
            if view.state == "available" or (view.state == "error" and view.retry_at is None) or self.env.now >= end:
                return view
            self.advance(1.0)

    def volume(self, az: str, size_gb: int = 10, kind: VolumeKind = VolumeKind.SATA,
               bootable: bool = False) -> VolumeView:
        view: VolumeView = self.ask(CreateVolume(TENANT, az, size_gb, kind, bootable))
        return view

    def server_with_volumes(self, az: str, server_id: str, sizes: tuple[int, ...]) -> list[VolumeView]:
        """A server known to the AZ's volume service with a system disk and data disks attached."""
        self.ask(RegisterServer(TENANT, server_id), to=self.volumes[az])
        views = []
        for i, size in enumerate(sizes):
            vol = self.volume(az, size, bootable=i == 0)
            views.append(self.ask(AttachVolume(TENANT, vol.id, server_id), to=self.volumes[az]))
        return views

    def kinds(self, *kinds: str) -> list[tuple[float, str, dict[str, Any]]]:
        return [e for e in self.events if e[1] in kinds]

    def close(self) -> None:
        self._stop.set()
        self.driver.advance(until=lambda: self._main.done, to=self.env.now + 3600)

    def __enter__(self) -> Site:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def failed(fn: Any, *args: Any) -> CloudError:
    """The CloudError `fn(*args)` raises (the test fails if it raises none)."""
    try:
        fn(*args)
    except CloudError as exc:
        return exc
    raise AssertionError(f"{fn.__name__}{args} was not refused")

"""Targets of the storage contract suites: every BlockStore/ObjectStore, under its own driver.

- `sim`: the SimPy models (`sim.storage.StorageModel`) under `SimDriver`, virtual time.
- `ceph`: `RbdBlockStore` and `S3ObjectStore` on the one-node Ceph of
  `.ci/ceph-start.sh` (FE_CEPH_DIR, default /var/tmp/fe-ceph) under `AnyioDriver`
  (asyncio: aiobotocore has no trio). Marker `ceph`.

Both have the regions eu-west-0 (AZs eu-west-0a, eu-west-0b) and eu-west-1 (AZ
eu-west-1a); on Ceph each AZ is an RBD pool and both regions' object stores are the
one radosgw (the region is the adapter's, checked before any I/O).

A test is an `async def body(rig)`; `bench.run(body)` builds fresh stores, runs the
body under the target's driver and removes everything named with `rig.prefix`
(Ceph is shared by every test). Disturbances:
- `rig.cut_az(az)` / `rig.mend_az(az)`: the sim fails one AZ; Ceph cannot lose one
  pool alone, so it freezes its monitor (SIGSTOP), every AZ at once: each call of the
  adapter is a new Ceph client, which cannot connect. (Freezing the OSD too would also
  break radosgw's watches on it, and the gateway would stall for a while after.)
- `rig.cut_objects(region)` / `rig.mend_objects(region)`: the sim fails the region's
  gateway; Ceph freezes radosgw. Freezes stay under 30 s, the OSD's watch timeout.
- `await rig.lose(az)`: the AZ's store is gone for good while the others work. The sim
  fails the AZ; on Ceph the adapter of that AZ is closed (its replication loop stops).
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import attrs
import pytest

from runtime.driver import AnyioDriver, Driver
from runtime.errors import NotFound
from runtime.storage import BlockStore, ObjectStore, StoreUnavailable
from sim.driver import SimDriver

if TYPE_CHECKING:  # the vendor libraries load only when the ceph target runs
    from runtime.backends.rbd import RbdBlockStore
    from runtime.backends.s3 import S3ObjectStore

REGIONS = {"eu-west-0": ["eu-west-0a", "eu-west-0b"], "eu-west-1": ["eu-west-1a"]}
CEPH_DIR = os.environ.get("FE_CEPH_DIR", "/var/tmp/fe-ceph")
S3_ENDPOINT = "http://127.0.0.1:7480"
S3_KEYS = ("TESTKEY", "TESTSECRET")


@attrs.define
class StorageRig:
    """What a test body gets: the stores and the means to disturb them."""

    driver: Driver
    blocks: dict[str, BlockStore]  # by AZ
    objects: dict[str, ObjectStore]  # by region
    prefix: str  # every volume id and bucket a test makes starts with it (lowercase, S3-valid)
    cut_az: Callable[[str], None]
    mend_az: Callable[[str], None]
    cut_objects: Callable[[str], None]
    mend_objects: Callable[[str], None]
    lose: Callable[[str], Awaitable[None]]
    patience_s: float  # longer than any call to a silent store, or a replication's first sync, takes

    def vid(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def bucket(self, name: str) -> str:
        return f"{self.prefix}{name}"


StorageBody = Callable[[StorageRig], Awaitable[None]]


class SimStorageBench:
    def run(self, body: StorageBody) -> None:
        from sim.storage import StorageModel

        driver = SimDriver()
        model = StorageModel(driver, {"eu-west-0": ["eu-west-0a", "eu-west-0b", "eu-west-0c"],
                                      "eu-west-1": ["eu-west-1a"]})

        async def lose(az: str) -> None:
            model.fail_az(az)

        rig = StorageRig(
            driver,
            {az: model.block_store(az) for azs in REGIONS.values() for az in azs},
            {region: model.object_store(region) for region in REGIONS},
            "fe-ct-", model.fail_az, model.restore_az, model.fail_objects, model.restore_objects, lose,
            patience_s=600.0,
        )
        driver.run(body, rig)


class _Freezer:
    """SIGSTOP/SIGCONT of Ceph daemons by their pid files; thawing is idempotent."""

    def __init__(self) -> None:
        self.frozen: list[int] = []
        self.ever = False

    def freeze(self, *daemons: str) -> None:
        self.ever = True
        for daemon in daemons:
            with open(os.path.join(CEPH_DIR, "run", f"{daemon}.pid")) as f:
                pid = int(f.read().strip())
            os.kill(pid, signal.SIGSTOP)
            self.frozen.append(pid)

    def thaw(self) -> None:
        while self.frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.frozen.pop(), signal.SIGCONT)


async def _hold(store: RbdBlockStore, *, task_status: anyio.abc.TaskStatus[Callable[[], Awaitable[None]]]) -> None:
    """Keep `store` open until the returned function is awaited (which waits until it closed)."""
    release, closed = anyio.Event(), anyio.Event()

    async def close() -> None:
        release.set()
        await closed.wait()

    try:
        async with store:
            task_status.started(close)
            await release.wait()
    finally:
        closed.set()


class CephStorageBench:
    # Client timeouts: a frozen cluster is noticed in a few seconds.
    OP_TIMEOUT_S = 3.0
    SYNC_INTERVAL_S = 1.0
    S3_READ_TIMEOUT_S = 10.0

    def run(self, body: StorageBody) -> None:
        try:
            AnyioDriver().run(self._main, body)
        except BaseExceptionGroup as group:  # the holders' task group wraps what the body raised
            if len(group.exceptions) != 1:
                raise
            raise group.exceptions[0] from None

    def _block_store(self, az: str, region: str) -> RbdBlockStore:
        from runtime.backends.rbd import RbdBlockStore

        return RbdBlockStore(az, region, ceph_conf=os.path.join(CEPH_DIR, "ceph.conf"),
                             sync_interval_s=self.SYNC_INTERVAL_S, op_timeout_s=self.OP_TIMEOUT_S)

    def _object_store(self, region: str) -> S3ObjectStore:
        from runtime.backends.s3 import S3ObjectStore

        # One attempt: a retry after a slow success (a busy machine) would answer NotFound.
        return S3ObjectStore(S3_ENDPOINT, *S3_KEYS, region, connect_timeout_s=self.OP_TIMEOUT_S,
                             read_timeout_s=self.S3_READ_TIMEOUT_S, max_attempts=1)

    async def _main(self, body: StorageBody) -> None:
        freezer = _Freezer()
        prefix = f"fe-ct-{uuid.uuid4().hex[:8]}-"
        try:
            # Each block store lives in a task of its own, so that one can close (lose) while
            # the others stay open: their task groups need not close in reverse order.
            async with anyio.create_task_group() as holders:
                blocks: dict[str, BlockStore] = {}
                releases: dict[str, Callable[[], Awaitable[None]]] = {}
                for region, azs in REGIONS.items():
                    for az in azs:
                        store = self._block_store(az, region)
                        releases[az] = await holders.start(_hold, store)
                        blocks[az] = store

                async def lose(az: str) -> None:
                    await releases.pop(az)()

                async with contextlib.AsyncExitStack() as stack:
                    objects: dict[str, ObjectStore] = {
                        region: await stack.enter_async_context(self._object_store(region)) for region in REGIONS
                    }
                    rig = StorageRig(
                        AnyioDriver(), blocks, objects, prefix,
                        cut_az=lambda _az: freezer.freeze("mon.a"), mend_az=lambda _az: freezer.thaw(),
                        cut_objects=lambda _region: freezer.freeze("client.rgw.a"),
                        mend_objects=lambda _region: freezer.thaw(),
                        lose=lose, patience_s=60.0,
                    )
                    try:
                        await body(rig)
                    finally:
                        freezer.thaw()
                        for release in releases.values():
                            await release()
        finally:
            freezer.thaw()
            with anyio.fail_after(120):
                if freezer.ever:
                    await self._settle()
                await self._clean(prefix)

    async def _settle(self) -> None:
        """Wait until the gateway serves again after a freeze (its Ceph sessions reconnect)."""
        async with self._object_store("eu-west-0") as objects:
            while True:
                try:
                    await objects.list_buckets()
                    return
                except StoreUnavailable:
                    await anyio.sleep(0.5)

    async def _clean(self, prefix: str) -> None:
        """Remove what the test made, with fresh stores (the test's may be closed or frozen)."""
        async with contextlib.AsyncExitStack() as stack:
            stores = [await stack.enter_async_context(self._block_store(az, region))
                      for region, azs in REGIONS.items() for az in azs]
            left = [(store, [v for v in await store.list_volumes() if v.id.startswith(prefix)]) for store in stores]
            for store, volumes in left:  # pairs first: a volume in one cannot be deleted
                for volume in volumes:
                    with contextlib.suppress(NotFound):  # no pair, or stopped from its other end
                        await store.stop_replication(volume.id)
            for store, volumes in left:
                for volume in volumes:
                    for snapshot in volume.snapshots:
                        await store.delete_snapshot(volume.id, snapshot)
                    await store.delete_volume(volume.id)
            objects = await stack.enter_async_context(self._object_store("eu-west-0"))
            for bucket in await objects.list_buckets():
                if bucket.startswith(prefix):
                    for info in await objects.list_objects(bucket):
                        with contextlib.suppress(NotFound):
                            await objects.delete_object(bucket, info.key)
                    await objects.delete_bucket(bucket)


StorageBench = SimStorageBench | CephStorageBench

STORAGE_BENCHES = [
    pytest.param(SimStorageBench(), id="sim"),
    pytest.param(CephStorageBench(), id="ceph", marks=pytest.mark.ceph),
]


@pytest.fixture(params=STORAGE_BENCHES)
def storage_bench(request: pytest.FixtureRequest) -> Iterator[StorageBench]:
    yield request.param


@pytest.fixture
def run_storage(storage_bench: StorageBench) -> Callable[[StorageBody], None]:
    return storage_bench.run

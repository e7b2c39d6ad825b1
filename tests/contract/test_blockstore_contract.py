"""The BlockStore contract: every implementation stores, moves and refuses the same things.

Runs on each target of storage_benches.py (sim, ceph): volumes and their data,
snapshots, backups to the region's object store (full then incremental diffs, restored
into a new volume), replication to another AZ with failover from either end, and every
refusal of `runtime.storage`. Waits are bounded polls through the rig's driver.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from runtime.errors import Conflict, InvalidRequest, NotFound
from runtime.storage import (
    GIB,
    MAX_GB,
    BlockStore,
    ReplicationStatus,
    ResidencyViolation,
    StoreUnavailable,
    VolumeKind,
    VolumeRecord,
)

from .storage_benches import StorageBody, StorageRig

Run = Callable[[StorageBody], None]
A, B, OTHER_REGION_AZ = "eu-west-0a", "eu-west-0b", "eu-west-1a"
REGION, OTHER_REGION = "eu-west-0", "eu-west-1"


async def mine(rig: StorageRig, store: BlockStore) -> list[VolumeRecord]:
    """What list_volumes says about this test's volumes (Ceph's pools are shared)."""
    return [v for v in await store.list_volumes() if v.id.startswith(rig.prefix)]


async def synced_after(rig: StorageRig, store: BlockStore, volume_id: str, t: float | None) -> ReplicationStatus:
    """Poll until the pair is consistent (as of `t` or later, if given), within the rig's patience."""
    with rig.driver.fail_after(rig.patience_s):
        while True:
            status = await store.replication_status(volume_id)
            if status.consistent_as_of is not None and (t is None or status.consistent_as_of >= t):
                return status
            await rig.driver.sleep(0.2)


def test_stores_are_block_stores_of_their_az(run_storage: Run) -> None:
    async def body(rig: StorageRig) -> None:
        for az, store in rig.blocks.items():
            assert isinstance(store, BlockStore)
            assert store.az == az
            assert store.region == az[:-1]

    run_storage(body)


def test_volume_round_trip(run_storage: Run) -> None:
    async def body(rig: StorageRig) -> None:
        store, a, b = rig.blocks[A], rig.vid("a"), rig.vid("b")
        assert await mine(rig, store) == []
        await store.create_volume(a, 1, VolumeKind.SSD)
        await store.create_volume(b, 2, VolumeKind.SATA)
        assert await store.get_volume(a) == VolumeRecord(a, 1, VolumeKind.SSD, ())
        assert await mine(rig, store) == [VolumeRecord(a, 1, VolumeKind.SSD, ()),
                                          VolumeRecord(b, 2, VolumeKind.SATA, ())]
        await store.expand_volume(a, 3)
        assert await store.get_volume(a) == VolumeRecord(a, 3, VolumeKind.SSD, ())
        assert await mine(rig, rig.blocks[B]) == []  # an AZ's volumes are its own
        await store.delete_volume(a)
        await store.delete_volume(b)
        assert await mine(rig, store) == []

    run_storage(body)


def test_data_reads_back_where_it_was_written(run_storage: Run) -> None:
    async def body(rig: StorageRig) -> None:
        store, a = rig.blocks[A], rig.vid("a")
        await store.create_volume(a, 1, VolumeKind.SSD)
        assert await store.read(a, 0, 16) == bytes(16)  # a new volume reads as zeros
        await store.write(a, 100, b"hello")
        await store.write(a, GIB - 5, b"tail!")  # the last bytes of the volume
        await store.write(a, 102, b"LL")  # overwrites part of the first write
        assert await store.read(a, 96, 13) == bytes(4) + b"heLLo" + bytes(4)
        assert await store.read(a, GIB - 5, 5) == b"tail!"
        assert await store.read(a, 5, 0) == b""
        await store.expand_volume(a, 2)  # data stays where it was
        assert await store.read(a, 100, 5) == b"heLLo"
        await store.write(a, GIB + 7, b"beyond the old end")
        assert await store.read(a, GIB + 7, 18) == b"beyond the old end"

    run_storage(body)


def test_snapshots_are_listed_in_creation_order_and_deleted(run_storage: Run) -> None:
    async def body(rig: StorageRig) -> None:
        store, a = rig.blocks[A], rig.vid("a")
        await store.create_volume(a, 1, VolumeKind.SATA)
        for snap in ("s2", "s1", "s3"):
            await store.create_snapshot(a, snap)
        assert (await store.get_volume(a)).snapshots == ("s2", "s1", "s3")
        await store.delete_snapshot(a, "s1")
        assert await mine(rig, store) == [VolumeRecord(a, 1, VolumeKind.SATA, ("s2", "s3"))]

    run_storage(body)


def test_creating_what_exists_is_a_conflict(run_storage: Run) -> None:
    async def body(rig: StorageRig) -> None:
        store, a = rig.blocks[A], rig.vid("a")
        await store.create_volume(a, 1, VolumeKind.SSD)
        await store.create_snapshot(a, "s1")
        with pytest.raises(Conflict):
            await store.create_volume(a, 2, VolumeKind.SATA)
        with pytest.raises(Conflict):
            await store.create_snapshot(a, "s1")
        assert await mine(rig, store) == [VolumeRecord(a, 1, VolumeKind.SSD, ("s1",))]

    run_storage(body)


def test_deleting_a_volume_with_snapshots_is_a_conflict(run_storage: Run) -> None:
    async def body(rig: StorageRig) -> None:
        store, a = rig.blocks[A], rig.vid("a")
        await store.create_volume(a, 1, VolumeKind.SSD)
        await store.write(a, 0, b"kept")
        await store.create_snapshot(a, "s1")
        with pytest.raises(Conflict):
            await store.delete_volume(a)
        assert await store.read(a, 0, 4) == b"kept"
        await store.delete_snapshot(a, "s1")
        await store.delete_volume(a)
        assert await mine(rig, store) == []

    run_storage(body)


UNKNOWN_VOLUME: dict[str, Callable[[StorageRig, str], Awaitable[object]]] = {
    "get_volume": lambda r, v: r.blocks[A].get_volume(v),
    "expand_volume": lambda r, v: r.blocks[A].expand_volume(v, 2),
    "delete_volume": lambda r, v: r.blocks[A].delete_volume(v),
    "write": lambda r, v: r.blocks[A].write(v, 0, b"x"),
    "read": lambda r, v: r.blocks[A].read(v, 0, 1),
    "create_snapshot": lambda r, v: r.blocks[A].create_snapshot(v, "s1"),
    "delete_snapshot": lambda r, v: r.blocks[A].delete_snapshot(v, "s1"),
    "export_diff": lambda r, v: r.blocks[A].export_diff(v, "s1", None, r.objects[REGION], r.bucket("b"), "k"),
    "import_diffs": lambda r, v: r.blocks[A].import_diffs(v, r.objects[REGION], r.bucket("b"), ["k"]),
    "start_replication": lambda r, v: r.blocks[A].start_replication(v, r.blocks[B], r.vid("replica")),
}


@pytest.mark.parametrize("call", sorted(UNKNOWN_VOLUME))
def test_calls_naming_an_unknown_volume_are_not_found(run_storage: Run, call: str) -> None:
    async def body(rig: StorageRig) -> None:
        await rig.blocks[A].create_volume(rig.vid("known"), 1, VolumeKind.SSD)
        await rig.blocks[B].create_volume(rig.vid("unknown"), 1, VolumeKind.SSD)  # same id, another AZ
        await rig.objects[REGION].create_bucket(rig.bucket("b"))
        with pytest.raises(NotFound) as info:
            await UNKNOWN_VOLUME[call](rig, rig.vid("unknown"))
        assert (info.value.kind, info.value.ident) == ("volume", f"{rig.vid('unknown')} in {A}")
        assert [v.id for v in await mine(rig, rig.blocks[A])] == [rig.vid("known")]
        assert [v.id for v in await mine(rig, rig.blocks[B])] == [rig.vid("unknown")]

    run_storage(body)


UNKNOWN_SNAPSHOT: dict[str, Callable[[StorageRig, str], Awaitable[object]]] = {
    "delete_snapshot": lambda r, v: r.blocks[A].delete_snapshot(v, "nope"),
    "export_diff": lambda r, v: r.blocks[A].export_diff(v, "nope", None, r.objects[REGION], r.bucket("b"), "k"),
    "export_diff from": lambda r, v: r.blocks[A].export_diff(v, "s1", "nope", r.objects[REGION], r.bucket("b"), "k"),
}


@pytest.mark.parametrize("call", sorted(UNKNOWN_SNAPSHOT))
def test_calls_naming_an_unknown_snapshot_are_not_found(run_storage: Run, call: str) -> None:
    async def body(rig: StorageRig) -> None:
        a = rig.vid("a")
        await rig.blocks[A].create_volume(a, 1, VolumeKind.SSD)
        await rig.blocks[A].create_snapshot(a, "s1")
        await rig.objects[REGION].create_bucket(rig.bucket("b"))
        with pytest.raises(NotFound) as info:
            await UNKNOWN_SNAPSHOT[call](rig, a)
        assert (info.value.kind, info.value.ident) == ("snapshot", f"{a}@nope in {A}")
        assert (await rig.blocks[A].get_volume(a)).snapshots == ("s1",)
        assert await rig.objects[REGION].list_objects(rig.bucket("b")) == []

    run_storage(body)


def test_backups_name_unknown_buckets_and_objects_as_not_found(run_storage: Run) -> None:
    async def body(rig: StorageRig) -> None:
        store, objects, a = rig.blocks[A], rig.objects[REGION], rig.vid("a")
        await store.create_volume(a, 1, VolumeKind.SSD)
        await store.create_snapshot(a, "s1")
        with pytest.raises(NotFound) as info:
            await store.export_diff(a, "s1", None, objects, rig.bucket("nope"), "full")
        assert (info.value.kind, info.value.ident) == ("bucket", rig.bucket("nope"))
        await objects.create_bucket(rig.bucket("b"))
        with pytest.raises(NotFound) as info:
            await store.import_diffs(a, objects, rig.bucket("b"), ["nope"])
        assert (info.value.kind, info.value.ident) == ("object", f"{rig.bucket('b')}/nope")

    run_storage(body)


@pytest.mark.parametrize(("volume_id", "size_gb"), [
    ("", 1), ("a/b", 1), ("-a", 1), ("a@b", 1), ("x" * 65, 1),
    ("ok", 0), ("ok", -1), ("ok", MAX_GB + 1), ("ok", True), ("ok", 1.5),
])
def test_creating_what_a_volume_cannot_be_is_invalid(run_storage: Run, volume_id: str, size_gb: int) -> None:
    async def body(rig: StorageRig) -> None:
        vid = rig.vid(volume_id) if volume_id == "ok" else volume_id
        with pytest.raises(InvalidRequest):
            await rig.blocks[A].create_volume(vid, size_gb, VolumeKind.SSD)
        assert await mine(rig, rig.blocks[A]) == []

    run_storage(body)


@pytest.mark.parametrize("size_gb", [2, 1])
def test_an_expand_that_does_not_grow_is_invalid(run_storage: Run, size_gb: int) -> None:
    async def body(rig: StorageRig) -> None:
        a = rig.vid("a")
        await rig.blocks[A].create_volume(a, 2, VolumeKind.SSD)
        with pytest.raises(InvalidRequest, match="only grow"):
            await rig.blocks[A].expand_volume(a, size_gb)
        with pytest.raises(InvalidRequest):
            await rig.blocks[A].expand_volume(a, MAX_GB + 1)
        assert (await rig.blocks[A].get_volume(a)).size_gb == 2

    run_storage(body)


@pytest.mark.parametrize(("offset", "length"), [(-1, 1), (0, -1), (GIB, 1), (GIB - 1, 2), (2 * GIB, 0)])
def test_data_outside_the_volume_is_invalid(run_storage: Run, offset: int, length: int) -> None:
    async def body(rig: StorageRig) -> None:
        store, a = rig.blocks[A], rig.vid("a")
        await store.create_volume(a, 1, VolumeKind.SSD)
        with pytest.raises(InvalidRequest):
            await store.read(a, offset, length)
        if length >= 0:
            with pytest.raises(InvalidRequest):
                await store.write(a, offset, b"x" * length)
        assert await store.read(a, GIB - 1, 1) == b"\0"

    run_storage(body)


def test_full_and_incremental_backups_restore_into_a_new_volume(run_storage: Run) -> None:
    async def body(rig: StorageRig) -> None:
        store, objects, a, bucket = rig.blocks[A], rig.objects[REGION], rig.vid("a"), rig.bucket("backups")
        await objects.create_bucket(bucket)
        await store.create_volume(a, 1, VolumeKind.SSD)
        await store.write(a, 0, b"A" * 4096)
        await store.write(a, 5 << 20, b"B" * 100)
        await store.create_snapshot(a, "s1")
        full = await store.export_diff(a, "s1", None, objects, bucket, "a/full")
        assert full >= 4196
        await store.write(a, 10, b"C" * 10)  # changes part of what the full backup holds
        await store.write(a, 9 << 20, b"D" * 50)
        await store.create_snapshot(a, "s2")
        await store.write(a, 20, b"after the last snapshot")
        incremental = await store.export_diff(a, "s2", "s1", objects, bucket, "a/inc")
        assert incremental > 0
        assert [(o.key, o.size) for o in await objects.list_objects(bucket, "a/")] == [
            ("a/full", full), ("a/inc", incremental)]

        expected_s1 = {0: b"A" * 4096, 5 << 20: b"B" * 100, 9 << 20: bytes(50)}
        expected_s2 = {0: b"A" * 10 + b"C" * 10 + b"A" * 4076, 5 << 20: b"B" * 100, 9 << 20: b"D" * 50}
        for name, keys, expected in (("s1", ["a/full"], expected_s1), ("s2", ["a/full", "a/inc"], expected_s2)):
            restored = rig.vid(f"restored-{name}")
            await rig.blocks[A].create_volume(restored, 2, VolumeKind.SATA)  # at least as large is enough
            await rig.blocks[A].import_diffs(restored, objects, bucket, keys)
            for offset, data in expected.items():
                assert await rig.blocks[A].read(restored, offset, len(data)) == data, (name, offset)
            assert (await rig.blocks[A].get_volume(restored)).snapshots == ()

    run_storage(body)


def test_a_restore_replaces_what_the_volume_held(run_storage: Run) -> None:
    async def body(rig: StorageRig) -> None:
        store, objects, a, bucket = rig.blocks[B], rig.objects[REGION], rig.vid("a"), rig.bucket("backups")
        await objects.create_bucket(bucket)
        await store.create_volume(a, 1, VolumeKind.SSD)
        await store.write(a, 0, b"backed up")
        await store.create_snapshot(a, "s1")
        await store.export_diff(a, "s1", None, objects, bucket, "full")
        target = rig.vid("target")
        await store.create_volume(target, 1, VolumeKind.SSD)
        await store.write(target, 0, b"overwritten")
        await store.write(target, 3 << 20, b"stale")
        await store.import_diffs(target, objects, bucket, ["full"])
        assert await store.read(target, 0, 11) == b"backed up\0\0"
        assert await store.read(target, 3 << 20, 5) == bytes(5)

    run_storage(body)


def test_a_restore_into_a_smaller_volume_is_invalid(run_storage: Run) -> None:
    async def body(rig: StorageRig) -> None:
        store, objects, a, bucket = rig.blocks[A], rig.objects[REGION], rig.vid("a"), rig.bucket("backups")
        await objects.create_bucket(bucket)
        await store.create_volume(a, 2, VolumeKind.SSD)
        await store.write(a, 0, b"big")
        await store.create_snapshot(a, "s1")
        await store.export_diff(a, "s1", None, objects, bucket, "full")
        small = rig.vid("small")
        await store.create_volume(small, 1, VolumeKind.SSD)
        with pytest.raises(InvalidRequest):
            await store.import_diffs(small, objects, bucket, ["full"])
        assert await store.read(small, 0, 3) == bytes(3)

    run_storage(body)


def test_backups_and_replicas_stay_in_their_region(run_storage: Run) -> None:
    async def body(rig: StorageRig) -> None:
        store, a = rig.blocks[A], rig.vid("a")
        abroad, bucket = rig.objects[OTHER_REGION], rig.bucket("abroad")
        await abroad.create_bucket(bucket)
        await store.create_volume(a, 1, VolumeKind.SSD)
        await store.write(a, 0, b"resident")
        await store.create_snapshot(a, "s1")
        with pytest.raises(ResidencyViolation) as info:
            await store.export_diff(a, "s1", None, abroad, bucket, "full")
        assert (info.value.source_region, info.value.target_region) == (REGION, OTHER_REGION)
        assert await abroad.list_objects(bucket) == []
        with pytest.raises(ResidencyViolation) as info:
            await store.import_diffs(a, abroad, bucket, ["full"])
        assert (info.value.source_region, info.value.target_region) == (OTHER_REGION, REGION)
        assert await store.read(a, 0, 8) == b"resident"
        with pytest.raises(ResidencyViolation):
            await store.start_replication(a, rig.blocks[OTHER_REGION_AZ], rig.vid("replica"))
        assert await mine(rig, rig.blocks[OTHER_REGION_AZ]) == []
        with pytest.raises(NotFound):
            await store.replication_status(a)

    run_storage(body)


def test_replication_reaches_the_replica_which_survives_a_stop_at_the_source(run_storage: Run) -> None:
    async def body(rig: StorageRig) -> None:
        a, b, src, rep = rig.blocks[A], rig.blocks[B], rig.vid("src"), rig.vid("rep")
        await a.create_volume(src, 1, VolumeKind.SSD)
        await a.write(src, 4096, b"before the pair")
        await a.start_replication(src, b, rep)
        assert (await b.get_volume(rep)).size_gb == 1  # made at once, filled in the background
        status = await synced_after(rig, a, src, None)
        assert (status.volume_id, status.source_az, status.replica_id, status.target_az, status.running) == (
            src, A, rep, B, True)
        assert status.lag_bytes == 0  # nothing written since
        await a.write(src, 3 << 20, b"while paired")
        written = rig.driver.now()
        status = await synced_after(rig, a, src, written)
        there = await b.replication_status(rep)  # the same pair, seen from the replica's end
        assert (there.volume_id, there.source_az, there.replica_id, there.target_az, there.running) == (
            src, A, rep, B, True)
        assert there.consistent_as_of is not None and there.consistent_as_of >= written
        assert (status.lag_bytes, there.lag_bytes) == (0, 0)
        for store, volume_id in ((a, src), (b, rep)):
            with pytest.raises(Conflict):
                await store.delete_volume(volume_id)
        with pytest.raises(Conflict):
            await a.start_replication(src, b, rig.vid("second"))
        await a.stop_replication(src)
        for store, volume_id in ((a, src), (b, rep)):
            with pytest.raises(NotFound) as info:
                await store.replication_status(volume_id)
            assert info.value.kind == "replication"
        assert await b.read(rep, 4096, 15) == b"before the pair"
        assert await b.read(rep, 3 << 20, 12) == b"while paired"
        assert (await b.get_volume(rep)).snapshots == ()
        await b.write(rep, 0, b"an ordinary volume now")
        await b.delete_volume(rep)
        await a.delete_volume(src)

    run_storage(body)


def test_a_stop_at_the_replica_works_with_the_source_gone(run_storage: Run) -> None:
    async def body(rig: StorageRig) -> None:
        a, b, src, rep = rig.blocks[A], rig.blocks[B], rig.vid("src"), rig.vid("rep")
        await a.create_volume(src, 1, VolumeKind.SATA)
        await a.write(src, 0, b"first")
        await a.start_replication(src, b, rep)
        await a.write(src, 1 << 20, b"second")
        written = rig.driver.now()
        status = await synced_after(rig, b, rep, written)
        assert (status.volume_id, status.replica_id, status.running) == (src, rep, True)
        await rig.lose(A)
        await b.stop_replication(rep)  # failover: the replica becomes an ordinary volume
        with pytest.raises(NotFound):
            await b.replication_status(rep)
        assert await b.read(rep, 0, 5) == b"first"
        assert await b.read(rep, 1 << 20, 6) == b"second"
        assert await b.get_volume(rep) == VolumeRecord(rep, 1, VolumeKind.SATA, ())
        await b.delete_volume(rep)

    run_storage(body)


def test_replicating_to_the_same_az_or_another_kind_of_store_is_invalid(run_storage: Run) -> None:
    async def body(rig: StorageRig) -> None:
        a, src = rig.blocks[A], rig.vid("src")
        await a.create_volume(src, 1, VolumeKind.SSD)
        with pytest.raises(InvalidRequest):
            await a.start_replication(src, a, rig.vid("rep"))
        with pytest.raises(InvalidRequest):
            await a.start_replication(src, rig.blocks[B], "not/a volume id")
        assert [v.id for v in await mine(rig, a)] == [src]
        assert await mine(rig, rig.blocks[B]) == []

    run_storage(body)


def test_a_cut_az_is_unavailable_then_serves_again(run_storage: Run) -> None:
    async def body(rig: StorageRig) -> None:
        store, a = rig.blocks[A], rig.vid("a")
        await store.create_volume(a, 1, VolumeKind.SSD)
        await store.write(a, 0, b"kept")
        rig.cut_az(A)
        try:
            for call in (lambda: store.get_volume(a), lambda: store.read(a, 0, 4), store.list_volumes,
                         lambda: store.create_volume(rig.vid("b"), 1, VolumeKind.SSD),
                         lambda: store.create_snapshot(a, "s1")):
                with rig.driver.fail_after(rig.patience_s), pytest.raises(StoreUnavailable) as info:
                    await call()
                assert info.value.where == A
        finally:
            rig.mend_az(A)
        with rig.driver.fail_after(rig.patience_s):
            assert await store.read(a, 0, 4) == b"kept"

    run_storage(body)


def test_a_diff_that_is_no_diff_is_invalid(run_storage: Run) -> None:
    async def body(rig: StorageRig) -> None:
        store, objects, a, bucket = rig.blocks[A], rig.objects[REGION], rig.vid("a"), rig.bucket("backups")
        await objects.create_bucket(bucket)
        await objects.put_object(bucket, "notes.txt", b"not a volume diff")
        await store.create_volume(a, 1, VolumeKind.SSD)
        await store.write(a, 0, b"kept")
        with pytest.raises(InvalidRequest):
            await store.import_diffs(a, objects, bucket, ["notes.txt"])
        assert await store.read(a, 0, 4) == b"kept"

    run_storage(body)


def test_reprotect_reuses_the_old_source_which_becomes_an_exact_copy(run_storage: Run) -> None:
    """Failover to B, then replicate back to the old source in A: A ends up equal to B."""

    async def body(rig: StorageRig) -> None:
        a, b, vol, rep = rig.blocks[A], rig.blocks[B], rig.vid("vol"), rig.vid("rep")
        await a.create_volume(vol, 1, VolumeKind.SSD)
        await a.write(vol, 0, b"shared")
        await a.start_replication(vol, b, rep)
        await synced_after(rig, a, vol, None)
        await b.stop_replication(rep)  # failover: B serves now
        await a.write(vol, 2 << 20, b"only in A, after the failover")  # lost with the old site
        await b.write(rep, 0, b"SHARED")
        await b.start_replication(rep, a, vol)  # re-protect: A's volume is reused
        await b.write(rep, 3 << 20, b"new in B")
        written = rig.driver.now()
        status = await synced_after(rig, b, rep, written)
        assert (status.volume_id, status.source_az, status.replica_id, status.target_az) == (rep, B, vol, A)
        await a.stop_replication(vol)
        assert await a.read(vol, 0, 6) == b"SHARED"
        assert await a.read(vol, 3 << 20, 8) == b"new in B"
        assert await a.read(vol, 2 << 20, 29) == bytes(29)

    run_storage(body)


def test_an_exported_diff_is_an_object_of_the_size_export_reported(run_storage: Run) -> None:

    async def body(rig: StorageRig) -> None:
        store, objects, a, bucket = rig.blocks[A], rig.objects[REGION], rig.vid("a"), rig.bucket("backups")
        await objects.create_bucket(bucket)
        await store.create_volume(a, 1, VolumeKind.SSD)
        await store.write(a, 0, b"payload")
        await store.create_snapshot(a, "s1")
        stored = await store.export_diff(a, "s1", None, objects, bucket, "full")
        assert (await objects.head_object(bucket, "full")).size == stored
        assert len(await objects.get_object(bucket, "full")) == stored

    run_storage(body)

"""The ObjectStore contract: every implementation stores, lists and refuses the same things.

Runs on each target of storage_benches.py (sim, ceph). Bucket names are S3-valid
(lowercase, 3 to 63 characters): the rig's prefix plus a short name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from runtime.errors import Conflict, NotFound
from runtime.storage import ObjectInfo, ObjectStore, StorageClass, StoreUnavailable

from .storage_benches import StorageBody, StorageRig

Run = Callable[[StorageBody], None]
REGION = "eu-west-0"


async def my_buckets(rig: StorageRig, store: ObjectStore) -> list[str]:
    return [b for b in await store.list_buckets() if b.startswith(rig.prefix)]


def test_stores_are_object_stores_of_their_region(run_storage: Run) -> None:
    async def body(rig: StorageRig) -> None:
        for region, store in rig.objects.items():
            assert isinstance(store, ObjectStore)
            assert store.region == region

    run_storage(body)


def test_bucket_and_object_round_trip(run_storage: Run) -> None:
    async def body(rig: StorageRig) -> None:
        store, bucket = rig.objects[REGION], rig.bucket("b")
        await store.create_bucket(bucket)
        assert await my_buckets(rig, store) == [bucket]
        data = bytes(range(256)) * 40
        assert await store.put_object(bucket, "dir/b", data) == ObjectInfo(bucket, "dir/b", len(data),
                                                                           StorageClass.STANDARD)
        await store.put_object(bucket, "dir/a", b"small", StorageClass.COLD)
        await store.put_object(bucket, "other", b"", StorageClass.WARM)
        assert await store.get_object(bucket, "dir/b") == data
        assert await store.get_object(bucket, "other") == b""
        assert await store.head_object(bucket, "dir/a") == ObjectInfo(bucket, "dir/a", 5, StorageClass.COLD)
        assert await store.list_objects(bucket) == [
            ObjectInfo(bucket, "dir/a", 5, StorageClass.COLD),
            ObjectInfo(bucket, "dir/b", len(data), StorageClass.STANDARD),
            ObjectInfo(bucket, "other", 0, StorageClass.WARM),
        ]
        assert [o.key for o in await store.list_objects(bucket, "dir/")] == ["dir/a", "dir/b"]
        assert await store.list_objects(bucket, "nothing") == []
        await store.put_object(bucket, "dir/a", b"replaced")  # a PUT replaces, class included
        assert await store.head_object(bucket, "dir/a") == ObjectInfo(bucket, "dir/a", 8, StorageClass.STANDARD)
        assert await store.get_object(bucket, "dir/a") == b"replaced"
        for key in ("dir/a", "dir/b", "other"):
            await store.delete_object(bucket, key)
        assert await store.list_objects(bucket) == []
        await store.delete_bucket(bucket)
        assert await my_buckets(rig, store) == []

    run_storage(body)


def test_creating_a_bucket_that_exists_is_a_conflict(run_storage: Run) -> None:
    async def body(rig: StorageRig) -> None:
        store, bucket = rig.objects[REGION], rig.bucket("b")
        await store.create_bucket(bucket)
        await store.put_object(bucket, "k", b"kept")
        with pytest.raises(Conflict):
            await store.create_bucket(bucket)
        assert await store.get_object(bucket, "k") == b"kept"

    run_storage(body)


def test_deleting_a_bucket_that_holds_objects_is_a_conflict(run_storage: Run) -> None:
    async def body(rig: StorageRig) -> None:
        store, bucket = rig.objects[REGION], rig.bucket("b")
        await store.create_bucket(bucket)
        await store.put_object(bucket, "k", b"kept")
        with pytest.raises(Conflict):
            await store.delete_bucket(bucket)
        assert await my_buckets(rig, store) == [bucket]
        assert await store.get_object(bucket, "k") == b"kept"

    run_storage(body)


MISSING_BUCKET: dict[str, Callable[[ObjectStore, str], Awaitable[object]]] = {
    "delete_bucket": lambda s, b: s.delete_bucket(b),
    "put_object": lambda s, b: s.put_object(b, "k", b"data"),
    "get_object": lambda s, b: s.get_object(b, "k"),
    "head_object": lambda s, b: s.head_object(b, "k"),
    "delete_object": lambda s, b: s.delete_object(b, "k"),
    "list_objects": lambda s, b: s.list_objects(b),
}


@pytest.mark.parametrize("call", sorted(MISSING_BUCKET))
def test_calls_naming_an_unknown_bucket_are_not_found(run_storage: Run, call: str) -> None:
    async def body(rig: StorageRig) -> None:
        store = rig.objects[REGION]
        with pytest.raises(NotFound) as info:
            await MISSING_BUCKET[call](store, rig.bucket("nope"))
        assert (info.value.kind, info.value.ident) == ("bucket", rig.bucket("nope"))
        assert await my_buckets(rig, store) == []

    run_storage(body)


MISSING_OBJECT: dict[str, Callable[[ObjectStore, str], Awaitable[object]]] = {
    "get_object": lambda s, b: s.get_object(b, "nope"),
    "head_object": lambda s, b: s.head_object(b, "nope"),
    "delete_object": lambda s, b: s.delete_object(b, "nope"),
}


@pytest.mark.parametrize("call", sorted(MISSING_OBJECT))
def test_calls_naming_an_unknown_object_are_not_found(run_storage: Run, call: str) -> None:
    async def body(rig: StorageRig) -> None:
        store, bucket = rig.objects[REGION], rig.bucket("b")
        await store.create_bucket(bucket)
        await store.put_object(bucket, "nopf", b"near miss")
        with pytest.raises(NotFound) as info:
            await MISSING_OBJECT[call](store, bucket)
        assert (info.value.kind, info.value.ident) == ("object", f"{bucket}/nope")
        assert [o.key for o in await store.list_objects(bucket)] == ["nopf"]

    run_storage(body)


def test_a_gateway_that_does_not_answer_is_unavailable_then_serves_again(run_storage: Run) -> None:
    async def body(rig: StorageRig) -> None:
        store, bucket = rig.objects[REGION], rig.bucket("b")
        await store.create_bucket(bucket)
        await store.put_object(bucket, "k", b"kept")
        rig.cut_objects(REGION)
        try:
            # Two calls: on Ceph the gateway stays frozen less than the 30 s after which
            # its OSD drops the gateway's watches (it recovers, but slowly).
            for call in (lambda: store.get_object(bucket, "k"), lambda: store.put_object(bucket, "j", b"x")):
                with rig.driver.fail_after(rig.patience_s), pytest.raises(StoreUnavailable) as info:
                    await call()
                assert info.value.where == f"{REGION} (object storage)"
        finally:
            rig.mend_objects(REGION)
        assert await store.get_object(bucket, "k") == b"kept"

    run_storage(body)

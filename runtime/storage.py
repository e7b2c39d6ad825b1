"""Storage ports: `BlockStore` (one per availability zone) and `ObjectStore` (one per region).

Production adapters: Ceph RBD through a libvirt `rbd` pool (`runtime/backends/rbd.py`)
and Ceph's S3 gateway through aiobotocore (`runtime/backends/s3.py`). Models:
`sim/storage.py`. One contract suite (`tests/contract/`) runs on both.

Sizes are whole GiB for volumes (the unit of EVS) and bytes for data. Times are
seconds on the same clock as `Context.now()` (epoch seconds).

Refusals every implementation shares (the contract suite checks them):
- creating a volume, snapshot or bucket whose id exists: `Conflict`.
- any call naming an unknown volume, snapshot, bucket or object: `NotFound`.
- a volume id that is not `VOLUME_ID`, a size outside `MIN_GB..MAX_GB`, an expand
  that does not grow, an offset or length outside the volume: `InvalidRequest`
  (`check_volume_request`, before any I/O). EVS's own rules (data disks >= 10 GB,
  quotas) belong to the actors.
- moving data to a store of another region (export, import, replication):
  `ResidencyViolation` (SPEC GEO-3), before any I/O.
- deleting a volume that is the source or the replica of a running replication, or
  that still has snapshots: `Conflict`.
- deleting a bucket that still holds objects: `Conflict`.
- any call while the store (its AZ or region) cannot be reached: `StoreUnavailable`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import attrs

from runtime.errors import BackendError, InvalidRequest

VOLUME_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # what can name an RBD image and an S3 key part
MIN_GB = 1
MAX_GB = 32 * 1024  # 32 TB (EVS-1)
GIB = 1 << 30


class VolumeKind(enum.Enum):
    SATA = "SATA"
    SSD = "SSD"


class StorageClass(enum.Enum):
    STANDARD = "STANDARD"
    WARM = "WARM"
    COLD = "COLD"


class StoreUnavailable(BackendError):
    """The store (its AZ's storage cluster or the region's object gateway) does not answer."""

    def __init__(self, where: str, detail: str = "") -> None:
        self.where = where
        super().__init__(f"storage in {where} unreachable" + (f": {detail}" if detail else ""))


class ResidencyViolation(InvalidRequest):
    """GEO-3: the operation would put customer data in a region the tenant did not choose."""

    def __init__(self, what: str, source_region: str, target_region: str) -> None:
        self.source_region, self.target_region = source_region, target_region
        super().__init__(
            f"refused: {what} would store data of region {source_region} in region {target_region} "
            f"(GEO-3 data residency); pick a target in {source_region}"
        )


def check_volume_request(volume_id: str, size_gb: int) -> None:
    """The refusals every BlockStore makes on create/expand before any I/O."""
    if not VOLUME_ID.fullmatch(volume_id):
        raise InvalidRequest(
            f"volume id {volume_id!r} is not valid; use 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if isinstance(size_gb, bool) or not isinstance(size_gb, int) or not MIN_GB <= size_gb <= MAX_GB:
        raise InvalidRequest(f"volume {volume_id}: size {size_gb!r} GB is outside {MIN_GB}..{MAX_GB} GB")


def check_same_region(what: str, source_region: str, target_region: str) -> None:
    if source_region != target_region:
        raise ResidencyViolation(what, source_region, target_region)


@attrs.frozen
class VolumeRecord:
    """What a store holds for one volume."""

    id: str
    size_gb: int
    kind: VolumeKind
    snapshots: tuple[str, ...]  # in creation order


@attrs.frozen
class ReplicationStatus:
    """One replication pair, seen from either end.

    `consistent_as_of`: the replica holds every write the source acknowledged up to
    this time (None until the first full synchronisation completes). At a failure at
    time t, the data lost (RPO) is t - consistent_as_of.
    """

    volume_id: str
    source_az: str
    replica_id: str
    target_az: str
    running: bool
    consistent_as_of: float | None
    lag_bytes: int


@attrs.frozen
class ObjectInfo:
    bucket: str
    key: str
    size: int
    storage_class: StorageClass


@runtime_checkable
class ObjectStore(Protocol):
    """The object storage of one region (S3 on Ceph radosgw in production)."""

    @property
    def region(self) -> str: ...

    async def create_bucket(self, bucket: str) -> None: ...

    async def delete_bucket(self, bucket: str) -> None: ...

    async def list_buckets(self) -> list[str]: ...

    async def put_object(self, bucket: str, key: str, data: bytes,
                         storage_class: StorageClass = StorageClass.STANDARD) -> ObjectInfo: ...

    async def get_object(self, bucket: str, key: str) -> bytes: ...

    async def head_object(self, bucket: str, key: str) -> ObjectInfo: ...

    async def delete_object(self, bucket: str, key: str) -> None: ...

    async def list_objects(self, bucket: str, prefix: str = "") -> list[ObjectInfo]:
        """Objects whose key starts with `prefix`, sorted by key."""


@runtime_checkable
class BlockStore(Protocol):
    """The block storage of one availability zone (a Ceph pool through libvirt in production)."""

    @property
    def az(self) -> str: ...

    @property
    def region(self) -> str: ...

    async def create_volume(self, volume_id: str, size_gb: int, kind: VolumeKind) -> None: ...

    async def expand_volume(self, volume_id: str, size_gb: int) -> None:
        """Grow the volume; `InvalidRequest` if `size_gb` is not larger (volumes never shrink)."""

    async def delete_volume(self, volume_id: str) -> None: ...

    async def get_volume(self, volume_id: str) -> VolumeRecord: ...

    async def list_volumes(self) -> list[VolumeRecord]: ...

    async def write(self, volume_id: str, offset: int, data: bytes) -> None:
        """The data plane: what a guest writes. Used by tests and workload models."""

    async def read(self, volume_id: str, offset: int, length: int) -> bytes: ...

    async def create_snapshot(self, volume_id: str, snapshot_id: str) -> None: ...

    async def delete_snapshot(self, volume_id: str, snapshot_id: str) -> None: ...

    async def export_diff(self, volume_id: str, snapshot_id: str, base_snapshot_id: str | None,
                          objects: ObjectStore, bucket: str, key: str) -> int:
        """Store in `objects` the data that changed between the base snapshot (None: from
        empty) and `snapshot_id`; return the bytes stored. Takes as long as the transfer does."""

    async def import_diffs(self, volume_id: str, objects: ObjectStore, bucket: str, keys: Sequence[str]) -> None:
        """Apply the diffs stored under `keys` (a full one first, then incrementals, in order)
        to an existing volume at least as large as the one they came from."""

    async def start_replication(self, volume_id: str, target: BlockStore, replica_id: str) -> None:
        """Replicate the volume to `replica_id` in `target` (another AZ of the same region),
        creating the replica if it does not exist (re-protect reuses it). Returns at once;
        the first synchronisation runs in the background."""

    async def replication_status(self, volume_id: str) -> ReplicationStatus:
        """Asked of either end: the source (by volume id) or the target (by replica id)."""

    async def stop_replication(self, volume_id: str) -> None:
        """Stop the pair; asked of either end, so that failover works with the source gone.
        The replica stays as an ordinary volume of its store."""

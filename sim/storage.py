"""SimPy models of block storage (one store per AZ) and object storage (one per region).

`StorageModel` is the ground truth for data: what each volume, snapshot, replica and
object holds, and how long moving it takes. Durations come from bandwidth, not
constants: every AZ has a backup path to its region's object gateway and every
ordered pair of AZs of a region has a replication link (SPEC GEO-2); transfers on one
path share its bandwidth equally (processor sharing, `SharedLink`).

Volume data has two parts. Bytes written through the port (`write`) are kept exactly,
so the contract suite can read them back after a backup or a failover. A volume may
also carry a fluid workload (`set_workload`: bytes already used, write rate): that
data has a size and a history but no content, which keeps a month of thousands of
volumes cheap. A diff holds the exact chunks that changed plus the fluid bytes
written between its two snapshots.

Continuous replication is fluid too: on each link the pairs' writes form one stream
of rate W. While the link and both AZs are up it drains at the link bandwidth B, so
the unreplicated backlog (in seconds of writes) shrinks at B/W - 1 per second (grows
when W > B). While the link or the target is down it grows at 1 per second; while the
source AZ is down nothing is written, so it freezes. A replica is consistent as of
`now - backlog - latency`: at a failure, that difference is the RPO.
"""

from __future__ import annotations

import heapq
import itertools
import math
import struct
from collections.abc import Iterator, Mapping, Sequence

import attrs
import simpy

from runtime.errors import Conflict, InvalidRequest, NotFound
from runtime.storage import (
    GIB,
    BlockStore,
    ObjectInfo,
    ObjectStore,
    ReplicationStatus,
    StorageClass,
    StoreUnavailable,
    VolumeKind,
    VolumeRecord,
    check_same_region,
    check_volume_request,
)
from sim.driver import SimDriver


@attrs.frozen
class StorageTiming:
    """How long storage operations take, and how fast data moves (virtual seconds, bytes/s)."""

    rpc_s: float = 0.005
    create_s: float = 2.0
    expand_s: float = 1.0
    delete_s: float = 1.0
    snapshot_s: float = 0.5
    unreachable_s: float = 5.0  # a call to a dead store fails after this
    chunk_bytes: int = 64 * 1024
    inter_az_bps: float = 1.25e9  # 10 Gbit/s per direction between two AZs (GEO-2)
    inter_az_latency_s: float = 0.001  # GEO-2 sim default
    backup_bps: float = 2.5e8  # 2 Gbit/s from each AZ's block store to the region's object gateway
    gateway_bps: float = 1.25e8  # one client's PUT/GET stream to the object gateway


class SharedLink:
    """A path whose bandwidth is shared equally by the transfers on it (processor sharing).

    Uses virtual service: `served` is what each active transfer has received so far,
    so an arrival or departure costs O(log n) and one SimPy timer, however many run.
    """

    def __init__(self, env: simpy.Environment, bandwidth: float, name: str) -> None:
        self.env, self.bandwidth, self.name = env, bandwidth, name
        self.up = True
        self.served = 0.0
        self.last = 0.0
        self.active: list[tuple[float, int, simpy.Event]] = []
        self._seq = itertools.count()
        self._timer = 0
        self.bytes_moved = 0.0

    def _advance(self) -> None:
        now = self.env.now
        if self.up and self.active:
            share = self.bandwidth / len(self.active) * (now - self.last)
            self.served += share
            self.bytes_moved += share * len(self.active)
        self.last = now

    def transfer(self, nbytes: float) -> simpy.Event:
        self._advance()
        done = self.env.event()
        heapq.heappush(self.active, (self.served + max(0.0, nbytes), next(self._seq), done))
        self._schedule()
        return done

    def set_up(self, up: bool) -> None:
        self._advance()
        self.up = up
        self._schedule()

    def fail_all(self, exc: Exception) -> None:
        self._advance()
        for _, _, ev in self.active:
            ev.fail(exc)
        self.active.clear()
        self._schedule()

    def _schedule(self) -> None:
        self._timer += 1
        if not (self.up and self.active):
            return
        token = self._timer
        delay = (self.active[0][0] - self.served) * len(self.active) / self.bandwidth
        # Never below what the clock can tell from now: a smaller step would not advance it.
        delay = max(delay, 2 * math.ulp(self.env.now))
        self.env.timeout(delay).callbacks.append(lambda _ev: self._complete(token))

    def _complete(self, token: int) -> None:
        if token != self._timer:
            return
        self._advance()
        # What is left of a transfer within a few clock steps of its end counts as sent.
        slack = 4 * math.ulp(self.env.now) * self.bandwidth / max(1, len(self.active)) + 1e-6
        while self.active and self.active[0][0] <= self.served + slack:
            heapq.heappop(self.active)[2].succeed()
        self._schedule()


@attrs.define
class _Fluid:
    """A volume's fluid workload: `used` bytes at `since`, growing by `rate` bytes/s."""

    used: float = 0.0
    written: float = 0.0  # cumulative fluid bytes written up to `since`
    rate: float = 0.0
    since: float = 0.0

    def written_at(self, t: float) -> float:
        return self.written + self.rate * max(0.0, t - self.since)


@attrs.frozen
class _Diff:
    """What `export_diff` stores: exact changed chunks, plus fluid bytes without content."""

    size_gb: int
    chunks: Mapping[int, bytes]
    fluid: float
    chunk_bytes: int

    @property
    def nbytes(self) -> int:
        """The object's size: its encoding (what `get_object` returns) plus the fluid bytes,
        which have a size but no content."""
        return len(self.encode()) + int(self.fluid)

    def encode(self) -> bytes:
        head = struct.pack("<8sQQd", b"fe-diff1", self.size_gb, self.chunk_bytes, self.fluid)
        return head + b"".join(struct.pack("<QQ", i, len(c)) + c for i, c in sorted(self.chunks.items()))


@attrs.define
class _Snapshot:
    id: str
    at: float
    chunks: dict[int, bytes]
    fluid_written: float
    fluid_used: float


@attrs.define(eq=False)
class _Volume:
    id: str
    size_gb: int
    kind: VolumeKind
    chunks: dict[int, bytes] = attrs.Factory(dict)
    snapshots: dict[str, _Snapshot] = attrs.Factory(dict)
    fluid: _Fluid = attrs.Factory(_Fluid)
    pair_out: _Pair | None = None  # this volume is the source of a running pair
    pair_in: _Pair | None = None  # this volume is the replica of a running pair

    def used_bytes(self, now: float) -> float:
        f = self.fluid
        return min(self.size_gb * GIB, f.used + f.rate * max(0.0, now - f.since))


@attrs.define(eq=False)
class _Pair:
    source: _Volume
    source_az: str
    replica: _Volume
    target_az: str
    link: _Link
    synced: bool = False
    consistent_at_stop: float | None = None
    pending: list[tuple[float, int, bytes]] = attrs.Factory(list)  # exact writes not yet applied to the replica
    running: bool = True


@attrs.define(eq=False)
class _Link:
    """The replication stream from one AZ to another (see the module docstring)."""

    model: StorageModel
    source: str
    target: str
    up: bool = True
    backlog: float = 0.0  # seconds of writes not yet on the target
    last: float = 0.0
    pairs: set[_Pair] = attrs.Factory(set)
    sync: SharedLink | None = None

    @property
    def flowing(self) -> bool:
        return self.up and self.model.az_up[self.source] and self.model.az_up[self.target]

    def write_rate(self) -> float:
        return sum(p.source.fluid.rate for p in self.pairs if p.synced)

    def settle(self) -> None:
        now = self.model.env.now
        dt, self.last = now - self.last, now
        if dt <= 0:
            return
        if not self.model.az_up[self.source]:
            return
        if not self.flowing:
            self.backlog += dt
            return
        w = self.write_rate()
        if w <= 0:
            self.backlog = 0.0
        else:
            self.backlog = max(0.0, self.backlog + (1 - self.model.timing.inter_az_bps / w) * dt)

    def consistent_as_of(self, pair: _Pair) -> float | None:
        if pair.consistent_at_stop is not None or not pair.running:
            return pair.consistent_at_stop
        if not pair.synced:
            return None
        self.settle()
        # A dead source writes nothing: the replica stays as it was when the source went down.
        upto = self.model.az_down_since.get(self.source, self.model.env.now)
        return upto - self.backlog - self.model.timing.inter_az_latency_s


class StorageModel:
    """Every block store and object store of one simulation, and the links between them."""

    def __init__(self, driver: SimDriver, regions: Mapping[str, Sequence[str]],
                 timing: StorageTiming | None = None) -> None:
        self.driver = driver
        self.env = driver.env
        self.timing = timing or StorageTiming()
        self.region_of = {az: region for region, azs in regions.items() for az in azs}
        self.az_up = dict.fromkeys(self.region_of, True)
        self.az_down_since: dict[str, float] = {}
        self.objects_up = dict.fromkeys(regions, True)
        self.volumes: dict[str, dict[str, _Volume]] = {az: {} for az in self.region_of}
        self.buckets: dict[str, dict[str, dict[str, tuple[ObjectInfo, _Diff | bytes]]]] = {r: {} for r in regions}
        self.backup_links = {az: SharedLink(self.env, self.timing.backup_bps, f"{az}->objects")
                             for az in self.region_of}
        self.links: dict[tuple[str, str], _Link] = {}
        self.stores = {az: SimBlockStore(self, az) for az in self.region_of}
        self.object_stores = {r: SimObjectStore(self, r) for r in regions}

    # -- ports ---------------------------------------------------------------
    def block_store(self, az: str) -> SimBlockStore:
        return self.stores[az]

    def object_store(self, region: str) -> SimObjectStore:
        return self.object_stores[region]

    # -- faults ----------------------------------------------------------------
    def fail_az(self, az: str) -> None:
        self._settle_links(az)
        self.az_up[az] = False
        self.az_down_since.setdefault(az, self.env.now)
        self.backup_links[az].fail_all(StoreUnavailable(az, "the AZ went down during the transfer"))
        for link in self._links_of(az):
            if link.sync is not None:
                link.sync.set_up(False)

    def restore_az(self, az: str) -> None:
        self._settle_links(az)
        self.az_up[az] = True
        self.az_down_since.pop(az, None)
        for link in self._links_of(az):
            if link.sync is not None:
                link.sync.set_up(link.flowing)

    def cut_link(self, source: str, target: str) -> None:
        link = self._link(source, target)
        link.settle()
        link.up = False
        if link.sync is not None:
            link.sync.set_up(False)

    def mend_link(self, source: str, target: str) -> None:
        link = self._link(source, target)
        link.settle()
        link.up = True
        if link.sync is not None:
            link.sync.set_up(link.flowing)

    def fail_objects(self, region: str) -> None:
        self.objects_up[region] = False
        for az, r in self.region_of.items():
            if r == region:
                self.backup_links[az].fail_all(StoreUnavailable(region, "object gateway went down during the transfer"))

    def restore_objects(self, region: str) -> None:
        self.objects_up[region] = True

    # -- workload ----------------------------------------------------------------
    def set_workload(self, az: str, volume_id: str, used_bytes: float, write_bps: float) -> None:
        """Give a volume fluid data: `used_bytes` now, then `write_bps` of writes."""
        vol = self.volumes[az][volume_id]
        now = self.env.now
        if vol.pair_out is not None:
            vol.pair_out.link.settle()
        f = vol.fluid
        vol.fluid = _Fluid(min(vol.size_gb * GIB, used_bytes), f.written_at(now), write_bps, now)

    # -- truth for reports ---------------------------------------------------------
    def volume_ids(self, az: str) -> set[str]:
        return set(self.volumes[az])

    def object_bytes(self, region: str) -> int:
        return sum(info.size for bucket in self.buckets[region].values() for info, _ in bucket.values())

    def replicated_bytes(self) -> float:
        """Bytes sent over inter-AZ links: initial syncs plus the writes that flowed (SDRS-3)."""
        return sum(link.sync.bytes_moved for link in self.links.values() if link.sync is not None)

    # -- internals -----------------------------------------------------------------
    def _link(self, source: str, target: str) -> _Link:
        link = self.links.get((source, target))
        if link is None:
            link = _Link(self, source, target, last=self.env.now)
            link.sync = SharedLink(self.env, self.timing.inter_az_bps, f"{source}->{target}")
            self.links[source, target] = link
        return link

    def _links_of(self, az: str) -> Iterator[_Link]:
        return (link for link in self.links.values() if az in (link.source, link.target))

    def _settle_links(self, az: str) -> None:
        for link in self._links_of(az):
            link.settle()


class _Store:
    def __init__(self, model: StorageModel) -> None:
        self.model = model
        self.driver = model.driver

    def _up(self) -> bool:
        raise NotImplementedError

    def _where(self) -> str:
        raise NotImplementedError

    async def _call(self, seconds: float = 0.0) -> None:
        timing = self.model.timing
        if not self._up():
            await self.driver.sleep(timing.unreachable_s)
            raise StoreUnavailable(self._where(), "no answer")
        await self.driver.sleep(timing.rpc_s + seconds)
        if not self._up():
            raise StoreUnavailable(self._where(), "connection lost during the call")

    async def _wait(self, ev: simpy.Event) -> None:
        await self.driver.wait_simpy(ev)


class SimObjectStore(_Store):
    """`ObjectStore` port on the model: refuses what the S3 adapter refuses."""

    def __init__(self, model: StorageModel, region: str) -> None:
        super().__init__(model)
        self._region = region

    @property
    def region(self) -> str:
        return self._region

    def _up(self) -> bool:
        return self.model.objects_up[self._region]

    def _where(self) -> str:
        return f"{self._region} (object storage)"

    def _bucket(self, bucket: str) -> dict[str, tuple[ObjectInfo, _Diff | bytes]]:
        found = self.model.buckets[self._region].get(bucket)
        if found is None:
            raise NotFound("bucket", bucket)
        return found

    def _object(self, bucket: str, key: str) -> tuple[ObjectInfo, _Diff | bytes]:
        found = self._bucket(bucket).get(key)
        if found is None:
            raise NotFound("object", f"{bucket}/{key}")
        return found

    async def create_bucket(self, bucket: str) -> None:
        await self._call()
        if bucket in self.model.buckets[self._region]:
            raise Conflict(f"bucket {bucket!r} already exists in {self._region}; pick another name")
        self.model.buckets[self._region][bucket] = {}

    async def delete_bucket(self, bucket: str) -> None:
        await self._call()
        if self._bucket(bucket):
            raise Conflict(f"bucket {bucket!r} is not empty; delete its objects first")
        del self.model.buckets[self._region][bucket]

    async def list_buckets(self) -> list[str]:
        await self._call()
        return sorted(self.model.buckets[self._region])

    async def put_object(self, bucket: str, key: str, data: bytes,
                         storage_class: StorageClass = StorageClass.STANDARD) -> ObjectInfo:
        if self._up():
            self._bucket(bucket)
        await self._call(len(data) / self.model.timing.gateway_bps)
        info = ObjectInfo(bucket, key, len(data), storage_class)
        self._bucket(bucket)[key] = (info, bytes(data))
        return info

    def _put_diff(self, bucket: str, key: str, diff: _Diff) -> ObjectInfo:
        """Store a diff the model moved itself (the transfer time was already spent)."""
        if not self._up():
            raise StoreUnavailable(self._where(), "no answer")
        info = ObjectInfo(bucket, key, diff.nbytes, StorageClass.STANDARD)
        self._bucket(bucket)[key] = (info, diff)
        return info

    async def get_object(self, bucket: str, key: str) -> bytes:
        size = self._object(bucket, key)[0].size if self._up() else 0
        await self._call(size / self.model.timing.gateway_bps)
        _, data = self._object(bucket, key)
        return data.encode() if isinstance(data, _Diff) else data

    async def head_object(self, bucket: str, key: str) -> ObjectInfo:
        await self._call()
        return self._object(bucket, key)[0]

    async def delete_object(self, bucket: str, key: str) -> None:
        await self._call()
        self._object(bucket, key)
        del self._bucket(bucket)[key]

    async def list_objects(self, bucket: str, prefix: str = "") -> list[ObjectInfo]:
        await self._call()
        return [info for key, (info, _) in sorted(self._bucket(bucket).items()) if key.startswith(prefix)]


class SimBlockStore(_Store):
    """`BlockStore` port on the model: refuses what the RBD adapter refuses."""

    def __init__(self, model: StorageModel, az: str) -> None:
        super().__init__(model)
        self._az = az

    @property
    def az(self) -> str:
        return self._az

    @property
    def region(self) -> str:
        return self.model.region_of[self._az]

    def _up(self) -> bool:
        return self.model.az_up[self._az]

    def _where(self) -> str:
        return self._az

    @property
    def _volumes(self) -> dict[str, _Volume]:
        return self.model.volumes[self._az]

    def _volume(self, volume_id: str) -> _Volume:
        vol = self._volumes.get(volume_id)
        if vol is None:
            raise NotFound("volume", f"{volume_id} in {self._az}")
        return vol

    def _snapshot(self, vol: _Volume, snapshot_id: str) -> _Snapshot:
        snap = vol.snapshots.get(snapshot_id)
        if snap is None:
            raise NotFound("snapshot", f"{vol.id}@{snapshot_id} in {self._az}")
        return snap

    def _record(self, vol: _Volume) -> VolumeRecord:
        return VolumeRecord(vol.id, vol.size_gb, vol.kind, tuple(vol.snapshots))

    def _range(self, vol: _Volume, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > vol.size_gb * GIB:
            raise InvalidRequest(f"range {offset}+{length} is outside volume {vol.id} ({vol.size_gb} GB)")

    async def create_volume(self, volume_id: str, size_gb: int, kind: VolumeKind) -> None:
        check_volume_request(volume_id, size_gb)

        def free() -> None:
            if volume_id in self._volumes:
                raise Conflict(f"volume {volume_id} already exists in {self._az}; use another id")

        if self._up():
            free()
        await self._call(self.model.timing.create_s)
        free()
        self._volumes[volume_id] = _Volume(volume_id, size_gb, kind, fluid=_Fluid(since=self.model.env.now))

    async def expand_volume(self, volume_id: str, size_gb: int) -> None:
        check_volume_request(volume_id, size_gb)

        def grows() -> _Volume:
            vol = self._volume(volume_id)
            if size_gb <= vol.size_gb:
                raise InvalidRequest(f"volume {volume_id} is {vol.size_gb} GB: it can only grow, "
                                     f"ask for more than {vol.size_gb} GB")
            return vol

        if self._up():
            grows()
        await self._call(self.model.timing.expand_s)
        grows().size_gb = size_gb

    async def delete_volume(self, volume_id: str) -> None:
        def deletable() -> None:
            vol = self._volume(volume_id)
            if vol.pair_out is not None or vol.pair_in is not None:
                raise Conflict(f"volume {volume_id} is part of a running replication; stop it first")
            if vol.snapshots:
                raise Conflict(f"volume {volume_id} has snapshots ({', '.join(vol.snapshots)}); delete them first")

        if self._up():
            deletable()
        await self._call(self.model.timing.delete_s)
        deletable()
        del self._volumes[volume_id]

    async def get_volume(self, volume_id: str) -> VolumeRecord:
        await self._call()
        return self._record(self._volume(volume_id))

    async def list_volumes(self) -> list[VolumeRecord]:
        await self._call()
        return [self._record(v) for _, v in sorted(self._volumes.items())]

    async def write(self, volume_id: str, offset: int, data: bytes) -> None:
        await self._call(len(data) / self.model.timing.gateway_bps)
        vol = self._volume(volume_id)
        self._range(vol, offset, len(data))
        size = self.model.timing.chunk_bytes
        pos = offset
        while pos < offset + len(data):
            index, start = divmod(pos, size)
            n = min(size - start, offset + len(data) - pos)
            chunk = bytearray(vol.chunks.get(index, bytes(size)))
            chunk[start:start + n] = data[pos - offset:pos - offset + n]
            vol.chunks[index] = bytes(chunk)
            if vol.pair_out is not None:
                vol.pair_out.pending.append((self.model.env.now, index, bytes(chunk)))
            pos += n

    async def read(self, volume_id: str, offset: int, length: int) -> bytes:
        await self._call(length / self.model.timing.gateway_bps)
        vol = self._volume(volume_id)
        if vol.pair_in is not None:
            self._apply_pending(vol.pair_in)
        self._range(vol, offset, length)
        size = self.model.timing.chunk_bytes
        out = bytearray()
        pos = offset
        while pos < offset + length:
            index, start = divmod(pos, size)
            n = min(size - start, offset + length - pos)
            out += vol.chunks.get(index, bytes(size))[start:start + n]
            pos += n
        return bytes(out)

    async def create_snapshot(self, volume_id: str, snapshot_id: str) -> None:
        check_volume_request(snapshot_id, 1)

        def free() -> _Volume:
            vol = self._volume(volume_id)
            if snapshot_id in vol.snapshots:
                raise Conflict(f"snapshot {volume_id}@{snapshot_id} already exists; use another id")
            return vol

        if self._up():
            free()
        await self._call(self.model.timing.snapshot_s)
        vol = free()
        now = self.model.env.now
        vol.snapshots[snapshot_id] = _Snapshot(snapshot_id, now, dict(vol.chunks), vol.fluid.written_at(now),
                                               vol.used_bytes(now))

    async def delete_snapshot(self, volume_id: str, snapshot_id: str) -> None:
        await self._call(self.model.timing.snapshot_s)
        vol = self._volume(volume_id)
        self._snapshot(vol, snapshot_id)
        del vol.snapshots[snapshot_id]

    async def export_diff(self, volume_id: str, snapshot_id: str, base_snapshot_id: str | None,
                          objects: ObjectStore, bucket: str, key: str) -> int:
        check_same_region(f"exporting volume {volume_id}", self.region, objects.region)
        if not isinstance(objects, SimObjectStore):
            raise InvalidRequest("a simulated block store can only export to a simulated object store")
        await self._call()
        vol = self._volume(volume_id)
        snap = self._snapshot(vol, snapshot_id)
        if base_snapshot_id is None:
            chunks, fluid = snap.chunks, snap.fluid_used
        else:
            base = self._snapshot(vol, base_snapshot_id)
            chunks = {i: c for i, c in snap.chunks.items() if base.chunks.get(i) != c}
            fluid = min(snap.fluid_used, snap.fluid_written - base.fluid_written)
        if objects._up():
            objects._bucket(bucket)
        diff = _Diff(vol.size_gb, chunks, fluid, self.model.timing.chunk_bytes)
        await self._wait(self.model.backup_links[self._az].transfer(diff.nbytes))
        if not self._up():
            raise StoreUnavailable(self._az, "the AZ went down during the export")
        objects._put_diff(bucket, key, diff)
        return diff.nbytes

    async def import_diffs(self, volume_id: str, objects: ObjectStore, bucket: str, keys: Sequence[str]) -> None:
        check_same_region(f"restoring into volume {volume_id}", objects.region, self.region)
        if not isinstance(objects, SimObjectStore):
            raise InvalidRequest("a simulated block store can only import from a simulated object store")
        await self._call()
        vol = self._volume(volume_id)
        diffs = []
        for key in keys:
            _, data = objects._object(bucket, key)
            if not isinstance(data, _Diff):
                raise InvalidRequest(f"object {bucket}/{key} is not a volume diff")
            if data.size_gb > vol.size_gb:
                raise InvalidRequest(f"the backup in {bucket}/{key} comes from a {data.size_gb} GB volume; "
                                     f"volume {volume_id} has {vol.size_gb} GB: expand it first")
            diffs.append(data)
        await self._wait(self.model.backup_links[self._az].transfer(sum(d.nbytes for d in diffs)))
        if not self._up():
            raise StoreUnavailable(self._az, "the AZ went down during the restore")
        chunks: dict[int, bytes] = {}
        used = 0.0
        for d in diffs:
            chunks.update(d.chunks)
            used = min(vol.size_gb * GIB, used + d.fluid)
        now = self.model.env.now
        vol.chunks = chunks
        vol.fluid = _Fluid(used, vol.fluid.written_at(now) + used, vol.fluid.rate, now)

    async def start_replication(self, volume_id: str, target: BlockStore, replica_id: str) -> None:
        check_same_region(f"replicating volume {volume_id}", self.region, target.region)
        if not isinstance(target, SimBlockStore):
            raise InvalidRequest("a simulated block store can only replicate to a simulated block store")
        if target.az == self._az:
            raise InvalidRequest(f"volume {volume_id}: the replica must be in another AZ than {self._az}")
        check_volume_request(replica_id, 1)
        await self._call()
        if not target._up():
            await target._call()
        vol = self._volume(volume_id)
        if vol.pair_out is not None or vol.pair_in is not None:
            raise Conflict(f"volume {volume_id} is already part of a running replication")
        replica = target._volumes.get(replica_id)
        if replica is None:
            replica = _Volume(replica_id, vol.size_gb, vol.kind, fluid=_Fluid(since=self.model.env.now))
            target._volumes[replica_id] = replica
        elif replica.pair_out is not None or replica.pair_in is not None:
            raise Conflict(f"volume {replica_id} in {target.az} is already part of a running replication")
        elif replica.size_gb < vol.size_gb:
            replica.size_gb = vol.size_gb
        link = self.model._link(self._az, target.az)
        link.settle()
        pair = _Pair(vol, self._az, replica, target.az, link)
        vol.pair_out = replica.pair_in = pair
        link.pairs.add(pair)
        assert link.sync is not None
        link.sync.set_up(link.flowing)
        now = self.model.env.now
        start_chunks = dict(vol.chunks)
        done = link.sync.transfer(sum(len(c) for c in start_chunks.values()) + vol.used_bytes(now))

        def synced(_ev: simpy.Event) -> None:
            if not pair.running:
                return
            link.settle()
            pair.synced = True
            replica.chunks = dict(start_chunks)  # a reused replica (re-protect) becomes a copy, stale chunks go
            replica.fluid = _Fluid(vol.used_bytes(now), 0.0, 0.0, self.model.env.now)

        done.callbacks.append(synced)

    def _pair(self, volume_id: str) -> _Pair:
        vol = self._volume(volume_id)
        pair = vol.pair_out or vol.pair_in
        if pair is None:
            raise NotFound("replication", f"{volume_id} in {self._az}")
        return pair

    def _apply_pending(self, pair: _Pair) -> None:
        upto = pair.link.consistent_as_of(pair)
        if upto is None:
            return
        keep = []
        for t, index, chunk in pair.pending:
            if t <= upto:
                pair.replica.chunks[index] = chunk
            else:
                keep.append((t, index, chunk))
        pair.pending = keep

    async def replication_status(self, volume_id: str) -> ReplicationStatus:
        await self._call()
        pair = self._pair(volume_id)
        consistent = pair.link.consistent_as_of(pair)
        now = self.model.az_down_since.get(pair.source_az, self.model.env.now)  # a dead source writes nothing
        lag = pair.source.fluid.rate * (now - consistent) if consistent is not None else pair.source.used_bytes(now)
        lag += sum(len(c) for t, _, c in pair.pending if consistent is None or t > consistent)
        return ReplicationStatus(pair.source.id, pair.source_az, pair.replica.id, pair.target_az, pair.running,
                                 consistent, int(lag))

    async def stop_replication(self, volume_id: str) -> None:
        await self._call()
        pair = self._pair(volume_id)
        self._apply_pending(pair)
        pair.consistent_at_stop = pair.link.consistent_as_of(pair)
        pair.running = False
        pair.pending.clear()
        pair.link.settle()
        pair.link.pairs.discard(pair)
        pair.source.pair_out = None
        pair.replica.pair_in = None
        now = self.model.env.now
        if pair.synced:
            # What the replica holds: the source's data up to the consistent point.
            used = pair.source.used_bytes(now)
            pair.replica.fluid = _Fluid(used, 0.0, 0.0, now)


__all__ = ["SharedLink", "SimBlockStore", "SimObjectStore", "StorageModel", "StorageTiming"]

"""Ceph RBD adapter: `RbdBlockStore`, the BlockStore port of one AZ on one RBD pool.

Owns the RBD pool `fe-<az>` (one image per volume, named by its id) and, in libvirt,
the rbd storage pool of the same name (transient: made again whenever it is missing,
as libvirt drops a transient pool whose refresh failed).

- Volumes are created, expanded and deleted through that libvirt pool (libvirt-python,
  in worker threads via `runtime.backends.libvirt_connection`); their kind is the
  image-meta `fe.kind`. An image without it is not ours: `get_volume`/`list_volumes`
  skip it, `create_volume` of its name is still a `Conflict`.
- Snapshots and diffs use the `rbd` CLI: `snap create/rm/rollback`, `export-diff`,
  `import-diff`. A stored diff is the `rbd diff v1` stream of `export-diff`.
  `import_diffs` is a restore: the volume is discarded, then the chain is applied
  (checked: a full diff first, then each one starting at the snapshot the previous
  ended at), without creating the source's snapshots.
- Reads, writes, image-meta and listings run in one short process of Debian's python
  (`/usr/bin/python3`, whose `rados`/`rbd` modules come with ceph-common): the `rbd`
  CLI cannot read a byte range, and one process per call beats one per image.
- Replication is snapshot-based, as Ceph's snapshot mirroring: every `sync_interval_s`
  the adapter's background loop (it is an async context manager owning a task group)
  takes a snapshot `_fe-sync-<time>` of each source volume of its pool and pipes
  `export-diff --from-snap <last>` into `import-diff` on the replica. The pair lives in
  the images' metadata (`fe.replica` on the source, `fe.replica_of` on the replica,
  `fe.consistent_as_of` and `fe.synced_snap` on both), so either end answers
  `replication_status` and `stop_replication`, from any adapter instance, and a
  restarted adapter resumes its pool's pairs (listed in the omap of the rados object
  `fe.replication`). Both pools must be in one Ceph cluster. A replica that exists
  already is reused (re-protect): the first sync discards it, so it becomes a copy;
  one larger than its source is refused (import-diff would shrink it to the source).

Invariants:
- Every Ceph call is bounded: the client timeouts (`op_timeout_s`) make a silent
  cluster an error, and a watchdog kills a process that outlives them; either gives
  `StoreUnavailable`. A libvirt failure is classified by asking Ceph directly; a
  libvirtd that does not answer is `StoreUnavailable` too (volumes are managed only
  through it). Transfers (diffs) have no watchdog: they take as long as they take,
  and the client timeouts still end them when Ceph goes silent.
- Internal snapshots start with `_`, which no VOLUME_ID does: they never clash with a
  tenant's snapshots, are never listed, and are removed with the volume.
- A replica is fenced when its pair stops: `fe.replica_of` goes first, then any
  import still marked as running (`fe.syncing`, a heartbeat) is waited for, then the
  replica is rolled back to its last complete sync (an import is not atomic). The
  loop marks before it checks, so one of the two always sees the other.
- Writes to a replica while its pair runs are undefined (they are rolled back at stop).
- Auth is none (a lab cluster); cephx would add `<auth>` to the pool and `--id` here.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import anyio
import anyio.abc
import attrs
import libvirt

from runtime.backends.libvirt_connection import Connection
from runtime.errors import BackendError, CloudError, Conflict, InvalidRequest, NotFound
from runtime.ports import HostUnreachable
from runtime.storage import (
    GIB,
    VOLUME_ID,
    BlockStore,
    ObjectStore,
    ReplicationStatus,
    StoreUnavailable,
    VolumeKind,
    VolumeRecord,
    check_same_region,
    check_volume_request,
)

T = TypeVar("T")
log = logging.getLogger(__name__)

SYNC_PREFIX = "_fe-sync-"
KIND = "fe.kind"
REPLICA = "fe.replica"  # on a source: "az/pool/image" of its replica
REPLICA_OF = "fe.replica_of"  # on a replica: its source
CONSISTENT = "fe.consistent_as_of"  # epoch seconds of the last complete sync
SYNCED = "fe.synced_snap"  # that sync's snapshot, on both ends
SYNCING = "fe.syncing"  # on a replica: an import runs (epoch seconds of its last heartbeat)
LAG = "fe.lag_bytes"  # bytes the source changed since SYNCED, as last measured
INDEX = "fe.replication"  # rados object of a pool: omap keys = volumes it is the source of

# Exit codes: the rbd CLI exits with the errno; the helper below uses the same.
_ENOENT, _EEXIST, _EINVAL = 2, 17, 22
_NO_POOL = 64
_NO_ANSWER = frozenset({103, 104, 107, 108, 110, 111, 113})  # ECONNABORTED .. EHOSTUNREACH, ETIMEDOUT

# Run by Debian's python3 (python3-rados and python3-rbd come with ceph-common).
# argv: conf timeout command pool [args]; errors are exit codes (errnos), see above.
_HELPER = r"""
import json, sys
import rados, rbd
conf, timeout, cmd, pool, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
opts = {k: timeout for k in ("client_mount_timeout", "rados_osd_op_timeout", "rados_mon_op_timeout")}
opts["rbd_skip_partial_discard"] = "false"

def describe(io, name):
    with rbd.Image(io, name, read_only=True) as img:
        snaps = sorted(img.list_snaps(), key=lambda s: s["id"])
        return {"size": img.size(), "meta": dict(img.metadata_list()), "snaps": [s["name"] for s in snaps]}

def run(io):
    if cmd == "describe":
        out = {}
        for name in args or rbd.RBD().list(io):
            try:
                out[name] = describe(io, name)
            except rbd.ImageNotFound:
                if args:
                    raise
        sys.stdout.write(json.dumps(out))
    elif cmd == "meta":
        with rbd.Image(io, args[0]) as img:
            for change in args[1:]:
                if change.startswith("-"):
                    try:
                        img.metadata_remove(change[1:])
                    except KeyError:
                        pass
                else:
                    img.metadata_set(*change.split("=", 1))
        sys.stdout.write(json.dumps({args[0]: describe(io, args[0])}))
    elif cmd in ("read", "write"):
        data = sys.stdin.buffer.read() if cmd == "write" else None
        offset = int(args[1])
        length = len(data) if data is not None else int(args[2])
        with rbd.Image(io, args[0], read_only=data is None) as img:
            if offset + length > img.size():
                sys.stderr.write(f"the image has {img.size()} bytes")
                sys.exit(22)
            if data is None:
                sys.stdout.buffer.write(img.read(offset, length) if length else b"")
            elif data:
                img.write(data, offset)
                img.flush()
    elif cmd == "discard":  # what is allocated, a GiB at a time (rbd_discard returns the length as an int)
        with rbd.Image(io, args[0]) as img:
            extents = []
            img.diff_iterate(0, img.size(), None, lambda o, n, exists: extents.append((o, n)), whole_object=True)
            for offset, length in extents:
                for start in range(offset, offset + length, 1 << 30):
                    img.discard(start, min(1 << 30, offset + length - start))
    elif cmd == "ping":
        rbd.RBD().list(io)

try:
    with rados.Rados(conffile=conf, conf=opts) as cluster:
        try:
            io = cluster.open_ioctx(pool)
        except rados.ObjectNotFound:
            sys.stderr.write(f"no pool {pool}")
            sys.exit(64)
        with io:
            run(io)
except rbd.ImageNotFound as exc:
    sys.stderr.write(str(exc))
    sys.exit(2)
except (rados.Error, rbd.Error) as exc:
    sys.stderr.write(f"{type(exc).__name__}: {exc}")
    code = getattr(exc, "errno", None)
    sys.exit(abs(code) if isinstance(code, int) and 0 < abs(code) < 256 else 1)
"""

_POOL_XML = """<pool type='rbd' xmlns:rbd='http://libvirt.org/schemas/storagepool/rbd/1.0'>
  <name>{name}</name>
  <source><name>{name}</name><host name='{host}' port='{port}'/></source>
  <rbd:config_opts>
    <rbd:option name='client_mount_timeout' value='{timeout}'/>
    <rbd:option name='rados_mon_op_timeout' value='{timeout}'/>
    <rbd:option name='rados_osd_op_timeout' value='{timeout}'/>
  </rbd:config_opts>
</pool>"""


@attrs.frozen
class _End:
    """One end of a replication pair: an image in a pool, in an AZ."""

    az: str
    pool: str
    image: str

    def __str__(self) -> str:
        return f"{self.az}/{self.pool}/{self.image}"

    @property
    def spec(self) -> str:
        return f"{self.pool}/{self.image}"

    @classmethod
    def parse(cls, text: str) -> _End:
        az, pool, image = text.split("/")
        return cls(az, pool, image)


@attrs.frozen
class _Image:
    size: int
    meta: Mapping[str, str]
    snaps: tuple[str, ...]

    @property
    def user_snaps(self) -> tuple[str, ...]:
        return tuple(s for s in self.snaps if not s.startswith("_"))

    @property
    def sync_snaps(self) -> tuple[str, ...]:
        return tuple(s for s in self.snaps if s.startswith(SYNC_PREFIX))


@attrs.frozen
class _Done:
    code: int
    out: bytes
    err: str


# -- rbd diff v1 streams (Ceph doc/dev/rbd-diff.rst) ----------------------------------

_HEADER = b"rbd diff v1\n"


@attrs.frozen
class _Diff:
    """A parsed `rbd diff v1` stream: snapshot names, image size, the changed extents."""

    from_snap: str | None
    to_snap: str | None
    size: int | None
    records: tuple[tuple[bytes, int, int, bytes], ...]  # (b"w" or b"z", offset, length, data)

    @classmethod
    def parse(cls, data: bytes, where: str) -> _Diff:
        if not data.startswith(_HEADER):
            raise InvalidRequest(f"object {where} is not a volume diff (no 'rbd diff v1' header)")
        pos, size = len(_HEADER), None
        names: dict[bytes, str | None] = {b"f": None, b"t": None}
        records = []
        try:
            while True:
                tag, pos = data[pos:pos + 1], pos + 1
                if tag == b"e":
                    break
                if tag in names:
                    (n,) = struct.unpack_from("<I", data, pos)
                    names[tag], pos = data[pos + 4:pos + 4 + n].decode(), pos + 4 + n
                elif tag == b"s":
                    (size,) = struct.unpack_from("<Q", data, pos)
                    pos += 8
                elif tag in (b"w", b"z"):
                    offset, length = struct.unpack_from("<QQ", data, pos)
                    pos += 16
                    payload = b""
                    if tag == b"w":
                        payload, pos = data[pos:pos + length], pos + length
                        if len(payload) != length:
                            raise struct.error("truncated write record")
                    records.append((tag, offset, length, payload))
                else:
                    raise struct.error(f"unknown record {tag!r}")
        except (struct.error, UnicodeDecodeError) as exc:
            raise InvalidRequest(f"object {where} is not a volume diff: {exc}") from exc
        return cls(names[b"f"], names[b"t"], size, tuple(records))


def _extents_only(diffs: Sequence[_Diff]) -> bytes:
    """One stream that applies the diffs' extents in order, without snapshots or resizing."""
    parts = [_HEADER]
    for diff in diffs:
        for tag, offset, length, payload in diff.records:
            parts += [tag, struct.pack("<QQ", offset, length), payload]
    parts.append(b"e")
    return b"".join(parts)


def _code(exc: Any) -> int:
    return int(exc.get_error_code())


# -- libvirt (worker threads) ------------------------------------------------------------

def _active_pool(conn: Any, name: str, xml: str) -> Any:
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as exc:
        if _code(exc) != libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise
        try:
            return conn.storagePoolCreateXML(xml, 0)
        except libvirt.libvirtError as create_exc:
            if _code(create_exc) != libvirt.VIR_ERR_OPERATION_FAILED:  # not "already exists": made meanwhile
                raise
            pool = conn.storagePoolLookupByName(name)
    if not pool.isActive():
        pool.create(0)
    return pool


def _lookup(pool: Any, name: str, az: str) -> Any:
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError as exc:
        if _code(exc) != libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise
    pool.refresh(0)  # libvirt's list may predate a volume made elsewhere
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError as exc:
        if _code(exc) == libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise NotFound("volume", f"{name} in {az}") from exc
        raise


def _create(pool: Any, name: str, size: int, az: str) -> None:
    try:
        pool.createXML(f"<volume><name>{name}</name><capacity unit='bytes'>{size}</capacity></volume>", 0)
    except libvirt.libvirtError as exc:
        if _code(exc) == libvirt.VIR_ERR_STORAGE_VOL_EXIST:
            raise Conflict(f"volume {name} already exists in {az}; use another id") from exc
        raise


def _expand(pool: Any, name: str, size_gb: int, az: str) -> None:
    vol = _lookup(pool, name, az)
    current = int(vol.info()[1]) // GIB
    if size_gb <= current:
        raise InvalidRequest(f"volume {name} is {current} GB: it can only grow, ask for more than {current} GB")
    vol.resize(size_gb * GIB, 0)


class RbdBlockStore:
    """BlockStore port for AZ `az` (of `region`) on the RBD pool `pool` (default `fe-<az>`).

    `ceph_conf` is what the CLIs read; libvirt reaches the monitor at `mon_host:mon_port`.
    Use as `async with RbdBlockStore(...) as store:` (the replication loop runs inside).
    """

    def __init__(self, az: str, region: str, *, ceph_conf: str, mon_host: str = "127.0.0.1",
                 mon_port: int = 6789, pool: str | None = None, libvirt_uri: str = "qemu:///system",
                 sync_interval_s: float = 30.0, op_timeout_s: float = 10.0,
                 system_python: str = "/usr/bin/python3") -> None:
        self._az, self._region = az, region
        self._conf = ceph_conf
        self._pool = pool or f"fe-{az}"
        self._pool_xml = _POOL_XML.format(name=self._pool, host=mon_host, port=mon_port, timeout=f"{op_timeout_s:g}")
        self._conn = Connection(libvirt_uri, f"libvirtd managing RBD pool {self._pool}")
        self._sync_interval_s = sync_interval_s
        self._op_timeout_s = op_timeout_s
        self._python = system_python
        # A process that outlives its client timeouts (a few Ceph round trips) is stuck, but
        # for one wait no client timeout bounds: the exclusive lock of an image whose last
        # writer was killed, which Ceph frees when that client's watch expires (30 s by default).
        self._watchdog_s = 4 * op_timeout_s + 35
        self._tg: anyio.abc.TaskGroup | None = None
        self._wake = anyio.Event()
        self._in_flight: dict[str, anyio.CancelScope] = {}  # syncs running, by source volume
        self._stopping: set[str] = set()  # source volumes whose stop_replication runs

    @property
    def az(self) -> str:
        return self._az

    @property
    def region(self) -> str:
        return self._region

    async def __aenter__(self) -> RbdBlockStore:
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(self._replicate_forever)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool | None:
        tg, self._tg = self._tg, None
        try:
            if tg is not None:
                tg.cancel_scope.cancel()
                # The caller's exception is not the loop's: it goes on as it is, not in a group.
                await tg.__aexit__(None, None, None)
        finally:
            await self._conn.aclose()
        return None

    # -- volumes ---------------------------------------------------------------------

    async def create_volume(self, volume_id: str, size_gb: int, kind: VolumeKind) -> None:
        check_volume_request(volume_id, size_gb)
        try:
            await self._libvirt(lambda pool: _create(pool, volume_id, size_gb * GIB, self._az))
        except StoreUnavailable:
            raise
        except BackendError as exc:
            if await self._exists(volume_id):  # made by another libvirtd, unknown to this one
                raise Conflict(f"volume {volume_id} already exists in {self._az}; use another id") from exc
            raise
        try:
            await self._meta(self._end(volume_id), {KIND: kind.value})
        except BaseException:
            await self._quietly(self._libvirt(lambda pool: _lookup(pool, volume_id, self._az).delete(0)),
                                f"removing the half-made volume {volume_id}")
            raise

    async def expand_volume(self, volume_id: str, size_gb: int) -> None:
        check_volume_request(volume_id, size_gb)
        await self._libvirt(lambda pool: _expand(pool, volume_id, size_gb, self._az), volume_id)

    async def delete_volume(self, volume_id: str) -> None:
        """Also removes the image a create left half-made (made, but killed before its metadata was
        set: the daemon's journal names it, and nothing else can be made under a volume id here)."""
        try:
            image = await self._image(volume_id)
        except NotFound:
            if not await self._exists(volume_id):
                raise
            await self._libvirt(lambda pool: _lookup(pool, volume_id, self._az).delete(0), volume_id)
            return
        if REPLICA in image.meta or REPLICA_OF in image.meta:
            raise Conflict(f"volume {volume_id} is part of a running replication; stop it first")
        if image.user_snaps:
            raise Conflict(f"volume {volume_id} has snapshots ({', '.join(image.user_snaps)}); delete them first")
        for snap in image.snaps:  # what a stopped pair may have left behind
            await self._snap_rm(self._end(volume_id), snap)
        await self._libvirt(lambda pool: _lookup(pool, volume_id, self._az).delete(0), volume_id)

    async def get_volume(self, volume_id: str) -> VolumeRecord:
        return self._record(volume_id, await self._image(volume_id))

    async def list_volumes(self) -> list[VolumeRecord]:
        images = await self._describe(self._pool)
        return [self._record(name, image) for name, image in sorted(images.items())
                if VOLUME_ID.fullmatch(name) and KIND in image.meta]

    async def write(self, volume_id: str, offset: int, data: bytes) -> None:
        self._check_range(volume_id, offset, len(data))
        await self._data("write", volume_id, offset, len(data), data)

    async def read(self, volume_id: str, offset: int, length: int) -> bytes:
        self._check_range(volume_id, offset, length)
        return await self._data("read", volume_id, offset, length, None)

    # -- snapshots and diffs ---------------------------------------------------------------

    async def create_snapshot(self, volume_id: str, snapshot_id: str) -> None:
        check_volume_request(snapshot_id, 1)
        await self._image(volume_id)
        done = await self._rbd("snap", "create", "--no-progress", f"{self._end(volume_id).spec}@{snapshot_id}")
        if done.code == _EEXIST:
            raise Conflict(f"snapshot {volume_id}@{snapshot_id} already exists; use another id")
        self._check(done, f"snapshot {volume_id}@{snapshot_id}", volume_id)

    async def delete_snapshot(self, volume_id: str, snapshot_id: str) -> None:
        self._snapshot_of(await self._image(volume_id), volume_id, snapshot_id)
        done = await self._rbd("snap", "rm", "--no-progress", f"{self._end(volume_id).spec}@{snapshot_id}")
        if done.code == _ENOENT:
            raise NotFound("snapshot", f"{volume_id}@{snapshot_id} in {self._az}")
        self._check(done, f"deleting snapshot {volume_id}@{snapshot_id}")

    async def export_diff(self, volume_id: str, snapshot_id: str, base_snapshot_id: str | None,
                          objects: ObjectStore, bucket: str, key: str) -> int:
        check_same_region(f"exporting volume {volume_id}", self._region, objects.region)
        image = await self._image(volume_id)
        self._snapshot_of(image, volume_id, snapshot_id)
        since = []
        if base_snapshot_id is not None:
            self._snapshot_of(image, volume_id, base_snapshot_id)
            since = ["--from-snap", base_snapshot_id]
        await objects.list_objects(bucket, key)  # NotFound for a missing bucket, before the transfer
        done = await self._rbd("export-diff", "--no-progress", *since, f"{self._end(volume_id).spec}@{snapshot_id}",
                               "-", bounded=False)
        self._check(done, f"exporting {volume_id}@{snapshot_id}", volume_id)
        await objects.put_object(bucket, key, done.out)
        return len(done.out)

    async def import_diffs(self, volume_id: str, objects: ObjectStore, bucket: str, keys: Sequence[str]) -> None:
        check_same_region(f"restoring into volume {volume_id}", objects.region, self._region)
        image = await self._image(volume_id)
        diffs: list[_Diff] = []
        for key in keys:
            diff = _Diff.parse(await objects.get_object(bucket, key), f"{bucket}/{key}")
            expected = diffs[-1].to_snap if diffs else None
            if diff.from_snap != expected:
                raise InvalidRequest(
                    f"the diff in {bucket}/{key} starts at snapshot {diff.from_snap or '(empty)'}, not at "
                    f"{expected or '(empty)'}: give a full diff first, then each incremental in order"
                )
            if diff.size is not None and diff.size > image.size:
                raise InvalidRequest(f"the backup in {bucket}/{key} comes from a {diff.size // GIB} GB volume; "
                                     f"volume {volume_id} has {image.size // GIB} GB: expand it first")
            diffs.append(diff)
        await self._helper("discard", self._pool, volume_id)
        done = await self._rbd("import-diff", "--no-progress", "-", self._end(volume_id).spec,
                               stdin=_extents_only(diffs), bounded=False)
        self._check(done, f"restoring into {volume_id}", volume_id)

    # -- replication -----------------------------------------------------------------------

    async def start_replication(self, volume_id: str, target: BlockStore, replica_id: str) -> None:
        check_same_region(f"replicating volume {volume_id}", self._region, target.region)
        if not isinstance(target, RbdBlockStore) or target._conf != self._conf:
            raise InvalidRequest("an RBD block store replicates only to an RBD block store of the same Ceph cluster")
        if target.az == self._az:
            raise InvalidRequest(f"volume {volume_id}: the replica must be in another AZ than {self._az}")
        check_volume_request(replica_id, 1)
        if self._tg is None:
            raise RuntimeError("RbdBlockStore.start_replication needs `async with store:` (its replication loop)")
        source = await self._image(volume_id)
        if REPLICA in source.meta or REPLICA_OF in source.meta:
            raise Conflict(f"volume {volume_id} is already part of a running replication")
        me, there = self._end(volume_id), target._end(replica_id)
        try:
            replica = await target._image(replica_id)
        except NotFound:
            await target.create_volume(replica_id, -(-source.size // GIB), VolumeKind(source.meta[KIND]))
        else:
            if REPLICA in replica.meta or REPLICA_OF in replica.meta:
                raise Conflict(f"volume {replica_id} in {target.az} is already part of a running replication")
            if replica.size > source.size:
                # import-diff makes the replica the source's size: it would cut the replica.
                raise InvalidRequest(f"volume {replica_id} in {target.az} ({replica.size // GIB} GB) is larger than "
                                     f"volume {volume_id} ({source.size // GIB} GB): expand {volume_id} first")
        # The replica end first: the loop starts from the source's mark and checks the replica's.
        await self._meta(there, {REPLICA_OF: str(me)})
        try:
            await self._meta(me, {REPLICA: str(there)})
            await self._index("setomapval", volume_id, "1")
        except BaseException:
            await self._quietly(self._meta(there, {REPLICA_OF: None}), f"unpairing {there}")
            await self._quietly(self._meta(me, {REPLICA: None}), f"unpairing {me}")
            raise
        self._wake.set()

    async def replication_status(self, volume_id: str) -> ReplicationStatus:
        image = await self._image(volume_id)
        source, replica = self._pair_of(volume_id, image)
        consistent = image.meta.get(CONSISTENT)
        try:
            lag = await self._lag(source, image.meta.get(SYNCED))
        except StoreUnavailable:
            if source.az == self._az:
                raise
            lag = int(image.meta.get(LAG, "0"))  # the source is gone: what was last measured
        except BackendError:
            lag = int(image.meta.get(LAG, "0"))  # a sync replaced the snapshot meanwhile
        return ReplicationStatus(source.image, source.az, replica.image, replica.az, True,
                                 float(consistent) if consistent is not None else None, lag)

    async def stop_replication(self, volume_id: str) -> None:
        image = await self._image(volume_id)
        source, replica = self._pair_of(volume_id, image)
        if source.az != self._az or source.pool != self._pool:
            await self._release_replica(replica, source, wait=True)
            # The source's AZ may be down: its loop sees the fence when it comes back.
            await self._quietly(self._release_source(source, replica), f"stopping {source}")
            return
        self._stopping.add(volume_id)
        try:
            scope = self._in_flight.get(volume_id)
            if scope is not None:
                scope.cancel()
                while volume_id in self._in_flight:  # its cleanup is bounded by the watchdog
                    await anyio.sleep(0.05)
            await self._release_source(source, replica)
            # The replica's AZ may be down: a stop asked of it there completes the pair's end.
            await self._quietly(self._release_replica(replica, source, wait=False), f"stopping {replica}")
        finally:
            self._stopping.discard(volume_id)

    # -- replication internals ---------------------------------------------------------------

    def _pair_of(self, volume_id: str, image: _Image) -> tuple[_End, _End]:
        if REPLICA in image.meta:
            return self._end(volume_id), _End.parse(image.meta[REPLICA])
        if REPLICA_OF in image.meta:
            return _End.parse(image.meta[REPLICA_OF]), self._end(volume_id)
        raise NotFound("replication", f"{volume_id} in {self._az}")

    async def _release_source(self, source: _End, replica: _End) -> None:
        image = await self._image_at(source)
        if image.meta.get(REPLICA) != str(replica):
            return  # stopped already, maybe paired anew since
        await self._meta(source, {REPLICA: None, CONSISTENT: None, SYNCED: None, LAG: None})
        for snap in image.sync_snaps:
            await self._snap_rm(source, snap)
        await self._index("rmomapkey", source.image, pool=source.pool)

    async def _release_replica(self, replica: _End, source: _End, *, wait: bool) -> None:
        if (await self._image_at(replica)).meta.get(REPLICA_OF) != str(source):
            return  # stopped already, maybe paired anew since
        image = await self._meta(replica, {REPLICA_OF: None})  # the fence: the loop checks it after its mark
        while wait and SYNCING in image.meta and time.time() - float(image.meta[SYNCING]) < 3 * self._op_timeout_s:
            await anyio.sleep(0.2)  # an import runs and beats: let it end
            image = await self._image_at(replica)
        synced = image.meta.get(SYNCED)
        if synced in image.snaps:
            # The head may hold part of an import that never completed.
            done = await self._rbd("snap", "rollback", "--no-progress", f"{replica.spec}@{synced}", pool=replica.pool)
            self._check(done, f"rolling {replica} back to its last complete sync")
        for snap in image.sync_snaps:
            await self._snap_rm(replica, snap)
        await self._meta(replica, {CONSISTENT: None, SYNCED: None, SYNCING: None, LAG: None})

    async def _replicate_forever(self) -> None:
        while True:
            with anyio.move_on_after(self._sync_interval_s):
                await self._wake.wait()
            self._wake = anyio.Event()
            try:
                volumes = await self._index("listomapkeys")
            except CloudError as exc:
                log.warning("replication in %s: %s", self._az, exc)
                continue
            async with anyio.create_task_group() as tg:
                for volume_id in volumes:
                    tg.start_soon(self._sync_quietly, volume_id)

    async def _sync_quietly(self, volume_id: str) -> None:
        if volume_id in self._stopping or volume_id in self._in_flight:
            return
        with anyio.CancelScope() as scope:
            self._in_flight[volume_id] = scope
            try:
                await self._sync(volume_id)
            except Exception:  # one pair's failure must not end the others': the next round tries again
                log.exception("replication of %s in %s failed", volume_id, self._az)
            finally:
                del self._in_flight[volume_id]

    async def _quietly(self, work: Awaitable[object], what: str) -> None:
        """Best effort, bounded, and not cancelled by the caller's cancellation (cleanup)."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._watchdog_s):
            try:
                await work
            except CloudError as exc:
                log.warning("%s in %s: %s", what, self._az, exc)

    async def _sync(self, volume_id: str) -> None:
        me = self._end(volume_id)
        try:
            image = await self._image(volume_id)
        except NotFound:
            image = None
        if image is None or REPLICA not in image.meta:
            await self._index("rmomapkey", volume_id)
            return
        replica = _End.parse(image.meta[REPLICA])
        # Mark, then check (the replica's stop unlinks, then looks for the mark).
        try:
            there = await self._meta(replica, {SYNCING: f"{time.time():.6f}"})
        except NotFound:
            there = None
        if there is None or there.meta.get(REPLICA_OF) != str(me):  # stopped from the replica's end
            if there is not None:
                await self._meta(replica, {SYNCING: None})
            await self._release_source(me, replica)
            return
        base = image.meta.get(SYNCED)
        if base not in image.snaps or base not in there.snaps:
            base = None
        now = time.time()
        snap = f"{SYNC_PREFIX}{now:.6f}"
        self._check(await self._rbd("snap", "create", "--no-progress", f"{me.spec}@{snap}"), f"snapshot of {volume_id}")
        try:
            if base is None:  # a full sync makes the replica equal to the source, whatever it held
                for old in there.sync_snaps:
                    await self._snap_rm(replica, old)
                await self._helper("discard", replica.pool, replica.image, az=replica.az)
            since = ["--from-snap", base] if base else []
            await self._pipe(self._rbd_cmd("export-diff", "--no-progress", *since, f"{me.spec}@{snap}", "-"),
                             self._rbd_cmd("import-diff", "--no-progress", "-", replica.spec),
                             f"shipping {me}@{snap} to {replica}", beat=lambda: self._heartbeat(replica))
            lag = await self._lag(me, snap)
            synced = {CONSISTENT: f"{now:.6f}", SYNCED: snap, LAG: str(lag)}
            await self._meta(replica, {**synced, SYNCING: None})
            await self._meta(me, synced)
        except BaseException:
            await self._quietly(self._snap_rm(me, snap), "cleaning up a failed sync")
            await self._quietly(self._snap_rm(replica, snap), "cleaning up a failed sync")
            await self._quietly(self._meta(replica, {SYNCING: None}), "cleaning up a failed sync")
            raise
        for old in {*image.sync_snaps, *there.sync_snaps} - {snap}:
            await self._snap_rm(me, old)
            await self._snap_rm(replica, old)

    async def _heartbeat(self, replica: _End) -> None:
        """Tell a stop at the replica's end that the import still runs (it waits for live ones)."""
        while True:
            await anyio.sleep(self._op_timeout_s)
            try:
                await self._meta(replica, {SYNCING: f"{time.time():.6f}"})
            except CloudError as exc:  # the import fails too, or a later beat gets through
                log.warning("heartbeat to %s: %s", replica, exc)

    async def _lag(self, source: _End, since: str | None) -> int:
        """Bytes of the source that changed after snapshot `since` (all data if None)."""
        base = ["--from-snap", since] if since else []
        done = await self._rbd("diff", *base, "--format", "json", source.spec, pool=source.pool)
        self._check(done, f"measuring the lag of {source}")
        return sum(int(extent["length"]) for extent in json.loads(done.out or b"[]"))

    # -- Ceph and libvirt calls ------------------------------------------------------------------

    def _end(self, volume_id: str) -> _End:
        return _End(self._az, self._pool, volume_id)

    def _record(self, volume_id: str, image: _Image) -> VolumeRecord:
        return VolumeRecord(volume_id, image.size // GIB, VolumeKind(image.meta[KIND]), image.user_snaps)

    def _check_range(self, volume_id: str, offset: int, length: int) -> None:
        if offset < 0 or length < 0:
            raise InvalidRequest(f"range {offset}+{length} is outside volume {volume_id}")

    def _snapshot_of(self, image: _Image, volume_id: str, snapshot_id: str) -> None:
        if not VOLUME_ID.fullmatch(snapshot_id) or snapshot_id not in image.snaps:
            raise NotFound("snapshot", f"{volume_id}@{snapshot_id} in {self._az}")

    async def _image(self, volume_id: str) -> _Image:
        """The volume's image; NotFound for what no volume of ours can be."""
        if not VOLUME_ID.fullmatch(volume_id):
            raise NotFound("volume", f"{volume_id} in {self._az}")
        image = await self._image_at(self._end(volume_id))
        if KIND not in image.meta:
            raise NotFound("volume", f"{volume_id} in {self._az}")
        return image

    async def _image_at(self, end: _End) -> _Image:
        return (await self._describe(end.pool, end.image, az=end.az))[end.image]

    async def _exists(self, volume_id: str) -> bool:
        try:
            await self._image_at(self._end(volume_id))
        except NotFound:
            return False
        return True

    async def _describe(self, pool: str, *images: str, az: str | None = None) -> dict[str, _Image]:
        done = await self._helper("describe", pool, *images, az=az)
        return {name: _Image(int(d["size"]), d["meta"], tuple(d["snaps"])) for name, d in json.loads(done.out).items()}

    async def _meta(self, end: _End, changes: Mapping[str, str | None]) -> _Image:
        """Set (or, for None, remove) image-meta keys in one process; the image as it then is."""
        args = [f"{k}={v}" if v is not None else f"-{k}" for k, v in changes.items()]
        done = await self._helper("meta", end.pool, end.image, *args, az=end.az)
        return {name: _Image(int(d["size"]), d["meta"], tuple(d["snaps"]))
                for name, d in json.loads(done.out).items()}[end.image]

    async def _data(self, op: str, volume_id: str, offset: int, length: int, data: bytes | None) -> bytes:
        if not VOLUME_ID.fullmatch(volume_id):
            raise NotFound("volume", f"{volume_id} in {self._az}")
        cmd = self._helper_cmd(op, self._pool, volume_id, str(offset), str(length))
        done = await self._run(cmd, stdin=data or b"", where=self._az)
        if done.code == _EINVAL:
            raise InvalidRequest(f"range {offset}+{length} is outside volume {volume_id} ({done.err})")
        self._check(done, f"{op} of volume {volume_id}", volume_id)
        return done.out

    async def _snap_rm(self, end: _End, snap: str) -> None:
        done = await self._rbd("snap", "rm", "--no-progress", f"{end.spec}@{snap}", pool=end.pool)
        if done.code not in (0, _ENOENT):
            self._check(done, f"deleting snapshot {end}@{snap}")

    async def _helper(self, op: str, pool: str, *args: str, az: str | None = None) -> _Done:
        done = await self._run(self._helper_cmd(op, pool, *args), where=az or self._az)
        self._check(done, f"{op} in pool {pool}", args[0] if args else None, az=az)
        return done

    def _helper_cmd(self, op: str, pool: str, *args: str) -> list[str]:
        return [self._python, "-c", _HELPER, self._conf, f"{self._op_timeout_s:g}", op, pool, *args]

    def _rbd_cmd(self, *args: str) -> list[str]:
        t = f"{self._op_timeout_s:g}"
        return ["rbd", "-c", self._conf, "--client-mount-timeout", t, "--rados-osd-op-timeout", t,
                "--rados-mon-op-timeout", t, "--rbd-skip-partial-discard", "false", *args]

    async def _rbd(self, *args: str, stdin: bytes | None = None, bounded: bool = True,
                   pool: str | None = None) -> _Done:
        return await self._run(self._rbd_cmd(*args), stdin=stdin, bounded=bounded,
                               where=self._az if pool in (None, self._pool) else f"{self._az} (pool {pool})")

    async def _index(self, op: str, *args: str, pool: str | None = None) -> list[str]:
        """`rados <op>` on the pool's list of pairs; a pool that never had one has no list (ENOENT)."""
        t = f"{self._op_timeout_s:g}"
        done = await self._run(["rados", "-c", self._conf, "-p", pool or self._pool, "--client-mount-timeout", t,
                                "--rados-osd-op-timeout", t, "--rados-mon-op-timeout", t, op, INDEX, *args],
                               where=self._az)
        if done.code and "(2) No such file" in done.err:  # rados exits 1 whatever the errno
            return []
        self._check(done, f"rados {op} {INDEX} in {pool or self._pool}")
        return done.out.decode().split()

    async def _run(self, cmd: list[str], *, stdin: bytes | None = None, bounded: bool = True, where: str) -> _Done:
        """Run a Ceph client; StoreUnavailable if it outlives its client timeouts.

        A bounded call runs to its end even when its caller is cancelled (a killed writer
        leaves its image locked for a while, see the watchdog); a transfer is killed.
        """
        try:
            # The shield outside: it must not keep the watchdog's own deadline out.
            with anyio.CancelScope(shield=bounded), anyio.fail_after(self._watchdog_s if bounded else None):
                if stdin:
                    done = await anyio.run_process(cmd, input=stdin, check=False)
                else:  # anyio passes our own stdin on for an empty input
                    done = await anyio.run_process(cmd, stdin=subprocess.DEVNULL, check=False)
        except TimeoutError as exc:
            raise StoreUnavailable(where, f"{cmd[0]} {cmd[-1]} did not finish within {self._watchdog_s:g} s") from exc
        except OSError as exc:
            raise BackendError(f"cannot run {cmd[0]}: {exc}; install ceph-common (python3-rbd)") from exc
        return _Done(done.returncode, done.stdout, done.stderr.decode(errors="replace").strip())

    async def _pipe(self, first: list[str], second: list[str], what: str,
                    beat: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """`first | second`, both Ceph clients, with `beat` running meanwhile; either failing
        is an error (as with pipefail)."""
        read_end, write_end = os.pipe()
        try:
            async with await anyio.open_process(first, stdin=subprocess.DEVNULL, stdout=write_end) as one, \
                    await anyio.open_process(second, stdin=read_end, stdout=subprocess.DEVNULL) as two:
                os.close(write_end)
                os.close(read_end)
                write_end = read_end = -1
                errors = ["", ""]

                async def drain(index: int, process: anyio.abc.Process) -> None:
                    assert process.stderr is not None
                    async for chunk in process.stderr:
                        errors[index] += chunk.decode(errors="replace")

                # Nothing in this group raises (but cancellation), so no exception group to unwrap.
                async with anyio.create_task_group() as tg:
                    tg.start_soon(drain, 0, one)
                    tg.start_soon(drain, 1, two)
                    tg.start_soon(beat)
                    await one.wait()
                    await two.wait()
                    tg.cancel_scope.cancel()
        finally:
            for fd in (read_end, write_end):
                if fd >= 0:
                    os.close(fd)
        for process, err in ((one, errors[0]), (two, errors[1])):
            if process.returncode:
                self._check(_Done(int(process.returncode), b"", err.strip()), what)

    def _check(self, done: _Done, what: str, volume_id: str | None = None, *, az: str | None = None) -> None:
        """Map a Ceph client's failure to our errors."""
        if done.code == 0:
            return
        where = az or self._az
        if done.code in _NO_ANSWER or "couldn't connect" in done.err or any(f"({n})" in done.err for n in _NO_ANSWER):
            raise StoreUnavailable(where, f"{what}: {done.err.splitlines()[-1] if done.err else done.code}")
        if done.code == _ENOENT and volume_id is not None:
            raise NotFound("volume", f"{volume_id} in {where}")
        if done.code == _NO_POOL:
            raise BackendError(f"Ceph has no pool for {where} ({done.err}); create it (bash .ci/ceph-start.sh)")
        raise BackendError(f"{what} failed (exit {done.code}): {done.err.splitlines()[-1] if done.err else ''}")

    async def _libvirt(self, fn: Callable[[Any], T], volume_id: str | None = None) -> T:
        """Run `fn(pool)` on the libvirt pool; a vendor failure is explained by asking Ceph."""
        try:
            return await self._conn.call(lambda conn: fn(_active_pool(conn, self._pool, self._pool_xml)))
        except HostUnreachable as exc:
            raise StoreUnavailable(self._az, f"libvirtd does not answer: {exc}") from exc
        except StoreUnavailable:
            raise
        except BackendError as exc:
            # Ceph itself says whether it answers and whether the volume exists.
            try:
                if volume_id is not None:
                    await self._image(volume_id)
                else:
                    await self._helper("ping", self._pool)
            except CloudError as explained:
                raise explained from exc
            raise

"""The meter: usage records from the event log (SPEC ECS-2, EVS-1, EVS-2, VBS-1, SDRS-3).

`Meter` is an event-log sink for one region (events whose source path does not name
the region are ignored). `meter.usage(start_s, end_s)` returns what was used in that
period, one `Usage` per resource and constant rate, clipped to the period. Rules:

- ECS (ECS-2), from `actors.usage.ServerLedger`: a flavor without local disk counts
  while the server runs, one with a local disk from creation until deletion, running or
  not; a resize changes the flavor from that moment.
- sDRS recovery compute (SDRS-3): what a protected server's copy uses in its group's
  recovery AZ while protected, and what drill copies (`ID-drill`) use, is kind
  `ecs-sdrs`: priced as ECS, shown as "sDRS recovery".
- EVS: GB held per volume type, from creation (or adoption) to deletion, expansions
  from their moment on. A replica that sDRS adopts (`V-r`, what a failed-over server
  runs on) is protection storage while its volume is protected, EVS afterwards.
- sDRS: each protected server per hour (ServerProtected to ServerUnprotected or
  GroupDeleted); protection storage, the size of each protected volume, on the other AZ,
  over the same time.
- Backups: the bytes a backup stores, from BackupCreated until it is erased. A deleted
  backup that later ones depend on (`data_kept_for` > 0) stays stored, and is erased
  when the last backup depending on it goes (or its in-flight dependent fails): the
  meter follows the chains as actors/backup_catalog.py builds them. Data a failed erase
  leaves behind (BackupDataLeft) is not billed: the tenant deleted it.

Not metered, for lack of events: data replicated between AZs (sDRS), EIPs and OBS
buckets (not in the control plane yet). Their prices are in the catalogue.

Query a period only once the events up to its end are in: an interval still open is
taken to last until `end_s`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from fractions import Fraction
from typing import Any

import attrs

from actors.availability import intersect, subtract
from actors.availability import merge as _merge
from actors.billing.catalogue import HOURS_PER_MONTH
from actors.flavors import FLAVORS, Flavor
from actors.sdrs import DRILL_SUFFIX, REPLICA_SUFFIX
from actors.usage import ServerCopy, ServerLedger, Span
from runtime.errors import InvalidRequest
from runtime.storage import GIB

ECS, ECS_SDRS, EVS, BACKUP, SDRS_VM, SDRS_STORAGE = "ecs", "ecs-sdrs", "evs", "backup", "sdrs-vm", "sdrs-storage"
KINDS = (ECS, ECS_SDRS, EVS, BACKUP, SDRS_VM, SDRS_STORAGE)
COMPUTE = (ECS, ECS_SDRS)
UNIT_SECONDS: Mapping[str, int] = {"h": 3600, "GB-month": HOURS_PER_MONTH * 3600}


@attrs.frozen
class Usage:
    """`size` (GB, or 1 for what is counted in hours) used from `start_s` to `end_s`."""

    tenant: str
    region: str
    resource: str  # server, volume, backup id (a replica's name for protection storage)
    kind: str  # one of KINDS
    spec: str  # flavor, volume type, VBS/CSBS, protection group name
    az: str  # where ("" for regional resources)
    start_s: Fraction
    end_s: Fraction
    size: Fraction
    unit: str  # "h" or "GB-month"

    @property
    def quantity(self) -> Fraction:
        return self.size * (self.end_s - self.start_s) / UNIT_SECONDS[self.unit]

    def clip(self, start: Fraction, end: Fraction) -> Usage | None:
        s, e = max(self.start_s, start), min(self.end_s, end)
        return attrs.evolve(self, start_s=s, end_s=e) if s < e else None


def _steps(changes: list[tuple[float, int]], span: Span) -> list[tuple[float, float, int]]:
    """A value that changes at given times, over `span`: (start, end, value) pieces."""
    out = []
    for i, (since, value) in enumerate(changes):
        end = changes[i + 1][0] if i + 1 < len(changes) else span[1]
        s, e = max(since, span[0]), min(end, span[1])
        if s < e:
            out.append((s, e, value))
    return out


@attrs.define
class _Volume:
    tenant: str
    az: str
    type: str
    sizes: list[tuple[float, int]]  # (since, GB)
    created_s: float
    deleted_s: float | None = None


@attrs.define
class _Group:
    name: str
    tenant: str
    production_az: str
    recovery_az: str

    def other(self, az: str) -> str:
        return self.recovery_az if az == self.production_az else self.production_az


@attrs.define
class _Protection:
    group: str
    server: str
    volumes: list[str]
    start_s: float
    end_s: float | None = None


@attrs.define
class _Backup:
    tenant: str
    chain: str  # its server, or its only volume
    volumes: list[str]
    server: str | None
    nbytes: int = 0
    stored_s: float | None = None
    erased_s: float | None = None
    hidden: bool = False
    bases: set[str] = attrs.Factory(set)
    dependents: set[str] = attrs.Factory(set)


class _Records:
    """Usage records clipped to [start, end) as they are added."""

    def __init__(self, region: str, start: Fraction, end: Fraction) -> None:
        self.region, self.start, self.end = region, start, end
        self.records: list[Usage] = []
        self.lo, self.hi = float(start), float(end)
        self.exact = Fraction(self.lo) == start and Fraction(self.hi) == end  # then clip in floats: exact, fast

    def add(self, tenant: str, resource: str, kind: str, spec: str, az: str, span: Span, size: float,
            unit: str) -> None:
        if size <= 0:
            return
        if self.exact:
            s, e = max(span[0], self.lo), min(span[1], self.hi)
            if s < e:
                self.records.append(Usage(tenant, self.region, resource, kind, spec, az, Fraction(s), Fraction(e),
                                          Fraction(size), unit))
            return
        u = Usage(tenant, self.region, resource, kind, spec, az, Fraction(span[0]), Fraction(span[1]),
                  Fraction(size), unit).clip(self.start, self.end)
        if u is not None:
            self.records.append(u)


class Meter:
    """Event sink and usage records of one region; see the module docstring."""

    def __init__(self, region: str, flavors: Mapping[str, Flavor] | None = None) -> None:
        self.region = region
        self.flavors = FLAVORS if flavors is None else flavors
        self.ledger = ServerLedger()
        self.volumes: dict[str, _Volume] = {}
        self.groups: dict[str, _Group] = {}
        self.protections: dict[str, list[_Protection]] = {}  # server id -> its protections, in time order
        self.by_volume: dict[str, list[_Protection]] = {}  # protected volume -> the protections holding it
        self.backups: dict[str, _Backup] = {}
        self._heads: dict[tuple[str, str], str] = {}  # (volume, chain) -> the chain's last backup
        self._handlers: dict[str, Callable[[float, str, dict[str, Any]], None]] = {
            "VolumeCreated": self._volume_created, "VolumeExpanded": self._volume_expanded,
            "VolumeDeleted": self._volume_deleted, "VolumeAdopted": self._volume_adopted,
            "GroupCreated": self._group_created, "ServerProtected": self._protected,
            "ServerUnprotected": self._unprotected, "GroupDeleted": self._group_deleted,
            "BackupRequested": self._backup_requested, "BackupCreated": self._backup_created,
            "BackupDeleted": self._backup_deleted, "BackupJobFailed": self._backup_failed,
            "RestoreStarted": self._restore_started,
        }

    def __call__(self, time: float, source: str, kind: str, fields: dict[str, Any]) -> None:
        path = source.split("/")
        if self.region not in path:
            return
        self.ledger(time, source, kind, fields)
        handler = self._handlers.get(kind)
        if handler is not None:
            handler(time, path[-1], fields)

    # -- usage ------------------------------------------------------------------------------
    def usage(self, start_s: Fraction | float, end_s: Fraction | float) -> list[Usage]:
        """Every usage record of the region in [start_s, end_s), clipped to it."""
        start, end = Fraction(start_s), Fraction(end_s)
        if end < start:
            raise InvalidRequest(f"usage period ends ({end_s}) before it starts ({start_s})")
        out = _Records(self.region, start, end)
        until = out.hi if out.exact else math.nextafter(out.hi, math.inf)  # open intervals reach `end`
        self._compute_usage(out, until)
        self._volume_usage(out, until)
        self._sdrs_usage(out, until)
        for bid, b in self.backups.items():
            if b.stored_s is not None:
                span = (b.stored_s, until if b.erased_s is None else b.erased_s)
                out.add(b.tenant, bid, BACKUP, "CSBS" if b.server else "VBS", "", span, b.nbytes / GIB, "GB-month")
        return sorted(out.records, key=lambda u: (u.tenant, u.kind, u.resource, u.az, u.start_s))

    def _compute_usage(self, out: _Records, until: float) -> None:
        for key, copy in self.ledger.servers.items():
            runs = self.ledger.running(key, until)
            marked = self._recovery_spans(copy, until)
            for s, e, name in self.ledger.flavor_intervals(key, until):
                flavor = self.flavors.get(name)
                if flavor is None:
                    raise InvalidRequest(f"server {copy.server_id} has flavor {name!r}, which the meter's flavor "
                                         "catalogue does not know; give the Meter the catalogue the region uses")
                spans = [(s, e)] if flavor.has_local_disk else intersect([(s, e)], runs)
                for span in intersect(spans, marked):
                    out.add(copy.tenant, copy.server_id, ECS_SDRS, name, copy.az, span, 1, "h")
                for span in subtract(spans, marked):
                    out.add(copy.tenant, copy.server_id, ECS, name, copy.az, span, 1, "h")

    def _volume_usage(self, out: _Records, until: float) -> None:
        for vid, vol in self.volumes.items():
            life = (vol.created_s, until if vol.deleted_s is None else vol.deleted_s)
            original = vid.removesuffix(REPLICA_SUFFIX)
            as_replica = self._protected_spans(self.by_volume.get(original, ()), until) if original != vid else []
            for span in subtract([life], as_replica):
                for s, e, gb in _steps(vol.sizes, span):
                    out.add(vol.tenant, vid, EVS, vol.type, vol.az, (s, e), gb, "GB-month")

    def _sdrs_usage(self, out: _Records, until: float) -> None:
        for sid, protections in self.protections.items():
            for p in protections:
                g = self.groups[p.group]
                span = (p.start_s, until if p.end_s is None else p.end_s)
                out.add(g.tenant, sid, SDRS_VM, g.name, "", span, 1, "h")
                for vid in p.volumes:
                    protected = self.volumes.get(vid)
                    if protected is not None:
                        for s, e, gb in _steps(protected.sizes, span):
                            out.add(g.tenant, vid + REPLICA_SUFFIX, SDRS_STORAGE, g.name, g.other(protected.az),
                                    (s, e), gb, "GB-month")

    def _protected_spans(self, protections: Iterable[_Protection], until: float, az: str | None = None) -> list[Span]:
        """When `protections` held [in a group whose recovery AZ is `az`], merged."""
        return _merge((p.start_s, until if p.end_s is None else p.end_s) for p in protections
                      if az is None or self.groups[p.group].recovery_az == az)

    def _recovery_spans(self, copy: ServerCopy, until: float) -> list[Span]:
        """SDRS-3: when `copy` is sDRS recovery compute (see the module docstring)."""
        sid = copy.server_id
        if sid.endswith(DRILL_SUFFIX) and sid.removesuffix(DRILL_SUFFIX) in self.protections:
            return [(copy.created_s, until)]
        if sid not in self.protections:
            return []
        return self._protected_spans(self.protections[sid], until, copy.az)

    # -- volumes ----------------------------------------------------------------------------
    def _volume_created(self, t: float, source: str, f: dict[str, Any]) -> None:
        self.volumes[f["volume"]] = _Volume(f["tenant"], source.removeprefix("volumes-"), f["type"],
                                            [(t, f["size_gb"])], t)

    def _volume_expanded(self, t: float, source: str, f: dict[str, Any]) -> None:
        vol = self.volumes.get(f["volume"])
        if vol is not None:
            vol.sizes.append((t, f["size_gb"]))

    def _volume_deleted(self, t: float, source: str, f: dict[str, Any]) -> None:
        vol = self.volumes.get(f["volume"])
        if vol is not None:
            vol.deleted_s = t

    def _volume_adopted(self, t: float, source: str, f: dict[str, Any]) -> None:
        """The event has no size: a replica is the size and type of its volume."""
        vid = f["volume"]
        original = self.volumes.get(vid.removesuffix(REPLICA_SUFFIX))
        if vid.endswith(REPLICA_SUFFIX) and original is not None and vid not in self.volumes:
            self.volumes[vid] = _Volume(f["tenant"], source.removeprefix("volumes-"), original.type,
                                        [(t, original.sizes[-1][1])], t)

    # -- sDRS -------------------------------------------------------------------------------
    def _group_created(self, t: float, source: str, f: dict[str, Any]) -> None:
        self.groups[f["group"]] = _Group(f["name"], f["tenant"], f["production_az"], f["recovery_az"])

    def _protected(self, t: float, source: str, f: dict[str, Any]) -> None:
        if f["group"] in self.groups:
            p = _Protection(f["group"], f["server"], list(f["volumes"]), t)
            self.protections.setdefault(p.server, []).append(p)
            for vid in p.volumes:
                self.by_volume.setdefault(vid, []).append(p)

    def _unprotected(self, t: float, source: str, f: dict[str, Any]) -> None:
        for p in self.protections.get(f["server"], []):
            if p.group == f["group"] and p.end_s is None:
                p.end_s = t

    def _group_deleted(self, t: float, source: str, f: dict[str, Any]) -> None:
        for protections in self.protections.values():
            for p in protections:
                if p.group == f["group"] and p.end_s is None:
                    p.end_s = t

    # -- backups ----------------------------------------------------------------------------
    def _backup_requested(self, t: float, source: str, f: dict[str, Any]) -> None:
        volumes = list(f["volumes"])
        self.backups[f["backup"]] = _Backup(f["tenant"], f["server"] or volumes[0], volumes, f["server"])

    def _backup_created(self, t: float, source: str, f: dict[str, Any]) -> None:
        bid = f["backup"]
        b = self.backups.setdefault(bid, _Backup(f["tenant"], bid, [], None))
        b.nbytes, b.stored_s = f["nbytes"], t
        for vid, full in zip(b.volumes, f["full"], strict=False):
            head = self._heads.get((vid, b.chain))
            if not full and head is not None:
                b.bases.add(head)
                self.backups[head].dependents.add(bid)
            self._heads[(vid, b.chain)] = bid

    def _backup_deleted(self, t: float, source: str, f: dict[str, Any]) -> None:
        b = self.backups.get(f["backup"])
        if b is None:
            return
        if f["data_kept_for"]:
            b.hidden = True
        else:
            self._erase(f["backup"], t)

    def _backup_failed(self, t: float, source: str, f: dict[str, Any]) -> None:
        """A create that failed lets go of the bases it had linked to: a deleted one that
        nothing else needs is erased."""
        b = self.backups.get(f["backup"])
        if f["job"] != "create" or b is None:
            return
        for vid in b.volumes:
            head = self._heads.get((vid, b.chain))
            if head is not None and head != f["backup"]:
                base = self.backups[head]
                if base.hidden and not base.dependents:
                    self._erase(head, t)

    def _restore_started(self, t: float, source: str, f: dict[str, Any]) -> None:
        """A restore rewrites the volume: its chains restart with a full backup."""
        for key in [k for k in self._heads if k[0] == f["volume"]]:
            del self._heads[key]

    def _erase(self, first: str, t: float) -> None:
        todo = [first]
        while todo:
            bid = todo.pop()
            b = self.backups[bid]
            if b.erased_s is not None:
                continue
            b.erased_s = t
            for vid in b.volumes:
                if self._heads.get((vid, b.chain)) == bid:
                    del self._heads[(vid, b.chain)]
            for base_id in sorted(b.bases):
                base = self.backups[base_id]
                base.dependents.discard(bid)
                if base.hidden and not base.dependents:
                    todo.append(base_id)

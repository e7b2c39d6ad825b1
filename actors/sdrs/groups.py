"""What an sDRS protection group holds: its protected servers, the replication pairs of
their volumes, its drill, its jobs; and the views of it the actor answers with.

A group has two AZs; `active_az` is the one its servers run in (production at first,
the recovery AZ after a failover or switchover). Each volume has a name in each AZ:
where it was protected, its own id; in the other AZ, its replica's, id + REPLICA_SUFFIX.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from actors.az import ServerDescription
from actors.sdrs.jobs import Job, oldest
from actors.sdrs.states import GroupAction, GroupState
from runtime.driver import Event
from runtime.storage import VolumeKind

REPLICA_SUFFIX = "-r"  # the replica of volume V is V-r in the group's other AZ


@attrs.define
class Pair:
    """A volume and its replica."""

    id: str  # the volume's id where it was protected
    names: dict[str, str]  # AZ -> its name there
    size_gb: int
    kind: VolumeKind
    bootable: bool
    adopted_in: set[str]  # AZs whose VolumeService holds it
    source_az: str | None = None  # the source of its running replication; None: not replicating
    consistent_at_stop: float | None = None


@attrs.define
class ProtectedServer:
    server: ServerDescription  # as protected: its clone request places its other copy
    pairs: list[Pair]


@attrs.define
class Drill:
    vpc: str
    az: str
    snapshot: str  # taken of every replica: the point in time the drill copies see
    servers: list[str] = attrs.Factory(list)  # the drill copies placed


@attrs.define
class Group:
    id: str
    name: str
    tenant: str
    vpc: str
    production_az: str
    recovery_az: str
    active_az: str
    state: GroupState = GroupState.CREATING
    servers: dict[str, ProtectedServer] = attrs.Factory(dict)
    synced_at: float | None = None
    synced: Event | None = None  # set when the first synchronisation since replication started completes
    sync_epoch: int = 0  # bumped when replication starts or stops: an older first-sync watch ends
    drill: Drill | None = None
    job: Job | None = None
    changing: int = 0  # ProtectServer / UnprotectServer requests in progress
    last_switch: Job | None = None  # the last failover or switchover

    def other(self, az: str) -> str:
        return self.recovery_az if az == self.production_az else self.production_az

    def pairs(self) -> Iterator[Pair]:
        return (p for s in self.servers.values() for p in s.pairs)

    def view(self) -> GroupView:
        return GroupView(self.id, self.name, self.tenant, self.vpc, self.production_az, self.recovery_az,
                         self.state.value, self.active_az, tuple(self.servers), sum(1 for _ in self.pairs()),
                         self.synced_at, self.drill.vpc if self.drill else None, self.job.id if self.job else None)

    def report(self) -> GroupReport:
        job = self.last_switch
        if self.job is not None and self.job.action in (GroupAction.FAILOVER, GroupAction.REVERSE):
            job = self.job
        view = job.view() if job is not None else None
        return GroupReport(self.id, self.name, self.tenant, self.state.value, len(self.servers),
                           sum(p.size_gb for p in self.pairs()), oldest(job.consistent_as_of) if job else None,
                           view.rpo_s if view else None, view.rto_s if view else None,
                           view.failed_to_start if view else 0, view.waiting if view else ())


@attrs.frozen
class GroupView:
    id: str
    name: str
    tenant: str
    vpc: str
    production_az: str
    recovery_az: str
    state: str
    active_az: str  # where its servers run (or are brought up)
    servers: tuple[str, ...]
    volumes: int  # replication pairs
    synced_at: float | None  # the first synchronisation since replication last started completed then
    drill_vpc: str | None
    job: str | None  # the job running now


@attrs.frozen
class GroupReport:
    """A group's size and cost drivers (SDRS-3), and the measures of its last failover or
    switchover (or of the one running)."""

    group: str
    name: str
    tenant: str
    state: str
    servers: int
    replica_gb: int  # protection storage: the group's volumes, held again in its other AZ
    consistent_as_of: float | None
    rpo_s: float | None
    rto_s: float | None
    failed_to_start: int
    waiting: tuple[str, ...]

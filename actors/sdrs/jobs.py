"""sDRS jobs: every action on a protection group runs as one. A job records what it did
to each server and, for a failover or switchover, what it measured (SDRS-2: no RPO or
RTO is promised, both are measured and reported).

RPO: the replicas hold every write up to `consistent_as_of` (per pair, when it was
stopped); a failure at t loses t - the oldest of them. The actor does not know the
instant of an unplanned failure, so the job carries those times for whoever does (the
simulator: `JobView.rpo_at`) and estimates from its own start. RTO: from the job's
start (a switchover: from when production began to stop) to the last server running.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

from actors.sdrs.states import GroupAction


class JobStatus(enum.Enum):
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"


@attrs.frozen
class ServerResult:
    server_id: str
    az: str  # where the job brings this server
    status: str  # pending | stopped | gone (deleted by its tenant) | waiting | running | failed
    attempts: int
    waited_for_capacity: bool  # its first start failed for lack of capacity
    running_at: float | None
    error: str | None


@attrs.frozen
class JobView:
    """`consistent_as_of`: per volume, the time its replica held every write up to, when
    the pair was stopped (failover, switchover). RPO at a failure at t is t - the minimum
    (`rpo_at`); `rpo_s` is the actor's own estimate: from the job's start (failover) or
    from the moment production stopped (switchover). `rto_s`: from the job's start
    (failover) or from the moment production began to stop (switchover) to the last
    server running."""

    id: str
    group: str
    action: str
    status: str
    started_at: float
    finished_at: float | None
    error: str | None
    servers: tuple[ServerResult, ...]
    consistent_as_of: tuple[tuple[str, float | None], ...]
    stopped_at: float | None
    rpo_s: float | None
    rto_s: float | None

    @property
    def failed_to_start(self) -> int:
        return sum(s.waited_for_capacity for s in self.servers)

    @property
    def waiting(self) -> tuple[str, ...]:
        return tuple(s.server_id for s in self.servers if s.status == "waiting")

    def rpo_at(self, failure: float) -> float | None:
        """The data lost by a failure at `failure` (what the simulator, which knows it, reports)."""
        first = oldest(dict(self.consistent_as_of))
        return None if first is None else max(0.0, failure - first)


@attrs.define
class Progress:
    """What a job did to one server."""

    server_id: str
    az: str
    status: str = "pending"
    attempts: int = 0
    waited_for_capacity: bool = False
    running_at: float | None = None
    error: str | None = None


@attrs.define
class Job:
    id: str
    group: str
    action: GroupAction
    started_at: float
    status: JobStatus = JobStatus.RUNNING
    finished_at: float | None = None
    error: str | None = None
    servers: dict[str, Progress] = attrs.Factory(dict)
    consistent_as_of: dict[str, float | None] = attrs.Factory(dict)  # volume -> its replica's, when stopped
    stopping_at: float | None = None  # switchover: production began to stop
    stopped_at: float | None = None  # switchover: production had stopped

    def view(self) -> JobView:
        servers = tuple(ServerResult(p.server_id, p.az, p.status, p.attempts, p.waited_for_capacity, p.running_at,
                                     p.error) for p in self.servers.values())
        return JobView(self.id, self.group, self.action.value, self.status.value, self.started_at, self.finished_at,
                       self.error, servers, tuple(self.consistent_as_of.items()), self.stopped_at, self.rpo_s(),
                       self.rto_s())

    def rpo_s(self) -> float | None:
        since = self.stopped_at if self.action is GroupAction.REVERSE else self.started_at
        first = oldest(self.consistent_as_of)
        return None if since is None or first is None else max(0.0, since - first)

    def rto_s(self) -> float | None:
        since = self.stopping_at if self.action is GroupAction.REVERSE else self.started_at
        times = [p.running_at for p in self.servers.values() if p.status != "gone"]
        if since is None or not times or None in times:
            return None
        return max(t for t in times if t is not None) - since


def oldest(consistent: Mapping[str, float | None]) -> float | None:
    """The oldest point every replica is consistent as of; None if one never was."""
    values = list(consistent.values())
    if not values or None in values:
        return None
    return min(v for v in values if v is not None)

"""Storage disaster recovery, sDRS (SPEC SDRS-1..3, GEO-3; REFERENCE "Storage disaster recovery").

`DisasterRecovery` (one per region) owns the region's protection groups: their
protected servers, the replication pairs of those servers' volumes, their drills, and
the jobs acting on them. A group's state follows the transition table of
`actors.sdrs.states`; every action is a job (`JobAccepted` at once, then `GetJob`).

Invariants:
- A group's production and recovery AZs are two AZs of its region, the recovery AZ
  one the catalogue allows (`regions.toml` sdrs_recovery_azs); a server belongs to at
  most one group; the replica of volume V is V-r, in the group's other AZ.
- A protected server runs in at most one AZ. Its copy in the other AZ has the same id
  (a clone, as ECS auto-recovery makes), so the hosts' truth can show it on one host
  only. The copy in the AZ a server leaves is parked (`actors.az.ParkServer`) and
  confirmed stopped before the other copy starts, and stays parked until a switchover
  brings the server back: a returning AZ does not restart it.
- A copy without capacity waits, retried whenever capacity frees (and every
  `capacity_retry_s`); its job runs until every server runs; none is dropped.
- Nothing polls in steady state: replication status is read only while a job runs or
  while a group waits for its first synchronisation (backing off to `sync_poll_max_s`).

Modules: `states` (the transition table), `groups` (what a group holds), `jobs` (what
a job did and measured: RPO, RTO), `service` (the actor and its requests).
"""

from actors.sdrs.groups import REPLICA_SUFFIX, GroupReport, GroupView
from actors.sdrs.jobs import JobStatus, JobView, ServerResult
from actors.sdrs.service import (
    DRILL_SUFFIX,
    CreateDrill,
    CreateGroup,
    DeleteDrill,
    DeleteGroup,
    DisasterRecovery,
    Failover,
    GetGroup,
    GetJob,
    JobAccepted,
    ProtectServer,
    ReportGroups,
    Reprotect,
    SdrsSettings,
    StartProtection,
    StopProtection,
    Switchover,
    UnprotectServer,
)
from actors.sdrs.states import ACTIONS, GroupAction, GroupState, Rule, allowed, begin

__all__ = [
    "ACTIONS", "DRILL_SUFFIX", "REPLICA_SUFFIX", "CreateDrill", "CreateGroup", "DeleteDrill", "DeleteGroup",
    "DisasterRecovery", "Failover", "GetGroup", "GetJob", "GroupAction", "GroupReport", "GroupState", "GroupView",
    "JobAccepted", "JobStatus", "JobView", "ProtectServer", "ReportGroups", "Reprotect", "Rule", "SdrsSettings",
    "ServerResult", "StartProtection", "StopProtection", "Switchover", "UnprotectServer", "allowed", "begin",
]

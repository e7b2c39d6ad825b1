"""The figures of a run: collected from the event stream and the ground truth of the
host models, then checked against the scenario's `[expect]` table."""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs
import simpy

from actors.backups import BackupStats
from actors.region import RegionSnapshot
from actors.sdrs import GroupReport
from runtime.errors import ConfigError
from runtime.storage import GIB
from sim.hosts import World
from sim.scenario import Expectation, Scenario
from sim.storage import StorageModel


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of unsorted values; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


class Metrics:
    """An event-log sink that keeps what the report needs as the run goes."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.kinds: Counter[str] = Counter()
        self.recovery_s: list[float] = []
        self.az_failed: dict[str, list[float]] = {}  # AZ -> when its storage went dark (truth)
        self.failover_from: dict[str, str] = {}  # group -> the AZ its running failover left
        self.failovers: list[dict[str, Any]] = []
        self.backup_requested: dict[str, float] = {}
        self.backup_s: list[float] = []  # request to available, queueing included

    def __call__(self, time: float, source: str, kind: str, fields: dict[str, Any]) -> None:
        self.kinds[kind] += 1
        if kind == "ServerRecovered":
            stopped = self.world.stopped_at.get(fields["server"])
            if stopped is not None:
                self.recovery_s.append(time - stopped)
        elif kind in ("HostFenced", "HostPresumedDown"):
            self.kinds["ServerDown"] += sum(len(ids) for ids in fields["down"].values())
        elif kind == "FaultInjected" and fields["fault"] in ("az-outage", "storage-outage"):
            self.az_failed.setdefault(fields["target"], []).append(time)
        elif kind == "FailoverStarted":
            self.failover_from[fields["group"]] = fields["from_az"]
        elif kind == "FailoverCompleted":
            self._failover(time, fields)
        elif kind == "BackupRequested":
            self.backup_requested[fields["backup"]] = time
        elif kind == "BackupCreated":
            requested = self.backup_requested.pop(fields["backup"], None)
            if requested is not None:
                self.backup_s.append(time - requested)

    def _failover(self, time: float, fields: dict[str, Any]) -> None:
        """RPO and RTO from the truth: the moment the production AZ's storage failed."""
        self.failovers.append(self.measure(fields["group"], time, fields["consistent_as_of"], fields["servers"],
                                            fields["failed_to_start"], done=True))

    def measure(self, group: str, time: float, consistent: float | None, servers: int, failed_to_start: int,
                 done: bool) -> dict[str, Any]:
        source = self.failover_from.pop(group, None) if done else self.failover_from.get(group)
        failed = [t for t in self.az_failed.get(source or "", []) if t <= time]
        rpo = rto = None
        if failed:
            rto = time - failed[-1] if done else None
            rpo = max(0.0, failed[-1] - consistent) if consistent is not None else None
        return {"group": group, "from_az": source, "rpo_s": rpo, "rto_s": rto, "servers": servers,
                "failed_to_start": failed_to_start, "completed": done}


def storage_figures(storage: StorageModel | None, known_volumes: dict[str, list[str]], groups: tuple[GroupReport, ...],
                    backups: BackupStats | None, metrics: Metrics) -> dict[str, Any]:
    """Volumes the control plane knows but the stores lost, sDRS failovers, backups."""
    lost = sum(1 for az, ids in known_volumes.items() for v in ids
               if storage is None or v not in storage.volumes[az])
    # Failovers still running at the end: their servers wait for capacity (no RTO yet).
    failovers = metrics.failovers + [
        metrics.measure(g.group, float("inf"), g.consistent_as_of, g.servers, g.failed_to_start, done=False)
        for g in groups if g.group in metrics.failover_from]
    rpo = [f["rpo_s"] for f in failovers if f["rpo_s"] is not None]
    rto = [f["rto_s"] for f in failovers if f["rto_s"] is not None]
    return {
        "volumes": {"total": sum(len(ids) for ids in known_volumes.values()), "lost": lost},
        "sdrs": failovers,
        "sdrs_totals": {
            "groups": len(groups), "protected_servers": sum(g.servers for g in groups),
            "failovers": len(failovers), "failovers_completed": len(metrics.failovers),
            "switchovers": metrics.kinds["SwitchoverCompleted"],
            "servers": sum(f["servers"] for f in failovers),
            "failed_to_start": sum(f["failed_to_start"] for f in failovers),
            "waiting_at_end": sum(len(g.waiting) for g in groups),
            "rpo_p50_s": percentile(rpo, 50), "rpo_max_s": max(rpo) if rpo else None,
            "rto_p50_s": percentile(rto, 50), "rto_max_s": max(rto) if rto else None,
            "replicated_gb": round(storage.replicated_bytes() / GIB, 1) if storage is not None else 0.0,
        },
        "backups": {"completed": backups.completed if backups else 0,
                    "queued_max": backups.queued_max if backups else 0,
                    "running_max_per_tenant": backups.running_max_per_tenant if backups else 0,
                    "rejected": backups.rejected if backups else 0,
                    "failed": backups.failed if backups else 0,
                    "failed_attempts": metrics.kinds["BackupJobFailed"],
                    "restored": backups.restored if backups else 0,
                    "duration_p50_s": percentile(metrics.backup_s, 50),
                    "duration_max_s": max(metrics.backup_s) if metrics.backup_s else None},
    }


def build(scenario: Scenario, seed: int, snapshot: RegionSnapshot, world: World, metrics: Metrics,
          events: int, sha256: str, sim_seconds: float, wall_seconds: float, actor_restarts: int,
          storage: dict[str, Any], waiting: frozenset[str] = frozenset()) -> dict[str, Any]:
    counts = Counter[str]()
    down_hosts: set[str] = set()
    for az in snapshot.azs:
        down_hosts.update(az.hosts_down)
    # A server protected by sDRS has a copy in each of its two AZs, one of them parked.
    views: dict[str, Any] = {}
    for az in snapshot.azs:
        for s in az.servers:
            if s.id not in views or views[s.id].parked:
                views[s.id] = s
    for s in views.values():
        counts["total"] += 1
        if s.parked:
            counts["waiting_capacity" if s.id in waiting else "parked"] += 1
            continue
        truth = world.running_on.get(s.id, set())
        if s.state == "active" and truth == {s.host}:
            counts["running"] += 1
        elif s.waiting_capacity:
            counts["waiting_capacity"] += 1
        elif s.recovery_pending or s.state in ("building", "recovering", "rebooting", "resizing"):
            counts["recovering"] += 1
        elif s.state == "shutoff":
            counts["stopped"] += 1
        elif s.state in ("down", "active") and s.host is not None and not world.hosts[s.host].dead \
                and (s.state == "down" or s.host in down_hosts):
            counts["down"] += 1
        else:
            counts["lost"] += 1
    rec = metrics.recovery_s
    report: dict[str, Any] = {
        "scenario": scenario.name,
        "source": scenario.source,
        "seed": seed,
        "sim_seconds": sim_seconds,
        "wall_seconds": round(wall_seconds, 3),
        "events": events,
        "event_log_sha256": sha256,
        "servers": {k: counts[k] for k in ("total", "running", "lost", "waiting_capacity", "recovering", "down",
                                           "stopped", "parked")},
        "hosts": {"total": len(world.hosts), "down_at_end": len(down_hosts),
                  "dead": sum(1 for h in world.hosts.values() if h.dead)},
        "faults": metrics.kinds["FaultInjected"],
        "recoveries": {"count": len(rec), "p50_s": percentile(rec, 50), "p99_s": percentile(rec, 99),
                       "max_s": max(rec) if rec else None,
                       "waited_for_capacity": metrics.kinds["RecoveryWaiting"],
                       "failed_attempts": metrics.kinds["RecoveryFailed"],
                       "not_eligible": metrics.kinds["ServerDown"]},
        "split_brain": len(world.split_brain),
        "quota_rejections": metrics.kinds["QuotaRejected"],
        "create_failures": metrics.kinds["ServerBuildFailed"] + metrics.kinds["CreateRefused"],
        "fence_failures": metrics.kinds["FenceFailed"],
        "actor_restarts": actor_restarts,
        **storage,
    }
    return report


def lookup(report: dict[str, Any], name: str) -> Any:
    value: Any = report
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(name)
        value = value[part]
    return value


def known_paths(report: dict[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, value in report.items():
        if isinstance(value, dict):
            paths += known_paths(value, f"{prefix}{key}.")
        elif key != "expectations":
            paths.append(prefix + key)
    return paths


def check(e: Expectation, report: dict[str, Any]) -> dict[str, Any]:
    value = lookup(report, e.name)
    if e.min is None and e.max is None:
        ok = value == e.equals
    else:
        ok = value is not None and (e.min is None or value >= e.min) and (e.max is None or value <= e.max)
    return {"name": e.name, "ok": bool(ok), "value": value,
            "expected": e.equals if e.min is None and e.max is None else {"min": e.min, "max": e.max}}


def validate_expectations(scenario: Scenario) -> None:
    """Refuse, before running, an `[expect]` entry that names no figure of the report."""
    metrics = Metrics(World(simpy.Environment()))
    empty = build(attrs.evolve(scenario, expect=()), scenario.seed, RegionSnapshot(()), World(simpy.Environment()),
                  metrics, 0, "", 0.0, 0.0, 0, storage_figures(None, {}, (), None, metrics))
    from actors.changes import ChangeCalendar
    from actors.usage import ServerLedger
    from sim.contract_report import billing_figures, contract_figures
    from sim.service_levels import Outages

    empty.update(contract_figures(scenario, scenario.seed, ServerLedger(), Outages(), ChangeCalendar(), (), 1.0))
    empty["billing"] = billing_figures(scenario, [])
    valid = known_paths(empty)
    for e in scenario.expect:
        if e.name not in valid:
            raise ConfigError(f"{scenario.source}: expect.\"{e.name}\"", "not a figure of the report",
                              ", ".join(valid))

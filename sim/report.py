"""The figures of a run: collected from the event stream and the ground truth of the
host models, then checked against the scenario's `[expect]` table."""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs
import simpy

from actors.region import RegionSnapshot
from runtime.errors import ConfigError
from sim.hosts import World
from sim.scenario import Expectation, Scenario


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

    def __call__(self, time: float, source: str, kind: str, fields: dict[str, Any]) -> None:
        self.kinds[kind] += 1
        if kind == "ServerRecovered":
            stopped = self.world.stopped_at.get(fields["server"])
            if stopped is not None:
                self.recovery_s.append(time - stopped)
        elif kind in ("HostFenced", "HostPresumedDown"):
            self.kinds["ServerDown"] += sum(len(ids) for ids in fields["down"].values())


def build(scenario: Scenario, seed: int, snapshot: RegionSnapshot, world: World, metrics: Metrics,
          events: int, sha256: str, sim_seconds: float, wall_seconds: float, actor_restarts: int) -> dict[str, Any]:
    counts = Counter[str]()
    down_hosts: set[str] = set()
    for az in snapshot.azs:
        down_hosts.update(az.hosts_down)
        for s in az.servers:
            counts["total"] += 1
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
                                           "stopped")},
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
    }
    report["expectations"] = [check(e, report) for e in scenario.expect]
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
    empty = build(attrs.evolve(scenario, expect=()), scenario.seed, RegionSnapshot(()), World(simpy.Environment()),
                  Metrics(World(simpy.Environment())), 0, "", 0.0, 0.0, 0)
    valid = known_paths(empty)
    for e in scenario.expect:
        if e.name not in valid:
            raise ConfigError(f"{scenario.source}: expect.\"{e.name}\"", "not a figure of the report",
                              ", ".join(valid))

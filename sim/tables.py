"""The analysis tables written as CSV next to `report.json`: one row per server copy and
per host at the end of a run, read from the control plane's final snapshot (what it
believes) and the host models (the truth), and the CSV writer for every table.

A CSV's columns are its rows' keys in the order they first appear, so a table built from
dicts with one key order always gets that order; empty cells are `None`.
"""

from __future__ import annotations

import csv
import gc
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from actors.region import RegionSnapshot
from actors.topology import Topology
from runtime.ports import DomainSpec
from sim.hosts import World

TABLE_NAME = re.compile(r"[a-z][a-z0-9_-]*")


@contextmanager
def gc_paused() -> Iterator[None]:
    """No automatic garbage collection inside, the collector's previous state after.

    A run leaves millions of live objects behind; each automatic collection that the
    rows' and the page's allocations trigger scans them again (measured: 7 s of 7 s for
    the rows of 50,000 hosts, 0.15 s without). What is built here has few cycles, so
    leaving them to the next collection after the step costs nothing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def server_rows(snapshot: RegionSnapshot, world: World) -> list[dict[str, Any]]:
    """One row per server copy the AZs know, in AZ order (an sDRS-protected server has a
    copy in each of its two AZs, one of them parked). `running_on` is the truth: the hosts
    where the server really runs; `vcpus` and `ram_mb` come from the domain defined on its
    host (or any host), None when no host defines it."""
    with gc_paused():
        return _server_rows(snapshot, world)


def _server_rows(snapshot: RegionSnapshot, world: World) -> list[dict[str, Any]]:
    specs: dict[str, DomainSpec] = {}
    for model in world.hosts.values():
        for sid, domain in model.domains.items():
            specs.setdefault(sid, domain.spec)
    rows = []
    for az in snapshot.azs:
        for s in az.servers:
            defined = world.hosts[s.host].domains.get(s.id) if s.host in world.hosts else None
            spec = defined.spec if defined is not None else specs.get(s.id)
            rows.append({
                "id": s.id, "tenant": s.tenant, "az": az.az, "host": s.host, "state": s.state,
                "parked": s.parked, "auto_recovery": s.auto_recovery, "group": s.group, "dedicated": s.dedicated,
                "waiting_capacity": s.waiting_capacity, "recovery_pending": s.recovery_pending,
                "running_on": " ".join(sorted(world.running_on.get(s.id, ()))),
                "vcpus": spec.vcpus if spec is not None else None,
                "ram_mb": spec.ram_mb if spec is not None else None,
            })
    return rows


def host_rows(snapshot: RegionSnapshot, world: World, topology: Topology) -> list[dict[str, Any]]:
    """One row per host of the topology, in topology order. `down_at_end` is the control
    plane's view (not up in its AZ: suspected, fenced or returning), as the report's
    `hosts.down_at_end` counts it; `running`, `reachable` and `dead` are the truth."""
    with gc_paused():
        return _host_rows(snapshot, world, topology)


def _host_rows(snapshot: RegionSnapshot, world: World, topology: Topology) -> list[dict[str, Any]]:
    down = {h for az in snapshot.azs for h in az.hosts_down}
    rows = []
    for spec in topology.hosts:
        model = world.hosts[spec.name]
        rows.append({
            "name": spec.name, "az": spec.az, "rack": spec.rack, "power_domain": spec.power_domain,
            "dedicated_to": spec.dedicated_to, "vcpus": spec.vcpus, "ram_mb": spec.ram_mb,
            "down_at_end": spec.name in down, "running": model.running, "reachable": model.reachable,
            "dead": model.dead, "servers_defined": len(model.domains),
            "servers_running": sum(1 for d in model.domains.values() if d.running),
        })
    return rows


def columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Every key of the rows, in the order they first appear."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def cell(value: Any) -> Any:
    """A CSV cell: empty for None, `true`/`false` for booleans, the value (which the csv
    module writes as str() does) otherwise."""
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return value


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """A header line then one line per row (no line at all for an empty table)."""
    names = columns(rows)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        if names:
            writer.writerow(names)
        writer.writerows([cell(row.get(n)) for n in names] for row in rows)

"""The server ledger (actors/usage.py): when each server copy existed, ran, and with which
flavor, folded from the events the AZ and sDRS emit (ECS-1, ECS-2, ECS-4, SDRS-2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from actors.billing import Meter
from actors.usage import ServerLedger
from sim import runner, scenario

AZ_B = "eu-west-0/eu-west-0b"
AZ_A = "eu-west-0/eu-west-0a"


def feed(ledger: ServerLedger, *events: tuple[float, str, str, dict[str, Any]]) -> ServerLedger:
    for t, source, kind, fields in events:
        ledger(t, source, kind, fields)
    return ledger


def created(t: float, sid: str, flavor: str = "s3.large.2", source: str = AZ_B, host: str = "h1") -> tuple[
        float, str, str, dict[str, Any]]:
    return (t, source, "ServerCreated", {"server": sid, "tenant": "acme", "host": host, "flavor": flavor,
                                         "auto_recovery": True})


def state(t: float, sid: str, value: str, source: str = AZ_B) -> tuple[float, str, str, dict[str, Any]]:
    return (t, source, "ServerStateChanged", {"server": sid, "tenant": "acme", "state": value})


def test_ecs1_create_stop_start_delete() -> None:
    ledger = feed(ServerLedger(), created(10, "s1"), state(100, "s1", "shutoff"), state(250, "s1", "active"),
                  (400, AZ_B, "ServerDeleted", {"server": "s1", "tenant": "acme"}))
    rec = ledger.servers["s1"]
    assert (rec.tenant, rec.az, rec.created_s, rec.deleted_s) == ("acme", "eu-west-0b", 10, 400)
    assert ledger.running("s1", until=1000) == [(10, 100), (250, 400)]
    assert ledger.running("s1", until=300) == [(10, 100), (250, 300)]
    assert ledger.existed("s1", 1000) == (10, 400)


def test_ecs1_an_open_interval_is_clipped_at_until_and_later_ones_left_out() -> None:
    ledger = feed(ServerLedger(), created(10, "s1"), state(100, "s1", "shutoff"), state(250, "s1", "active"))
    assert ledger.running("s1", until=5000) == [(10, 100), (250, 5000)]
    assert ledger.running("s1", until=200) == [(10, 100)]
    assert ledger.running("s1", until=5) == []


def test_ecs1_resize_changes_the_flavor_from_its_moment() -> None:
    ledger = feed(ServerLedger(), created(0, "s1"), state(100, "s1", "shutoff"),
                  (150, AZ_B, "ServerResized", {"server": "s1", "tenant": "acme", "flavor": "s3.xlarge.2"}),
                  state(200, "s1", "active"))
    assert ledger.flavor_intervals("s1", until=1000) == [(0, 150, "s3.large.2"), (150, 1000, "s3.xlarge.2")]
    assert ledger.running("s1", until=1000) == [(0, 100), (200, 1000)]


def test_ecs4_a_fenced_host_stops_its_servers_from_its_suspicion_until_recovered_or_returned() -> None:
    ledger = feed(
        ServerLedger(), created(0, "s1"), created(0, "s2"), created(0, "s3", host="h2"),
        (1000, AZ_B, "HostSuspected", {"host": "h1"}),
        (1060, AZ_B, "HostFenced", {"host": "h1", "recovering": ["s1"], "down": {"auto-recovery disabled": ["s2"]}}),
        (1100, AZ_B, "ServerRecovered", {"server": "s1", "tenant": "acme", "from_host": "h1", "to_host": "h2"}),
        (5000, AZ_B, "HostReturned", {"host": "h1", "removed": ["s1"], "restarted": ["s2"]}),
    )
    assert ledger.running("s1", 9000) == [(0, 1000), (1100, 9000)]
    assert ledger.running("s2", 9000) == [(0, 1000), (5000, 9000)]
    assert ledger.running("s3", 9000) == [(0, 9000)]  # on another host


def test_ecs4_presumed_down_without_fencing_counts_like_a_fence() -> None:
    ledger = feed(ServerLedger(), created(0, "s1"), (1000, AZ_B, "HostSuspected", {"host": "h1"}),
                  (1000, AZ_B, "HostPresumedDown", {"host": "h1", "recovering": ["s1"], "down": {}}),
                  (1200, AZ_B, "ServerRecovered", {"server": "s1", "tenant": "acme", "from_host": "h1",
                                                   "to_host": "h2"}))
    assert ledger.running("s1", 2000) == [(0, 1000), (1200, 2000)]


def test_ecs4_a_host_back_before_fencing_had_stopped_what_it_restarts() -> None:
    ledger = feed(ServerLedger(), created(0, "s1"), created(0, "s2"), (1000, AZ_B, "HostSuspected", {"host": "h1"}),
                  (1300, AZ_B, "HostReturned", {"host": "h1", "removed": [], "restarted": ["s1"]}))
    assert ledger.running("s1", 2000) == [(0, 1000), (1300, 2000)]
    assert ledger.running("s2", 2000) == [(0, 2000)]  # found running: it never stopped


def test_ecs4_a_resync_restart_of_a_running_server_changes_nothing_and_starts_a_stopped_one() -> None:
    ledger = feed(ServerLedger(), created(0, "s1"), created(0, "s2"), state(50, "s2", "shutoff"),
                  (300, AZ_B, "HostResynced", {"host": "h1", "removed": [], "restarted": ["s1", "s2"]}))
    assert ledger.running("s1", 1000) == [(0, 1000)]
    assert ledger.running("s2", 1000) == [(0, 50), (300, 1000)]


def test_ecs1_a_failed_build_leaves_no_record_and_unknown_servers_are_ignored() -> None:
    ledger = feed(ServerLedger(), (5, AZ_B, "ServerBuildFailed", {"server": "s1", "tenant": "acme", "host": "h1",
                                                                 "error": "boom"}),
                  state(10, "s1", "active"), (20, AZ_B, "ServerDeleted", {"server": "s1", "tenant": "acme"}))
    assert ledger.servers == {}


def test_sdrs2_parking_changes_nothing_by_itself_the_stop_does() -> None:
    ledger = feed(ServerLedger(), created(0, "s1"),
                  (100, AZ_B, "ServerParked", {"server": "s1", "tenant": "acme", "state": "active"}),
                  state(130, "s1", "shutoff"),
                  (900, AZ_B, "ServerUnparked", {"server": "s1", "tenant": "acme", "state": "shutoff"}),
                  state(905, "s1", "active"))
    assert ledger.running("s1", 1000) == [(0, 130), (905, 1000)]


def test_sdrs2_the_recovery_copy_of_a_protected_server_is_its_own_record() -> None:
    """Same id in two AZs: the first copy under the id, the other under ID@AZ; a fence in
    one AZ does not touch the copy in the other."""
    dr = {"group": "g1", "server": "s1", "az": "eu-west-0a", "attempts": 1, "waited_for_capacity": False}
    ledger = feed(
        ServerLedger(), created(0, "s1"), (1000, AZ_B, "HostSuspected", {"host": "h1"}),
        (1010, AZ_B, "HostFenced", {"host": "h1", "recovering": [], "down": {"parked": ["s1"]}}),
        created(1100, "s1", source=AZ_A, host="a1"), (1100, "eu-west-0/sdrs", "DrServerStarted", dr),
        state(3000, "s1", "shutoff", source=AZ_A),
        (3000, AZ_B, "HostReturned", {"host": "h1", "removed": [], "restarted": []}),
        (3005, AZ_B, "ServerUnparked", {"server": "s1", "tenant": "acme", "state": "down"}),
        state(3010, "s1", "active"))
    assert set(ledger.servers) == {"s1", "s1@eu-west-0a"}
    assert ledger.servers["s1@eu-west-0a"].server_id == "s1"
    assert ledger.servers["s1@eu-west-0a"].az == "eu-west-0a"
    assert ledger.running("s1", 4000) == [(0, 1000), (3010, 4000)]
    assert ledger.running("s1@eu-west-0a", 4000) == [(1100, 3000)]
    assert ledger.copy("s1", "eu-west-0a") is ledger.servers["s1@eu-west-0a"]


def test_ecs1_a_copy_created_again_in_the_same_az_gets_a_new_record() -> None:
    ledger = feed(ServerLedger(), created(0, "s1"), (50, AZ_B, "ServerDeleted", {"server": "s1", "tenant": "acme"}),
                  created(70, "s1"))
    assert ledger.running("s1", 100) == [(0, 50)]
    assert ledger.running("s1@eu-west-0b", 100) == [(70, 100)]


SCENARIO = """
[scenario]
name = "ledger on a real run"
seed = 3
duration = "1d"

[topology]
region = "eu-west-0"
hosts_per_az = 2
host = { vcpus = 64, ram_gb = 256, rack_size = 20 }

[[tenants]]
name = "acme"
quotas = { instances = 10, vcpus = 40, ram_mb = 200000 }
servers = [
  { count = 4, flavor = "s3.large.2", az = "eu-west-0b", auto_recovery = true },
  { count = 2, flavor = "d2.xlarge.8", az = "eu-west-0b" },
]

[[failures.schedule]]
at = "6h"
fault = "host-crash"
target = "eu-west-0b-h00001"
duration = "2h"
"""


def test_ecs2_ecs4_ledger_and_meter_on_a_real_run_with_a_host_crash(tmp_path: Path) -> None:
    """A real run: the events' shapes are the ledger's. Servers of the crashed host stop
    at its suspicion, auto-recovery ones run again when recovered, the others when their
    host returns; a local-disk flavor is billed all along (ECS-2)."""
    runner.run(scenario.parse(SCENARIO), out_dir=tmp_path)
    ledger, meter = ServerLedger(), Meter("eu-west-0")
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    for e in events:
        fields = {k: v for k, v in e.items() if k not in ("t", "src", "kind")}
        ledger(e["t"], e["src"], e["kind"], fields)
        meter(e["t"], e["src"], e["kind"], fields)
    end = 86400.0
    suspected = next(e["t"] for e in events if e["kind"] == "HostSuspected")
    fenced = next(e for e in events if e["kind"] == "HostFenced")
    back = {e["server"]: e["t"] for e in events if e["kind"] == "ServerRecovered"}
    returned = next(e for e in events if e["kind"] == "HostReturned")
    back.update({sid: returned["t"] for sid in returned["restarted"]})
    hit = set(fenced["recovering"]) | {s for ids in fenced["down"].values() for s in ids}
    assert len(ledger.servers) == 6 and hit and set(back) == hit
    assert set(fenced["recovering"]) and fenced["down"]  # both kinds of server were on the crashed host
    for key, rec in ledger.servers.items():
        expected = [(rec.created_s, suspected), (back[key], end)] if key in hit else [(rec.created_s, end)]
        assert ledger.running(key, end) == expected
    hours = {}
    for u in meter.usage(0, end):
        if u.kind == "ecs":
            hours[u.resource] = hours.get(u.resource, 0) + u.quantity
    for key, rec in ledger.servers.items():
        local = rec.flavors[0][1].startswith("d2")
        billed = end - rec.created_s if local else sum(e - s for s, e in ledger.running(key, end))
        assert hours[key] * 3600 == pytest.approx(billed, abs=1e-6)


SDRS_SCENARIO = """
[scenario]
name = "sDRS usage on a real run"
seed = 2
duration = "1d"

[topology]
region = "eu-west-0"
hosts_per_az = 2
host = { vcpus = 64, ram_gb = 256, rack_size = 20 }

[[tenants]]
name = "shop"
protection_groups = [{ name = "app", production_az = "eu-west-0b", recovery_az = "eu-west-0a" }]
servers = [{ count = 2, flavor = "s3.medium.2", az = "eu-west-0b", protect = "app" }]

[[operations]]
at = "10m"
action = "start-protection"

[[operations]]
at = "2h"
action = "drill"

[[operations]]
at = "6h"
action = "failover"
"""


def test_sdrs3_meter_on_a_real_run_with_a_drill_and_a_failover(tmp_path: Path) -> None:
    """Production compute until the failover parks it; the copies in the recovery AZ (drill
    copies, then the failed-over servers) are sDRS recovery compute; each protected server
    and its replica's storage count from protection on; the adopted replicas are not EVS."""
    runner.run(scenario.parse(SDRS_SCENARIO), out_dir=tmp_path)
    meter = Meter("eu-west-0")
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    for e in events:
        meter(e["t"], e["src"], e["kind"], {k: v for k, v in e.items() if k not in ("t", "src", "kind")})
    end = 86400.0

    def first(kind: str, **match: Any) -> float:
        return float(next(e["t"] for e in events if e["kind"] == kind and match.items() <= e.items()))

    protected = {e["server"]: e for e in events if e["kind"] == "ServerProtected"}
    assert len(protected) == 2
    usage = meter.usage(0, end)
    got = {(u.kind, u.resource, u.az): (float(u.start_s), float(u.end_s)) for u in usage}
    assert len(got) == len(usage)  # one record each
    expected: dict[tuple[str, str, str], tuple[float, float]] = {}
    for sid, p in protected.items():
        (vid,) = p["volumes"]
        expected[("ecs", sid, "eu-west-0b")] = (first("ServerCreated", server=sid),
                                                first("ServerStateChanged", server=sid, state="shutoff"))
        expected[("ecs-sdrs", sid, "eu-west-0a")] = (first("DrServerStarted", server=sid), end)
        expected[("ecs-sdrs", sid + "-drill", "eu-west-0a")] = (first("ServerCreated", server=sid + "-drill"), end)
        expected[("sdrs-vm", sid, "")] = (p["t"], end)
        expected[("sdrs-storage", vid + "-r", "eu-west-0a")] = (p["t"], end)
        expected[("evs", vid, "eu-west-0b")] = (first("VolumeCreated", volume=vid), end)
    assert got == expected


def test_ecs4_a_server_found_running_when_its_host_returns_runs_again_from_then() -> None:
    """An unfenced partition: the server kept running but the control plane could not see
    it; from the suspicion to the return it counts as not running, then as running."""
    ledger = feed(
        ServerLedger(), created(0, "s1"), (1000, AZ_B, "HostSuspected", {"host": "h1"}),
        (1010, AZ_B, "HostPresumedDown", {"host": "h1", "recovering": [], "down": {"no auto-recovery": ["s1"]}}),
        (2000, AZ_B, "HostReturned", {"host": "h1", "removed": [], "restarted": [], "running": ["s1"]}))
    assert ledger.running("s1", 3000) == [(0, 1000), (2000, 3000)]

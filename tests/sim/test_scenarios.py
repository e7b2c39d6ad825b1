"""Bundled scenarios hold their [expect] tables and are deterministic (rules ECS-4,
GEO-4, TEN-3); the report's safety figures can fail when the safety mechanism is off."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest

from sim import runner, scenario
from sim.cli import main

SCENARIOS = sorted(Path(__file__).parents[2].joinpath("scenarios").glob("*.toml"))
REQUIRED = {"scenario", "seed", "sim_seconds", "wall_seconds", "events", "event_log_sha256", "servers",
            "recoveries", "split_brain", "quota_rejections", "expectations"}


def test_there_are_bundled_scenarios() -> None:
    assert {p.name for p in SCENARIOS} >= {"host-failure.toml", "rack-failure.toml", "az-partition.toml"}


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_bundled_scenario_holds_its_expectations_and_is_deterministic(path: Path, tmp_path: Path) -> None:
    code = main(["sim", str(path), "--out", str(tmp_path), "--check-determinism", "--quiet", "--json"])
    report = json.loads((tmp_path / "report.json").read_text())
    assert REQUIRED <= set(report)
    assert {"total", "running", "lost", "waiting_capacity"} <= set(report["servers"])
    assert {"count", "p50_s", "p99_s", "max_s"} <= set(report["recoveries"])
    failed = [e for e in report["expectations"] if not e["ok"]]
    assert failed == [] and code == 0
    assert report["determinism"]["ok"]
    assert report["split_brain"] == 0 and report["servers"]["lost"] == 0
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert len(lines) == report["events"]


def test_another_seed_gives_another_history() -> None:
    scn = scenario.load(SCENARIOS[0])
    scn = attrs.evolve(scn, preset="simedc", duration_s=30 * 86400.0)
    a, b = runner.run(scn, seed=1), runner.run(scn, seed=2)
    assert a["event_log_sha256"] != b["event_log_sha256"]


def test_without_fencing_a_partitioned_host_causes_split_brain_ECS_4() -> None:
    """The split-brain figure is measured from the models' truth: turn fencing off and it shows."""
    scn = scenario.load(Path(__file__).parents[2] / "scenarios" / "az-partition.toml")
    unsafe = attrs.evolve(scn, recovery=attrs.evolve(scn.recovery, fencing=False), expect=())
    report = runner.run(unsafe)
    assert report["split_brain"] > 0
    assert runner.run(attrs.evolve(scn, expect=()))["split_brain"] == 0


BASE = """
[scenario]
name = "t"
seed = 1
duration = "2d"

[topology]
region = "eu-west-0"
hosts_per_az = 4
host = { vcpus = 16, ram_gb = 64, rack_size = 2 }
"""


def run_text(text: str) -> dict[str, object]:
    return runner.run(scenario.parse(BASE + text, "t.toml"))


def test_a_server_is_recovered_at_most_once_in_12_hours_ECS_4() -> None:
    report = run_text("""
[[tenants]]
name = "a"
servers = [{ count = 1, flavor = "s3.large.2", az = "eu-west-0a", auto_recovery = true }]
[[failures.schedule]]
at = "1h"
fault = "host-crash"
target = "eu-west-0a-h00001"
[[failures.schedule]]
at = "3h"
fault = "host-crash"
target = "eu-west-0a-h00002"
duration = "1h"
[[failures.schedule]]
at = "7h"
fault = "host-crash"
target = "eu-west-0a-h00003"
duration = "1h"
[[failures.schedule]]
at = "9h"
fault = "host-crash"
target = "eu-west-0a-h00004"
duration = "1h"
""")
    # The server sits on h1 (spread placement, ties by name); h1 dies for good at 1 h and
    # the server is rebuilt on h2. When h2 dies at 3 h it is within 12 h: no rebuild, it
    # waits for h2, which returns at 4 h and starts it again.
    recoveries = report["recoveries"]
    assert isinstance(recoveries, dict)
    assert recoveries["count"] == 1
    assert recoveries["not_eligible"] == 1
    assert report["servers"] == {"total": 1, "running": 1, "lost": 0, "waiting_capacity": 0, "recovering": 0,
                                 "down": 0, "stopped": 0, "parked": 0}


def test_servers_without_auto_recovery_wait_for_their_host_ECS_4() -> None:
    report = run_text("""
[[tenants]]
name = "a"
quotas = { ram_mb = 100000 }
servers = [{ count = 4, flavor = "s3.large.2", az = "eu-west-0a" },
           { count = 2, flavor = "d2.xlarge.8", az = "eu-west-0a" }]
[[failures.schedule]]
at = "1h"
fault = "power-domain"
target = "eu-west-0a/pd-1"
duration = "5h"
""")
    assert report["recoveries"] == {"count": 0, "p50_s": None, "p99_s": None, "max_s": None,
                                    "waited_for_capacity": 0, "failed_attempts": 0, "not_eligible": 6}
    assert report["servers"]["running"] == 6


def test_no_capacity_means_waiting_not_lost_ECS_4() -> None:
    report = run_text("""
[[tenants]]
name = "a"
quotas = { instances = 10, vcpus = 64, ram_mb = 131072 }
servers = [{ count = 8, flavor = "s3.2xlarge.2", az = "eu-west-0a", auto_recovery = true }]
[[failures.schedule]]
at = "1h"
fault = "rack"
target = "eu-west-0a/rack-1"
""")
    servers = report["servers"]
    assert isinstance(servers, dict)
    # 4 hosts of 16 vCPUs hold 8 servers of 8 vCPUs; rack 1 (2 hosts) never returns.
    assert servers["waiting_capacity"] == 4 and servers["lost"] == 0 and servers["running"] == 4


@pytest.mark.parametrize(("text", "where", "words"), [
    ('[[tenants]]\nname = "a"\nservers = [{ flavor = "s3.hugee.2", az = "eu-west-0a" }]\n',
     "t.toml:13: tenants[0].servers[0].flavor", "did you mean s3.large.2"),
    ('[[tenants]]\nname = "a"\nservers = [{ flavor = "s3.large.2", az = "eu-west-9z" }]\n',
     "tenants[0].servers[0].az", "valid: eu-west-0a, eu-west-0b, eu-west-0c"),
    ('[[tenants]]\nname = "a"\nservers = [{ flavor = "d2.xlarge.8", az = "eu-west-0a", auto_recovery = true }]\n',
     "tenants[0].servers[0].auto_recovery", "local disk"),
    ('[[tenants]]\nname = "a"\nquotas = { cpus = 3 }\n', "tenants[0].quotas.cpus", "valid: instances"),
    ('[[failures.schedule]]\nat = "1h"\nfault = "rack"\ntarget = "eu-west-0a/rack-9"\n',
     "failures.schedule[0].target", "names no host"),
    ('[[failures.schedule]]\nat = "5d"\nfault = "rack"\ntarget = "eu-west-0a/rack-1"\n',
     "failures.schedule[0].at", "not before the end"),
    ('[[failures.schedule]]\nat = "1 hour"\nfault = "rack"\ntarget = "eu-west-0a/rack-1"\n',
     "failures.schedule[0].at", '"6h"'),
    ('[[failures.schedule]]\nat = "1h"\nfault = "meteor"\ntarget = "eu-west-0a"\n',
     "failures.schedule[0].fault", "host-crash"),
    ('[failures]\npreset = "chaos"\n', "t.toml:12: failures.preset", "google, none, simedc"),
    ('[recovery]\nconcurency = 3\n', "recovery.concurency", "concurrency"),
    # SDRS-1: in eu-west-0 the recovery AZ must be eu-west-0a.
    ('[[tenants]]\nname = "a"\nprotection_groups = [{ name = "g", production_az = "eu-west-0b", '
     'recovery_az = "eu-west-0c" }]\n', "tenants[0].protection_groups[0].recovery_az", "valid: eu-west-0a"),
    ('[[tenants]]\nname = "a"\nprotection_groups = [{ name = "g", production_az = "eu-west-0b", '
     'recovery_az = "eu-west-1a" }]\n', "tenants[0].protection_groups[0].recovery_az", "valid: eu-west-0a"),
    ('[[tenants]]\nname = "a"\nprotection_groups = [{ name = "g", production_az = "eu-west-0b", '
     'recovery_az = "eu-west-0a" }]\nservers = [{ flavor = "s3.large.2", az = "eu-west-0c", protect = "g" }]\n',
     "tenants[0].servers[0].protect", "production_az is eu-west-0c"),
    ('[[failures.schedule]]\nat = "1h"\nfault = "link-down"\ntarget = "eu-west-0a"\n',
     "failures.schedule[0]", "peer"),
    ('[[operations]]\nat = "1h"\naction = "failover"\ntarget = "nope"\n', "operations[0].target",
     "declare a protection group first"),
    ('[[tenants]]\nname = "a"\n[[operations]]\nat = "1h"\naction = "backup"\nevery = "10s"\n',
     "operations[0].every", "at least 60 s"),
    ('[storage]\nbackup_bps = 0\n', "storage.backup_bps", "> 0"),
])
def test_invalid_scenarios_say_where_and_what_is_valid(text: str, where: str, words: str) -> None:
    with pytest.raises(scenario.ConfigError) as info:
        scenario.parse(BASE + text, "t.toml")
    assert where in str(info.value) and words in str(info.value)


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE.replace('duration = "2d"', 'duration = "forever"'))
    assert main(["sim", str(bad), "--quiet", "--out", str(tmp_path / "o")]) == 2
    assert "bad.toml:5: scenario.duration" in capsys.readouterr().err.replace("\n", "")
    failing = tmp_path / "failing.toml"
    failing.write_text(BASE + '[expect]\n"servers.total" = 1\n')
    assert main(["sim", str(failing), "--quiet", "--out", str(tmp_path / "f")]) == 1
    unknown = tmp_path / "unknown.toml"
    unknown.write_text(BASE + '[expect]\n"servers.totl" = 1\n')
    assert main(["sim", str(unknown), "--quiet", "--out", str(tmp_path / "u")]) == 2
    assert not (tmp_path / "u").exists()
    assert main(["sim", str(tmp_path / "missing.toml"), "--quiet"]) == 2


def test_the_12_hour_limit_delays_a_recovery_it_does_not_cancel_it_ECS_4(tmp_path: Path) -> None:
    scn = scenario.parse(BASE + """
[[tenants]]
name = "a"
servers = [{ count = 1, flavor = "s3.large.2", az = "eu-west-0a", auto_recovery = true }]
[[failures.schedule]]
at = "1h"
fault = "host-crash"
target = "eu-west-0a-h00001"
[[failures.schedule]]
at = "3h"
fault = "host-crash"
target = "eu-west-0a-h00002"
""", "t.toml")
    report = runner.run(scn, out_dir=tmp_path)
    # h1 and h2 never return: rebuilt on h2 at ~1 h, then again only once 12 h have passed.
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    recovered = [e["t"] for e in events if e["kind"] == "ServerRecovered"]
    assert len(recovered) == 2
    assert recovered[0] < 2 * 3600
    assert 13 * 3600 <= recovered[1] < 13 * 3600 + 300
    assert report["servers"]["running"] == 1 and report["servers"]["lost"] == 0


def test_a_partner_region_comes_from_configuration_GEO_1() -> None:
    text = BASE.replace('region = "eu-west-0"', 'region = "us-east-99"') + """
[regions.us-east-99]
city = "Partner"
currency = "USD"
azs = ["us-east-99a"]
[[tenants]]
name = "a"
servers = [{ count = 2, flavor = "s3.large.2", az = "us-east-99a" }]
"""
    # a partner region has no bundled price catalogue: the file must name one, in its currency
    with pytest.raises(scenario.ConfigError, match="billing.prices: no bundled price catalogue"):
        scenario.parse(text, "t.toml")
    prices = Path(__file__).parents[2] / "scenarios" / "prices" / "us-east-99.toml"
    text += f'[billing]\nprices = "{prices}"\n'
    report = runner.run(scenario.parse(text, "t.toml"))
    assert report["servers"]["running"] == 2 and report["hosts"]["total"] == 4
    assert report["billing"]["currency"] == "USD" and report["billing"]["total"] > 0
    with pytest.raises(scenario.ConfigError, match="bills in USD, region us-east-99 in EUR"):
        scenario.parse(text.replace('currency = "USD"\nazs', 'currency = "EUR"\nazs'), "t.toml")
    with pytest.raises(scenario.ConfigError, match="regions.us-east-99: missing required key 'azs'"):
        scenario.parse(text.replace('azs = ["us-east-99a"]', ""), "t.toml")


def test_a_run_does_not_depend_on_the_interpreter_hash_seed(tmp_path: Path) -> None:
    """Set and dict orders of strings change with PYTHONHASHSEED; the event log must not."""
    import os
    import subprocess
    import sys

    hashes = []
    for hash_seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-m", "sim.cli", "sim", str(SCENARIOS[-1]), "--quiet", "--json",
                              "--out", str(tmp_path / hash_seed)],
                             env={**os.environ, "PYTHONHASHSEED": hash_seed}, capture_output=True, text=True,
                             check=True, cwd=Path(__file__).parents[2])
        hashes.append(json.loads(out.stdout)["event_log_sha256"])
    assert hashes[0] == hashes[1]

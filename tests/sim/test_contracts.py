"""Contract terms in a run: API outages and SLA-1 availability, incidents and tickets
(SLA-2..6), planned changes and the urgent budget (SLA-7), HDS erasure (TEN-5), and the
scenario fields' errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.errors import ConfigError
from sim import runner, scenario

BASE = """
[scenario]
name = "contracts"
seed = 3
duration = "3d"
start = 2026-11-06

[topology]
region = "eu-west-0"
hosts_per_az = 4
host = { vcpus = 64, ram_gb = 256, rack_size = 2 }

[[tenants]]
name = "acme"
support = { plan = "Business", contacts = ["ops@acme.example"] }
quotas = { instances = 20, vcpus = 80, ram_mb = 200000, volumes = 40, gigabytes = 4000 }
servers = [{ count = 4, flavor = "s3.large.2", az = "eu-west-0b", auto_recovery = true }]

[[tenants]]
name = "leaving"
contract_end = "1d"
quotas = { instances = 20, vcpus = 80, ram_mb = 200000, volumes = 40, gigabytes = 4000 }
servers = [{ count = 3, flavor = "s3.medium.2", az = "eu-west-0a" }]

[[operations]]
at = "2h"
action = "backup"
target = "leaving"
"""


def run(extra: str = "", base: str = BASE) -> dict:  # type: ignore[type-arg]
    return runner.run(scenario.parse(base + extra, "t.toml"))


def test_ten5_contract_end_erases_every_server_volume_and_backup_and_certifies_it() -> None:
    report = run()
    [record] = report["deletions"]
    assert record["tenant"] == "leaving" and record["contract_end_s"] == 86400.0
    # 3 servers, their 3 system volumes (deleted with the servers, so not counted twice), 3 backups
    assert record["items"] == 6 and record["left"] == 0
    assert record["within_limit"] and record["completed_s"] <= record["deadline_s"]
    assert record["deadline_s"] - record["contract_end_s"] == 61 * 86400.0
    assert len(record["sha256"]) == 64
    assert report["servers"]["total"] == 4  # only acme's are left
    assert report["volumes"]["total"] == 4


def test_ten5_erase_after_is_bounded_by_two_months() -> None:
    with pytest.raises(ConfigError) as err:
        run(base=BASE.replace('contract_end = "1d"', 'erase_after = "1d"'))
    assert "erase_after" in str(err.value) and "contract_end" in str(err.value)


def test_sla1_an_api_outage_is_downtime_for_every_tenant_and_a_p1_incident() -> None:
    report = run("""
[[failures.schedule]]
at = "30h"
fault = "api-outage"
target = "ECS"
duration = "2h"
""")
    api = [s for s in report["availability"]["services"] if s["service"] == "ECS" and s["plane"] == "api"]
    assert [s["downtime_s"] for s in api] == [7200.0]
    assert not api[0]["met"]
    acme = [t for t in report["availability"]["tenants"] if t["tenant"] == "acme" and t["service"] == "ECS"]
    # 2 h of the 3 days observed: 97.2%, below 99% (the default tiers): 25% credit
    assert acme[0]["downtime_s"] == 7200.0 and acme[0]["credit_pct"] == 25.0
    [p1] = [i for i in report["incidents"]["list"] if i["priority"] == "P1"]
    assert (p1["service"], p1["plane"], p1["opened_s"], p1["resolved_s"]) == ("ECS", "api", 30 * 3600.0, 32 * 3600.0)
    # SLA-4/5: acme (Business) gets a ticket: response within 1 h 24/7, repair (GTR) within 4 h
    [ticket] = [t for t in report["tickets"]["list"] if t["incident"] == p1["id"]]
    assert ticket["tenant"] == "acme" and ticket["plan"] == "Business"
    assert ticket["response_due_s"] == p1["opened_s"] + 3600.0
    assert ticket["repair_due_s"] == p1["opened_s"] + 4 * 3600.0 and ticket["repair_met"] is True


def test_sla1_no_fault_means_100_percent_everywhere() -> None:
    report = run()
    assert report["availability"]["min_pct"] == 100.0
    assert report["availability"]["intervals"] == []
    assert all(s["met"] for s in report["availability"]["services"])


def test_sla7_urgent_changes_past_the_3h_budget_are_refused_and_maintenance_is_not_downtime() -> None:
    report = run("""
[[changes]]
at = "10h"
kind = "urgent"
service = "EVS"
duration = "2h"

[[changes]]
at = "20h"
kind = "urgent"
service = "EVS"
duration = "90m"

[[changes]]
at = "30h"
announced = "5h"
kind = "code-release"
service = "EVS"
duration = "30m"
""")
    assert report["changes"] == {"accepted": 2, "refused": 1, "maintenance_s": 2 * 3600.0 + 1800.0}
    evs_api = [s for s in report["availability"]["services"] if s["service"] == "EVS" and s["plane"] == "api"]
    assert evs_api[0]["downtime_s"] == 0.0 and evs_api[0]["availability_pct"] == 100.0


def test_sla7_a_release_announced_too_late_is_refused() -> None:
    report = run("""
[[changes]]
at = "10h"
announced = "1h"
kind = "code-release"
service = "ECS"
duration = "10m"
""")
    assert report["changes"]["refused"] == 1 and report["changes"]["maintenance_s"] == 0.0


@pytest.mark.parametrize("text, where, valid", [
    ('support = { plan = "Gold" }', "tenants[1].support.plan", "Business Europe"),
    ('reserved = [{ flavor = "s3.large.2", term_years = 4, subscribed = 2026-01-01 }]',
     "tenants[1].reserved[0].term_years", "1, 2, 3 or 5"),
])
def test_bad_contract_fields_name_the_file_line_and_field(text: str, where: str, valid: str) -> None:
    with pytest.raises(ConfigError) as err:
        scenario.parse(BASE.replace('contract_end = "1d"', f'contract_end = "1d"\n{text}'), "t.toml")
    assert where in err.value.where and err.value.where.startswith("t.toml:")
    assert valid in err.value.valid


def test_sla6_more_named_contacts_than_the_plan_allows_is_refused_at_parse() -> None:
    text = BASE.replace('contract_end = "1d"', 'contract_end = "1d"\n'
                        'support = { plan = "Standard", contacts = ["a@x.example", "b@x.example", "c@x.example"] }')
    with pytest.raises(ConfigError) as err:
        scenario.parse(text, "t.toml")
    assert err.value.where.endswith("tenants[1].support.contacts") and "at most 2 named contacts" in str(err.value)


def test_api_outage_needs_a_service() -> None:
    with pytest.raises(ConfigError) as err:
        run("""
[[failures.schedule]]
at = "1h"
fault = "api-outage"
target = "eu-west-0a"
""")
    assert "ECS, EVS, VPC, IAM, OBS" in err.value.valid


def test_ecs7_a_reserved_instance_of_a_flavor_the_catalogue_does_not_sell_is_refused_at_parse() -> None:
    text = BASE.replace('contract_end = "1d"', 'contract_end = "1d"\n'
                        'reserved = [{ flavor = "s9.huge.1", term_years = 1, subscribed = 2026-01-01 }]')
    with pytest.raises(ConfigError) as err:
        scenario.parse(text, "t.toml")
    assert err.value.where.startswith("t.toml:") and err.value.where.endswith("tenants[1].reserved[0].flavor")
    assert "s9.huge.1" in err.value.problem and "s3.large.2" in err.value.valid


def test_a_price_catalogue_missing_a_flavor_names_its_file_line_and_flavor(tmp_path: Path) -> None:
    bundled = Path(__file__).parents[2] / "actors" / "prices" / "eu-west-0.toml"
    broken = tmp_path / "prices.toml"
    broken.write_text("".join(line for line in bundled.read_text().splitlines(keepends=True)
                              if not line.startswith('"s3.large.2"')))
    with pytest.raises(ConfigError) as err:
        scenario.parse(BASE + f'\n[billing]\nprices = "{broken}"\n', "t.toml")
    assert str(broken) in err.value.where and "s3.large.2" in str(err.value)

"""Billing (actors/billing): ECS-2 pay-per-use, ECS-7 reserved instances, EVS, VBS and
SDRS-3 usage, price catalogues, invoices and their JSON/CSV forms."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterable
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from actors.billing import (
    Invoice,
    Meter,
    ReservedInstance,
    Usage,
    load_prices,
    monthly_invoices,
    to_csv,
    to_json,
    with_credits,
)
from actors.billing.catalogue import bundled_regions
from actors.billing.invoice import invoice
from actors.billing.reserved import Month, seconds
from runtime.errors import ConfigError, Conflict, InvalidRequest

PARIS = ZoneInfo("Europe/Paris")
EPOCH = dt.datetime(2026, 1, 1, tzinfo=PARIS)  # virtual time 0
REGION = "eu-west-0"
PRICES = load_prices(None, REGION)
H = 3600.0
D = 86400.0
JAN, FEB, MAR = Month(2026, 1), Month(2026, 2), Month(2026, 3)
GIB = 1 << 30


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=PARIS)


def span(month: Month) -> tuple[Fraction, Fraction]:
    return month.span(EPOCH)


class Log:
    """Writes events as the actors do, into a Meter."""

    def __init__(self) -> None:
        self.meter = Meter(REGION)

    def __call__(self, t: float, kind: str, src: str = "eu-west-0b", **fields: Any) -> None:
        self.meter(t, f"{REGION}/{src}", kind, fields)

    def server(self, t: float, sid: str, flavor: str, tenant: str = "acme", az: str = "eu-west-0b",
               host: str = "h1") -> None:
        self(t, "ServerCreated", az, server=sid, tenant=tenant, host=host, flavor=flavor, auto_recovery=True)

    def state(self, t: float, sid: str, value: str, tenant: str = "acme", az: str = "eu-west-0b") -> None:
        self(t, "ServerStateChanged", az, server=sid, tenant=tenant, state=value)

    def delete(self, t: float, sid: str, tenant: str = "acme", az: str = "eu-west-0b") -> None:
        self(t, "ServerDeleted", az, server=sid, tenant=tenant)

    def volume(self, t: float, vid: str, size_gb: int, kind: str = "SATA", tenant: str = "acme",
               az: str = "eu-west-0b") -> None:
        self(t, "VolumeCreated", f"volumes-{az}", volume=vid, tenant=tenant, size_gb=size_gb, type=kind,
             bootable=False)

    def usage(self, end_s: float) -> list[Usage]:
        return self.meter.usage(0, end_s)


def hours(usage: Iterable[Usage], kind: str = "ecs", resource: str | None = None) -> dict[tuple[str, str], Fraction]:
    """(resource, spec) -> quantity."""
    out: dict[tuple[str, str], Fraction] = {}
    for u in usage:
        if u.kind == kind and resource in (None, u.resource):
            out[(u.resource, u.spec)] = out.get((u.resource, u.spec), Fraction(0)) + u.quantity
    return out


def lines(inv: Invoice, kind: str) -> dict[str, Any]:
    return {line.resource: line for line in inv.lines if line.kind == kind}


def month_invoice(log: Log, month: Month, ris: Iterable[ReservedInstance] = (), end_s: float | None = None,
                  tenant: str = "acme") -> Invoice:
    m0, m1 = span(month)
    return invoice(tenant, m0, m1, log.usage(float(m1) if end_s is None else end_s), list(ris), PRICES, EPOCH)


# -- ECS-2 ---------------------------------------------------------------------------------
def test_ecs2_without_local_disk_billed_only_while_running() -> None:
    log = Log()
    log.server(0, "s1", "s3.large.2")
    log.state(10 * H, "s1", "shutoff")
    log.state(30 * H, "s1", "active")
    log.delete(50 * H, "s1")
    assert hours(log.usage(100 * H)) == {("s1", "s3.large.2"): 30}
    inv = month_invoice(log, JAN)
    assert lines(inv, "ecs")["s1"].amount == 30 * Fraction(PRICES.ecs_hour["s3.large.2"])


def test_ecs2_with_local_disk_billed_from_creation_to_deletion_running_or_not() -> None:
    log = Log()
    log.server(0, "d1", "d2.xlarge.8")
    log.state(10 * H, "d1", "shutoff")
    log.state(30 * H, "d1", "active")
    log.delete(50 * H, "d1")
    assert hours(log.usage(100 * H)) == {("d1", "d2.xlarge.8"): 50}


def test_ecs2_host_failure_stops_the_bill_of_a_diskless_flavor_not_of_a_local_disk_one() -> None:
    log = Log()
    log.server(0, "s1", "s3.large.2")
    log.server(0, "d1", "d2.xlarge.8")
    log(10 * H, "HostSuspected", host="h1")
    log(10 * H + 60, "HostFenced", host="h1", recovering=["s1"], down={"flavor has a local disk": ["d1"]})
    log(12 * H, "ServerRecovered", server="s1", tenant="acme", from_host="h1", to_host="h2")
    log(20 * H, "HostReturned", host="h1", removed=["s1"], restarted=["d1"])
    assert hours(log.usage(24 * H)) == {("s1", "s3.large.2"): 22, ("d1", "d2.xlarge.8"): 24}


def test_ecs2_resize_bills_each_flavor_for_its_part() -> None:
    log = Log()
    log.server(0, "s1", "s3.large.2")
    log.state(5 * H, "s1", "shutoff")
    log(5 * H + 60, "ServerResized", server="s1", tenant="acme", flavor="s3.xlarge.2")
    log.state(6 * H, "s1", "active")
    assert hours(log.usage(10 * H)) == {("s1", "s3.large.2"): 5, ("s1", "s3.xlarge.2"): 4}
    inv = month_invoice(log, JAN, end_s=10 * H)
    assert [(x.description, x.quantity) for x in inv.lines] == [
        ("ECS s3.large.2 in eu-west-0b, pay-per-use", 5), ("ECS s3.xlarge.2 in eu-west-0b, pay-per-use", 4)]


def test_ecs2_resize_of_a_local_disk_server_to_a_diskless_flavor_changes_the_rule() -> None:
    log = Log()
    log.server(0, "s1", "d2.xlarge.8")
    log.state(2 * H, "s1", "shutoff")
    log(3 * H, "ServerResized", server="s1", tenant="acme", flavor="m3.xlarge.8")
    assert hours(log.usage(10 * H)) == {("s1", "d2.xlarge.8"): 3}  # and nothing while it stays stopped


# -- EVS, backups ----------------------------------------------------------------------------
def test_evs_gb_months_by_type_with_expansion_and_deletion() -> None:
    log = Log()
    log.volume(0, "v1", 100, "SSD")
    log(365 * H, "VolumeExpanded", "volumes-eu-west-0b", volume="v1", tenant="acme", size_gb=200)
    log(730 * H, "VolumeDeleted", "volumes-eu-west-0b", volume="v1", tenant="acme")
    usage = [u for u in log.usage(800 * H) if u.kind == "evs"]
    assert [(u.spec, u.size, u.quantity) for u in usage] == [("SSD", 100, 50), ("SSD", 200, 100)]
    inv = month_invoice(log, JAN, end_s=800 * H)
    assert lines(inv, "evs")["v1"].amount == 150 * Fraction(PRICES.evs_gb_month["SSD"])


def backup(log: Log, t: float, bid: str, volumes: list[str], nbytes: int, full: bool,
           server: str | None = None) -> None:
    log(t, "BackupRequested", "backups", backup=bid, tenant="acme", server=server, volumes=volumes, policy=None)
    log(t, "BackupStarted", "backups", backup=bid, tenant="acme", attempt=1)
    log(t + 60, "BackupCreated", "backups", backup=bid, tenant="acme", taken_at=t, nbytes=nbytes,
        full=[full] * len(volumes))


def stored(log: Log, end_s: float) -> dict[str, tuple[Fraction, Fraction]]:
    """backup id -> (stored from, to)."""
    return {u.resource: (u.start_s, u.end_s) for u in log.usage(end_s) if u.kind == "backup"}


def test_vbs1_backup_storage_from_creation_to_deletion() -> None:
    log = Log()
    backup(log, 0, "b1", ["v1"], 10 * GIB, True)
    log(100 * H, "BackupDeleted", "backups", backup="b1", tenant="acme", data_kept_for=0)
    usage = [u for u in log.usage(200 * H) if u.kind == "backup"]
    assert [(u.resource, u.spec, u.size, u.start_s, u.end_s) for u in usage] == [("b1", "VBS", 10, 60, 100 * H)]


def test_vbs1_a_deleted_base_stays_billed_until_its_last_dependent_goes() -> None:
    """b1 (full) <- b2 (diff): deleting b1 hides it (its data serves b2); deleting b2
    erases both. Data a failed erase leaves behind (BackupDataLeft) is not billed."""
    log = Log()
    backup(log, 0, "b1", ["v1"], 10 * GIB, True)
    backup(log, 10 * H, "b2", ["v1"], 2 * GIB, False)
    log(20 * H, "BackupDeleted", "backups", backup="b1", tenant="acme", data_kept_for=1)
    log(30 * H, "BackupDeleted", "backups", backup="b2", tenant="acme", data_kept_for=0)
    log(30 * H, "BackupDataLeft", "backups", backup="b1", tenant="acme", nbytes=10 * GIB, error="unreachable")
    assert stored(log, 50 * H) == {"b1": (60, 30 * H), "b2": (10 * H + 60, 30 * H)}


def test_vbs1_a_deleted_head_is_erased_when_its_in_flight_dependent_fails() -> None:
    log = Log()
    backup(log, 0, "b1", ["v1"], 10 * GIB, True)
    log(10 * H, "BackupRequested", "backups", backup="b2", tenant="acme", server=None, volumes=["v1"], policy=None)
    log(10 * H, "BackupStarted", "backups", backup="b2", tenant="acme", attempt=1)
    log(11 * H, "BackupDeleted", "backups", backup="b1", tenant="acme", data_kept_for=1)
    log(12 * H, "BackupJobFailed", "backups", backup="b2", tenant="acme", job="create", attempt=1, final=False,
        error="unreachable")
    assert stored(log, 50 * H) == {"b1": (60, 12 * H)}


def test_csbs1_a_server_backup_is_billed_as_one_resource() -> None:
    log = Log()
    backup(log, 0, "b1", ["v1", "v2"], 3 * GIB, True, server="s1")
    usage = [u for u in log.usage(730 * H + 60) if u.kind == "backup"]
    assert [(u.spec, u.quantity) for u in usage] == [("CSBS", 3)]


# -- sDRS (SDRS-3) -------------------------------------------------------------------------------
def sdrs_world(log: Log) -> None:
    """Server s1 (volume v1, 100 GB) in 0b, protected at 1 h by group g1 (recovery AZ 0a);
    failover at 10 h (its copy runs in 0a on the adopted replica v1-r); unprotected at 20 h;
    the copy in 0a runs on until 30 h."""
    log.server(0, "s1", "s3.large.2")
    log.volume(0, "v1", 100)
    log(0, "GroupCreated", "sdrs", group="g1", name="app", tenant="acme", vpc="vpc", production_az="eu-west-0b",
        recovery_az="eu-west-0a")
    log(1 * H, "ServerProtected", "sdrs", group="g1", server="s1", volumes=["v1"])
    log(10 * H, "ServerParked", server="s1", tenant="acme", state="active")
    log.state(10 * H, "s1", "shutoff")
    log(10 * H, "VolumeAdopted", "volumes-eu-west-0a", volume="v1-r", tenant="acme", server="s1")
    log.server(10 * H, "s1", "s3.large.2", az="eu-west-0a", host="a1")
    log(10 * H, "DrServerStarted", "sdrs", group="g1", server="s1", az="eu-west-0a", attempts=1,
        waited_for_capacity=False)
    log(20 * H, "ServerUnprotected", "sdrs", group="g1", server="s1")
    log.state(30 * H, "s1", "shutoff", az="eu-west-0a")


def test_sdrs3_protected_vm_hours_and_protection_storage_on_the_recovery_az() -> None:
    log = Log()
    sdrs_world(log)
    usage = log.usage(40 * H)
    assert hours(usage, "sdrs-vm") == {("s1", "app"): 19}
    storage = [u for u in usage if u.kind == "sdrs-storage"]
    assert [(u.resource, u.az, u.size, u.start_s, u.end_s) for u in storage] == [("v1-r", "eu-west-0a", 100, H,
                                                                                   20 * H)]


def test_sdrs3_compute_on_the_recovery_az_is_marked_while_protected_and_is_plain_ecs_after() -> None:
    log = Log()
    sdrs_world(log)
    usage = log.usage(40 * H)
    assert hours(usage, "ecs") == {("s1", "s3.large.2"): 10 + 10}  # 0b 0-10 h, then 0a 20-30 h unprotected
    assert hours(usage, "ecs-sdrs") == {("s1", "s3.large.2"): 10}  # 0a 10-20 h
    inv = month_invoice(log, JAN, end_s=40 * H)
    line = lines(inv, "ecs-sdrs")["s1"]
    assert (line.service, line.description) == ("SDRS", "sDRS recovery: ECS s3.large.2 in eu-west-0a, pay-per-use")
    assert line.amount == 10 * Fraction(PRICES.ecs_hour["s3.large.2"])


def test_sdrs3_the_adopted_replica_is_protection_storage_while_protected_then_evs() -> None:
    log = Log()
    sdrs_world(log)
    evs = {(u.resource, u.start_s, u.end_s) for u in log.usage(40 * H) if u.kind == "evs"}
    assert evs == {("v1", 0, 40 * H), ("v1-r", 20 * H, 40 * H)}


def test_sdrs3_drill_copies_are_sdrs_recovery_compute() -> None:
    log = Log()
    sdrs_world(log)
    log.server(2 * H, "s1-drill", "s3.large.2", az="eu-west-0a", host="a2")
    log(2 * H, "DrillCreated", "sdrs", group="g1", az="eu-west-0a", vpc="drill", servers=1, failed=[])
    log.delete(5 * H, "s1-drill", az="eu-west-0a")
    assert hours(log.usage(40 * H), "ecs-sdrs", "s1-drill") == {("s1-drill", "s3.large.2"): 3}


def test_events_of_other_regions_are_not_metered() -> None:
    meter = Meter(REGION)
    meter(0, "eu-west-1/eu-west-1a", "ServerCreated", {"server": "x", "tenant": "acme", "host": "h", "flavor":
                                                        "s3.large.2", "auto_recovery": False})
    assert meter.usage(0, H) == []


# -- ECS-7 reserved instances ----------------------------------------------------------------
JAN_15 = at(2026, 1, 15)


def ri(rid: str, flavor: str = "s3.large.2", subscribed: dt.datetime = JAN_15, term: int = 1,
       upfront: bool = False, flexible: bool = False) -> ReservedInstance:
    return ReservedInstance.subscribe(rid, "acme", REGION, flavor, term, subscribed, PRICES, upfront=upfront,
                                      flexible=flexible)


def two_servers(log: Log) -> None:
    """a runs always; b runs the first half of each month of January to March."""
    log.server(0, "a", "s3.large.2")
    log.server(0, "b", "s3.large.2", host="h2")
    for month in (JAN, FEB, MAR):
        m0, m1 = span(month)
        if m0 > 0:
            log.state(float(m0), "b", "active")
        log.state(float((m0 + m1) / 2), "b", "shutoff")


def test_ecs7_the_subscription_month_is_pay_per_use_the_next_covers_the_highest_consumption() -> None:
    log = Log()
    two_servers(log)
    r = ri("ri-1")
    jan = month_invoice(log, JAN, [r])
    assert all(x.amount > 0 for x in jan.lines if x.kind == "ecs")  # January: pay-per-use
    assert [x.kind for x in jan.lines if x.resource == "ri-1"] == []  # no upfront, no fee before coverage
    feb = month_invoice(log, FEB, [r])
    ecs = lines(feb, "ecs")
    assert ecs["a"].amount == 0 and "covered by reserved instance ri-1" in ecs["a"].description
    assert ecs["b"].amount == ecs["b"].quantity * Fraction(PRICES.ecs_hour["s3.large.2"]) > 0
    fee = lines(feb, "ri-monthly")["ri-1"]
    assert (fee.quantity, fee.amount) == (1, Fraction(PRICES.ri_price("s3.large.2", 1).monthly))


def test_ecs7_coverage_follows_the_highest_consumption_of_the_month() -> None:
    """In March, b runs all month and a only 10 hours: b is covered."""
    log = Log()
    log.server(0, "a", "s3.large.2")
    log.server(0, "b", "s3.large.2")
    m0, _ = span(MAR)
    log.state(float(m0) + 10 * H, "a", "shutoff")
    mar = month_invoice(log, MAR, [ri("ri-1")])
    assert lines(mar, "ecs")["b"].amount == 0 and lines(mar, "ecs")["a"].amount > 0


def test_ecs7_two_reserved_instances_cover_the_top_two_servers() -> None:
    log = Log()
    for sid, stop_h in (("a", 600), ("b", 400), ("c", 200)):
        log.server(float(span(FEB)[0]), sid, "s3.large.2")
        log.state(float(span(FEB)[0]) + stop_h * H, sid, "shutoff")
    feb = month_invoice(log, FEB, [ri("ri-1"), ri("ri-2", subscribed=at(2026, 1, 20))])
    ecs = lines(feb, "ecs")
    assert (ecs["a"].amount, ecs["b"].amount) == (0, 0) and ecs["c"].amount > 0
    assert {ecs["a"].description[-4:], ecs["b"].description[-4:]} == {"ri-1", "ri-2"}
    assert len(lines(feb, "ri-monthly")) == 2


def test_ecs7_pay_per_use_resumes_at_the_end_of_the_term() -> None:
    """Subscribed 10 Dec 2025 for 1 year: covers January to December 2026, not January 2027."""
    log = Log()
    log.server(0, "a", "s3.large.2")
    r = ri("ri-1", subscribed=at(2025, 12, 10))
    dec, jan27 = Month(2026, 12), Month(2027, 1)
    assert lines(month_invoice(log, dec, [r]), "ecs")["a"].amount == 0
    after = month_invoice(log, jan27, [r])
    assert lines(after, "ecs")["a"].amount > 0 and lines(after, "ri-monthly") == {}
    assert r.term_end == at(2027, 1, 1)


def test_ecs7_upfront_fee_in_the_subscription_month_and_the_lower_monthly_fee_after() -> None:
    log = Log()
    log.server(0, "a", "s3.large.2")
    r = ri("ri-1", upfront=True, term=3)
    fees = PRICES.ri_price("s3.large.2", 3)
    jan, feb = month_invoice(log, JAN, [r]), month_invoice(log, FEB, [r])
    assert lines(jan, "ri-upfront")["ri-1"].amount == Fraction(fees.upfront_fee)
    assert lines(jan, "ri-monthly") == {} and lines(feb, "ri-upfront") == {}
    assert lines(feb, "ri-monthly")["ri-1"].amount == Fraction(fees.upfront_monthly)


def test_ecs7_cancellation_costs_12_percent_of_the_initial_term_and_stops_coverage_next_month() -> None:
    log = Log()
    log.server(0, "a", "s3.large.2")
    r = ri("ri-1", subscribed=at(2025, 12, 10), term=2).cancel(at(2026, 1, 20))
    due = 24 * Fraction(PRICES.ri_price("s3.large.2", 2).monthly)
    jan, feb = month_invoice(log, JAN, [r]), month_invoice(log, FEB, [r])
    assert lines(jan, "ri-cancellation")["ri-1"].amount == due * Fraction(12, 100)
    assert lines(jan, "ecs")["a"].amount == 0 and "ri-1" in lines(jan, "ri-monthly")  # January still covered
    assert lines(feb, "ecs")["a"].amount > 0 and lines(feb, "ri-monthly") == {}


def test_ecs7_cancelling_twice_or_after_the_term_is_refused() -> None:
    r = ri("ri-1", subscribed=at(2025, 12, 10)).cancel(at(2026, 2, 1))
    with pytest.raises(Conflict, match="already cancelled"):
        r.cancel(at(2026, 3, 1))
    with pytest.raises(InvalidRequest, match="its term ended on 2027-01-01"):
        ri("ri-2", subscribed=at(2025, 12, 10)).cancel(at(2027, 1, 2))


def test_ecs7_a_flexible_reserved_instance_changes_flavor_from_the_next_month() -> None:
    log = Log()
    log.server(0, "small", "s3.large.2")
    log.server(0, "big", "s3.xlarge.2")
    r = ri("ri-1", subscribed=at(2025, 12, 10), flexible=True).modify(at(2026, 1, 20), "s3.xlarge.2", PRICES)
    jan, feb = month_invoice(log, JAN, [r]), month_invoice(log, FEB, [r])
    assert lines(jan, "ecs")["small"].amount == 0 and lines(jan, "ecs")["big"].amount > 0
    assert lines(feb, "ecs")["big"].amount == 0 and lines(feb, "ecs")["small"].amount > 0
    assert lines(feb, "ri-monthly")["ri-1"].amount == Fraction(PRICES.ri_price("s3.xlarge.2", 1).monthly)


def test_ecs7_a_standard_reserved_instance_cannot_be_modified() -> None:
    with pytest.raises(Conflict, match="standard reserved instance"):
        ri("ri-1").modify(at(2026, 2, 3), "s3.xlarge.2", PRICES)


def test_ecs7_reserved_instance_for_an_unknown_flavor_region_or_term_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"reserved instance 'ri-1': flavor: 'x9.huge' is not a flavor"):
        ri("ri-1", flavor="x9.huge")
    with pytest.raises(ConfigError, match=r"reserved instance 'ri-1': region: 'mars-1' is not a region"):
        ReservedInstance.subscribe("ri-1", "acme", "mars-1", "s3.large.2", 1, at(2026, 1, 1), PRICES)
    with pytest.raises(ConfigError, match=r"region: 'eu-west-1', but the price catalogue .* is for eu-west-0"):
        ReservedInstance.subscribe("ri-1", "acme", "eu-west-1", "s3.large.2", 1, at(2026, 1, 1), PRICES)
    with pytest.raises(ConfigError, match=r"term_years: 4 is not a reserved-instance term .*valid: 1, 2, 3, 5"):
        ri("ri-1", term=4)
    with pytest.raises(InvalidRequest, match="no time zone"):
        ri("ri-1", subscribed=dt.datetime(2026, 1, 1))


# -- price catalogues ----------------------------------------------------------------------------
def catalogue_text(region: str = REGION) -> str:
    return (Path(__file__).parents[2] / "actors" / "prices" / f"{REGION}.toml").read_text().replace(
        f'region = "{REGION}"', f'region = "{region}"')


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.toml"
    path.write_text(text)
    return path


def test_every_bundled_catalogue_prices_every_flavor_in_euros() -> None:
    assert bundled_regions() == ["eu-west-0", "eu-west-1", "eu-westxvp-28"]
    for region in bundled_regions():
        prices = load_prices(None, region)
        assert prices.currency == "EUR" and len(prices.ecs_hour) == 27
        assert all(len(terms) == 4 for terms in prices.reserved.values())


def test_catalogue_missing_flavor_names_file_line_and_flavor(tmp_path: Path) -> None:
    text = catalogue_text().replace('"s3.large.2"    = 0.0640\n', "")
    path = write(tmp_path, text)
    line = text.splitlines().index("[ecs]") + 1
    with pytest.raises(ConfigError) as err:
        load_prices(path, REGION)
    assert str(err.value).startswith(f"price catalogue {path}:{line}: [ecs] has no price for flavor s3.large.2")


def test_catalogue_negative_price_names_the_field_and_its_line(tmp_path: Path) -> None:
    text = catalogue_text().replace("SSD = 0.1400", "SSD = -0.14")
    line = text.splitlines().index("SSD = -0.14") + 1
    with pytest.raises(ConfigError, match=rf"x.toml:{line}: evs.SSD = -0.14 is negative"):
        load_prices(write(tmp_path, text), REGION)


def test_catalogue_unknown_currency_key_and_term_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"x.toml:15: currency = 'GBP' is not the currency of region eu-west-0 "
                                          r"\(valid: EUR\)"):
        load_prices(write(tmp_path, catalogue_text().replace('"EUR"', '"GBP"')), REGION)
    with pytest.raises(ConfigError, match=r"\[eip\] has an unknown key 'hours'"):
        load_prices(write(tmp_path, catalogue_text().replace("hour = ", "hours = ")), REGION)
    with pytest.raises(ConfigError, match=r"""\[reserved."s3.large.2"\] term '4' is not a reserved-instance term"""):
        load_prices(write(tmp_path, catalogue_text() + '\n[reserved."s3.large.2".4]\nmonthly = 1\n'), REGION)
    with pytest.raises(ConfigError, match=r"region = 'eu-west-0', but this is the catalogue of 'eu-west-1'"):
        load_prices(write(tmp_path, catalogue_text()), "eu-west-1")
    with pytest.raises(ConfigError, match="no bundled price catalogue for region 'mars-1'"):
        load_prices(None, "mars-1")


def test_catalogue_partner_region_in_usd_loads(tmp_path: Path) -> None:
    text = catalogue_text("partner-1").replace('"EUR"', '"USD"')
    prices = load_prices(write(tmp_path, text), "partner-1")
    assert (prices.region, prices.currency, prices.ecs_hour["s3.large.2"]) == ("partner-1", "USD", Decimal("0.0640"))


def test_catalogue_prices_are_exact_decimals() -> None:
    assert PRICES.evs_gb_month["SATA"] == Decimal("0.0450")
    assert isinstance(PRICES.ri_price("s3.large.2", 5).upfront_fee, Decimal)


# -- invoices ------------------------------------------------------------------------------------
def test_an_empty_usage_gives_an_empty_invoice() -> None:
    inv = invoice("acme", *span(JAN), [], [], PRICES, EPOCH)
    assert inv.lines == () and inv.total == 0 and inv.subtotals() == {}
    assert json.loads(to_json(inv))["total"] == "0.00"


def test_invoice_json_and_csv_keep_amounts_as_decimal_strings() -> None:
    log = Log()
    log.server(0, "s1", "s3.large.2")
    log.volume(0, "v1", 40)
    inv = month_invoice(log, JAN, [ri("ri-1", upfront=True)])
    doc = json.loads(to_json(inv))
    assert doc["currency"] == "EUR" and doc["period"] == {"start": "2026-01-01T00:00:00+01:00",
                                                          "end": "2026-02-01T00:00:00+01:00"}
    ecs = next(x for x in doc["lines"] if x["kind"] == "ecs")
    assert ecs["amount"] == "47.62" and ecs["quantity"] == "744" and ecs["unit_price"] == "0.064"  # 744 h x 0.064
    assert doc["subtotals"] == {"ECS": str(Decimal("47.62") + PRICES.ri_price("s3.large.2", 1).upfront_fee),
                                "EVS": "1.83"}  # 40 GB x 744/730 x 0.045
    rows = list(csv.DictReader(io.StringIO(to_csv(inv))))
    assert [r["kind"] for r in rows] == ["ecs", "ri-upfront", "evs"]
    assert all(r["amount"].count(".") == 1 and len(r["amount"].split(".")[1]) == 2 for r in rows)


def test_sla1_credits_are_a_negative_percentage_of_the_service_charges() -> None:
    log = Log()
    log.server(0, "s1", "s3.large.2")
    log.volume(0, "v1", 40)
    inv = month_invoice(log, JAN, [ri("ri-1", upfront=True)])
    credited = with_credits(inv, {"ECS": 10, "EVS": 0, "VPC": 25.0})
    credit = lines(credited, "credit")
    assert list(credit) == ["ECS"]  # nothing for EVS at 0%, nor for VPC (no charges)
    assert credit["ECS"].amount == -lines(inv, "ecs")["s1"].amount / 10  # the upfront fee is not credited
    assert credited.total == inv.total + credit["ECS"].amount
    with pytest.raises(InvalidRequest, match="must be a percentage from 0 to 100"):
        with_credits(inv, {"ECS": 120})
    with pytest.raises(InvalidRequest, match="not a service"):
        with_credits(inv, {"ECSS": 10})


def test_monthly_invoices_for_a_run_cover_each_tenant_and_month() -> None:
    log = Log()
    log.server(0, "s1", "s3.large.2")
    log.server(0, "s2", "s3.large.2", tenant="globex")
    end = 40 * D
    out = monthly_invoices(["acme", "globex"], log.usage(end), [], PRICES, EPOCH, end)
    assert [(t, m) for t, m, _ in out] == [("acme", "2026-01"), ("globex", "2026-01"), ("acme", "2026-02"),
                                           ("globex", "2026-02")]
    assert out[2][2].start_s == seconds(at(2026, 2, 1), EPOCH) and out[2][2].end_s == end
    assert lines(out[2][2], "ecs")["s1"].quantity == 40 * 24 - 31 * 24


def test_invoice_of_an_empty_period_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="is empty"):
        invoice("acme", 10, 10, [], [], PRICES, EPOCH)


def test_ecs7_a_daily_invoice_pays_its_share_of_the_monthly_fee_and_the_month_s_coverage() -> None:
    """1 February: 1/28 of the fee; the server covered is the month's top one, even if
    another used more that day."""
    log = Log()
    f0, f1 = span(FEB)
    log.server(0, "a", "s3.large.2")
    log.state(float(f0), "a", "shutoff")  # a stops for 1 February ...
    log.state(float(f0) + D, "a", "active")  # ... and runs the rest of the month
    log.server(float(f0), "b", "s3.large.2", host="h2")
    log.delete(float(f0) + D, "b")  # b runs 1 February only
    r = ri("ri-1")
    day = invoice("acme", f0, f0 + 86400, log.usage(float(f1)), [r], PRICES, EPOCH)
    assert lines(day, "ri-monthly")["ri-1"].amount == Fraction(PRICES.ri_price("s3.large.2", 1).monthly) / 28
    assert lines(day, "ecs")["b"].amount == 24 * Fraction(PRICES.ecs_hour["s3.large.2"])

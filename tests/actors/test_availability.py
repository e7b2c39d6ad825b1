"""SLA-1: downtime intervals, monthly availability against targets, credit tiers."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.availability import CreditTier, SlaTerms, all_down, merge, monthly, months, subtract
from runtime.errors import ConfigError

PARIS = ZoneInfo("Europe/Paris")
JAN = dt.datetime(2026, 1, 1, tzinfo=PARIS)
DAY = 86400.0


def test_sla1_months_follow_the_paris_calendar_and_only_the_observed_part_counts() -> None:
    cal = months(JAN, 40 * DAY)
    assert [m for m, _ in cal] == ["2026-01", "2026-02"]
    assert cal[0][1] == (0.0, 31 * DAY)
    assert cal[1][1] == (31 * DAY, 40 * DAY)
    # a run starting mid-month at 08:00 Paris time measures from its start
    mid = dt.datetime(2026, 3, 15, 8, tzinfo=PARIS)
    cal = months(mid, 30 * DAY)
    assert [m for m, _ in cal] == ["2026-03", "2026-04"]
    # March 29 is 23 hours long in Paris (DST): the month ends at local midnight
    end_of_march = (dt.datetime(2026, 4, 1, tzinfo=PARIS).astimezone(dt.UTC) - mid.astimezone(dt.UTC)).total_seconds()
    assert cal[0][1] == (0.0, end_of_march)
    assert end_of_march == (17 * 24 - 8 - 1) * 3600


def test_sla1_availability_is_one_minus_downtime_over_the_period() -> None:
    terms = SlaTerms()
    [jan] = monthly([(0.0, 3600.0), (1800.0, 5400.0)], "ECS", "data", "eu-west-0a", months(JAN, 31 * DAY), terms)
    assert jan.downtime_s == 5400.0  # overlapping intervals count once
    assert jan.availability_pct == pytest.approx(100 * (1 - 5400 / (31 * DAY)))
    assert jan.target_pct == 99.95 and not jan.met


def test_sla1_scheduled_maintenance_is_not_downtime() -> None:
    [jan] = monthly([(0.0, 7200.0)], "ECS", "api", "eu-west-0", months(JAN, 31 * DAY), SlaTerms(),
                    excluded=[(3600.0, 10000.0)])
    assert jan.downtime_s == 3600.0


def test_sla1_targets_per_service_and_credit_tiers() -> None:
    terms = SlaTerms(99.9, {"OBS": 99.5}, (CreditTier(99.9, 10), CreditTier(99.0, 25)))
    assert terms.target("ECS") == 99.9 and terms.target("OBS") == 99.5
    assert terms.credit(99.95) == 0 and terms.credit(99.9) == 0
    assert terms.credit(99.89) == 10 and terms.credit(98.0) == 25


@pytest.mark.parametrize("kwargs, where", [
    ({"target_pct": 120.0}, "sla.target_pct"),
    ({"targets": {"NOPE": 99.0}}, "sla.targets.NOPE"),
    ({"credits": (CreditTier(99.0, 150.0),)}, "sla.credits[0]"),
])
def test_sla1_bad_terms_name_the_field(kwargs: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError) as err:
        SlaTerms(**kwargs)  # type: ignore[arg-type]
    assert err.value.where == where


def test_sla1_a_scope_is_down_only_while_all_its_present_members_are() -> None:
    present = {"a": [(0.0, 100.0)], "b": [(0.0, 100.0)]}
    assert all_down({"a": [(0.0, 10.0)], "b": [(5.0, 20.0)]}, present) == [(5.0, 10.0)]
    # b is stopped by its owner from 50: a alone down from 60 is everyone down
    present = {"a": [(0.0, 100.0)], "b": [(0.0, 50.0)]}
    assert all_down({"a": [(60.0, 70.0)]}, present) == [(60.0, 70.0)]
    # a member's unavailability outside its presence does not count
    assert all_down({"a": [(0.0, 10.0)]}, {"a": [(0.0, 5.0)], "b": [(5.0, 100.0)]}) == [(0.0, 5.0)]
    assert all_down({}, {}) == []


spans = st.lists(st.tuples(st.floats(0, 31 * DAY), st.floats(0, 3 * DAY)).map(lambda t: (t[0], t[0] + t[1])),
                 max_size=8)


@given(spans)
def test_sla1_availability_is_100_exactly_when_no_downtime_interval_exists(down: list[tuple[float, float]]) -> None:
    """The property the issue asks for, on every month of the period."""
    cal = months(JAN, 40 * DAY)
    figures = monthly(down, "EVS", "data", "eu-west-0b", cal, SlaTerms())
    clipped = [(max(s, 0.0), min(e, 40 * DAY)) for s, e in merge(down)]
    for (name, (m0, m1)), fig in zip(cal, figures, strict=True):
        inside = [(s, e) for s, e in clipped if e > m0 and s < m1 and min(e, m1) > max(s, m0)]
        assert (fig.availability_pct == 100.0) == (not inside), (name, inside)
        assert 0.0 <= fig.availability_pct <= 100.0


@given(spans, spans)
def test_merge_and_subtract_are_set_operations(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> None:
    def length(xs: list[tuple[float, float]]) -> float:
        return sum(e - s for s, e in xs)
    ma, mb = merge(a), merge(b)
    rest = subtract(ma, mb)
    assert length(rest) <= length(ma) + 1e-6
    for s, e in rest:
        assert all(e <= h0 or s >= h1 for h0, h1 in mb)

"""The catalogue of service requests (TEN-3, TEN-4; seed §7.7.6.1): processing times in
working days, and an account deletion refused while the tenant still has data or services."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from actors.requests import PROCESSING_DAYS, RequestKind, check_deletion, due, request_kind
from runtime.errors import ConfigError, InvalidRequest

PARIS = ZoneInfo("Europe/Paris")


def paris(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=PARIS)


def test_ten4_account_creation_takes_2_working_days_across_a_weekend() -> None:
    """Friday 27 November 2026 15:00: 4 h on Friday, 10 h on Monday, 6 h on Tuesday."""
    assert due(RequestKind.ACCOUNT_CREATION, paris(2026, 11, 27, 15)) == paris(2026, 12, 1, 15)


def test_ten4_account_deletion_takes_10_working_days_across_armistice_day() -> None:
    """Monday 9 November 2026 09:00: ten full working days, Wednesday 11 skipped: Monday 23, 19:00."""
    assert due(RequestKind.ACCOUNT_DELETION, paris(2026, 11, 9, 9)) == paris(2026, 11, 23, 19)


def test_ten3_quota_change_takes_5_working_days_across_the_spring_dst_change() -> None:
    """Thursday 26 March 2026 10:00 CET: 9+10+10+10+10 h to Wednesday evening, 1 h on Thursday 2 April (CEST)."""
    done = due(RequestKind.QUOTA_CHANGE, paris(2026, 3, 26, 10))
    assert done == paris(2026, 4, 2, 10)
    assert done.astimezone(dt.UTC) == dt.datetime(2026, 4, 2, 8, tzinfo=dt.UTC)


def test_ten4_the_catalogue() -> None:
    assert PROCESSING_DAYS == {RequestKind.ACCOUNT_CREATION: 2, RequestKind.ACCOUNT_DELETION: 10,
                               RequestKind.QUOTA_CHANGE: 5}
    assert request_kind("quota change") is RequestKind.QUOTA_CHANGE
    with pytest.raises(ConfigError, match=r"requests\[2\].kind: 'password reset' is not in the catalogue .*"
                                          r"\(valid: account creation, account deletion, quota change\)"):
        request_kind("password reset", "requests[2].kind")
    with pytest.raises(InvalidRequest, match="timezone-aware"):
        due(RequestKind.QUOTA_CHANGE, dt.datetime(2026, 3, 26, 10))


def test_ten4_deletion_refused_naming_what_is_left() -> None:
    with pytest.raises(InvalidRequest, match="tenant acme refused: it still has 1 buckets, 2 servers; delete") as info:
        check_deletion("acme", {"servers": 2, "volumes": 0, "buckets": 1})
    assert "volumes" not in str(info.value)
    with pytest.raises(InvalidRequest, match="cannot be negative: volumes"):
        check_deletion("acme", {"volumes": -1})


def test_ten4_deletion_allowed_once_everything_is_gone() -> None:
    check_deletion("acme", {"servers": 0, "volumes": 0, "buckets": 0, "backups": 0})
    check_deletion("acme", {})

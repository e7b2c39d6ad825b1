"""The catalogue of service requests (SPEC TEN-3, TEN-4; seed §7.7.6.1).

Only three requests are in the catalogue, each with a processing time in working days
counted from the ticket's recording (SLA-3 working time; a working day is 10 working
hours, `actors.support.WORKING_DAY`):

    account creation   2 working days
    account deletion  10 working days, only once the tenant has deleted all its data and
                       stopped all its services on the date of the request
    quota change       5 working days

Anything else is a non-standard request, with no commitment: `request_kind` refuses it.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping

from actors.support import WORKING_DAY, WORKING_HOURS
from actors.working_hours import WorkingHours
from runtime.errors import ConfigError, InvalidRequest


class RequestKind(enum.StrEnum):
    ACCOUNT_CREATION = "account creation"
    ACCOUNT_DELETION = "account deletion"
    QUOTA_CHANGE = "quota change"


PROCESSING_DAYS: Mapping[RequestKind, int] = {
    RequestKind.ACCOUNT_CREATION: 2,
    RequestKind.ACCOUNT_DELETION: 10,
    RequestKind.QUOTA_CHANGE: 5,
}
"""Processing time of each catalogue request, in working days (TEN-3, TEN-4)."""


def request_kind(name: str, field: str = "request") -> RequestKind:
    """The catalogue request called `name`; ConfigError naming `field` and the catalogue otherwise."""
    try:
        return RequestKind(name)
    except ValueError:
        raise ConfigError(field, f"{name!r} is not in the catalogue of service requests (a non-standard request "
                                 f"has no processing commitment)", ", ".join(k.value for k in RequestKind)) from None


def due(kind: RequestKind, submitted: dt.datetime, hours: WorkingHours = WORKING_HOURS) -> dt.datetime:
    """When a request recorded at `submitted` (aware) must have been processed (TEN-3, TEN-4)."""
    if submitted.tzinfo is None:
        raise InvalidRequest(f"submitted must be a timezone-aware datetime, got {submitted.isoformat()}")
    return hours.add(submitted, PROCESSING_DAYS[kind] * WORKING_DAY)


def check_deletion(tenant: str, remaining: Mapping[str, int]) -> None:
    """TEN-4: an account deletion is refused while the tenant still has data or running services.

    `remaining` counts what the tenant still holds by kind (e.g. {"servers": 2, "volumes": 0,
    "buckets": 1}); the refusal names every kind with a count above zero.
    """
    negative = sorted(k for k, n in remaining.items() if n < 0)
    if negative:
        raise InvalidRequest(f"remaining counts cannot be negative: {', '.join(negative)}")
    left = sorted((k, n) for k, n in remaining.items() if n > 0)
    if left:
        listed = ", ".join(f"{n} {k}" for k, n in left)
        raise InvalidRequest(f"account deletion of tenant {tenant} refused: it still has {listed}; "
                             f"delete its data and stop its services first, then request the deletion again")

"""Reserved instances (SPEC ECS-7, seed §6.1.3-6.1.5) and the billing calendar.

Times: virtual seconds since the run's start for usage, aware datetimes for reserved
instances (subscribed, cancelled, modified), as a contract states them; `epoch` (an
aware datetime) is the instant of virtual time 0 and links the two. Calendar months are
the provider's: Europe/Paris (`[working_hours]` timezone of actors/defaults.toml).
Conversions are exact (`Fraction` seconds).

What an RI decides (the invoice applies it):
- it is subscribed for a flavor, a region, a term of 1, 2, 3 or 5 years, with or without
  an upfront fee; the upfront fee is charged at subscription;
- its term is the 12 x years calendar months after the subscription month: each of
  them it covers a server (see `actors.billing.invoice`) and costs its monthly fee,
  used or not; the subscription month is pay-per-use; after the term, pay-per-use again;
- cancelling costs 12% of the amount due for the initial term (upfront fee + monthly
  fee x months of the term, at the initial flavor's prices), charged at cancellation;
  the month of the cancellation is still covered and charged, later ones are not;
- a flexible RI may change flavor during its term, from the month after the change; a
  standard one may not (`Conflict`).
"""

from __future__ import annotations

import datetime as dt
import functools
from fractions import Fraction
from zoneinfo import ZoneInfo

import attrs

from actors.billing.catalogue import TERMS, PriceCatalogue
from actors.topology import DEFAULTS, REGIONS
from runtime.errors import ConfigError, Conflict, InvalidRequest

ZONE = ZoneInfo(DEFAULTS["working_hours"]["timezone"])
CANCELLATION_FEE = Fraction(12, 100)
"""§6.1.5: 12% of the amount due for the initial subscription period."""


# -- the calendar ------------------------------------------------------------------------
@attrs.frozen(order=True)
class Month:
    """A calendar month of the provider's time zone."""

    year: int
    month: int

    @classmethod
    def of(cls, instant: dt.datetime) -> Month:
        local = aware(instant, "instant").astimezone(ZONE)
        return cls(local.year, local.month)

    def plus(self, n: int) -> Month:
        index = self.year * 12 + self.month - 1 + n
        return Month(index // 12, index % 12 + 1)

    def start(self) -> dt.datetime:
        return dt.datetime(self.year, self.month, 1, tzinfo=ZONE)

    def span(self, epoch: dt.datetime) -> tuple[Fraction, Fraction]:
        """[start, end) in virtual seconds."""
        return _span(self, epoch)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


@functools.lru_cache(maxsize=1024)
def _span(month: Month, epoch: dt.datetime) -> tuple[Fraction, Fraction]:
    return seconds(month.start(), epoch), seconds(month.plus(1).start(), epoch)


def aware(instant: dt.datetime, name: str) -> dt.datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise InvalidRequest(f"{name} = {instant.isoformat()} has no time zone; give an aware datetime "
                             "(e.g. 2026-01-01T00:00:00+01:00)")
    return instant


def seconds(instant: dt.datetime, epoch: dt.datetime) -> Fraction:
    """Virtual seconds of `instant`, exactly."""
    d = aware(instant, "instant") - aware(epoch, "epoch")
    return Fraction(d.days * 86400 + d.seconds) + Fraction(d.microseconds, 1_000_000)


def instant(t: Fraction | float, epoch: dt.datetime) -> dt.datetime:
    """The local (provider zone) datetime of virtual time `t`, to the microsecond, for display."""
    micros = round(Fraction(t) * 1_000_000)
    return (epoch + dt.timedelta(microseconds=micros)).astimezone(ZONE)


def month_at(t: Fraction | float, epoch: dt.datetime) -> Month:
    """The month holding virtual time `t` (decided exactly, even a microsecond from a boundary)."""
    month = Month.of(instant(t, epoch))
    lo, hi = month.span(epoch)
    if Fraction(t) < lo:
        return month.plus(-1)
    if Fraction(t) >= hi:
        return month.plus(1)
    return month


def months_between(start_s: Fraction | float, end_s: Fraction | float, epoch: dt.datetime) -> list[Month]:
    """The months overlapping [start_s, end_s), in order."""
    if Fraction(end_s) <= Fraction(start_s):
        return []
    out = [month_at(start_s, epoch)]
    while out[-1].span(epoch)[1] < Fraction(end_s):
        out.append(out[-1].plus(1))
    return out


# -- reserved instances ------------------------------------------------------------------
@attrs.frozen
class Modification:
    """A flexible RI takes `flavor` from the month after `at`."""

    at: dt.datetime
    flavor: str


@attrs.frozen
class ReservedInstance:
    id: str
    tenant: str
    region: str
    flavor: str  # at subscription
    term_years: int
    upfront: bool
    flexible: bool
    subscribed: dt.datetime
    cancelled: dt.datetime | None = None
    modifications: tuple[Modification, ...] = ()

    @classmethod
    def subscribe(cls, id: str, tenant: str, region: str, flavor: str, term_years: int, subscribed: dt.datetime,
                  prices: PriceCatalogue, upfront: bool = False, flexible: bool = False) -> ReservedInstance:
        """A new RI, checked against the region's price catalogue; `ConfigError` (an
        `InvalidRequest`) naming the field otherwise."""
        where = f"reserved instance {id!r}"
        for field, value in (("id", id), ("tenant", tenant)):
            if not value:
                raise ConfigError(f"{where}: {field}", "must not be empty")
        if region != prices.region:
            if region not in REGIONS:
                raise ConfigError(f"{where}: region", f"{region!r} is not a region",
                                  ", ".join(sorted({*REGIONS, prices.region})))
            raise ConfigError(f"{where}: region", f"{region!r}, but the price catalogue {prices.source} is for "
                              f"{prices.region}; pass the catalogue of {region}", prices.region)
        if isinstance(term_years, bool) or term_years not in TERMS:
            raise ConfigError(f"{where}: term_years", f"{term_years!r} is not a reserved-instance term (ECS-7)",
                              ", ".join(map(str, TERMS)))
        if flavor not in prices.ecs_hour:
            raise ConfigError(f"{where}: flavor", f"{flavor!r} is not a flavor of {prices.source}",
                              ", ".join(sorted(prices.reserved)))
        try:
            prices.ri_price(flavor, term_years)
        except InvalidRequest as exc:
            raise ConfigError(f"{where}: flavor", str(exc)) from None
        return cls(id, tenant, region, flavor, term_years, upfront, flexible, aware(subscribed, "subscribed"))

    # -- the term --------------------------------------------------------------------------
    @property
    def first_month(self) -> Month:
        """The first month covered: the one after the subscription month."""
        return Month.of(self.subscribed).plus(1)

    @property
    def term_end(self) -> dt.datetime:
        """When the initial term ends (the first day after its last month)."""
        return self.first_month.plus(12 * self.term_years).start()

    @property
    def last_month(self) -> Month:
        """The last month covered and charged: of the term, or of the cancellation."""
        last = self.first_month.plus(12 * self.term_years - 1)
        return last if self.cancelled is None else min(last, Month.of(self.cancelled))

    def covers(self, month: Month) -> bool:
        return self.first_month <= month <= self.last_month

    def flavor_in(self, month: Month) -> str:
        flavor = self.flavor
        for m in self.modifications:
            if Month.of(m.at) < month:
                flavor = m.flavor
        return flavor

    # -- fees -------------------------------------------------------------------------------
    def upfront_fee(self, prices: PriceCatalogue) -> Fraction:
        return Fraction(prices.ri_price(self.flavor, self.term_years).fees(self.upfront)[0])

    def monthly_fee(self, month: Month, prices: PriceCatalogue) -> Fraction:
        return Fraction(prices.ri_price(self.flavor_in(month), self.term_years).fees(self.upfront)[1])

    def amount_due(self, prices: PriceCatalogue) -> Fraction:
        """For the initial term: upfront fee + monthly fee x its months, at the initial flavor's prices."""
        fee, monthly = prices.ri_price(self.flavor, self.term_years).fees(self.upfront)
        return Fraction(fee) + Fraction(monthly) * 12 * self.term_years

    def cancellation_fee(self, prices: PriceCatalogue) -> Fraction:
        return CANCELLATION_FEE * self.amount_due(prices)

    # -- changes ---------------------------------------------------------------------------
    def _within_term(self, at: dt.datetime, action: str) -> dt.datetime:
        at = aware(at, "at")
        if at < self.subscribed:
            raise InvalidRequest(f"cannot {action} reserved instance {self.id} at {at.isoformat()}: before its "
                                 f"subscription ({self.subscribed.isoformat()})")
        if at >= self.term_end:
            raise InvalidRequest(f"cannot {action} reserved instance {self.id} at {at.isoformat()}: its term ended "
                                 f"on {self.term_end.isoformat()}")
        if self.cancelled is not None:
            raise Conflict(f"reserved instance {self.id} was cancelled on {self.cancelled.isoformat()}; "
                           f"it cannot {action}")
        return at

    def cancel(self, at: dt.datetime) -> ReservedInstance:
        """Cancel before the end of the term (seed §6.1.5)."""
        if self.cancelled is not None:
            raise Conflict(f"reserved instance {self.id} is already cancelled (on {self.cancelled.isoformat()})")
        at = self._within_term(at, "cancel")
        if self.modifications and at < self.modifications[-1].at:
            raise InvalidRequest(f"cannot cancel reserved instance {self.id} at {at.isoformat()}: it was "
                                 f"modified later ({self.modifications[-1].at.isoformat()})")
        return attrs.evolve(self, cancelled=at)

    def modify(self, at: dt.datetime, flavor: str, prices: PriceCatalogue) -> ReservedInstance:
        """A flexible RI takes `flavor` from the month after `at` (seed §6.1.4)."""
        if not self.flexible:
            raise Conflict(f"reserved instance {self.id} is a standard reserved instance: its flavor cannot "
                           "change (ECS-7: only flexible reserved instances may be modified)")
        at = self._within_term(at, "modify")
        if self.modifications and at < self.modifications[-1].at:
            raise InvalidRequest(f"modifications of reserved instance {self.id} must come in time order: "
                                 f"{at.isoformat()} is before {self.modifications[-1].at.isoformat()}")
        current = self.modifications[-1].flavor if self.modifications else self.flavor
        if flavor == current:
            raise InvalidRequest(f"flavor = {flavor!r}: reserved instance {self.id} already has this flavor")
        if flavor not in prices.ecs_hour:
            raise InvalidRequest(f"flavor = {flavor!r} is not a flavor of {prices.source}")
        prices.ri_price(flavor, self.term_years)
        return attrs.evolve(self, modifications=(*self.modifications, Modification(at, flavor)))

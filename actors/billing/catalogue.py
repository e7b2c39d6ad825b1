"""Price catalogues (SPEC ECS-2, ECS-7, EVS-1, OBS-1, VBS-1, EIP-1, SDRS-3): one TOML file per region.

The bundled files, `actors/prices/<region>.toml`, hold illustrative prices (the seed
gives none); a deployment or a scenario passes its own file. `load_prices` validates
everything before anything is used: a catalogue in hand prices every flavor of the
flavor catalogue, holds no negative price, and its reserved-instance terms are ECS-7's.

Prices are `decimal.Decimal`, parsed from the TOML text itself (never through a float),
so 0.1 is exactly 0.1. Storage is priced per GB-month, a month being 730 hours.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import attrs

from actors.flavors import FLAVORS, Flavor
from actors.topology import REGIONS
from runtime.errors import ConfigError, InvalidRequest

HOURS_PER_MONTH = 730
"""A GB-month is a GB held for 730 hours."""

CURRENCIES = ("EUR", "USD")
TERMS = (1, 2, 3, 5)
"""Reserved-instance terms in years (ECS-7)."""

VOLUME_TYPES = ("SATA", "SSD")
OBS_CLASSES = ("Standard", "Warm", "Cold")

_TOP = ("region", "currency", "ecs", "evs", "backup", "obs", "eip", "sdrs", "reserved")
_TABLES: Mapping[str, tuple[str, ...]] = {
    "evs": VOLUME_TYPES,
    "backup": ("gb_month",),
    "obs": ("gb_month", "requests_10k"),
    "obs.gb_month": OBS_CLASSES,
    "eip": ("hour",),
    "sdrs": ("protected_vm_hour", "replicated_gb", "protection_gb_month"),
}
_RI_FIELDS = ("monthly", "upfront_fee", "upfront_monthly")


@attrs.frozen
class RiPrice:
    """Fees of a reserved instance of one flavor and term: without upfront, `monthly` every
    month; with upfront, `upfront_fee` once and `upfront_monthly` every month."""

    monthly: Decimal
    upfront_fee: Decimal
    upfront_monthly: Decimal

    def fees(self, upfront: bool) -> tuple[Decimal, Decimal]:
        """(one-time fee, monthly fee) of the model chosen."""
        return (self.upfront_fee, self.upfront_monthly) if upfront else (Decimal(0), self.monthly)


@attrs.frozen
class PriceCatalogue:
    source: str
    region: str
    currency: str
    ecs_hour: Mapping[str, Decimal]  # pay-per-use, per flavor
    evs_gb_month: Mapping[str, Decimal]  # per volume type
    backup_gb_month: Decimal
    obs_gb_month: Mapping[str, Decimal]  # per storage class (no meter yet: no bucket in the control plane)
    obs_requests_10k: Decimal
    eip_hour: Decimal  # no meter yet: no EIP in the control plane
    sdrs_protected_vm_hour: Decimal
    sdrs_replicated_gb: Decimal  # no meter yet: no event reports replicated bytes
    sdrs_protection_gb_month: Decimal
    reserved: Mapping[str, Mapping[int, RiPrice]]  # flavor -> term years -> fees

    def ri_price(self, flavor: str, term_years: int) -> RiPrice:
        """ECS-7 fees; `InvalidRequest` naming the field when the catalogue has none."""
        terms = self.reserved.get(flavor)
        if terms is None:
            raise InvalidRequest(f"flavor = {flavor!r}: price catalogue {self.source} has no reserved-instance "
                                 f"price for it (valid: {', '.join(sorted(self.reserved)) or 'none'})")
        if term_years not in terms:
            raise InvalidRequest(f"term_years = {term_years!r}: price catalogue {self.source} has no "
                                 f"{term_years}-year reserved instance of {flavor} "
                                 f"(valid: {', '.join(map(str, sorted(terms)))})")
        return terms[term_years]


def bundled_regions() -> list[str]:
    """The regions with a bundled catalogue."""
    folder = resources.files("actors").joinpath("prices")
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def load_prices(path: str | Path | None, region: str, flavors: Mapping[str, Flavor] | None = None) -> PriceCatalogue:
    """The catalogue of `region` from `path` (None: the bundled one); every flavor of
    `flavors` (default: the bundled flavor catalogue) must be priced. Any bad entry
    raises `ConfigError` naming the file, the line and the field."""
    if path is None:
        if region not in bundled_regions():
            raise ConfigError("price catalogue", f"no bundled price catalogue for region {region!r}; pass the file "
                              "of a partner region", ", ".join(bundled_regions()))
        source = f"actors/prices/{region}.toml"
        text = resources.files("actors").joinpath("prices", f"{region}.toml").read_text(encoding="utf-8")
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"price catalogue {source}", f"cannot be read: {exc.strerror}") from exc
    return parse_prices(text, source, region, FLAVORS if flavors is None else flavors)


def parse_prices(text: str, source: str, region: str, flavors: Mapping[str, Flavor]) -> PriceCatalogue:
    return _Parser(text, source, flavors).catalogue(region)


class _Parser:
    def __init__(self, text: str, source: str, flavors: Mapping[str, Flavor]) -> None:
        self.source = source
        self.lines = text.splitlines()
        self.flavors = flavors
        try:
            self.doc = tomllib.loads(text, parse_float=Decimal)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"price catalogue {source}", f"not valid TOML: {exc}") from exc

    # -- where things are -------------------------------------------------------------------
    def line_of(self, table: str, key: str | None = None) -> int:
        """The line of `[table]` (or of `key` within it): best effort, 1 when not found."""
        start, end = 0, len(self.lines)
        if table:
            parts = [re.escape(p) for p in _split(table)]
            header = re.compile(r"\s*\[\s*" + r"\s*\.\s*".join(rf"\"?{p}\"?" for p in parts) + r"\s*\]")
            hits = [i for i, line in enumerate(self.lines) if header.match(line)]
            if hits:
                start = hits[0]
                nxt = [i for i in range(start + 1, len(self.lines)) if re.match(r"\s*\[", self.lines[i])]
                end = nxt[0] if nxt else len(self.lines)
        if key is not None:
            pattern = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=")
            hits = [i for i in range(start, end) if pattern.match(self.lines[i])]
            if hits:
                return hits[0] + 1
        return start + 1

    def error(self, table: str, key: str | None, problem: str, valid: str = "") -> ConfigError:
        return ConfigError(f"price catalogue {self.source}:{self.line_of(table, key)}", problem, valid)

    # -- values -----------------------------------------------------------------------------
    def table(self, value: Any, table: str, allowed: tuple[str, ...] | None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(table, None, f"[{table}] must be a table, got {value!r}")
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    raise self.error(table, key, f"[{table}] has an unknown key {key!r}", ", ".join(allowed))
            missing = [k for k in allowed if k not in value]
            if missing:
                raise self.error(table, None, f"[{table}] has no {missing[0]}", ", ".join(allowed))
        return value

    def price(self, value: Any, table: str, key: str, field: str | None = None) -> Decimal:
        name = f"{table}.{_quote(key)}" + (f".{field}" if field else "")
        if isinstance(value, bool) or not isinstance(value, int | Decimal):
            raise self.error(table, key, f"{name} = {value!r} is not a price", "a number >= 0, e.g. 0.0416")
        price = Decimal(value)
        if not price.is_finite():
            raise self.error(table, key, f"{name} = {value} is not a finite price", "a number >= 0")
        if price < 0:
            raise self.error(table, key, f"{name} = {value} is negative: a price cannot be negative",
                             "a number >= 0")
        return price

    def prices(self, table: str, allowed: tuple[str, ...] | None) -> dict[str, Decimal]:
        node: Any = self.doc
        for part in _split(table):
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                raise self.error("", None, f"[{table}] is missing", "see actors/prices/eu-west-0.toml")
        values = self.table(node, table, allowed)
        return {k: self.price(v, table, k) for k, v in values.items() if not isinstance(v, dict)}

    # -- the catalogue ------------------------------------------------------------------------
    def catalogue(self, region: str) -> PriceCatalogue:
        doc = self.doc
        for key in doc:
            if key not in _TOP:
                raise self.error("", key, f"unknown top-level key {key!r}", ", ".join(_TOP))
        for key in ("region", "currency"):
            if not isinstance(doc.get(key), str):
                raise self.error("", key, f"{key} must be a string, got {doc.get(key)!r}")
        if doc["region"] != region:
            raise self.error("", "region", f"region = {doc['region']!r}, but this is the catalogue of {region!r}",
                             region)
        currency = doc["currency"]
        builtin = REGIONS.get(region)
        if currency not in CURRENCIES or (builtin is not None and builtin.currency in CURRENCIES
                                          and currency != builtin.currency):
            valid = builtin.currency if builtin is not None else ", ".join(CURRENCIES)
            raise self.error("", "currency", f"currency = {currency!r} is not the currency of region {region}",
                             valid)
        ecs = self.prices("ecs", None)
        for name in ecs:
            if name not in self.flavors:
                raise self.error("ecs", name, f"[ecs] prices an unknown flavor {name!r}",
                                 "the flavors of actors/flavors.toml")
        missing = [name for name in self.flavors if name not in ecs]
        if missing:
            raise self.error("ecs", None, f"[ecs] has no price for flavor {missing[0]}",
                             f"every flavor of the catalogue ({len(missing)} missing)")
        evs = self.prices("evs", VOLUME_TYPES)
        obs = self.prices("obs", _TABLES["obs"])
        eip = self.prices("eip", _TABLES["eip"])
        sdrs = self.prices("sdrs", _TABLES["sdrs"])
        return PriceCatalogue(
            source=self.source, region=region, currency=currency, ecs_hour=MappingProxyType(ecs),
            evs_gb_month=MappingProxyType(evs), backup_gb_month=self.prices("backup", _TABLES["backup"])["gb_month"],
            obs_gb_month=MappingProxyType(self.prices("obs.gb_month", OBS_CLASSES)),
            obs_requests_10k=obs["requests_10k"], eip_hour=eip["hour"],
            sdrs_protected_vm_hour=sdrs["protected_vm_hour"], sdrs_replicated_gb=sdrs["replicated_gb"],
            sdrs_protection_gb_month=sdrs["protection_gb_month"], reserved=self.reserved())

    def reserved(self) -> Mapping[str, Mapping[int, RiPrice]]:
        table = self.table(self.doc.get("reserved", {}), "reserved", None)
        out: dict[str, Mapping[int, RiPrice]] = {}
        for flavor, terms in table.items():
            where = f"reserved.{_quote(flavor)}"
            if flavor not in self.flavors:
                raise self.error("reserved", None, f"[{where}] is for an unknown flavor {flavor!r}",
                                 "the flavors of actors/flavors.toml")
            by_term: dict[int, RiPrice] = {}
            for term, fees in self.table(terms, where, None).items():
                if term not in {str(t) for t in TERMS}:
                    raise self.error(where, term, f"[{where}] term {term!r} is not a reserved-instance term (ECS-7)",
                                     "1, 2, 3 or 5 (years)")
                if not isinstance(fees, dict) or set(fees) != set(_RI_FIELDS):
                    got = sorted(fees) if isinstance(fees, dict) else repr(fees)
                    raise self.error(where, term, f"{where}.{term} must give exactly {', '.join(_RI_FIELDS)}, "
                                     f"got {got}", "{ monthly = 25.6, upfront_fee = 146.0, upfront_monthly = 12.2 }")
                by_term[int(term)] = RiPrice(*(self.price(fees[f], where, term, f) for f in _RI_FIELDS))
            out[flavor] = MappingProxyType(by_term)
        return MappingProxyType(out)


def _split(table: str) -> list[str]:
    """`reserved."s3.large.2"` -> ["reserved", "s3.large.2"]."""
    return [a or b for a, b in re.findall(r'"([^"]+)"|([^.]+)', table)]


def _quote(key: str) -> str:
    return f'"{key}"' if "." in key else key

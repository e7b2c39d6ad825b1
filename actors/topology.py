"""Regions, AZs and hosts (SPEC GEO-1, GEO-2), grouped into racks and power domains.

The catalogue of regions is `regions.toml`; a topology for one region is generated
from a host shape and counts, and every part of it can be overridden by a config.
Failure domains nest: host < rack < power domain < AZ < region.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from importlib import resources
from typing import Any

import attrs

from runtime.errors import ConfigError


@attrs.frozen
class RegionInfo:
    name: str
    city: str
    currency: str
    azs: tuple[str, ...]
    only_for: str | None = None
    inter_az_latency_ms: float = 1.0
    intra_az_latency_ms: float = 0.1
    sdrs_recovery_azs: tuple[str, ...] = ()  # SDRS-1; empty: any AZ of the region

    def recovery_azs(self, production_az: str) -> tuple[str, ...]:
        """The AZs an sDRS group whose production AZ is `production_az` may recover to."""
        return tuple(az for az in self.sdrs_recovery_azs or self.azs if az != production_az)


@attrs.frozen
class HostSpec:
    name: str
    az: str
    rack: str
    power_domain: str
    vcpus: int
    ram_mb: int
    dedicated_to: str | None = None


@attrs.frozen
class Topology:
    region: RegionInfo
    hosts: tuple[HostSpec, ...]
    _domains: dict[str, list[HostSpec]] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        domains: dict[str, list[HostSpec]] = {}
        for h in self.hosts:
            for key in dict.fromkeys((h.name, h.az, h.rack, h.power_domain)):
                domains.setdefault(key, []).append(h)
        object.__setattr__(self, "_domains", domains)

    def hosts_in(self, az: str) -> list[HostSpec]:
        return list(self._domains.get(az, []))

    def domain_members(self, target: str) -> list[HostSpec]:
        """Hosts of a failure domain: an AZ, `AZ/rack-N`, `AZ/pd-N` or a host name."""
        found = self._domains.get(target)
        if not found:
            raise ConfigError(f"target {target!r}", "names no host, rack, power domain or AZ",
                              f"e.g. {self.hosts[0].az}, {self.hosts[0].rack}, "
                              f"{self.hosts[0].power_domain} or {self.hosts[0].name}")
        return found


def _load_defaults() -> dict[str, Any]:
    return tomllib.loads(resources.files("actors").joinpath("defaults.toml").read_text())


DEFAULTS: Mapping[str, Any] = _load_defaults()


def load_regions(extra: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, RegionInfo]:
    table = tomllib.loads(resources.files("actors").joinpath("regions.toml").read_text())
    table.update(extra or {})
    regions = {}
    for name, r in table.items():
        try:
            regions[name] = RegionInfo(name=name, city=str(r["city"]), currency=str(r.get("currency", "USD")),
                                       azs=tuple(r["azs"]), only_for=r.get("only_for"),
                                       inter_az_latency_ms=float(r.get("inter_az_latency_ms", 1.0)),
                                       intra_az_latency_ms=float(r.get("intra_az_latency_ms", 0.1)),
                                       sdrs_recovery_azs=tuple(r.get("sdrs_recovery_azs", ())))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"region {name}", f"bad or missing field {exc}", "city, azs = [...], currency") from exc
        stray = sorted(set(regions[name].sdrs_recovery_azs) - set(regions[name].azs))
        if stray:
            raise ConfigError(f"region {name} sdrs_recovery_azs", f"{', '.join(stray)} is not an AZ of the region",
                              ", ".join(regions[name].azs))
    return regions


REGIONS = load_regions()


def build_topology(region: RegionInfo, hosts_per_az: Mapping[str, int], vcpus: int, ram_mb: int,
                   rack_size: int, racks_per_power_domain: int,
                   dedicated: Mapping[str, list[tuple[str, int]]] | None = None) -> Topology:
    """Hosts named `AZ-hNNNNN`, racks `AZ/rack-N`, power domains `AZ/pd-N` (N from 1).

    `dedicated` maps an AZ to (tenant, count) pairs: the first hosts of that AZ are
    dedicated to those tenants (ECS-5).
    """
    hosts = []
    for az, count in hosts_per_az.items():
        owners: list[str | None] = []
        for tenant, n in (dedicated or {}).get(az, []):
            owners += [tenant] * n
        if len(owners) > count:
            raise ConfigError(f"topology.dedicated ({az})", f"{len(owners)} dedicated hosts but only {count} hosts",
                              f"at most {count}")
        width = max(5, len(str(count)))
        for i in range(count):
            rack = i // rack_size + 1
            hosts.append(HostSpec(
                name=f"{az}-h{i + 1:0{width}d}", az=az, rack=f"{az}/rack-{rack}",
                power_domain=f"{az}/pd-{(rack - 1) // racks_per_power_domain + 1}",
                vcpus=vcpus, ram_mb=ram_mb, dedicated_to=owners[i] if i < len(owners) else None))
    return Topology(region=region, hosts=tuple(hosts))

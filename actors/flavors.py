"""ECS flavors (ECS-1, ECS-3): what a server is sized by, and the catalogue of them.

The catalogue lives in one place, the bundled `flavors.toml`; `load_catalogue` parses
and validates it, so a `Flavor` in hand is always well formed: at least 1 vCPU and
1 MB of RAM, and a local disk between 0 (none) and the ECS-3 limit.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from importlib import resources
from typing import Any

import attrs

from runtime.errors import ConfigError, InvalidRequest

LOCAL_DISK_GB_MAX = 24 * 1800
"""ECS-3: at most 24 local volumes of 1.8 TB each."""

_FIELDS = ("vcpus", "ram_mb", "local_disk_gb")


@attrs.frozen
class Flavor:
    """The size of an ECS: vCPUs, RAM and the local (ephemeral) disk, 0 when absent."""

    name: str
    vcpus: int
    ram_mb: int
    local_disk_gb: int = 0

    @property
    def has_local_disk(self) -> bool:
        """True when the flavor includes a local disk: billed until deletion (ECS-2), no auto-recovery."""
        return self.local_disk_gb > 0


def load_catalogue(text: str | None = None, source: str = "flavors.toml") -> dict[str, Flavor]:
    """Parse a TOML catalogue (the bundled one when `text` is None) into flavors by name.

    The file holds one table, `[flavor]`, mapping each name to `{ vcpus, ram_mb,
    local_disk_gb }` (the last optional). Any bad entry raises `ConfigError` naming
    `source`, the flavor and the field.
    """
    if text is None:
        text = resources.files("actors").joinpath("flavors.toml").read_text(encoding="utf-8")
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, f"not valid TOML: {exc}") from exc
    unknown = sorted(set(document) - {"flavor"})
    if unknown:
        raise ConfigError(f"{source}: {unknown[0]}", "unknown top-level key", "a single [flavor] table")
    entries = document.get("flavor")
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(source, "no flavors defined", '[flavor] with entries like "s3.large.2" = { vcpus = 2, ... }')
    return {name: _parse_flavor(source, name, entry) for name, entry in entries.items()}


def _parse_flavor(source: str, name: str, entry: Any) -> Flavor:
    where = f'{source}: flavor."{name}"'
    if not name or name != name.strip() or any(c.isspace() for c in name):
        raise ConfigError(where, "flavor name must be non-empty without spaces")
    if not isinstance(entry, dict):
        raise ConfigError(where, f"expected a table, got {entry!r}", "{ vcpus = 2, ram_mb = 4096, local_disk_gb = 0 }")
    unknown = sorted(set(entry) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", "unknown field", ", ".join(_FIELDS))
    return Flavor(
        name=name,
        vcpus=_integer(where, entry, "vcpus", low=1, high=None),
        ram_mb=_integer(where, entry, "ram_mb", low=1, high=None),
        local_disk_gb=_integer(where, entry, "local_disk_gb", low=0, high=LOCAL_DISK_GB_MAX, default=0),
    )


def _integer(
    where: str, entry: Mapping[str, Any], field: str, low: int, high: int | None, default: int | None = None
) -> int:
    valid = f"an integer from {low}" + (f" to {high}" if high is not None else " up")
    if field not in entry:
        if default is None:
            raise ConfigError(f"{where}.{field}", "missing required field", valid)
        return default
    value = entry[field]
    # TOML booleans are Python ints: refuse them explicitly.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}.{field}", f"expected an integer, got {value!r}", valid)
    if value < low or (high is not None and value > high):
        raise ConfigError(f"{where}.{field}", f"{value} is out of range", valid)
    return value


FLAVORS: dict[str, Flavor] = load_catalogue()
"""The bundled catalogue."""


def get_flavor(name: str, catalogue: dict[str, Flavor] | None = None) -> Flavor:
    """The flavor called `name`; `InvalidRequest` listing close or a few valid names otherwise."""
    flavors = FLAVORS if catalogue is None else catalogue
    try:
        return flavors[name]
    except KeyError:
        pass
    close = difflib.get_close_matches(name, list(flavors), n=5, cutoff=0.6)
    suggestions = close or sorted(flavors)[:5]
    hint = "did you mean" if close else "valid flavors include"
    raise InvalidRequest(
        f"unknown flavor {name!r}; {hint}: {', '.join(suggestions)} ({len(flavors)} flavors in the catalogue)"
    )

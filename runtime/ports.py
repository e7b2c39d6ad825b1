"""Ports: the narrow interfaces between actors and the world they control.

Each port has a production adapter (`runtime/backends/`) and a SimPy model (`sim/`),
and one contract suite (`tests/contract/`) runs on both. Ports speak the project's
own types and raise only `runtime.errors` exceptions (vendor errors are chained).

Refusals every implementation shares (the contract suite checks them):
- `define` of an existing server id: `Conflict`.
- any call naming an undefined server: `NotFound`.
- `start` of a running server, `stop` of a stopped one, `resize` of a running one:
  `InvalidTransition`.
- any call while the host cannot be reached: `HostUnreachable`.
"""

from __future__ import annotations

import enum
import re
from typing import Protocol, runtime_checkable

import attrs

from runtime.errors import BackendError, InvalidRequest

SERVER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # what can name a libvirt domain


def check_domain_request(server_id: str, vcpus: int, ram_mb: int) -> None:
    """The refusals every Hypervisor makes before any I/O (the contract suite checks them)."""
    if not SERVER_ID.fullmatch(server_id):
        raise InvalidRequest(
            f"server id {server_id!r} cannot name a domain; use 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if vcpus < 1 or ram_mb < 1:
        raise InvalidRequest(
            f"domain {server_id} needs at least 1 vCPU and 1 MiB of RAM (got vcpus={vcpus}, ram_mb={ram_mb})"
        )


class HostUnreachable(BackendError):
    """The host (or its management network) does not answer."""

    def __init__(self, host: str, detail: str = "") -> None:
        self.host = host
        super().__init__(f"host {host} unreachable" + (f": {detail}" if detail else ""))


@attrs.frozen
class HostCapacity:
    vcpus: int
    ram_mb: int


@attrs.frozen
class DomainSpec:
    """What a hypervisor needs to run one server."""

    server_id: str
    vcpus: int
    ram_mb: int


@attrs.frozen
class DomainInfo:
    server_id: str
    vcpus: int
    ram_mb: int
    running: bool


class PowerState(enum.Enum):
    ON = "on"
    OFF = "off"


@runtime_checkable
class Hypervisor(Protocol):
    """One hypervisor host (a libvirt connection in production)."""

    @property
    def host(self) -> str: ...

    async def capacity(self) -> HostCapacity: ...

    async def define(self, spec: DomainSpec) -> None: ...

    async def start(self, server_id: str) -> None: ...

    async def stop(self, server_id: str) -> None:
        """Power the server off (hard stop: the control plane decides when)."""

    async def undefine(self, server_id: str) -> None:
        """Stop the server if it runs, then forget it."""

    async def resize(self, server_id: str, vcpus: int, ram_mb: int) -> None: ...

    async def list(self) -> list[DomainInfo]: ...

    async def wait_unreachable(self) -> None:
        """Return once the host stops answering its keepalive probes."""

    async def wait_reachable(self) -> None:
        """Return once the host answers again (immediately if it does now)."""


@runtime_checkable
class Power(Protocol):
    """Out-of-band power control of one host (IPMI/Redfish/PDU in the field): fencing."""

    async def status(self) -> PowerState:
        """Raise `HostUnreachable` if the power controller does not answer."""

    async def power_off(self) -> None: ...

    async def power_on(self) -> None: ...

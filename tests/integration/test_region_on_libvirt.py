"""The same actors as in simulation, on the production driver, against real libvirt
(ECS-1, ECS-5, TEN-3): what a tenant asks for becomes a libvirt domain."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import libvirt
import pytest

from actors.region import CreateTenant, Region
from actors.tenant import ActOnServer, CreateServer, GetQuotas, RemoveServer
from actors.topology import REGIONS, build_topology
from runtime.actor import ActorRef, ActorSystem
from runtime.backends.libvirt import LibvirtHypervisor, LibvirtPower
from runtime.driver import AnyioDriver
from runtime.errors import QuotaExceeded

URIS = [
    pytest.param("test:///default", id="test"),
    pytest.param("qemu:///system", id="qemu", marks=pytest.mark.libvirt_qemu),
]


def in_region(uri: str, body: Callable[[ActorRef], Awaitable[Any]]) -> Any:
    """Run `body(tenant)` against a one-host region whose host is libvirt at `uri`."""
    region_info = REGIONS["eu-west-0"]
    topology = build_topology(region_info, {"eu-west-0a": 1, "eu-west-0b": 0, "eu-west-0c": 0},
                              vcpus=64, ram_mb=64 * 1024, rack_size=1, racks_per_power_domain=1)
    host = topology.hosts[0].name
    driver = AnyioDriver()

    async def main() -> Any:
        hv = LibvirtHypervisor(uri, host)
        # The power port of a lab host that is itself a libvirt guest; never used here
        # (nothing fails), but the AZ needs one per host.
        power = LibvirtPower("test:///default", "test")
        system = ActorSystem(driver, seed=1)
        try:
            async with system.running():
                region = system.spawn(lambda: Region(topology, {host: (hv, power)}), "eu-west-0")
                tenant = await region.ask(CreateTenant("acme", {"instances": 2}))
                return await body(tenant)
        finally:
            await hv.aclose()
            await power.aclose()

    return driver.run(main)


def domains(uri: str) -> dict[str, bool]:
    """What libvirt itself holds (test:/// state is shared by the connections of a process)."""
    conn = libvirt.open(uri)
    try:
        return {d.name(): bool(d.isActive()) for d in conn.listAllDomains()}
    finally:
        conn.close()


@pytest.mark.parametrize("uri", URIS)
def test_a_tenant_server_is_a_libvirt_domain_ECS_1(uri: str) -> None:
    seen: dict[str, Any] = {}

    async def body(tenant: ActorRef) -> None:
        sid = await tenant.ask(CreateServer("web-1", "s3.medium.2", "eu-west-0a"), timeout=120)
        seen["created"] = sid
        seen["after create"] = domains(uri).get(sid)
        await tenant.ask(ActOnServer(sid, "stop"), timeout=120)
        seen["after stop"] = domains(uri).get(sid)
        await tenant.ask(ActOnServer(sid, "start"), timeout=120)
        await tenant.ask(RemoveServer(sid), timeout=120)
        seen["after delete"] = domains(uri).get(sid)
        seen["quotas"] = await tenant.ask(GetQuotas())

    in_region(uri, body)
    assert seen["quotas"].used["instances"] == 0
    assert seen["after create"] is True
    assert seen["after stop"] is False
    assert seen["after delete"] is None


@pytest.mark.parametrize("uri", URIS)
def test_over_quota_creates_no_domain_TEN_3(uri: str) -> None:
    seen: dict[str, Any] = {}

    async def body(tenant: ActorRef) -> None:
        first = [await tenant.ask(CreateServer(f"s{i}", "s3.medium.2", "eu-west-0a"), timeout=120) for i in range(2)]
        with pytest.raises(QuotaExceeded) as info:
            await tenant.ask(CreateServer("s3", "s3.medium.2", "eu-west-0a"), timeout=120)
        seen["error"] = str(info.value)
        seen["quotas"] = await tenant.ask(GetQuotas())
        seen["ours"] = sorted(d for d in domains(uri) if d in first)
        for sid in first:
            await tenant.ask(RemoveServer(sid), timeout=120)
        seen["ids"] = first

    in_region(uri, body)
    assert "Quota exceeded for instances: requested 1, but already used 2 of 2 instances" in seen["error"]
    assert seen["quotas"].used["instances"] == 2
    assert seen["ours"] == sorted(seen["ids"])

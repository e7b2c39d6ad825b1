"""The Hypervisor contract: every implementation does and refuses the same things.

Runs on each target of conftest.py (sim, test:///default, qemu:///system). The last
tests are about the libvirt adapter only: domains it does not own, and URIs it
cannot open.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from runtime.errors import BackendError, Conflict, InvalidRequest, InvalidTransition, NotFound
from runtime.ports import DomainInfo, DomainSpec, HostUnreachable, Hypervisor

from .conftest import TEST_URI, Bench, Body, Rig

Run = Callable[[Body], None]


async def mine(rig: Rig) -> list[DomainInfo]:
    """What list() says about the servers this test made (qemu:///system is shared)."""
    return [d for d in await rig.hv.list() if d.server_id.startswith(rig.prefix)]


def test_ports_are_hypervisors(run_hypervisor: Run) -> None:
    async def body(rig: Rig) -> None:
        assert isinstance(rig.hv, Hypervisor)
        assert rig.hv.host == "h1"

    run_hypervisor(body)


def test_define_start_stop_undefine_round_trip(run_hypervisor: Run) -> None:
    async def body(rig: Rig) -> None:
        a, b = rig.sid("a"), rig.sid("b")
        assert await mine(rig) == []
        await rig.hv.define(rig.spec("a"))
        await rig.hv.define(rig.spec("b", vcpus=2, ram_mb=96))
        assert await mine(rig) == [DomainInfo(a, 1, 64, False), DomainInfo(b, 2, 96, False)]
        await rig.hv.start(a)
        assert await mine(rig) == [DomainInfo(a, 1, 64, True), DomainInfo(b, 2, 96, False)]
        await rig.hv.stop(a)
        assert await mine(rig) == [DomainInfo(a, 1, 64, False), DomainInfo(b, 2, 96, False)]
        await rig.hv.undefine(a)
        await rig.hv.undefine(b)
        assert await mine(rig) == []

    run_hypervisor(body)


def test_undefine_stops_a_running_server(run_hypervisor: Run) -> None:
    async def body(rig: Rig) -> None:
        await rig.hv.define(rig.spec("a"))
        await rig.hv.start(rig.sid("a"))
        await rig.hv.undefine(rig.sid("a"))
        assert await mine(rig) == []
        with pytest.raises(NotFound):
            await rig.hv.start(rig.sid("a"))

    run_hypervisor(body)


def test_define_of_a_defined_server_is_a_conflict(run_hypervisor: Run) -> None:
    async def body(rig: Rig) -> None:
        await rig.hv.define(rig.spec("a"))
        with pytest.raises(Conflict, match="already defined"):
            await rig.hv.define(rig.spec("a", vcpus=4, ram_mb=128))
        assert await mine(rig) == [DomainInfo(rig.sid("a"), 1, 64, False)]

    run_hypervisor(body)


UNKNOWN_CALLS: dict[str, Callable[[Hypervisor, str], Awaitable[None]]] = {
    "start": lambda hv, sid: hv.start(sid),
    "stop": lambda hv, sid: hv.stop(sid),
    "undefine": lambda hv, sid: hv.undefine(sid),
    "resize": lambda hv, sid: hv.resize(sid, 2, 128),
}


@pytest.mark.parametrize("call", sorted(UNKNOWN_CALLS))
def test_calls_naming_an_unknown_server_are_not_found(run_hypervisor: Run, call: str) -> None:
    async def body(rig: Rig) -> None:
        await rig.hv.define(rig.spec("known"))
        with pytest.raises(NotFound) as info:
            await UNKNOWN_CALLS[call](rig.hv, rig.sid("unknown"))
        assert info.value.kind == "domain"
        assert info.value.ident == f"{rig.sid('unknown')} on h1"
        assert await mine(rig) == [DomainInfo(rig.sid("known"), 1, 64, False)]

    run_hypervisor(body)


def test_start_of_a_running_server_is_refused(run_hypervisor: Run) -> None:
    async def body(rig: Rig) -> None:
        await rig.hv.define(rig.spec("a"))
        await rig.hv.start(rig.sid("a"))
        with pytest.raises(InvalidTransition) as info:
            await rig.hv.start(rig.sid("a"))
        assert (info.value.state, info.value.action, info.value.allowed) == ("running", "start", ("stop", "undefine"))
        assert await mine(rig) == [DomainInfo(rig.sid("a"), 1, 64, True)]

    run_hypervisor(body)


def test_stop_of_a_stopped_server_is_refused(run_hypervisor: Run) -> None:
    async def body(rig: Rig) -> None:
        await rig.hv.define(rig.spec("a"))
        with pytest.raises(InvalidTransition) as info:
            await rig.hv.stop(rig.sid("a"))
        assert (info.value.state, info.value.action) == ("stopped", "stop")
        assert info.value.allowed == ("resize", "start", "undefine")

    run_hypervisor(body)


def test_resize_of_a_running_server_is_refused(run_hypervisor: Run) -> None:
    async def body(rig: Rig) -> None:
        await rig.hv.define(rig.spec("a"))
        await rig.hv.start(rig.sid("a"))
        with pytest.raises(InvalidTransition) as info:
            await rig.hv.resize(rig.sid("a"), 2, 128)
        assert (info.value.state, info.value.action) == ("running", "resize")
        assert await mine(rig) == [DomainInfo(rig.sid("a"), 1, 64, True)]
        await rig.hv.stop(rig.sid("a"))
        assert await mine(rig) == [DomainInfo(rig.sid("a"), 1, 64, False)]

    run_hypervisor(body)


def test_resize_of_a_stopped_server_shows_in_list_and_survives_a_start(run_hypervisor: Run) -> None:
    async def body(rig: Rig) -> None:
        a = rig.sid("a")
        await rig.hv.define(rig.spec("a"))
        await rig.hv.resize(a, 2, 128)
        assert await mine(rig) == [DomainInfo(a, 2, 128, False)]
        await rig.hv.start(a)
        assert await mine(rig) == [DomainInfo(a, 2, 128, True)]
        await rig.hv.stop(a)
        await rig.hv.resize(a, 1, 80)
        assert await mine(rig) == [DomainInfo(a, 1, 80, False)]

    run_hypervisor(body)


@pytest.mark.parametrize(("name", "vcpus", "ram_mb"), [("a", 0, 64), ("a", 1, 0), ("", 1, 64), ("a/b", 1, 64)])
def test_define_of_what_a_domain_cannot_be_is_invalid(run_hypervisor: Run, name: str, vcpus: int, ram_mb: int) -> None:
    async def body(rig: Rig) -> None:
        with pytest.raises(InvalidRequest):
            await rig.hv.define(DomainSpec(rig.sid(name) if name else "", vcpus, ram_mb))
        assert await mine(rig) == []

    run_hypervisor(body)


@pytest.mark.parametrize(("vcpus", "ram_mb"), [(0, 64), (1, 0), (-1, -1)])
def test_resize_to_sizes_a_domain_cannot_have_is_invalid(run_hypervisor: Run, vcpus: int, ram_mb: int) -> None:
    async def body(rig: Rig) -> None:
        await rig.hv.define(rig.spec("a"))
        with pytest.raises(InvalidRequest):
            await rig.hv.resize(rig.sid("a"), vcpus, ram_mb)
        assert await mine(rig) == [DomainInfo(rig.sid("a"), 1, 64, False)]

    run_hypervisor(body)


def test_capacity_is_positive(run_hypervisor: Run) -> None:
    async def body(rig: Rig) -> None:
        capacity = await rig.hv.capacity()
        assert capacity.vcpus >= 1
        assert capacity.ram_mb >= 64

    run_hypervisor(body)


def test_reachable_host_returns_from_wait_reachable_at_once(run_hypervisor: Run) -> None:
    async def body(rig: Rig) -> None:
        with rig.driver.fail_after(5):
            await rig.hv.wait_reachable()

    run_hypervisor(body)


def test_answering_host_is_not_reported_unreachable(run_hypervisor: Run) -> None:
    async def body(rig: Rig) -> None:
        await rig.hv.list()
        with rig.driver.move_on_after(rig.quiet_s):
            await rig.hv.wait_unreachable()
            pytest.fail("wait_unreachable returned while the host answers")

    run_hypervisor(body)


def test_host_that_stops_answering_is_noticed_and_comes_back(cuttable_bench: Bench) -> None:
    async def body(rig: Rig) -> None:
        await rig.hv.define(rig.spec("a"))
        await rig.hv.start(rig.sid("a"))
        rig.cut()
        with rig.driver.fail_after(60):
            await rig.hv.wait_unreachable()
        with pytest.raises(HostUnreachable) as info:
            await rig.hv.list()
        assert info.value.host == "h1"
        rig.mend()
        with rig.driver.fail_after(60):
            await rig.hv.wait_reachable()
        # A partition stops nothing: the server still runs.
        assert await mine(rig) == [DomainInfo(rig.sid("a"), 1, 64, True)]

    cuttable_bench.run(body, "hypervisor")


# -- the libvirt adapter only ---------------------------------------------------


def test_libvirt_ignores_domains_it_does_not_own() -> None:
    """test:///default comes with a running domain 'test' that has no server tag."""
    from runtime.backends.libvirt import LibvirtHypervisor
    from runtime.driver import AnyioDriver

    async def main() -> None:
        hv = LibvirtHypervisor(TEST_URI, "h1")
        try:
            assert "test" not in [d.server_id for d in await hv.list()]
            with pytest.raises(NotFound):
                await hv.stop("test")
            with pytest.raises(Conflict):
                await hv.define(DomainSpec("test", 1, 64))
        finally:
            await hv.aclose()

    AnyioDriver().run(main)


def test_libvirt_uri_without_a_driver_gives_a_clear_backend_error() -> None:
    from runtime.backends.libvirt import LibvirtHypervisor
    from runtime.driver import AnyioDriver

    async def main() -> None:
        hv = LibvirtHypervisor("xen:///system", "h1")
        try:
            with pytest.raises(BackendError) as info:
                await hv.capacity()
        finally:
            await hv.aclose()
        message = str(info.value)
        assert "xen:///system" in message
        assert "qemu:///system" in message  # what to use instead
        # Code 5 (no connection driver) when libvirtd runs, 38 (no daemon socket) when not.
        assert info.value.__cause__ is not None
        assert info.value.__cause__.get_error_code() in (5, 38)

    AnyioDriver().run(main)

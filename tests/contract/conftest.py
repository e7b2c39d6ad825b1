"""Targets of the port contract suite: every implementation, under its own driver.

- `sim`: the SimPy models (`SimHypervisor`, `SimPower`) under `SimDriver`, virtual time.
- `test`: libvirt's in-process `test:///default` driver under `AnyioDriver` (asyncio).
- `qemu`: libvirtd's `qemu:///system` with tiny TCG guests (marker `libvirt_qemu`;
  start the daemon with `bash .ci/libvirtd-start.sh`).

A test is an `async def body(rig)`; `bench.run(body)` builds fresh ports, runs the
body under the target's driver and removes what it defined. `rig.cut()` makes the
host (or its power controller) stop answering and `rig.mend()` undoes it: the sim
partitions the model, qemu freezes libvirtd with SIGSTOP (so libvirt keepalive, not
a closed socket, has to notice). The in-process test driver cannot be cut off.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Awaitable, Callable, Iterator

import anyio
import attrs
import pytest

from runtime.driver import AnyioDriver, Driver
from runtime.ports import DomainSpec, HostCapacity, Hypervisor, Power
from sim.driver import SimDriver
from sim.hosts import SimHypervisor, SimPower, World

# The storage suites' targets live in storage_benches.py; importing them here registers their fixtures.
from .storage_benches import run_storage, storage_bench  # noqa: F401

QEMU_URI = "qemu:///system"
TEST_URI = "test:///default"
LIBVIRTD_PID = "/run/libvirtd.pid"
# Tests detect loss within 3 s: a probe a second, closed after 2 misses.
KEEPALIVE = {"keepalive_interval_s": 1, "keepalive_count": 2}


@attrs.define
class Rig:
    """What a test body gets: the port under test and the means to disturb it."""

    driver: Driver
    hv: Hypervisor
    power: Power
    prefix: str  # every server id a test makes starts with it
    cut: Callable[[], None]
    mend: Callable[[], object]
    quiet_s: float  # longer than the target needs to notice a lost host

    def sid(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def spec(self, name: str, vcpus: int = 1, ram_mb: int = 64) -> DomainSpec:
        return DomainSpec(self.sid(name), vcpus, ram_mb)


Body = Callable[[Rig], Awaitable[None]]


def _cannot_cut() -> None:
    raise AssertionError("this target cannot lose its host; check bench.can_cut first")


class SimBench:
    can_cut = True

    def run(self, body: Body, port: str) -> None:
        driver = SimDriver()
        world = World(driver.env)
        model = world.add_host("h1", HostCapacity(vcpus=16, ram_mb=65536))
        if port == "hypervisor":
            cut, mend = model.partition, model.heal
        else:
            def cut() -> None:
                model.bmc_cut = True

            def mend() -> None:
                model.bmc_cut = False
        rig = Rig(driver, SimHypervisor(model, driver), SimPower(model, driver), "", cut, mend,
                  quiet_s=2 * world.timing.keepalive_s)
        driver.run(body, rig)


class _Freezer:
    """Stops libvirtd with SIGSTOP and resumes it; resuming is idempotent."""

    def __init__(self) -> None:
        self.pid: int | None = None

    def cut(self) -> None:
        with open(LIBVIRTD_PID) as f:
            self.pid = int(f.read().strip())
        os.kill(self.pid, signal.SIGSTOP)

    def mend(self) -> bool:
        """Resume libvirtd; say whether it was stopped."""
        if self.pid is None:
            return False
        os.kill(self.pid, signal.SIGCONT)
        self.pid = None
        return True


class LibvirtBench:
    def __init__(self, uri: str, can_cut: bool) -> None:
        self.uri = uri
        self.can_cut = can_cut

    def run(self, body: Body, port: str) -> None:
        AnyioDriver().run(self._main, body, port)

    async def _main(self, body: Body, port: str) -> None:
        from runtime.backends.libvirt import LibvirtHypervisor, LibvirtPower

        freezer = _Freezer()
        prefix = f"fe-ct-{uuid.uuid4().hex[:8]}-"
        hv = LibvirtHypervisor(self.uri, "h1", **KEEPALIVE)
        power = LibvirtPower(self.uri, f"{prefix}host", **KEEPALIVE)  # connects on first use
        # Keepalive needs interval x count to give up on a host; an in-process driver has none.
        quiet_s = KEEPALIVE["keepalive_interval_s"] * (KEEPALIVE["keepalive_count"] + 2) if self.can_cut else 0.5
        rig = Rig(AnyioDriver(), hv, power, prefix, freezer.cut if self.can_cut else _cannot_cut, freezer.mend,
                  quiet_s=float(quiet_s))
        try:
            if port == "power":
                # The "host" is a tiny guest. This connection also keeps test:///default's
                # in-process state alive while the power port opens its own.
                await hv.define(rig.spec("host"))
                await hv.start(rig.sid("host"))
            await body(rig)
        finally:
            was_cut = freezer.mend()
            with anyio.fail_after(120):
                if was_cut:
                    await hv.wait_reachable()
                for dom in await hv.list():
                    if dom.server_id.startswith(prefix):
                        await hv.undefine(dom.server_id)
                await power.aclose()
                await hv.aclose()


Bench = SimBench | LibvirtBench

BENCHES = [
    pytest.param(SimBench(), id="sim"),
    pytest.param(LibvirtBench(TEST_URI, can_cut=False), id="test"),
    pytest.param(LibvirtBench(QEMU_URI, can_cut=True), id="qemu", marks=pytest.mark.libvirt_qemu),
]


@pytest.fixture(params=BENCHES)
def bench(request: pytest.FixtureRequest) -> Iterator[Bench]:
    yield request.param


@pytest.fixture(params=[p for p in BENCHES if p.values[0].can_cut])
def cuttable_bench(request: pytest.FixtureRequest) -> Iterator[Bench]:
    """Only the benches that can cut a host off (not the in-process test:/// driver)."""
    yield request.param


@pytest.fixture
def run_hypervisor(bench: Bench) -> Callable[[Body], None]:
    return lambda body: bench.run(body, "hypervisor")


@pytest.fixture
def run_power(bench: Bench) -> Callable[[Body], None]:
    return lambda body: bench.run(body, "power")

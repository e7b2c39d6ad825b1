"""The Power contract: status, and idempotent power off/on, on every implementation.

On the libvirt targets the "host" is a tiny guest that conftest.py defines and
starts, and `LibvirtPower` controls it as VirtualBMC would.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from runtime.ports import HostUnreachable, Power, PowerState

from .conftest import Bench, Body, Rig

Run = Callable[[Body], None]


def test_ports_are_power_controllers(run_power: Run) -> None:
    async def body(rig: Rig) -> None:
        assert isinstance(rig.power, Power)

    run_power(body)


def test_power_off_and_on_are_idempotent_and_show_in_status(run_power: Run) -> None:
    async def body(rig: Rig) -> None:
        assert await rig.power.status() is PowerState.ON
        await rig.power.power_off()
        assert await rig.power.status() is PowerState.OFF
        await rig.power.power_off()
        assert await rig.power.status() is PowerState.OFF
        await rig.power.power_on()
        assert await rig.power.status() is PowerState.ON
        await rig.power.power_on()
        assert await rig.power.status() is PowerState.ON

    run_power(body)


def test_power_controller_that_stops_answering_is_unreachable(cuttable_bench: Bench) -> None:
    async def body(rig: Rig) -> None:
        assert await rig.power.status() is PowerState.ON
        rig.cut()
        with rig.driver.fail_after(60):
            with pytest.raises(HostUnreachable):
                await rig.power.status()
            with pytest.raises(HostUnreachable):
                await rig.power.power_off()
        rig.mend()
        with rig.driver.fail_after(60):
            assert await rig.power.status() is PowerState.ON

    cuttable_bench.run(body, "power")

"""The storage model's physics: shared bandwidth and replication lag come out of the
model, with exact virtual times (the port contract itself is in tests/contract)."""

from __future__ import annotations

import pytest
import simpy

from runtime.storage import GIB, VolumeKind
from sim.driver import SimDriver
from sim.storage import SharedLink, StorageModel, StorageTiming

AZS = {"eu-west-0": ["eu-west-0a", "eu-west-0b"]}


def test_shared_link_divides_bandwidth_equally_between_transfers() -> None:
    env = simpy.Environment()
    link = SharedLink(env, bandwidth=100.0, name="l")
    done: dict[str, float] = {}
    for name, size, start in (("a", 100.0, 0.0), ("b", 100.0, 0.0), ("c", 50.0, 1.0)):
        def go(name: str = name, size: float = size, start: float = start) -> simpy.events.ProcessGenerator:
            yield env.timeout(start)
            yield link.transfer(size)
            done[name] = env.now
        env.process(go())
    env.run()
    # 0-1 s: a and b at 50 B/s (50 each); then 3 share 100 B/s: c needs 50 at 33.3 B/s -> t=2.5;
    # a and b then need 50 - 50 = 0 more... a and b had 50 left at t=1, got 50 by t=2.5.
    assert done == pytest.approx({"a": 2.5, "b": 2.5, "c": 2.5})


def test_shared_link_pauses_while_down_and_fails_on_demand() -> None:
    env = simpy.Environment()
    link = SharedLink(env, bandwidth=10.0, name="l")
    ends: list[object] = []

    def go() -> simpy.events.ProcessGenerator:
        try:
            yield link.transfer(100.0)
            ends.append(env.now)
        except RuntimeError as exc:
            ends.append(str(exc))

    env.process(go())
    env.run(until=5)
    link.set_up(False)
    env.run(until=25)
    link.set_up(True)
    env.run()
    assert ends == [pytest.approx(30.0)]  # 5 s of work, 20 s paused, 5 s more
    env.process(go())
    env.run(until=31)
    link.fail_all(RuntimeError("AZ down"))
    env.run()
    assert ends[1] == "AZ down"


def _model(**timing: float) -> tuple[SimDriver, StorageModel]:
    driver = SimDriver()
    return driver, StorageModel(driver, AZS, StorageTiming(**timing))  # type: ignore[arg-type]


def test_backup_duration_comes_from_the_backup_bandwidth() -> None:
    driver, model = _model(backup_bps=1e8, rpc_s=0.0, snapshot_s=0.0, create_s=0.0)
    store, objects = model.block_store("eu-west-0a"), model.object_store("eu-west-0")

    async def body() -> list[float]:
        await objects.create_bucket("b")
        ends = []
        for v in ("v1", "v2"):
            await store.create_volume(v, 10, VolumeKind.SATA)
            model.set_workload("eu-west-0a", v, 2 * GIB, 0.0)
            await store.create_snapshot(v, "s")
        t0 = driver.now()
        async with driver.task_group() as tg:
            async def export(v: str) -> None:
                await store.export_diff(v, "s", None, objects, "b", v)
                ends.append(driver.now() - t0)
            tg.start_soon(export, "v1")
            tg.start_soon(export, "v2")
        return ends

    ends = driver.run(body)
    assert ends == pytest.approx([4 * GIB / 1e8] * 2)  # two 2 GiB exports share 100 MB/s


def test_rpo_is_the_link_outage_before_the_source_failed() -> None:
    """A link down for 300 s before the source AZ dies: the replica misses ~300 s of writes."""
    driver, model = _model(rpc_s=0.0, create_s=0.0)
    source, target = model.block_store("eu-west-0a"), model.block_store("eu-west-0b")

    async def body() -> tuple[float, float, float]:
        await source.create_volume("v", 100, VolumeKind.SSD)
        model.set_workload("eu-west-0a", "v", 1 * GIB, 1e6)
        await source.start_replication("v", target, "v-r")
        while (await target.replication_status("v-r")).consistent_as_of is None:
            await driver.sleep(10)
        healthy = driver.now() - (await source.replication_status("v")).consistent_as_of  # type: ignore[operator]
        model.cut_link("eu-west-0a", "eu-west-0b")
        await driver.sleep(300)
        model.fail_az("eu-west-0a")
        failed_at = driver.now()
        await driver.sleep(3600)  # the consistent point does not move while the source is dead
        status = await target.replication_status("v-r")
        assert status.consistent_as_of is not None
        await target.stop_replication("v-r")
        return healthy, failed_at - status.consistent_as_of, status.lag_bytes

    healthy, rpo, lag = driver.run(body)
    assert healthy == pytest.approx(0.001)  # the inter-AZ latency, GEO-2
    assert rpo == pytest.approx(300.001)
    assert lag == pytest.approx(300.001 * 1e6, rel=1e-6)


def test_a_transfer_ending_within_a_clock_step_still_ends() -> None:
    """At t ~ 3600 s the clock's step is ~4.5e-13 s: a transfer ending closer than that must finish."""
    env = simpy.Environment(initial_time=3600.5)
    link = SharedLink(env, bandwidth=2.5e8, name="l")
    done = []

    def go() -> simpy.events.ProcessGenerator:
        yield link.transfer(1 << 20)
        done.append(env.now)

    env.process(go())
    env.run(until=3700)
    assert done == [pytest.approx(3600.5 + (1 << 20) / 2.5e8)]

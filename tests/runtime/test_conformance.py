"""One conformance suite for the drivers (the rules in runtime/driver.py's docstring).

Every test taking `target` runs on SimDriver, AnyioDriver/asyncio and AnyioDriver/trio
(see conftest.py). The `test_sim_*` tests at the end check what only the simulation
driver promises: exact virtual times, FIFO ties, replay, deadlock detection.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.driver import AnyioDriver, Driver
from sim.driver import Cancelled, Deadlock, SimDriver

if TYPE_CHECKING:
    from conftest import Target

pytestmark = pytest.mark.timeout(30)


def only(eg: BaseException) -> list[str]:
    """The leaves of an exception group, as `Type: message` strings (sorted)."""
    if isinstance(eg, BaseExceptionGroup):
        return sorted(leaf for e in eg.exceptions for leaf in only(e))
    return [f"{type(eg).__name__}: {eg}"]


# -- time ------------------------------------------------------------------------


def test_sleep_advances_the_clock(target: Target) -> None:
    d, trace = target.driver, target.trace()

    async def main() -> None:
        trace.start()
        trace("start")
        await d.sleep(target.t(1))
        trace("slept 1")
        await d.sleep(target.t(2))
        trace("slept 2")

    target.run(main)
    assert trace.labels == ["start", "slept 1", "slept 2"]
    trace.assert_times([0, 1, 3])


def test_concurrent_sleepers_wake_in_deadline_order(target: Target) -> None:
    d, trace = target.driver, target.trace()

    async def sleeper(units: int) -> None:
        await d.sleep(target.t(units))
        trace(units)

    async def main() -> None:
        trace.start()
        async with d.task_group() as tg:
            for units in (3, 1, 2):
                tg.start_soon(sleeper, units)

    target.run(main)
    assert trace.labels == [1, 2, 3]
    trace.assert_times([1, 2, 3])


def test_anyio_now_is_epoch_time_read_from_the_loop_clock() -> None:
    driver = AnyioDriver()
    clock = pytest.importorskip("trio.testing").MockClock(autojump_threshold=0)
    readings: list[float] = []

    async def main() -> None:
        readings.append(driver.now())
        await driver.sleep(3600)  # virtual: MockClock jumps, the wall clock does not
        readings.append(driver.now())

    before = time.time()
    driver.run(main, backend="trio", backend_options={"clock": clock})
    assert abs(readings[0] - before) < 60, "now() must be seconds since the epoch"
    assert readings[1] - readings[0] == pytest.approx(3600, abs=1e-3)


# -- task groups -----------------------------------------------------------------


def test_task_group_waits_for_all_children(target: Target) -> None:
    d, trace = target.driver, target.trace()

    async def child(units: int) -> None:
        await d.sleep(target.t(units))
        trace(f"child {units}")

    async def main() -> None:
        trace.start()
        async with d.task_group() as tg:
            tg.start_soon(child, 2)
            tg.start_soon(child, 1)
            trace("body done")
        trace("group done")

    target.run(main)
    assert trace.labels == ["body done", "child 1", "child 2", "group done"]
    trace.assert_times([0, 1, 2, 2])


def test_child_failure_cancels_siblings_and_body_and_comes_out_as_a_group(target: Target) -> None:
    d, trace = target.driver, target.trace()

    async def failing() -> None:
        await d.sleep(target.t(1))
        raise ValueError("boom")

    async def sibling() -> None:
        try:
            await d.sleep(target.t(5))
        except d.cancelled_exc():
            trace("sibling cancelled")
            raise
        trace("sibling finished")

    async def main() -> BaseException | None:
        trace.start()
        try:
            async with d.task_group() as tg:
                tg.start_soon(failing)
                tg.start_soon(sibling)
                try:
                    await d.sleep(target.t(5))
                except d.cancelled_exc():
                    trace("body cancelled")
                    raise
        except BaseExceptionGroup as eg:
            trace("group raised")
            return eg
        return None

    eg = target.run(main)
    assert isinstance(eg, ExceptionGroup)
    assert [type(e) for e in eg.exceptions] == [ValueError]
    assert sorted(trace.labels[:2]) == ["body cancelled", "sibling cancelled"]
    assert trace.labels[2:] == ["group raised"]
    trace.assert_times([1, 1, 1])


def test_every_child_failure_is_collected(target: Target) -> None:
    d = target.driver

    async def fails_at_once() -> None:
        raise ValueError("first")

    async def fails_when_cancelled() -> None:
        try:
            await d.sleep(target.t(5))
        except d.cancelled_exc():
            raise KeyError("second") from None

    async def main() -> BaseException | None:
        try:
            async with d.task_group() as tg:
                tg.start_soon(fails_when_cancelled)
                tg.start_soon(fails_at_once)
        except BaseExceptionGroup as eg:
            return eg
        return None

    eg = target.run(main)
    assert eg is not None and only(eg) == ["KeyError: 'second'", "ValueError: first"]


def test_failure_in_the_body_cancels_the_children(target: Target) -> None:
    d, trace = target.driver, target.trace()

    async def child() -> None:
        try:
            await d.sleep(target.t(5))
        except d.cancelled_exc():
            trace("child cancelled")
            raise

    async def main() -> BaseException | None:
        trace.start()
        try:
            async with d.task_group() as tg:
                tg.start_soon(child)
                await d.sleep(target.t(1))
                raise ValueError("body")
        except BaseExceptionGroup as eg:
            trace("group raised")
            return eg
        return None

    eg = target.run(main)
    assert eg is not None and only(eg) == ["ValueError: body"]
    assert trace.labels == ["child cancelled", "group raised"]
    trace.assert_times([1, 1])


def test_nested_task_groups_nest_their_exception_groups(target: Target) -> None:
    d, trace = target.driver, target.trace()

    async def outer_child() -> None:
        try:
            await d.sleep(target.t(5))
        except d.cancelled_exc():
            trace("outer child cancelled")
            raise

    async def inner_child(units: int, fail: bool) -> None:
        await d.sleep(target.t(units))
        trace(f"inner {units}")
        if fail:
            raise ValueError("inner")

    async def main() -> BaseException | None:
        trace.start()
        try:
            async with d.task_group() as outer:
                outer.start_soon(outer_child)
                async with d.task_group() as inner:  # completes normally: waits for both
                    inner.start_soon(inner_child, 1, False)
                    inner.start_soon(inner_child, 2, False)
                trace("inner group done")
                async with d.task_group() as inner:
                    inner.start_soon(inner_child, 1, True)
        except BaseExceptionGroup as eg:
            return eg
        return None

    eg = target.run(main)
    assert isinstance(eg, ExceptionGroup) and len(eg.exceptions) == 1
    nested = eg.exceptions[0]
    assert isinstance(nested, ExceptionGroup)
    assert [repr(e) for e in nested.exceptions] == ["ValueError('inner')"]
    assert trace.labels == ["inner 1", "inner 2", "inner group done", "inner 1", "outer child cancelled"]
    trace.assert_times([1, 2, 2, 3, 3])


def test_cancelling_the_group_scope_cancels_children_without_error(target: Target) -> None:
    d, trace = target.driver, target.trace()

    async def child(n: int) -> None:
        try:
            await d.sleep(target.t(5))
        except d.cancelled_exc():
            trace(f"child {n} cancelled")
            raise

    async def main() -> None:
        trace.start()
        async with d.task_group() as tg:
            tg.start_soon(child, 1)
            tg.start_soon(child, 2)
            await d.sleep(target.t(1))
            tg.cancel_scope.cancel()
        trace("after group")

    target.run(main)
    assert sorted(trace.labels[:2]) == ["child 1 cancelled", "child 2 cancelled"]
    assert trace.labels[2:] == ["after group"]
    trace.assert_times([1, 1, 1])


def test_child_started_in_a_cancelled_group_runs_until_its_first_blocking_call(target: Target) -> None:
    d = target.driver
    log: list[str] = []

    async def child() -> None:
        log.append("started")
        await d.sleep(target.t(1))
        log.append("not reached")

    async def main() -> None:
        async with d.task_group() as tg:
            tg.cancel_scope.cancel()
            tg.start_soon(child)

    target.run(main)
    assert log == ["started"]


def test_start_soon_on_a_group_that_has_exited_is_refused(target: Target) -> None:
    d = target.driver

    async def child() -> None:
        raise AssertionError("must not run")

    async def main() -> None:
        async with d.task_group() as tg:
            pass
        with pytest.raises(RuntimeError, match="not active"):
            tg.start_soon(child)

    target.run(main)


# -- cancel scopes ---------------------------------------------------------------


def test_cancel_scope_cancels_blocking_calls_and_catches_its_cancellation(target: Target) -> None:
    d, trace = target.driver, target.trace()

    async def main() -> None:
        trace.start()
        with d.cancel_scope() as scope:
            scope.cancel()
            await d.sleep(target.t(1))
            trace("not reached")
        trace("after scope")
        assert scope.cancel_called and scope.cancelled_caught

    target.run(main)
    assert trace.labels == ["after scope"]
    trace.assert_times([0])


def test_scope_cancelled_before_it_is_entered(target: Target) -> None:
    d = target.driver

    async def main() -> bool:
        scope = d.cancel_scope()
        scope.cancel()
        with scope:
            await d.sleep(target.t(1))
            raise AssertionError("not reached")
        return scope.cancelled_caught

    assert target.run(main) is True


def test_cancelling_from_another_task_wakes_the_blocked_task(target: Target) -> None:
    d, trace = target.driver, target.trace()

    async def main() -> None:
        trace.start()
        scope = d.cancel_scope()

        async def blocked() -> None:
            with scope:
                await d.event().wait()
            trace("woken")

        async with d.task_group() as tg:
            tg.start_soon(blocked)
            await d.sleep(target.t(1))
            scope.cancel()
        assert scope.cancelled_caught

    target.run(main)
    assert trace.labels == ["woken"]
    trace.assert_times([1])


def test_move_on_after(target: Target) -> None:
    d, trace = target.driver, target.trace()

    async def main() -> None:
        trace.start()
        with d.move_on_after(target.t(1)) as late:
            await d.sleep(target.t(5))
            trace("not reached")
        trace("moved on")
        with d.move_on_after(target.t(5)) as in_time:
            await d.sleep(target.t(1))
        trace("in time")
        assert late.cancel_called and late.cancelled_caught
        assert not in_time.cancel_called and not in_time.cancelled_caught

    target.run(main)
    assert trace.labels == ["moved on", "in time"]
    trace.assert_times([1, 2])


def test_fail_after_raises_timeout_error_only_past_its_deadline(target: Target) -> None:
    d, trace = target.driver, target.trace()

    async def main() -> None:
        trace.start()
        with pytest.raises(TimeoutError):
            with d.fail_after(target.t(1)):
                await d.sleep(target.t(5))
        trace("timed out")
        with d.fail_after(target.t(5)):
            await d.sleep(target.t(1))
        trace("in time")
        with d.fail_after(target.t(5)) as scope:
            scope.cancel()  # a manual cancel is not a timeout
            await d.sleep(target.t(1))
        assert scope.cancelled_caught
        trace("cancelled by hand")

    target.run(main)
    assert trace.labels == ["timed out", "in time", "cancelled by hand"]
    trace.assert_times([1, 2, 2])


def test_cancellation_is_level_triggered(target: Target) -> None:
    d, trace = target.driver, target.trace()

    async def main() -> None:
        trace.start()
        with d.cancel_scope() as scope:
            scope.cancel()
            for attempt in range(3):
                try:
                    await d.sleep(target.t(1))
                except d.cancelled_exc():
                    trace(f"cancelled {attempt}")  # swallowed: the next call raises again
            await d.checkpoint()
            trace("not reached")
        assert scope.cancelled_caught

    target.run(main)
    assert trace.labels == ["cancelled 0", "cancelled 1", "cancelled 2"]
    trace.assert_times([0, 0, 0])


def test_outer_cancellation_goes_through_an_inner_scope(target: Target) -> None:
    d = target.driver
    log: list[str] = []

    async def main() -> None:
        with d.cancel_scope() as outer:
            with d.cancel_scope() as inner:
                outer.cancel()
                await d.sleep(target.t(1))
            log.append("not reached")
        assert outer.cancelled_caught
        assert not inner.cancel_called and not inner.cancelled_caught
        log.append("after")

    target.run(main)
    assert log == ["after"]


def test_inner_cancellation_stays_inside(target: Target) -> None:
    d, trace = target.driver, target.trace()

    async def main() -> None:
        trace.start()
        with d.cancel_scope() as outer:
            with d.cancel_scope() as inner:
                inner.cancel()
                await d.sleep(target.t(1))
            trace("after inner")
            await d.sleep(target.t(1))
            trace("outer still running")
        assert inner.cancelled_caught
        assert not outer.cancel_called and not outer.cancelled_caught

    target.run(main)
    assert trace.labels == ["after inner", "outer still running"]
    trace.assert_times([0, 1])


def test_when_both_are_cancelled_the_outer_scope_catches(target: Target) -> None:
    d = target.driver
    log: list[str] = []

    async def main() -> None:
        with d.cancel_scope() as outer:
            with d.cancel_scope() as inner:
                inner.cancel()
                outer.cancel()
                await d.sleep(target.t(1))
            log.append("not reached: the inner scope lets it through")
        assert outer.cancelled_caught and not inner.cancelled_caught
        log.append("after")

    target.run(main)
    assert log == ["after"]


def test_scope_entered_inside_a_cancelled_scope_is_cancelled(target: Target) -> None:
    d = target.driver

    async def main() -> list[str]:
        log = []
        with d.cancel_scope() as outer:
            outer.cancel()
            with d.move_on_after(target.t(10)) as inner:
                try:
                    await d.sleep(target.t(1))
                except d.cancelled_exc():
                    log.append("cancelled")
                    raise
        assert outer.cancelled_caught and not inner.cancelled_caught
        return log

    assert target.run(main) == ["cancelled"]


# -- events ------------------------------------------------------------------------


def test_event_wakes_every_waiter(target: Target) -> None:
    d, trace = target.driver, target.trace()

    async def main() -> None:
        trace.start()
        event = d.event()

        async def waiter(n: int) -> None:
            await event.wait()
            trace(f"waiter {n}")

        async with d.task_group() as tg:
            for n in range(3):
                tg.start_soon(waiter, n)
            await d.sleep(target.t(1))
            assert not event.is_set()
            event.set()
            event.set()  # idempotent
            assert event.is_set()
        await event.wait()  # already set: returns at once
        trace("set event waited")

    target.run(main)
    assert sorted(trace.labels[:3]) == ["waiter 0", "waiter 1", "waiter 2"]
    assert trace.labels[3:] == ["set event waited"]
    trace.assert_times([1, 1, 1, 1])


def test_waiting_on_a_set_event_in_a_cancelled_scope_raises(target: Target) -> None:
    d = target.driver

    async def main() -> bool:
        event = d.event()
        event.set()
        with d.cancel_scope() as scope:
            scope.cancel()
            await event.wait()
            raise AssertionError("not reached")
        return scope.cancelled_caught

    assert target.run(main) is True


def test_cancelled_event_waiter_leaves_others_waiting(target: Target) -> None:
    d, trace = target.driver, target.trace()

    async def main() -> None:
        trace.start()
        event = d.event()

        async def patient() -> None:
            await event.wait()
            trace("patient woken")

        async def impatient() -> None:
            with d.move_on_after(target.t(1)):
                await event.wait()
            trace("impatient gave up")

        async with d.task_group() as tg:
            tg.start_soon(patient)
            tg.start_soon(impatient)
            await d.sleep(target.t(2))
            event.set()

    target.run(main)
    assert trace.labels == ["impatient gave up", "patient woken"]
    trace.assert_times([1, 2])


# -- mailboxes ---------------------------------------------------------------------


def test_mailbox_is_fifo(target: Target) -> None:
    d = target.driver

    async def main() -> tuple[list[int], list[Any], int]:
        mailbox = d.mailbox()
        for n in range(5):
            mailbox.put(n)
        assert len(mailbox) == 5
        first = [await mailbox.get(), await mailbox.get()]
        return first, mailbox.drain(), len(mailbox)

    assert target.run(main) == ([0, 1], [2, 3, 4], 0)


def test_mailbox_get_waits_for_a_put(target: Target) -> None:
    d, trace = target.driver, target.trace()

    async def main() -> None:
        trace.start()
        mailbox = d.mailbox()

        async def reader() -> None:
            for _ in range(3):
                trace(await mailbox.get())

        async with d.task_group() as tg:
            tg.start_soon(reader)
            await d.sleep(target.t(1))
            mailbox.put("a")
            mailbox.put("b")
            await d.sleep(target.t(1))
            mailbox.put("c")

    target.run(main)
    assert trace.labels == ["a", "b", "c"]
    trace.assert_times([1, 1, 2])


def test_mailbox_get_raises_in_a_cancelled_scope_even_when_not_empty(target: Target) -> None:
    d = target.driver

    async def main() -> int:
        mailbox = d.mailbox()
        mailbox.put("kept")
        with d.cancel_scope() as scope:
            scope.cancel()
            await mailbox.get()
            raise AssertionError("not reached")
        assert scope.cancelled_caught
        return len(mailbox)

    assert target.run(main) == 1


def test_cancelled_get_loses_no_item(target: Target) -> None:
    d = target.driver

    async def main() -> list[Any]:
        mailbox = d.mailbox()
        with d.move_on_after(target.t(1)):
            await mailbox.get()
        mailbox.put("late")
        assert len(mailbox) == 1
        return [await mailbox.get()]

    assert target.run(main) == ["late"]


def test_mailbox_refuses_a_second_waiting_reader(target: Target) -> None:
    d = target.driver

    async def main() -> None:
        mailbox = d.mailbox()
        async with d.task_group() as tg:
            tg.start_soon(mailbox.get)
            await d.sleep(target.t(1))
            with pytest.raises(RuntimeError, match="one reader"):
                await mailbox.get()
            mailbox.put("for the first reader")
        assert len(mailbox) == 0

    target.run(main)


# -- futures -----------------------------------------------------------------------


def test_future_resolves_once(target: Target) -> None:
    d = target.driver

    async def main() -> None:
        ok = d.future()
        assert not ok.done()
        ok.set(1)
        ok.set(2)
        ok.fail(KeyError("late"))
        assert ok.done() and await ok.wait() == 1
        failed = d.future()
        failed.fail(KeyError("k"))
        failed.set(3)
        with pytest.raises(KeyError):
            await failed.wait()

    target.run(main)


def test_future_wait_times_out(target: Target) -> None:
    d, trace = target.driver, target.trace()

    async def main() -> None:
        trace.start()
        with pytest.raises(TimeoutError):
            await d.future().wait(target.t(1))
        trace("timed out")

    target.run(main)
    assert trace.labels == ["timed out"]
    trace.assert_times([1])


def test_future_resolved_before_the_deadline_wins(target: Target) -> None:
    d, trace = target.driver, target.trace()

    async def main() -> None:
        trace.start()
        fut = d.future()

        async def resolve() -> None:
            await d.sleep(target.t(1))
            fut.set("value")

        async with d.task_group() as tg:
            tg.start_soon(resolve)
            trace(await fut.wait(target.t(3)))

    target.run(main)
    assert trace.labels == ["value"]
    trace.assert_times([1])


def test_future_wakes_every_waiter(target: Target) -> None:
    d, trace = target.driver, target.trace()

    async def main() -> None:
        trace.start()
        fut = d.future()

        async def waiter(name: str, timeout: float | None) -> None:
            try:
                trace((name, await fut.wait(timeout)))
            except TimeoutError:
                trace((name, "timed out"))

        async with d.task_group() as tg:
            tg.start_soon(waiter, "forever", None)
            tg.start_soon(waiter, "patient", target.t(5))
            tg.start_soon(waiter, "hasty", target.t(1))
            await d.sleep(target.t(2))
            fut.set(42)

    target.run(main)
    assert trace.labels[0] == ("hasty", "timed out")
    assert sorted(trace.labels[1:]) == [("forever", 42), ("patient", 42)]
    trace.assert_times([1, 2, 2])


def test_waiting_on_a_done_future_in_a_cancelled_scope_raises(target: Target) -> None:
    d = target.driver

    async def main() -> bool:
        fut = d.future()
        fut.set(1)
        with d.cancel_scope() as scope:
            scope.cancel()
            await fut.wait()
            raise AssertionError("not reached")
        return scope.cancelled_caught

    assert target.run(main) is True


def test_cancelled_future_wait_raises_the_cancelled_exception(target: Target) -> None:
    d = target.driver

    async def main() -> list[str]:
        log = []
        fut = d.future()
        with d.move_on_after(target.t(1)):
            try:
                await fut.wait(target.t(5))
            except d.cancelled_exc():
                log.append("cancelled")
                raise
        fut.set("late")
        log.append(await fut.wait())
        return log

    assert target.run(main) == ["cancelled", "late"]


# -- the simulation driver's own promises ---------------------------------------


def test_sim_trace_of_virtual_times_is_exact() -> None:
    driver = SimDriver()
    log: list[float] = []

    async def main() -> None:
        for _ in range(3):
            log.append(driver.now())
            await driver.sleep(1)
        await driver.sleep(0.5)
        log.append(driver.now())

    driver.run(main)
    assert log == [0, 1, 2, 3.5]


def test_sim_equal_time_wakeups_are_fifo() -> None:
    driver = SimDriver()
    log: list[tuple[float, int]] = []

    async def sleeper(n: int, seconds: float) -> None:
        await driver.sleep(seconds)
        log.append((driver.now(), n))

    async def main() -> None:
        async with driver.task_group() as tg:
            for n in range(10):
                tg.start_soon(sleeper, n, 1 if n % 2 else 0)

    driver.run(main)
    assert log == [(0, n) for n in range(0, 10, 2)] + [(1, n) for n in range(1, 10, 2)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=5), max_size=12))
def test_sim_wakeups_are_ordered_by_time_then_start_order(durations: list[int]) -> None:
    driver = SimDriver()
    log: list[tuple[float, int]] = []

    async def sleeper(n: int, seconds: int) -> None:
        await driver.sleep(seconds)
        log.append((driver.now(), n))

    async def main() -> None:
        async with driver.task_group() as tg:
            for n, seconds in enumerate(durations):
                tg.start_soon(sleeper, n, seconds)

    driver.run(main)
    assert log == sorted((seconds, n) for n, seconds in enumerate(durations))


def test_sim_cancellation_wakes_tasks_in_start_order() -> None:
    driver = SimDriver()
    log: list[int] = []

    async def blocked(n: int) -> None:
        try:
            if n % 3 == 0:
                await driver.event().wait()
            elif n % 3 == 1:
                await driver.mailbox().get()
            else:
                await driver.sleep(100)
        except Cancelled:
            log.append(n)
            raise

    async def main() -> None:
        async with driver.task_group() as tg:
            for n in range(30):
                tg.start_soon(blocked, n)
            await driver.sleep(1)
            tg.cancel_scope.cancel()

    driver.run(main)
    assert log == list(range(30))


def test_sim_shares_one_clock_with_simpy_models() -> None:
    env = simpy.Environment()
    driver = SimDriver(env)
    log: list[tuple[float, str]] = []

    def model(env: simpy.Environment) -> Any:
        yield env.timeout(1)
        return "model result"

    def failing(env: simpy.Environment) -> Any:
        yield env.timeout(2)
        raise KeyError("model failed")

    def model_timer(label: str) -> None:
        env.timeout(1).callbacks.append(lambda _e: log.append((env.now, label)))

    async def main() -> None:
        proc = env.process(model(env))
        model_timer("model timer scheduled before")
        await driver.sleep(0)  # a tie at t=0 too: after the model events already due
        model_timer("model timer scheduled after")  # at t=1, like the task's sleep below
        await driver.sleep(1)
        log.append((driver.now(), "task"))
        log.append((driver.now(), await driver.wait_simpy(proc)))  # already processed
        with pytest.raises(KeyError):
            await driver.wait_simpy(env.process(failing(env)))
        log.append((driver.now(), "failure thrown in"))

    driver.run(main)
    assert log == [
        (1, "model timer scheduled before"),
        (1, "model timer scheduled after"),
        (1, "task"),
        (1, "model result"),
        (3, "failure thrown in"),
    ]


def test_sim_run_until_cancels_at_that_time() -> None:
    driver = SimDriver()
    log: list[float] = []

    async def forever() -> None:
        try:
            while True:
                await driver.sleep(3)
                log.append(driver.now())
        finally:
            log.append(-driver.now())

    assert driver.run(forever, until=10) is None
    assert log == [3, 6, 9, -10]
    assert driver.now() == 10


def _random_program(driver: Driver, seed: int, log: list[tuple[float, str]]) -> Any:
    """Tasks with seeded random delays talking through a mailbox, futures and a deadline."""
    rng = random.Random(seed)

    async def producer(name: str, mailbox: Any) -> None:
        for i in range(5):
            await driver.sleep(rng.choice([0, 0.5, 1, 2]))
            reply = driver.future()
            mailbox.put((f"{name}{i}", reply))
            try:
                log.append((driver.now(), f"{name} got {await reply.wait(rng.choice([0.5, 3]))}"))
            except TimeoutError:
                log.append((driver.now(), f"{name} timed out"))

    async def consumer(mailbox: Any) -> None:
        while True:
            msg, reply = await mailbox.get()
            await driver.sleep(rng.choice([0, 0.25, 1]))
            reply.set(msg.upper())

    async def main() -> None:
        mailbox = driver.mailbox()
        with driver.move_on_after(30):
            async with driver.task_group() as tg:
                tg.start_soon(consumer, mailbox)
                async with driver.task_group() as producers:
                    for name in "abcd":
                        producers.start_soon(producer, name, mailbox)
                tg.cancel_scope.cancel()
        log.append((driver.now(), "done"))

    return main


def test_sim_replay_is_deterministic() -> None:
    def trace(seed: int) -> list[tuple[float, str]]:
        driver = SimDriver()
        log: list[tuple[float, str]] = []
        driver.run(_random_program(driver, seed, log))
        return log

    first = trace(7)
    assert len(first) == 21 and first[-1][1] == "done"
    assert trace(7) == first
    assert trace(8) != first  # the trace does depend on the program's choices


def test_sim_deadlock_is_detected_and_the_blocked_tasks_unwound() -> None:
    driver = SimDriver()
    unwound: list[str] = []

    async def waits_forever(name: str) -> None:
        try:
            await driver.event().wait()
        finally:
            unwound.append(name)

    async def main() -> None:
        async with driver.task_group() as tg:
            tg.start_soon(waits_forever, "a", name="waiter-a")
            tg.start_soon(waits_forever, "b", name="waiter-b")
            await driver.sleep(2)
            await driver.mailbox().get()

    with pytest.raises(Deadlock, match=r"t=2\b.*waiter-a, waiter-b") as info:
        driver.run(main)
    assert "root" in str(info.value)
    assert unwound == ["a", "b"]


def test_sim_no_deadlock_while_a_timer_can_still_wake_someone() -> None:
    driver = SimDriver()

    async def main() -> float:
        fut = driver.future()
        with pytest.raises(TimeoutError):
            await fut.wait(5)
        event = driver.event()
        with driver.move_on_after(3):
            await event.wait()
        return driver.now()

    assert driver.run(main) == 8

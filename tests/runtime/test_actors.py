"""The actor layer (runtime/actor.py) on the three targets of conftest.py.

Mailbox order, ask/reply and deadlines, refusals (CloudError) versus crashes,
one-for-one restarts with the same mailbox, the restart intensity limit and
escalation up to the root, stopping, cancellation, and the seeded context.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from runtime.actor import Actor, ActorRef, ActorSystem, RestartPolicy
from runtime.driver import Driver, Event
from runtime.errors import ActorCrashed, ActorStopped, AskTimeout, Conflict, NotFound
from runtime.events import EventLog, JsonlSink
from sim.driver import SimDriver

if TYPE_CHECKING:
    from conftest import Target

pytestmark = pytest.mark.timeout(30)


# -- messages ----------------------------------------------------------------------


@attrs.frozen
class Add:
    n: int


@attrs.frozen
class GetTotal:
    pass


@attrs.frozen
class Record:
    item: Any


@attrs.frozen
class GetRecord:
    pass


@attrs.frozen
class Work:
    seconds: float
    answer: Any = "done"


@attrs.frozen
class Crash:
    pass


@attrs.frozen
class Refuse:
    pass


@attrs.frozen
class GetChild:
    pass


@attrs.frozen
class StopChild:
    pass


@attrs.frozen
class SpawnChildAgain:
    pass


@attrs.frozen
class SpawnAndStop:
    pass


@attrs.frozen
class Draw:
    pass


# -- actors ------------------------------------------------------------------------


class Worker(Actor):
    """Keeps a total and a record; can be made to work, refuse, or crash."""

    def __init__(self, incarnations: list[Worker] | None = None) -> None:
        self.total = 0
        self.record: list[Any] = []
        if incarnations is not None:
            incarnations.append(self)

    async def receive(self, msg: Any) -> Any:
        match msg:
            case Add(n):
                self.total += n
                return self.total
            case GetTotal():
                return self.total
            case Record(item):
                self.record.append(item)
                return None
            case GetRecord():
                return list(self.record)
            case Work(seconds, answer):
                await self.ctx.sleep(seconds)
                return answer
            case Crash():
                raise RuntimeError("bug in the handler")
            case Refuse():
                raise NotFound("server", "srv-1")
            case Draw():
                return self.ctx.random.random(), self.ctx.new_id()
        return await super().receive(msg)


class Parent(Actor):
    """Spawns one `Worker` child named "child" in each incarnation."""

    def __init__(self, child_policy: RestartPolicy, started: list[Event], children: list[Worker]) -> None:
        self.child_policy = child_policy
        self.started_events = started
        self.children = children
        self.child: ActorRef | None = None

    async def started(self) -> None:
        self.child = self.ctx.spawn(lambda: Worker(self.children), "child", self.child_policy)
        self.started_events.pop(0).set()

    async def receive(self, msg: Any) -> Any:
        match msg:
            case GetChild():
                return self.child
            case StopChild():
                self.ctx.stop_child("child")
                return None
            case SpawnChildAgain():
                return self.ctx.spawn(Worker, "child")
            case SpawnAndStop():
                ref = self.ctx.spawn(lambda: Worker(self.children), "short-lived")
                self.ctx.stop_child("short-lived")  # before its first incarnation started
                return ref
        return await super().receive(msg)


def recorder(events: list[tuple[str, str]]) -> EventLog:
    return EventLog(lambda _t, source, kind, _fields: events.append((source, kind)))


def new_system(driver: Driver, events: list[tuple[str, str]] | None = None, seed: int = 1) -> ActorSystem:
    return ActorSystem(driver, seed=seed, events=recorder(events) if events is not None else None)


# -- messages and replies ------------------------------------------------------------


def test_tells_from_one_sender_arrive_in_order(target: Target) -> None:
    d = target.driver

    async def main() -> Any:
        async with new_system(d).running() as system:
            ref = system.spawn(Worker, "w")
            for n in range(50):
                ref.tell(Record(n))
            return await ref.ask(GetRecord())

    assert target.run(main) == list(range(50))


def test_messages_from_each_sender_keep_their_order(target: Target) -> None:
    d = target.driver

    async def sender(ref: ActorRef, name: str) -> None:
        for n in range(10):
            ref.tell(Record((name, n)))
            if n % 3 == 0:
                await d.checkpoint()  # let the other senders interleave

    async def main() -> Any:
        async with new_system(d).running() as system:
            ref = system.spawn(Worker, "w")
            async with d.task_group() as tg:
                for name in "abc":
                    tg.start_soon(sender, ref, name)
            return await ref.ask(GetRecord())

    record = target.run(main)
    assert sorted(record) == [(name, n) for name in "abc" for n in range(10)]
    for name in "abc":
        assert [n for who, n in record if who == name] == list(range(10))


def test_ask_returns_the_reply(target: Target) -> None:
    d = target.driver

    async def main() -> list[Any]:
        async with new_system(d).running() as system:
            ref = system.spawn(Worker, "w")
            return [await ref.ask(Add(2)), await ref.ask(Add(3)), await ref.ask(GetTotal())]

    assert target.run(main) == [2, 5, 5]


def test_an_actor_handles_one_message_at_a_time(target: Target) -> None:
    d, trace = target.driver, target.trace()

    async def main() -> None:
        trace.start()
        async with new_system(d).running() as system:
            ref = system.spawn(Worker, "w")

            async def ask(n: int) -> None:
                trace(await ref.ask(Work(target.t(1), n)))

            async with d.task_group() as tg:
                for n in range(3):
                    tg.start_soon(ask, n)

    target.run(main)
    assert sorted(trace.labels) == [0, 1, 2]
    trace.assert_times([1, 2, 3])


def test_ask_past_its_deadline_raises_ask_timeout_and_the_actor_goes_on(target: Target) -> None:
    d, trace = target.driver, target.trace()

    async def main() -> None:
        trace.start()
        async with new_system(d).running() as system:
            ref = system.spawn(Worker, "w")
            with pytest.raises(AskTimeout) as info:
                await ref.ask(Work(target.t(3)), timeout=target.t(1))
            assert isinstance(info.value, TimeoutError)
            assert info.value.path == "w" and "Work" in str(info.value)
            trace("timed out")
            trace(await ref.ask(Add(1)))  # queued behind the late Work

    target.run(main)
    assert trace.labels == ["timed out", 1]
    trace.assert_times([1, 3])


def test_a_reply_before_the_deadline_wins(target: Target) -> None:
    d, trace = target.driver, target.trace()

    async def main() -> None:
        trace.start()
        async with new_system(d).running() as system:
            ref = system.spawn(Worker, "w")
            trace(await ref.ask(Work(target.t(1), "in time"), timeout=target.t(2)))

    target.run(main)
    assert trace.labels == ["in time"]
    trace.assert_times([1])


# -- refusals and crashes ------------------------------------------------------------


def test_a_cloud_error_goes_back_to_the_asker_and_the_actor_keeps_its_state(target: Target) -> None:
    d = target.driver
    events: list[tuple[str, str]] = []
    incarnations: list[Worker] = []

    async def main() -> Any:
        async with new_system(d, events).running() as system:
            ref = system.spawn(lambda: Worker(incarnations), "w")
            await ref.ask(Add(5))
            with pytest.raises(NotFound) as info:
                await ref.ask(Refuse())
            assert (info.value.kind, info.value.ident) == ("server", "srv-1")
            ref.tell(Refuse())  # nobody to answer: reported as an event
            return await ref.ask(Add(1)), system.restarts

    assert target.run(main) == (6, 0)
    assert len(incarnations) == 1
    assert ("w", "RequestRefused") in events
    assert ("w", "ActorRestarted") not in events


def test_a_crash_fails_the_ask_and_restarts_a_fresh_instance_on_the_same_mailbox(target: Target) -> None:
    d = target.driver
    events: list[tuple[str, str]] = []
    incarnations: list[Worker] = []

    async def main() -> tuple[list[Any], int]:
        async with new_system(d, events).running() as system:
            ref = system.spawn(lambda: Worker(incarnations), "w")
            await ref.ask(Add(100))
            ref.tell(Record("before"))
            ref.tell(Crash())
            ref.tell(Record("queued behind the crash"))  # must survive the restart
            record = await ref.ask(GetRecord())
            with pytest.raises(ActorCrashed) as info:
                await ref.ask(Crash())
            assert info.value.path == "w" and "RuntimeError" in str(info.value)
            return record, await ref.ask(GetTotal())

    record, total = target.run(main)
    assert record == ["queued behind the crash"]  # fresh state, same mailbox
    assert total == 0
    assert len(incarnations) == 3 and len({id(i) for i in incarnations}) == 3
    assert events.count(("w", "ActorRestarted")) == 2


def test_crashes_spread_beyond_the_window_do_not_escalate(target: Target) -> None:
    d = target.driver
    events: list[tuple[str, str]] = []
    incarnations: list[Worker] = []

    async def main() -> Any:
        async with new_system(d, events).running() as system:
            policy = RestartPolicy(max_restarts=1, within=target.t(2))
            ref = system.spawn(lambda: Worker(incarnations), "w", policy)
            for _ in range(3):
                with pytest.raises(ActorCrashed):
                    await ref.ask(Crash())
                await d.sleep(target.t(3))
            return await ref.ask(Add(1))

    assert target.run(main) == 1
    assert len(incarnations) == 4
    assert ("w", "ActorEscalated") not in events


def test_past_the_restart_limit_the_parent_restarts_with_fresh_children(target: Target) -> None:
    d = target.driver
    events: list[tuple[str, str]] = []
    children: list[Worker] = []

    async def main() -> Any:
        parent_started = [d.event(), d.event()]
        first, second = parent_started
        policy = RestartPolicy(max_restarts=2, within=target.t(100))
        async with new_system(d, events).running() as system:
            parent = system.spawn(lambda: Parent(policy, parent_started, children), "p")
            await first.wait()
            child = await parent.ask(GetChild())
            await child.ask(Add(7))
            for _ in range(3):  # two restarts allowed, the third crash escalates
                with pytest.raises(ActorCrashed):
                    await child.ask(Crash())
            await second.wait()  # the parent's second incarnation has started
            with pytest.raises(ActorStopped):
                await child.ask(GetTotal())  # the old child went down with its parent
            new_child = await parent.ask(GetChild())
            assert new_child is not child and new_child.path == "p/child"
            return await new_child.ask(GetTotal()), system.restarts

    assert target.run(main) == (0, 3)
    assert len(children) == 4  # three incarnations of the first child, one of the new
    assert events == [
        ("p/child", "ActorRestarted"),
        ("p/child", "ActorRestarted"),
        ("p/child", "ActorEscalated"),
        ("p", "ActorRestarted"),
    ]


def test_escalation_past_the_root_comes_out_of_running(target: Target) -> None:
    d, trace = target.driver, target.trace()
    events: list[tuple[str, str]] = []

    async def main() -> BaseException | None:
        trace.start()
        system = new_system(d, events)
        try:
            async with system.running():
                ref = system.spawn(Worker, "top", RestartPolicy(max_restarts=0))
                with pytest.raises(ActorCrashed):
                    await ref.ask(Crash())
                await d.sleep(target.t(5))
                trace("not reached: the escalation cancels the block")
        except BaseExceptionGroup as eg:
            trace("escalated")
            return eg
        return None

    eg = target.run(main)
    assert isinstance(eg, ExceptionGroup)
    [escalation] = eg.exceptions
    assert isinstance(escalation, ActorCrashed) and escalation.path == "top"
    assert "escalating" in str(escalation)
    cause = escalation.__cause__
    assert isinstance(cause, ExceptionGroup) and isinstance(cause.exceptions[0], RuntimeError)
    assert trace.labels == ["escalated"]
    trace.assert_times([0])
    assert events == [("top", "ActorEscalated")]


# -- stopping and cancellation ------------------------------------------------------------


def test_stopping_a_child_fails_its_pending_and_in_flight_asks(target: Target) -> None:
    d, trace = target.driver, target.trace()

    async def main() -> None:
        trace.start()
        started = [d.event()]
        async with new_system(d).running() as system:
            parent = system.spawn(lambda: Parent(RestartPolicy(), started, []), "p")
            child = await parent.ask(GetChild())

            async def ask(label: str, msg: Any) -> None:
                try:
                    await child.ask(msg)
                except ActorStopped:
                    trace(label)

            async with d.task_group() as tg:
                tg.start_soon(ask, "in flight", Work(target.t(5)))
                await d.sleep(target.t(1))
                tg.start_soon(ask, "queued", Add(1))
                await d.checkpoint()
                await parent.ask(StopChild())
            with pytest.raises(ActorStopped):
                await child.ask(Add(1))
            child.tell(Add(1))  # dropped without error
            trace("refused after stop")

    target.run(main)
    assert sorted(trace.labels[:2]) == ["in flight", "queued"]
    assert trace.labels[2:] == ["refused after stop"]
    trace.assert_times([1, 1, 1])


def test_a_child_stopped_before_it_started_never_runs(target: Target) -> None:
    d = target.driver
    children: list[Worker] = []

    async def main() -> None:
        started = [d.event()]
        async with new_system(d).running() as system:
            parent = system.spawn(lambda: Parent(RestartPolicy(), started, children), "p")
            ref = await parent.ask(SpawnAndStop())
            await d.sleep(target.t(1))
            with pytest.raises(ActorStopped):
                await ref.ask(Add(1))

    target.run(main)
    assert len(children) == 1  # only the parent's "child"; "short-lived" never started


def test_a_running_name_cannot_be_spawned_twice(target: Target) -> None:
    d = target.driver

    async def main() -> Any:
        started = [d.event()]
        async with new_system(d).running() as system:
            parent = system.spawn(lambda: Parent(RestartPolicy(), started, []), "p")
            with pytest.raises(Conflict, match="p/child"):
                await parent.ask(SpawnChildAgain())
            with pytest.raises(Conflict):
                system.spawn(Worker, "p")
            await parent.ask(StopChild())
            again = await parent.ask(SpawnChildAgain())  # the name is free again
            return await again.ask(Add(3))

    assert target.run(main) == 3


def test_leaving_running_stops_every_actor_and_fails_asks_in_flight(target: Target) -> None:
    d, trace = target.driver, target.trace()

    async def main() -> None:
        trace.start()
        system = new_system(d)
        async with d.task_group() as tg:
            async with system.running():
                ref = system.spawn(Worker, "w")

                async def ask() -> None:
                    with pytest.raises(ActorStopped):
                        await ref.ask(Work(target.t(5)))
                    trace("asker told")

                tg.start_soon(ask)
                await d.sleep(target.t(1))
            trace("system stopped")
        with pytest.raises(ActorStopped):
            await ref.ask(Add(1))

    target.run(main)
    assert sorted(trace.labels) == ["asker told", "system stopped"]
    trace.assert_times([1, 1])


def test_cancellation_from_outside_stops_the_actor_system(target: Target) -> None:
    d, trace = target.driver, target.trace()

    async def main() -> None:
        trace.start()
        system = new_system(d)
        with d.move_on_after(target.t(1)) as scope:
            async with system.running():
                ref = system.spawn(Worker, "w")
                await ref.ask(Work(target.t(5)))
                trace("not reached")
        assert scope.cancelled_caught
        trace("cancelled")
        with pytest.raises(ActorStopped):
            await ref.ask(Add(1))

    target.run(main)
    assert trace.labels == ["cancelled"]
    trace.assert_times([1])


# -- the context ----------------------------------------------------------------------


def test_randomness_and_ids_come_from_the_run_seed(target: Target) -> None:
    d = target.driver

    def draws(seed: int) -> Callable[[], Any]:
        async def main() -> list[Any]:
            async with new_system(d, seed=seed).running() as system:
                a, b = system.spawn(Worker, "a"), system.spawn(Worker, "b")
                return [await a.ask(Draw()), await a.ask(Draw()), await b.ask(Draw())]

        return main

    first = target.run(draws(1))
    assert target.run(draws(1)) == first
    assert target.run(draws(2)) != first
    assert first[0] != first[1] and first[0][0] != first[2][0]  # per actor, per draw


# -- replay on the simulation driver -----------------------------------------------------


def _busy_system(driver: SimDriver, seed: int, sink: JsonlSink) -> Callable[[], Any]:
    """Clients ask workers at seeded random times; some asks crash, refuse or time out."""

    async def main() -> None:
        system = ActorSystem(driver, seed=seed, events=EventLog(sink))
        async with system.running():
            workers = [system.spawn(Worker, f"w{i}", RestartPolicy(max_restarts=100)) for i in range(3)]
            dice = system.spawn(Worker, "dice")

            async def client(n: int) -> None:
                for _ in range(20):
                    draw, _id = await dice.ask(Draw())
                    await driver.sleep(draw * 3)
                    msg = Crash() if draw > 0.9 else Refuse() if draw < 0.1 else Work(draw, n)
                    try:
                        answer = await workers[int(draw * 30) % 3].ask(msg, timeout=0.8)
                    except (ActorCrashed, AskTimeout, NotFound) as exc:
                        answer = type(exc).__name__
                    system.emit(f"client{n}", "Answered", answer=str(answer))

            async with driver.task_group() as tg:
                for n in range(4):
                    tg.start_soon(client, n)

    return main


def test_sim_actor_runs_replay_identically() -> None:
    def run(seed: int) -> tuple[str, float, str]:
        driver, out = SimDriver(), io.StringIO()
        sink = JsonlSink(out)
        driver.run(_busy_system(driver, seed, sink))
        return sink.sha256, driver.now(), out.getvalue()

    first = run(3)
    log = first[2]
    expected = ('"answer":"ActorCrashed"', '"answer":"AskTimeout"', '"answer":"NotFound"', '"kind":"ActorRestarted"')
    for outcome in expected:
        assert outcome in log, f"the program should exercise {outcome}"
    assert run(3) == first
    assert run(4)[0] != first[0]

"""Actors, references, the actor context, and supervision.

An actor owns its state and a mailbox; everyone else holds an `ActorRef` and can
`tell` (fire and forget) or `ask` (request/reply with a deadline). Every actor runs
inside its parent's task group, so nothing outlives its parent.

Error handling, as in Erlang/OTP:
- A `CloudError` raised by `receive` is a refusal: it goes back to the asker and the
  actor carries on (bad input must not kill a region).
- Any other exception is a crash: the asker gets `ActorCrashed`, and the parent
  restarts the actor (one-for-one: a new instance from the factory, the same mailbox,
  so references stay valid). More than `max_restarts` crashes within `within`
  seconds escalate: the parent itself crashes and its own supervisor decides.

Actors touch the outside only through `ctx` (clock, seeded random, ids, events,
spawn) and the ports they were given at construction.
"""

from __future__ import annotations

import random
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs

from runtime.driver import Driver, Future, Mailbox, TaskGroup
from runtime.errors import ActorCrashed, ActorStopped, AskTimeout, CloudError, Conflict
from runtime.events import EventLog

DEFAULT_ASK_TIMEOUT = 60.0


@attrs.frozen
class RestartPolicy:
    max_restarts: int = 3
    within: float = 60.0


class Actor:
    """Base class of every actor. Override `receive`, and `started` to spawn children."""

    ctx: Context

    async def started(self) -> None:
        """Called in each incarnation before the first message."""

    async def receive(self, msg: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not handle {type(msg).__name__}")


class ActorRef:
    __slots__ = ("_cell",)

    def __init__(self, cell: _Cell) -> None:
        self._cell = cell

    @property
    def path(self) -> str:
        return self._cell.path

    def tell(self, msg: Any) -> None:
        cell = self._cell
        if not cell.stopped:
            cell.mailbox.put((msg, None))

    async def ask(self, msg: Any, timeout: float | None = DEFAULT_ASK_TIMEOUT) -> Any:
        cell = self._cell
        if cell.stopped:
            raise ActorStopped(cell.path, f"cannot handle {type(msg).__name__}: stopped")
        fut = cell.new_future()
        cell.mailbox.put((msg, fut))
        try:
            return await fut.wait(timeout)
        except TimeoutError:
            if fut.done():
                raise
            raise AskTimeout(cell.path, f"no reply to {type(msg).__name__} within {timeout} s") from None

    def __repr__(self) -> str:
        return f"ActorRef({self._cell.path})"


class _Cell:
    """The runtime side of one actor: survives restarts, so refs stay valid."""

    __slots__ = ("system", "path", "factory", "policy", "mailbox", "ref", "children",
                 "stopped", "tg", "instance", "reply", "new_future")

    def __init__(self, system: ActorSystem, path: str, factory: Callable[[], Actor], policy: RestartPolicy) -> None:
        self.system = system
        self.path = path
        self.factory = factory
        self.policy = policy
        self.mailbox: Mailbox[tuple[Any, Future[Any] | None]] = system.driver.mailbox()
        self.new_future = system.driver.future
        self.ref = ActorRef(self)
        self.children: dict[str, _Cell] = {}
        self.stopped = False
        self.tg: TaskGroup | None = None
        self.instance: Actor | None = None
        self.reply: Future[Any] | None = None  # of the message being handled

    async def supervise(self) -> None:
        """Run incarnations until stopped; restart on crash; escalate past the limit."""
        crashes: deque[float] = deque()
        driver = self.system.driver
        try:
            while not self.stopped:  # stop() may come before the first or between incarnations
                try:
                    await self._incarnation()
                    return
                except Exception as exc:
                    if self.stopped:
                        return  # stopped while the crashed incarnation was torn down
                    now = driver.now()
                    crashes.append(now)
                    while crashes[0] < now - self.policy.within:
                        crashes.popleft()
                    if len(crashes) > self.policy.max_restarts:
                        self.system.emit(self.path, "ActorEscalated", reason=_describe(exc))
                        raise ActorCrashed(
                            self.path,
                            f"crashed {len(crashes)} times within {self.policy.within} s; escalating",
                        ) from exc
                    self.system.restarts += 1
                    self.system.emit(self.path, "ActorRestarted", reason=_describe(exc))
        finally:
            self.stopped = True
            self._fail_pending()

    def _fail_pending(self) -> None:
        for msg, reply in self.mailbox.drain():
            if reply is not None:
                reply.fail(ActorStopped(self.path, f"stopped before handling {type(msg).__name__}"))

    async def _incarnation(self) -> None:
        instance = self.factory()
        instance.ctx = Context(self)
        self.instance = instance
        async with self.system.driver.task_group() as tg:
            self.tg = tg
            await instance.started()
            tg.start_soon(self._loop, instance)

    async def _loop(self, instance: Actor) -> None:
        get = self.mailbox.get
        receive = instance.receive
        while True:
            msg, reply = await get()
            self.reply = reply
            try:
                result = await receive(msg)
                reply, self.reply = self.reply, None  # None once deferred
            except CloudError as exc:
                self.reply = None
                if reply is not None:
                    reply.fail(exc)
                else:
                    self.system.emit(self.path, "RequestRefused", message=type(msg).__name__, error=str(exc))
                continue
            except Exception as exc:
                self.reply = None
                if reply is not None:
                    reply.fail(ActorCrashed(self.path, f"crashed handling {type(msg).__name__}: {exc!r}"))
                raise
            except BaseException:
                # Cancelled mid-message (stop, restart, parent gone): the asker must not
                # wait for its deadline. Failing a reply already answered is a no-op.
                self.reply = None
                if reply is not None:
                    reply.fail(ActorStopped(self.path, f"stopped while handling {type(msg).__name__}"))
                raise
            if reply is not None:
                reply.set(result)

    def stop(self) -> None:
        self.stopped = True
        if self.tg is not None:
            self.tg.cancel_scope.cancel()


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


class Reply:
    """A deferred answer to one `ask` (see `Context.defer`); answering twice is a no-op."""

    __slots__ = ("_future",)

    def __init__(self, future: Future[Any] | None) -> None:
        self._future = future

    def set(self, value: Any) -> None:
        if self._future is not None:
            self._future.set(value)

    def fail(self, exc: BaseException) -> None:
        if self._future is not None:
            self._future.fail(exc)


class Context:
    """What an actor may use to touch the world: time, randomness, ids, events, children."""

    __slots__ = ("_cell", "driver", "_random")

    def __init__(self, cell: _Cell) -> None:
        self._cell = cell
        self.driver = cell.system.driver
        self._random: random.Random | None = None

    @property
    def path(self) -> str:
        return self._cell.path

    @property
    def self(self) -> ActorRef:
        return self._cell.ref

    def now(self) -> float:
        return self.driver.now()

    async def sleep(self, seconds: float) -> None:
        await self.driver.sleep(seconds)

    @property
    def random(self) -> random.Random:
        """A generator seeded from the run seed and this actor's path: reproducible."""
        if self._random is None:
            self._random = random.Random(f"{self._cell.system.seed}/{self._cell.path}")
        return self._random

    def new_id(self) -> str:
        return self._cell.system.new_id()

    def emit(self, kind: str, **fields: Any) -> None:
        self._cell.system.emit(self._cell.path, kind, **fields)

    def spawn(self, factory: Callable[[], Actor], name: str, policy: RestartPolicy | None = None) -> ActorRef:
        """Start a child in this actor's task group.

        Children live as long as this incarnation: after a restart, `started()` spawns
        them afresh (new cells; refs to the old ones answer ActorStopped). A name is
        taken while its child runs: spawning it again raises Conflict.
        """
        cell = self._cell
        old = cell.children.get(name)
        if old is not None and not old.stopped:
            raise Conflict(f"actor {old.path} is already running; stop_child({name!r}) first or pick another name")
        assert cell.tg is not None, "spawn children from started() or receive()"
        child = _Cell(cell.system, f"{cell.path}/{name}", factory, policy or RestartPolicy())
        cell.children[name] = child
        cell.tg.start_soon(child.supervise, name=child.path)
        return child.ref

    def stop_child(self, name: str) -> None:
        child = self._cell.children.pop(name, None)
        if child is not None:
            child.stop()

    def defer(self) -> Reply:
        """Take over the reply of the message being handled, to answer it later.

        Use from `receive` before starting the background work that will answer;
        `receive`'s own return value is then ignored. For a `tell`, the handle is inert.
        """
        cell = self._cell
        reply, cell.reply = cell.reply, None
        return Reply(reply)

    def start_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run a background task for this incarnation (cancelled on restart or stop)."""
        assert self._cell.tg is not None
        self._cell.tg.start_soon(fn, *args)


class ActorSystem:
    """The root of an actor tree on one driver, with its run seed and event log."""

    def __init__(self, driver: Driver, seed: int, events: EventLog | None = None) -> None:
        self.driver = driver
        self.seed = seed
        self.events = events if events is not None else EventLog()
        self.restarts = 0
        self._ids = random.Random(f"{seed}/ids")
        self._tg: TaskGroup | None = None
        self._top: dict[str, _Cell] = {}

    def new_id(self) -> str:
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))

    def emit(self, source: str, kind: str, **fields: Any) -> None:
        self.events.append(self.driver.now(), source, kind, fields)

    def spawn(self, factory: Callable[[], Actor], name: str, policy: RestartPolicy | None = None) -> ActorRef:
        assert self._tg is not None, "use `async with system.running():` first"
        old = self._top.get(name)
        if old is not None and not old.stopped:
            raise Conflict(f"actor {name} is already running; pick another name")
        cell = _Cell(self, name, factory, policy or RestartPolicy())
        self._top[name] = cell
        self._tg.start_soon(cell.supervise, name=name)
        return cell.ref

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ActorSystem]:
        """Actors spawned inside run until the block ends; an escalation ends the block."""
        async with self.driver.task_group() as tg:
            self._tg = tg
            try:
                yield self
            finally:
                for cell in self._top.values():
                    cell.stopped = True
                tg.cancel_scope.cancel()

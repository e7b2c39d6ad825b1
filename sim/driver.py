"""Deterministic virtual-time driver: the same primitives as `runtime.driver.AnyioDriver`.

Actor coroutines are stepped by this module's own ready queue (FIFO, so equal-time
wake-ups keep their order) and timed wake-ups are SimPy events on the model's
environment, so actors and SimPy models share one clock and one
(time, priority, sequence) order. A run is a pure function of its inputs.

A blocked task holds a wake token; every wake-up names the token it was issued for,
so a stale wake-up (a timer that lost the race against a reply, say) is a no-op.
Cancellation follows trio: scopes form a tree, a cancelled scope marks its subtree,
and every blocking call inside raises `Cancelled` until the cancelled scope exits.
Blocking calls are cancel points but, unlike anyio's, not schedule points: a call
that need not wait (a non-empty mailbox, a set event) returns without yielding.

Determinism: every collection that is iterated (scope members, event waiters) keeps
insertion order, so a cancelled scope wakes its tasks in the order they entered it.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import types
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, TypeVar, cast

import simpy

T = TypeVar("T")


class Cancelled(BaseException):
    """Raised at blocking calls inside a cancelled scope (the sim twin of anyio's)."""


@types.coroutine
def _suspend() -> Generator[None, Any, Any]:
    return (yield)


class _Task:
    __slots__ = ("coro", "name", "scope", "token", "value", "exc", "group", "driver", "handle")

    def __init__(self, driver: SimDriver, coro: Coroutine[Any, Any, Any], name: str, scope: _Scope | None) -> None:
        self.driver = driver
        self.coro = coro
        self.name = name
        self.scope = scope
        self.token = 0  # non-zero while blocked
        self.value: Any = None
        self.exc: BaseException | None = None
        self.group: _TaskGroup | None = None
        self.handle: Handle | None = None


class _Wakeup:
    """The end of a `sleep`: what SimPy's queue needs of an event, and nothing more.

    `Environment.step` pops it, takes `callbacks` and calls each with the event; a
    full `simpy.Timeout` with a closure costs about twice as much, on the hottest path.
    """

    __slots__ = ("callbacks", "_ok", "_value", "task", "token")

    def __init__(self, driver: SimDriver, task: _Task, token: int) -> None:
        self.callbacks = driver._wakeup_callbacks
        self._ok = True
        self._value = None
        self.task = task
        self.token = token


def _fire_wakeup(wakeup: _Wakeup) -> None:
    task = wakeup.task
    if task.token == wakeup.token:
        task.token = 0
        task.driver._ready.append(task)


class Handle:
    """The outcome of a task started with `SimDriver.start`: `done`, then `result` or `error`."""

    __slots__ = ("done", "result", "error")

    def __init__(self) -> None:
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class _Scope:
    """A cancel scope. `cancelled` is true when this scope or an ancestor is cancelled.

    `children` and `tasks` are dicts used as ordered sets: cancellation walks them.
    A `fail_after` scope has a `_delay` and starts its clock when entered (as anyio's).
    """

    __slots__ = ("driver", "parent", "children", "tasks", "cancel_called", "cancelled",
                 "cancelled_caught", "_deadline", "_delay", "_host", "_active")

    def __init__(self, driver: SimDriver, deadline: float | None = None, delay: float | None = None) -> None:
        self.driver = driver
        self.parent: _Scope | None = None
        self.children: dict[_Scope, None] = {}
        self.tasks: dict[_Task, None] = {}
        self.cancel_called = False
        self.cancelled = False
        self.cancelled_caught = False
        self._deadline = deadline
        self._delay = delay
        self._host: _Task | None = None
        self._active = False

    def _attach(self, task: _Task) -> None:
        parent = task.scope
        self.parent = parent
        self.cancelled = self.cancel_called
        if parent is not None:
            parent.children[self] = None
            parent.tasks.pop(task, None)
            self.cancelled = self.cancelled or parent.cancelled
        self.tasks[task] = None
        task.scope = self
        self._host = task
        self._active = True
        if self._delay is not None:
            self._deadline = self.driver.env.now + self._delay
        if self._deadline is not None:
            delay = self._deadline - self.driver.env.now
            if delay <= 0:
                self.cancel()
            else:
                self.driver.env.timeout(delay).callbacks.append(self._on_deadline)

    def _detach(self) -> None:
        task = self._host
        assert task is not None and task.scope is self, "cancel scopes must nest"
        self._active = False
        self.tasks.pop(task, None)
        task.scope = self.parent
        if self.parent is not None:
            self.parent.children.pop(self, None)
            self.parent.tasks[task] = None

    def _on_deadline(self, _event: object) -> None:
        if self._active:
            self.cancel()

    def cancel(self) -> None:
        if self.cancel_called:
            return
        self.cancel_called = True
        if self._active:
            self._mark()

    def _mark(self) -> None:
        self.cancelled = True
        wake = self.driver._wake
        for task in list(self.tasks):
            if task.token:
                wake(task, task.token, exc=Cancelled())
        for child in list(self.children):
            if not child.cancelled:
                child._mark()

    def __enter__(self) -> _Scope:
        task = self.driver.current
        assert task is not None, "cancel scopes need a running task"
        self._attach(task)
        return self

    def __exit__(self, et: Any, exc: BaseException | None, tb: Any) -> bool:
        self._detach()
        # As in trio, the outermost cancelled scope catches: while the parent is
        # cancelled too, `Cancelled` goes on up.
        parent_cancelled = self.parent is not None and self.parent.cancelled
        if self.cancel_called and exc is not None and not parent_cancelled and _only_cancelled(exc):
            self.cancelled_caught = True
            # Like anyio's fail_after: a manual cancel() is not a timeout.
            if self._delay is not None and self._deadline is not None and self.driver.env.now >= self._deadline:
                raise TimeoutError(f"deadline t={self._deadline} passed") from None
            return True
        return False


def _only_cancelled(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_cancelled(e) for e in exc.exceptions)
    return isinstance(exc, Cancelled)


class _TaskGroup:
    __slots__ = ("driver", "cancel_scope", "children", "errors", "_host", "_waiting")

    def __init__(self, driver: SimDriver) -> None:
        self.driver = driver
        self.cancel_scope = _Scope(driver)
        self.children: set[_Task] = set()
        self.errors: list[BaseException] = []
        self._host: _Task | None = None
        self._waiting = 0

    async def __aenter__(self) -> _TaskGroup:
        self._host = self.driver.current
        self.cancel_scope.__enter__()
        return self

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any, name: object = None) -> None:
        """Start `fn(*args)` as a child; in a cancelled group it runs to its first blocking call."""
        scope = self.cancel_scope
        if not scope._active:
            raise RuntimeError("This task group is not active; no new tasks can be started.")
        coro = fn(*args)
        task = _Task(self.driver, coro, str(name or getattr(fn, "__qualname__", "task")), scope)  # type: ignore[arg-type]
        task.group = self
        self.children.add(task)
        scope.tasks[task] = None
        self.driver._ready.append(task)

    def _child_done(self, task: _Task, exc: BaseException | None) -> None:
        self.children.discard(task)
        self.cancel_scope.tasks.pop(task, None)
        if exc is not None and not isinstance(exc, Cancelled):
            self.errors.append(exc)
            self.cancel_scope.cancel()
        if not self.children and self._waiting:
            assert self._host is not None
            self.driver._wake(self._host, self._waiting)

    async def __aexit__(self, et: Any, exc: BaseException | None, tb: Any) -> bool:
        host = self._host
        assert host is not None
        if exc is not None:
            self.cancel_scope.cancel()
            if not isinstance(exc, Cancelled):
                self.errors.append(exc)
        outer_cancel = False
        while self.children:
            self._waiting = self.driver._block(host)
            try:
                await _suspend()
            except Cancelled:
                self.cancel_scope.cancel()
                outer_cancel = True
            finally:
                self._waiting = 0
        self.cancel_scope._detach()
        if self.errors:
            raise BaseExceptionGroup("errors in task group", self.errors)
        if isinstance(exc, Cancelled):
            return self.cancel_scope.cancel_called and not (host.scope is not None and host.scope.cancelled)
        if outer_cancel and host.scope is not None and host.scope.cancelled:
            raise Cancelled()
        return False


class _Future:
    """One result. The first waiter is the fast path (`_task`, a deadline-heap entry);
    further concurrent waiters, which asks never have, are parked in `_others`."""

    __slots__ = ("driver", "_done", "_value", "_exc", "_task", "_token", "_others", "_when")

    def __init__(self, driver: SimDriver) -> None:
        self.driver = driver
        self._done = False
        self._value: Any = None
        self._exc: BaseException | None = None
        self._task: _Task | None = None
        self._token = 0
        self._others: list[tuple[_Task, int]] | None = None

    def set(self, value: Any) -> None:
        if not self._done:
            self._done, self._value = True, value
            task = self._task  # inlined _resolved(): this is the reply path of every ask
            if task is not None and task.token == self._token:
                task.token = 0
                self.driver._ready.append(task)
            if self._others is not None:
                self._resolved()

    def fail(self, exc: BaseException) -> None:
        if not self._done:
            self._done, self._exc = True, exc
            self._resolved()

    def _resolved(self) -> None:
        task = self._task
        if task is not None and task.token == self._token:
            task.token = 0
            self.driver._ready.append(task)
        if self._others is not None:
            others, self._others = self._others, None
            for task, token in others:
                self.driver._wake(task, token)

    def done(self) -> bool:
        return self._done

    def _on_timeout(self, token: int) -> None:
        if not self._done and self._task is not None:
            self.driver._wake(self._task, token, exc=TimeoutError("no result in time"))

    async def wait(self, timeout: float | None = None) -> Any:
        task = self.driver.current
        scope = task.scope  # type: ignore[union-attr]
        if scope is not None and scope.cancelled:
            raise Cancelled()
        if not self._done:
            if self._task is not None:
                return await self._wait_another(task, timeout)  # type: ignore[arg-type]
            driver = self.driver
            self._task = task
            task.token = self._token = next(driver._tokens)  # type: ignore[union-attr]
            if timeout is not None:
                self._when = driver.env._now + timeout
                fresh = driver._fresh
                fresh.append(self)
                if len(fresh) > driver._fresh_limit:
                    driver._compact_fresh()
            try:
                await _suspend()
            finally:
                self._task = None
        if self._exc is not None:
            raise self._exc
        return self._value

    async def _wait_another(self, task: _Task, timeout: float | None) -> Any:
        if timeout is None:
            await self._park(task)
        else:
            with self.driver.move_on_after(timeout):
                await self._park(task)
            if not self._done:
                raise TimeoutError("no result in time")
        if self._exc is not None:
            raise self._exc
        return self._value

    async def _park(self, task: _Task) -> None:
        if task.scope is not None and task.scope.cancelled:
            raise Cancelled()
        if self._others is None:
            self._others = []
        self._others.append((task, self.driver._block(task)))
        await _suspend()


class _Mailbox:
    """FIFO queue with one reader at a time (an actor's loop); a second blocked reader is refused."""

    __slots__ = ("driver", "_items", "_task", "_token")

    def __init__(self, driver: SimDriver) -> None:
        self.driver = driver
        self._items: deque[Any] = deque()
        self._task: _Task | None = None
        self._token = 0

    def put(self, item: Any) -> None:
        self._items.append(item)
        task = self._task
        if task is not None:
            self._task = None
            if task.token == self._token:
                task.token = 0
                self.driver._ready.append(task)

    def __len__(self) -> int:
        return len(self._items)

    def drain(self) -> list[Any]:
        items = list(self._items)
        self._items.clear()
        return items

    async def get(self) -> Any:
        task = self.driver.current
        scope = task.scope  # type: ignore[union-attr]
        if scope is not None and scope.cancelled:
            raise Cancelled()
        while not self._items:
            if self._task is not None:
                raise RuntimeError("a mailbox has one reader: another task is already waiting in get()")
            self._task = task
            task.token = self._token = next(self.driver._tokens)  # type: ignore[union-attr]
            try:
                await _suspend()
            finally:
                self._task = None
        return self._items.popleft()


class _Event:
    __slots__ = ("driver", "_set", "_waiters")

    def __init__(self, driver: SimDriver) -> None:
        self.driver = driver
        self._set = False
        self._waiters: list[tuple[_Task, int]] = []

    def set(self) -> None:
        if not self._set:
            self._set = True
            for task, token in self._waiters:
                self.driver._wake(task, token)
            self._waiters.clear()

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> None:
        task = self.driver.current
        assert task is not None
        if task.scope is not None and task.scope.cancelled:
            raise Cancelled()
        if not self._set:
            waiter = (task, self.driver._block(task))
            self._waiters.append(waiter)
            try:
                await _suspend()
            except BaseException:
                if not self._set:
                    self._waiters.remove(waiter)  # cancelled: do not keep a stale waiter
                raise


class Deadlock(RuntimeError):
    """Every task is blocked and no timed event is left: nothing can ever happen.

    Raised by `SimDriver.run` after cancelling the blocked tasks (so they unwind and
    release what they hold); the message names them. Timers that no longer wake
    anyone (a cancelled sleep) still advance the clock, so the time in the message
    can be later than the moment the last task blocked.
    """


def _live(entry: tuple[float, int, _Future]) -> bool:
    fut = entry[2]
    return fut._task is not None and fut._token == entry[1] and not fut._done


class SimDriver:
    """Runs coroutines in the virtual time of `env` (a fresh SimPy environment by default)."""

    def __init__(self, env: simpy.Environment | None = None) -> None:
        self.env = env if env is not None else simpy.Environment()
        self.current: _Task | None = None
        self._ready: deque[_Task] = deque()
        self._tokens = itertools.count(1)
        # Deadlines of `Future.wait`. Most asks are answered before the clock moves, so a
        # waiting future only goes into a plain list; the list is filtered and moved to the
        # heap of (time, token, future) when the clock is about to move (or it grows long).
        self._fresh: list[_Future] = []
        self._fresh_limit = 8192
        self._wakeup_callbacks = (_fire_wakeup,)
        self._deadlines: list[tuple[float, int, _Future]] = []
        # `future` is on the path of every ask: a C-level partial saves a Python call.
        self.future: Callable[[], _Future] = functools.partial(_Future, self)  # type: ignore[method-assign]

    # -- scheduler ---------------------------------------------------------------
    def _block(self, task: _Task) -> int:
        task.token = token = next(self._tokens)
        return token

    def _compact_fresh(self) -> None:
        self._fresh = [f for f in self._fresh if f._task is not None and not f._done]
        self._fresh_limit = max(8192, 2 * len(self._fresh))  # amortised O(1) when most still wait

    def _next_deadline(self) -> float:
        deadlines = self._deadlines
        if self._fresh:
            for fut in self._fresh:
                if fut._task is not None and not fut._done:
                    heapq.heappush(deadlines, (fut._when, fut._token, fut))
            self._fresh = []
        while deadlines and not _live(deadlines[0]):
            heapq.heappop(deadlines)
        return deadlines[0][0] if deadlines else math.inf

    def _fire_deadline(self) -> None:
        when, token, fut = heapq.heappop(self._deadlines)
        if self.env.now < when:
            self.env.run(until=when)  # advance the shared clock; no model event is earlier
        fut._on_timeout(token)

    def _wake(self, task: _Task, token: int, value: Any = None, exc: BaseException | None = None) -> None:
        if task.token != token:
            return
        task.token = 0
        task.value, task.exc = value, exc
        self._ready.append(task)

    def _finish(self, task: _Task, exc: BaseException | None) -> None:
        if task.group is not None:
            task.group._child_done(task, exc)
        elif task.handle is not None:
            task.handle.done, task.handle.error = True, exc

    # -- stepping from outside (property tests drive a live system between rules) --------
    def start(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Handle:
        """Start `fn(*args)` as a top-level task; nothing runs until `advance`."""
        handle = Handle()

        async def root() -> None:
            handle.result = await fn(*args)

        task = _Task(self, root(), getattr(fn, "__qualname__", "task"), None)
        task.handle = handle
        self._ready.append(task)
        return handle

    def advance(self, until: Callable[[], bool] | None = None, to: float | None = None) -> None:
        """Run until `until()` holds or the clock reaches `to` (whichever comes first).

        Raises `Deadlock` when `until` can no longer come true because nothing is scheduled.
        """
        env = self.env
        while True:
            self._run_ready()
            if until is not None and until():
                return
            t_model = env.peek()
            t_deadline = self._next_deadline() if self._deadlines or self._fresh else math.inf
            t_next = min(t_model, t_deadline)
            if to is not None and t_next > to:
                if env.now < to:
                    env.run(until=to)
                return
            if t_next == math.inf:
                raise Deadlock(f"nothing is scheduled at t={env.now} and the awaited condition does not hold")
            if t_deadline < t_model:
                self._fire_deadline()
            else:
                env.step()

    def _run_ready(self) -> None:
        ready = self._ready
        popleft = ready.popleft
        while ready:
            task = popleft()
            self.current = task
            try:
                if task.exc is None:
                    task.coro.send(task.value)  # a stale value is harmless: waits read their own
                else:
                    exc, task.exc = task.exc, None
                    task.coro.throw(exc)
            except StopIteration:
                self._finish(task, None)
            except BaseException as exc:  # noqa: BLE001 - handed to the task's group
                self._finish(task, exc)
        self.current = None

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any, until: float | None = None) -> T:
        """Run `fn(*args)` in virtual time and return what it returned.

        With `until`, the clock runs to exactly `until` (SimPy models go on after `fn`
        returned) and `fn` is cancelled if still running then (the result is None).
        Raises what `fn` raised, or `Deadlock` when every task waits for something
        that cannot happen.
        """
        outcome: list[Any] = []
        groups: list[_TaskGroup] = []

        async def stop_at(scope: _Scope) -> None:
            assert until is not None
            await self.sleep(until - self.env.now)
            scope.cancel()

        async def root() -> None:
            async with self.task_group() as tg:
                groups.append(tg)
                if until is not None:
                    tg.start_soon(stop_at, tg.cancel_scope)
                outcome.append(await fn(*args))

        top = _Task(self, root(), "root", None)
        errors: list[BaseException] = []
        self._ready.append(top)
        done = []

        def finished(task: _Task, exc: BaseException | None) -> None:
            done.append(True)
            if exc is not None:
                errors.append(exc)

        original = self._finish
        self._finish = lambda task, exc: finished(task, exc) if task is top else original(task, exc)  # type: ignore[method-assign]
        try:
            env = self.env
            while True:
                self._run_ready()
                if done:
                    break
                t_model = env.peek()
                t_deadline = self._next_deadline() if self._deadlines or self._fresh else math.inf
                if t_deadline < t_model:
                    self._fire_deadline()
                elif t_model == math.inf:
                    raise self._deadlock(groups[0].cancel_scope)
                else:
                    env.step()
        finally:
            self._finish = original  # type: ignore[method-assign]
        if errors:
            exc = errors[0]
            if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                raise exc.exceptions[0]
            raise exc
        return cast(T, outcome[0] if outcome else None)

    def _deadlock(self, root: _Scope) -> Deadlock:
        """Describe the blocked tasks, then cancel them all so that they unwind."""
        blocked: list[str] = []

        def walk(scope: _Scope) -> None:
            blocked.extend(task.name for task in scope.tasks if task.token)
            for child in scope.children:
                walk(child)

        walk(root)
        root.cancel()
        self._run_ready()
        shown = ", ".join(blocked[:10]) + (f" and {len(blocked) - 10} more" if len(blocked) > 10 else "")
        return Deadlock(f"all tasks blocked at t={self.env.now} and nothing is scheduled; blocked: {shown}")

    # -- the Driver protocol -----------------------------------------------------
    def now(self) -> float:
        return float(self.env.now)

    async def sleep(self, seconds: float) -> None:
        task = self.current
        assert task is not None
        if task.scope is not None and task.scope.cancelled:
            raise Cancelled()
        task.token = token = next(self._tokens)
        self.env.schedule(_Wakeup(self, task, token), simpy.events.NORMAL, max(0.0, seconds))  # type: ignore[arg-type]
        await _suspend()

    async def checkpoint(self) -> None:
        await self.sleep(0)

    async def wait_simpy(self, event: simpy.Event) -> Any:
        """Block until a SimPy event fires; return its value (raise its failure)."""
        task = self.current
        assert task is not None
        if task.scope is not None and task.scope.cancelled:
            raise Cancelled()
        if event.processed:
            if not event.ok:
                raise cast(BaseException, event.value)
            return event.value
        token = self._block(task)

        def resume(ev: simpy.Event) -> None:
            if ev.ok:
                self._wake(task, token, ev.value)
            else:
                ev.defused = True
                self._wake(task, token, exc=ev.value)

        event.callbacks.append(resume)
        return await _suspend()

    def task_group(self) -> _TaskGroup:
        return _TaskGroup(self)

    def cancel_scope(self) -> _Scope:
        return _Scope(self)

    def move_on_after(self, seconds: float) -> _Scope:
        return _Scope(self, deadline=self.env.now + seconds)

    def fail_after(self, seconds: float) -> _Scope:
        return _Scope(self, delay=seconds)

    def mailbox(self) -> _Mailbox:
        return _Mailbox(self)

    def future(self) -> _Future:
        return _Future(self)

    def event(self) -> _Event:
        return _Event(self)

    def cancelled_exc(self) -> type[BaseException]:
        return Cancelled

"""The seam between actor code and the thing that runs it.

A `Driver` gives the concurrency primitives actors use: clock, sleep, task groups,
cancel scopes, mailboxes, futures, events. Two drivers implement it with the same
semantics (checked by tests/runtime/test_conformance.py):

- `AnyioDriver` (here): production, on anyio (asyncio by default, trio too).
- `sim.driver.SimDriver`: deterministic virtual time on a SimPy environment.

Semantics both follow (those of trio/anyio):
- Cancellation is level-triggered: inside a cancelled scope every blocking call
  raises the driver's cancelled exception; the scope that was cancelled swallows it
  on exit. `Mailbox.get` on a non-empty mailbox returns without blocking, but still
  raises when its scope is cancelled. `fail_after` raises TimeoutError only when its
  deadline passed, not after a manual `cancel()`.
- A task group waits for all its children. The first child failure cancels the
  group; every failure comes out of the group as one BaseExceptionGroup. A child
  started in a cancelled group runs until its first blocking call; starting a child
  in a group that is not active (not entered yet, or exited) raises RuntimeError.
- `Future.wait(timeout)` raises TimeoutError past the deadline; a future resolved
  before the deadline always wins.
- A mailbox has one reader at a time: a second task blocking in `get` while another
  waits there is refused with RuntimeError.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class TaskGroup(Protocol):
    cancel_scope: Any

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any, name: object = None) -> None: ...

    async def __aenter__(self) -> TaskGroup: ...

    async def __aexit__(self, *exc: Any) -> bool | None: ...


class CancelScope(Protocol):
    @property
    def cancel_called(self) -> bool: ...

    @property
    def cancelled_caught(self) -> bool: ...

    def cancel(self) -> None: ...

    def __enter__(self) -> CancelScope: ...

    def __exit__(self, *exc: Any) -> bool | None: ...


class Mailbox(Protocol[T]):
    def put(self, item: T) -> None: ...

    async def get(self) -> T: ...

    def drain(self) -> list[T]: ...

    def __len__(self) -> int: ...


class Future(Protocol[T]):
    def set(self, value: T) -> None: ...

    def fail(self, exc: BaseException) -> None: ...

    def done(self) -> bool: ...

    async def wait(self, timeout: float | None = None) -> T: ...


class Event(Protocol):
    def set(self) -> None: ...

    def is_set(self) -> bool: ...

    async def wait(self) -> None: ...


class Driver(Protocol):
    """What actor code may use to wait, run concurrently and read time."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    async def checkpoint(self) -> None: ...

    def task_group(self) -> TaskGroup: ...

    def cancel_scope(self) -> CancelScope: ...

    def move_on_after(self, seconds: float) -> CancelScope: ...

    def fail_after(self, seconds: float) -> CancelScope: ...

    def mailbox(self) -> Mailbox[Any]: ...

    def future(self) -> Future[Any]: ...

    def event(self) -> Event: ...

    def cancelled_exc(self) -> type[BaseException]: ...


class _AnyioFuture(Generic[T]):
    __slots__ = ("_event", "_value", "_exc", "_done")

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._value: Any = None
        self._exc: BaseException | None = None
        self._done = False

    def set(self, value: T) -> None:
        if not self._done:
            self._done, self._value = True, value
            self._event.set()

    def fail(self, exc: BaseException) -> None:
        if not self._done:
            self._done, self._exc = True, exc
            self._event.set()

    def done(self) -> bool:
        return self._done

    async def wait(self, timeout: float | None = None) -> T:
        if timeout is None:
            await self._event.wait()
        else:
            with anyio.move_on_after(timeout):
                await self._event.wait()
            if not self._done:
                raise TimeoutError(f"no result within {timeout} s")
        if self._exc is not None:
            raise self._exc
        return self._value  # type: ignore[no-any-return]


class _AnyioMailbox(Generic[T]):
    """A deque and an event: unlike a memory object stream, nothing to close."""

    __slots__ = ("_items", "_ready")

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._ready: anyio.Event | None = None  # set by put() while a reader waits

    def put(self, item: T) -> None:
        self._items.append(item)
        ready = self._ready
        if ready is not None:
            self._ready = None
            ready.set()

    async def get(self) -> T:
        if self._items:
            # a full checkpoint, as in anyio's streams: raises when cancelled, and yields
            # so that a busy actor does not starve the event loop
            await anyio.lowlevel.checkpoint()
        while not self._items:
            if self._ready is not None:
                raise RuntimeError("a mailbox has one reader: another task is already waiting in get()")
            ready = self._ready = anyio.Event()
            try:
                await ready.wait()
            finally:
                if self._ready is ready:
                    self._ready = None
        return self._items.popleft()

    def drain(self) -> list[T]:
        items = list(self._items)
        self._items.clear()
        return items

    def __len__(self) -> int:
        return len(self._items)


class AnyioDriver:
    """Production driver: real time, anyio primitives (asyncio or trio underneath)."""

    def __init__(self) -> None:
        self._epoch_offset: float | None = None

    def now(self) -> float:
        """Seconds since the Unix epoch, read from the event loop's clock.

        The loop clock (`anyio.current_time()`) is the one timeouts and sleeps use, so
        `now()` agrees with them, and a virtual clock (trio's `MockClock`) drives it in
        tests. The offset to the epoch is captured once, at the first call of a run
        (`run()` resets it), so differences between two readings are exact loop-clock
        differences. Outside an event loop, this is plain `time.time()`.
        """
        try:
            loop_time = anyio.current_time()
        except RuntimeError:  # no event loop running in this thread (anyio's NoEventLoopError)
            return time.time()
        if self._epoch_offset is None:
            self._epoch_offset = time.time() - loop_time
        return self._epoch_offset + loop_time

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    async def checkpoint(self) -> None:
        await anyio.lowlevel.checkpoint()

    def task_group(self) -> TaskGroup:
        return anyio.create_task_group()  # type: ignore[return-value]

    def cancel_scope(self) -> CancelScope:
        return anyio.CancelScope()

    def move_on_after(self, seconds: float) -> CancelScope:
        return anyio.move_on_after(seconds)

    def fail_after(self, seconds: float) -> CancelScope:
        return anyio.fail_after(seconds)  # type: ignore[return-value]

    def mailbox(self) -> Mailbox[Any]:
        return _AnyioMailbox()

    def future(self) -> Future[Any]:
        return _AnyioFuture()

    def event(self) -> Event:
        return anyio.Event()

    def cancelled_exc(self) -> type[BaseException]:
        return anyio.get_cancelled_exc_class()

    def run(
        self,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        backend: str = "asyncio",
        backend_options: Mapping[str, Any] | None = None,
    ) -> T:
        """`anyio.run`; e.g. `backend="trio", backend_options={"clock": MockClock(...)}`."""
        self._epoch_offset = None
        return anyio.run(fn, *args, backend=backend, backend_options=dict(backend_options or {}))

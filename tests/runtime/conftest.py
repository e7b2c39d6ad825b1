"""The three targets of the runtime conformance suite, and a trace recorder.

A test that takes the `target` fixture runs three times:

- `sim`: `SimDriver`, virtual time on a SimPy clock; times are exact.
- `trio`: `AnyioDriver` on trio with `MockClock(autojump_threshold=0)`; virtual time
  too (exact up to float rounding, which `Trace` removes).
- `asyncio`: `AnyioDriver` on asyncio, real time. One time unit is 10 ms, so tests
  stay fast; they assert orderings, and times only as lower bounds.

Tests speak in time units (`target.t(2)` is two units, in seconds), never in seconds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
import pytest
import trio.testing

from runtime.driver import AnyioDriver, Driver
from sim.driver import SimDriver

T = TypeVar("T")

TARGETS = ("sim", "asyncio", "trio")
ASYNCIO_UNIT = 0.01  # seconds per time unit on the real clock


@attrs.frozen
class Target:
    """One driver under test and how to run a coroutine function on it."""

    name: str
    driver: Driver
    unit: float

    @property
    def virtual(self) -> bool:
        """True when the clock is virtual, so exact times can be asserted."""
        return self.name != "asyncio"

    def t(self, units: float) -> float:
        """`units` time units, in seconds of this target's clock."""
        return units * self.unit

    def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        driver = self.driver
        if isinstance(driver, SimDriver):
            return driver.run(fn)
        assert isinstance(driver, AnyioDriver)
        if self.name == "trio":
            clock = trio.testing.MockClock(autojump_threshold=0)
            return driver.run(fn, backend="trio", backend_options={"clock": clock})
        return driver.run(fn, backend="asyncio")

    def trace(self) -> Trace:
        return Trace(self)


class Trace:
    """What happened, in order, with when it happened (time units since `start()`)."""

    def __init__(self, target: Target) -> None:
        self._target = target
        self._t0: float | None = None
        self.entries: list[tuple[Any, float]] = []

    def start(self) -> None:
        """Set time zero; call it inside the run (the anyio clock needs a running loop)."""
        self._t0 = self._target.driver.now()

    def __call__(self, label: Any) -> None:
        assert self._t0 is not None, "call trace.start() first, inside the run"
        elapsed = (self._target.driver.now() - self._t0) / self._target.unit
        self.entries.append((label, round(elapsed, 3)))

    @property
    def labels(self) -> list[Any]:
        return [label for label, _ in self.entries]

    @property
    def times(self) -> list[float]:
        return [when for _, when in self.entries]

    def assert_times(self, expected: list[float]) -> None:
        """Exact on a virtual clock; on the real clock, no entry earlier than expected."""
        assert len(self.times) == len(expected), self.entries
        if self._target.virtual:
            assert self.times == expected, self.entries
        else:
            assert all(got >= want - 0.01 for got, want in zip(self.times, expected, strict=True)), self.entries


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> Target:
    name: str = request.param
    if name == "sim":
        return Target(name, SimDriver(), 1.0)
    return Target(name, AnyioDriver(), ASYNCIO_UNIT if name == "asyncio" else 1.0)

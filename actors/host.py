"""The host agent: one actor per hypervisor host, the only code that calls its port.

It runs hypervisor operations concurrently (each request replies when its operation
ends) and holds no business rules: the AZ decides what runs where.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import attrs

from runtime.actor import Actor, Reply
from runtime.errors import ActorCrashed, CloudError, Conflict, InvalidTransition
from runtime.ports import DomainSpec, Hypervisor


@attrs.frozen
class BuildServer:
    """Define and start a server; a stale definition of the same id is replaced."""

    spec: DomainSpec


@attrs.frozen
class StartServer:
    """Start a server; one that runs already is left running."""

    server_id: str


@attrs.frozen
class StopServer:
    """Stop a server; one that is stopped already (its host rebooted under it) is left so."""

    server_id: str


@attrs.frozen
class RebootServer:
    server_id: str


@attrs.frozen
class ResizeServer:
    server_id: str
    vcpus: int
    ram_mb: int


@attrs.frozen
class DestroyServer:
    server_id: str


@attrs.frozen
class ListDomains:
    pass


@attrs.frozen
class Reconcile:
    """Make the host match the AZ: undefine every domain not in `keep`, start those in
    `start` that are stopped, stop those in `stop` that run."""

    keep: frozenset[str]
    start: frozenset[str]
    stop: frozenset[str] = frozenset()


@attrs.frozen
class Reconciled:
    removed: tuple[str, ...]
    started: tuple[str, ...]
    running: tuple[str, ...]  # of `start`: those that run now, started or found running


class HostAgent(Actor):
    def __init__(self, hypervisor: Hypervisor) -> None:
        self.hv = hypervisor

    async def receive(self, msg: Any) -> Any:
        hv = self.hv
        op: Coroutine[Any, Any, Any]
        match msg:
            case BuildServer(spec):
                op = self._build(spec)
            case StartServer(sid):
                op = self._start(sid)
            case StopServer(sid):
                op = self._stop(sid)
            case RebootServer(sid):
                op = self._reboot(sid)
            case ResizeServer(sid, vcpus, ram_mb):
                op = hv.resize(sid, vcpus, ram_mb)
            case DestroyServer(sid):
                op = hv.undefine(sid)
            case ListDomains():
                op = hv.list()
            case Reconcile(keep, start, stop):
                op = self._reconcile(keep, start, stop)
            case _:
                return await super().receive(msg)
        self.ctx.start_soon(self._answer, self.ctx.defer(), op)
        return None

    async def _answer(self, reply: Reply, op: Coroutine[Any, Any, Any]) -> None:
        """Run one operation concurrently with the others and answer its request."""
        try:
            result = await op
        except CloudError as exc:
            reply.fail(exc)
        except Exception as exc:
            reply.fail(ActorCrashed(self.ctx.path, f"host operation failed: {exc!r}"))
            raise
        else:
            reply.set(result)

    async def _build(self, spec: DomainSpec) -> None:
        try:
            await self.hv.define(spec)
        except Conflict:
            await self.hv.undefine(spec.server_id)
            await self.hv.define(spec)
        await self.hv.start(spec.server_id)

    # A start or stop is asked for the state it leaves; the port refuses one that finds the
    # domain so already (a host that rebooted under the call stopped it): that is done too.
    async def _start(self, sid: str) -> None:
        try:
            await self.hv.start(sid)
        except InvalidTransition:
            pass  # running already

    async def _stop(self, sid: str) -> None:
        try:
            await self.hv.stop(sid)
        except InvalidTransition:
            pass  # stopped already

    async def _reboot(self, sid: str) -> None:
        await self._stop(sid)  # a reboot of a stopped domain just starts it
        await self._start(sid)

    async def _reconcile(self, keep: frozenset[str], start: frozenset[str], stop: frozenset[str]) -> Reconciled:
        removed, started, running = [], [], []
        for dom in await self.hv.list():
            if dom.server_id not in keep:
                await self.hv.undefine(dom.server_id)
                removed.append(dom.server_id)
            elif dom.server_id in start:
                if not dom.running:
                    await self._start(dom.server_id)
                    started.append(dom.server_id)
                running.append(dom.server_id)
            elif dom.server_id in stop and dom.running:
                await self._stop(dom.server_id)
        return Reconciled(tuple(removed), tuple(started), tuple(running))

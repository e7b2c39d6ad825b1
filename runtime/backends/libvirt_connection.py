"""One libvirt connection that notices when its host stops answering.

Invariants: every blocking libvirt call runs in a worker thread
(`anyio.to_thread.run_sync`), never on the event loop; a `libvirtError` that
escapes a call becomes `HostUnreachable` when the connection is gone and
`BackendError` otherwise, chained either way.

Noticing a lost host is libvirt keepalive's job. Keepalive needs a libvirt event
loop, so the first connection starts libvirt's default one in a daemon thread (once
per process). Each connection then sends a probe every `keepalive_interval_s` and
libvirt closes it after `keepalive_count` unanswered probes, or at once on EOF; the
close callback sets a `threading.Event` that `wait_lost` polls every 0.1 s with
`anyio.sleep` (simpler than waking the async loop from libvirt's thread, and small
next to the keepalive delay). In-process drivers (`test:///`) have no keepalive and
never lose their connection.

Opening has no keepalive yet (a stopped daemon accepts the socket and never
answers), so it is bounded by `open_timeout_s` = interval x (count + 1); past it the
host counts as unreachable and the worker thread is abandoned (a connection it opens
late is closed when collected).

Cancellation: a cancelled call still waits for the libvirt call running in its
thread (libvirt calls cannot be interrupted; keepalive bounds them). Only opening is
abandoned at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import attrs
import libvirt

from runtime.errors import BackendError
from runtime.ports import HostUnreachable

T = TypeVar("T")

_POLL_S = 0.1  # how often wait_lost looks at the close flag
_RETRY_S = 1.0  # pause between reconnection attempts in wait_back
# Failures to open that mean "nobody answers there", as opposed to a refusal.
_NO_ANSWER = frozenset({libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_OPERATION_TIMEOUT})

_event_loop_lock = threading.Lock()
_event_loop_running = threading.Event()


def _start_event_loop() -> None:
    with _event_loop_lock:
        if _event_loop_running.is_set():
            return
        # Errors reach us as exceptions; without this libvirt also prints each to stderr.
        libvirt.registerErrorHandler(_ignore_error, None)
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run_event_loop, name="libvirt-events", daemon=True).start()
        _event_loop_running.set()


def _ignore_error(_ctx: object, _err: object) -> None:
    return None


def _run_event_loop() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


def _alive(conn: Any) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _close_quietly(conn: Any) -> None:
    """Close a connection that may already be dead; its errors say nothing new."""
    try:
        conn.unregisterCloseCallback()
    except libvirt.libvirtError:
        pass
    try:
        conn.close()
    except libvirt.libvirtError:
        pass


@attrs.frozen
class _Session:
    conn: Any  # libvirt.virConnect
    closed: threading.Event  # set by libvirt's close callback, or by us on a dead call


class Connection:
    """A libvirt connection to `uri`, opened on first use and reopened after a loss.

    `name` is the host that `HostUnreachable` names.
    """

    def __init__(self, uri: str, name: str, *, keepalive_interval_s: int = 5, keepalive_count: int = 3) -> None:
        self.uri = uri
        self.name = name
        self.keepalive_interval_s = keepalive_interval_s
        self.keepalive_count = keepalive_count
        self._session: _Session | None = None
        self._lock = anyio.Lock()

    @property
    def open_timeout_s(self) -> float:
        return float(self.keepalive_interval_s * (self.keepalive_count + 1))

    async def call(self, fn: Callable[[Any], T]) -> T:
        """Run `fn(conn)` in a worker thread; `fn` may raise `runtime.errors` itself."""
        session = await self._current()
        return await anyio.to_thread.run_sync(self._guarded, session, fn)

    async def wait_lost(self) -> None:
        """Return once the connection closed and opening a new one failed."""
        while True:
            try:
                session = await self._current()
            except HostUnreachable:
                return
            while not session.closed.is_set():
                await anyio.sleep(_POLL_S)

    async def wait_back(self) -> None:
        """Return once a connection is open (at once if one is)."""
        while True:
            try:
                await self._current()
                return
            except HostUnreachable:
                await anyio.sleep(_RETRY_S)

    async def aclose(self) -> None:
        async with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.closed.set()
            await anyio.to_thread.run_sync(_close_quietly, session.conn)

    def _guarded(self, session: _Session, fn: Callable[[Any], T]) -> T:
        try:
            return fn(session.conn)
        except libvirt.libvirtError as exc:
            if not _alive(session.conn):
                session.closed.set()
                raise HostUnreachable(
                    self.name, f"lost the connection to {self.uri}: {exc.get_error_message()}"
                ) from exc
            raise BackendError(f"libvirt at {self.uri} failed: {exc.get_error_message()}") from exc

    async def _current(self) -> _Session:
        async with self._lock:
            session = self._session
            if session is not None and not session.closed.is_set():
                return session
            self._session = None
            if session is not None:
                await anyio.to_thread.run_sync(_close_quietly, session.conn)
            self._session = await self._open()
            return self._session

    async def _open(self) -> _Session:
        _start_event_loop()
        with anyio.move_on_after(self.open_timeout_s):
            return await anyio.to_thread.run_sync(self._open_blocking, abandon_on_cancel=True)
        raise HostUnreachable(self.name, f"{self.uri} did not answer within {self.open_timeout_s:g} s")

    def _open_blocking(self) -> _Session:
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            raise self._open_failed(exc) from exc
        closed = threading.Event()
        try:
            conn.registerCloseCallback(lambda _conn, _reason, _opaque: closed.set(), None)
            conn.setKeepAlive(self.keepalive_interval_s, self.keepalive_count)
        except libvirt.libvirtError as exc:
            # In-process drivers (test:///) support neither, and have no link to lose.
            if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                _close_quietly(conn)
                raise BackendError(f"cannot set up keepalive on {self.uri}: {exc.get_error_message()}") from exc
        return _Session(conn, closed)

    def _open_failed(self, exc: Any) -> BackendError:
        code, message = exc.get_error_code(), exc.get_error_message()
        driver = urlsplit(self.uri).scheme.partition("+")[0]
        if code == libvirt.VIR_ERR_NO_CONNECT:
            return BackendError(
                f"no libvirt driver for {self.uri} on this machine ({message}); install libvirt's "
                f"'{driver}' driver and restart libvirtd, or use qemu:///system (test:///default in unit tests)"
            )
        if code in _NO_ANSWER:
            instead = "" if self.uri == "qemu:///system" else ", or use qemu:///system"
            return HostUnreachable(
                self.name,
                f"cannot connect to {self.uri} ({message}); start libvirtd there with a '{driver}' driver "
                f"(on this machine: bash .ci/libvirtd-start.sh){instead}",
            )
        return BackendError(f"libvirt refused to open {self.uri}: {message}; check the URI and its credentials")

"""Durable backups for `fe daemon` (issue 5): the region's BackupService state in the StateStore.

The service's whole state (`actors.backups.ExportBackups`: the catalogue with hidden backups,
chains and heads, the restores in flight, the policies with their bindings and next tick) is
one record, kind `backups`, key `region`, written whole when it changed:
- after every backup request `Control.ask` passes (`Control.after_backups`, awaited before the
  API answers: an acknowledged request is in the store);
- after the service's own events (a backup done, failed or erased, a policy's backup or
  retention): `BackupSaver` coalesces a burst of events into one save.
Saves are serialized per Control, each exporting afresh, so an older state never overwrites a
newer one. At start `restore_backups` imports the record into the new service before the API
serves (creates that were in flight come back in error, see `BackupService._import`).
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

import anyio

from actors.backups import ExportBackups, ImportBackups
from actors.region import RegionServices
from daemon.control import ASK_TIMEOUT_S, Control
from runtime.state import Put

log = logging.getLogger(__name__)

KIND, KEY = "backups", "region"
FINAL_SAVE_TIMEOUT_S = 10.0  # at shutdown, the last coalesced save waits this long at most
RETRY_S = 1.0  # after a failed save (store unreachable), the next try

_locks: weakref.WeakKeyDictionary[Control, anyio.Lock] = weakref.WeakKeyDictionary()


async def restore_backups(control: Control, services: RegionServices) -> int:
    """Import the stored state into the (fresh) backup service; returns how many backups it holds
    (hidden ones included), 0 when nothing is stored or the region has no backup service."""
    state = control.records.get((KIND, KEY))
    if state is None and control.store is not None:  # not among the kinds loaded at start
        record = await control.store.get(KIND, KEY)
        if record is not None:
            state = control.records[(KIND, KEY)] = record.value
    if state is None:
        return 0
    if services.backups is None:
        log.warning("the state holds %d backups but the region has no backup service ([storage.s3]): they are "
                    "not served, and kept in the store", len(state.get("backups", [])))
        return 0
    count = await services.backups.ask(ImportBackups(state), timeout=ASK_TIMEOUT_S)
    assert isinstance(count, int)
    return count


async def save_backups(control: Control, services: RegionServices) -> None:
    """Write the backup service's state if it changed since the last write (durable on return)."""
    if services.backups is None or control.store is None:
        return
    lock = _locks.setdefault(control, anyio.Lock())
    async with lock:
        state: dict[str, Any] = await services.backups.ask(ExportBackups(), timeout=ASK_TIMEOUT_S)
        if control.records.get((KIND, KEY)) != state:
            await control.write([Put(KIND, KEY, state)])


class BackupSaver:
    """Saves after the backup service's events: `on_event` is an EventLog sink (it only marks the
    state dirty), `run` saves while it is dirty; events during a save make one more save. On
    cancellation (daemon stop) a pending save is still made, shielded."""

    def __init__(self, control: Control, services: RegionServices) -> None:
        self.control = control
        self.services = services
        self.source = services.backups.path if services.backups is not None else None
        self._dirty = anyio.Event()

    async def save(self) -> None:
        """For `Control.after_backups`."""
        await save_backups(self.control, self.services)

    def on_event(self, time: float, source: str, kind: str, fields: dict[str, Any]) -> None:
        if source == self.source:
            self._dirty.set()

    async def run(self) -> None:
        try:
            while True:
                await self._dirty.wait()
                self._dirty = anyio.Event()
                try:
                    await self.save()
                except Exception:
                    log.exception("saving the backups' state failed; trying again in %.0f s", RETRY_S)
                    self._dirty.set()
                    await anyio.sleep(RETRY_S)
                except BaseException:  # cancelled mid-save: saved again below
                    self._dirty.set()
                    raise
        finally:
            if self._dirty.is_set():
                with anyio.CancelScope(shield=True), anyio.move_on_after(FINAL_SAVE_TIMEOUT_S):
                    try:
                        await self.save()
                    except Exception:
                        log.exception("the last save of the backups' state failed: what changed since the "
                                      "previous save is lost")

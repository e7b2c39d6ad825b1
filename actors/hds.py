"""End of contract under HDS (SPEC TEN-5): every piece of a tenant's data deleted within
two months, and a record that certifies what was deleted and when.

The region runs `erase` when a tenant's contract ends. The tenant is closed first (no
new resource can appear behind the eraser), then, in this order: its sDRS protection
groups (drill deleted, protection stopped, servers unprotected, group deleted; the
replicas go with them), its backups (their data in the object store), its servers (their
system disks with them), its remaining volumes. Each deletion is logged with its time;
what cannot be deleted (a group failed over to its recovery AZ, a store that stays
unreachable) is retried until the deadline and then listed as `left`, never silently
dropped. The record carries a SHA-256 over its items so a copy can be checked later.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import attrs

from actors.backups import DeleteBackup, ListBackups
from actors.sdrs import DeleteDrill, DeleteGroup, GetGroup, GetJob, StopProtection, UnprotectServer
from actors.sdrs import ReportGroups as ListGroups
from actors.tenant import ListServers, RemoveServer
from actors.volumes import DeleteVolume, ListVolumes
from runtime.actor import ActorRef
from runtime.errors import CloudError, NotFound

ERASE_WITHIN_S = 61 * 86400.0
"""TEN-5: 'within 2 months at most'; counted as 61 days, the longest two calendar months."""
RETRY_S = 3600.0


@attrs.frozen
class EndContract:
    """The tenant's contract ended: close it and erase its data, starting `after_s` from
    now (0: at once; the tenant may have asked for earlier deletion, TEN-5). Reply: None."""

    tenant: str
    after_s: float = 0.0


@attrs.frozen
class GetDeletionRecord:
    """Reply: DeletionRecord (NotFound while no contract of that tenant has ended)."""

    tenant: str


@attrs.frozen
class Deleted:
    kind: str  # protection-group | backup | server | volume
    id: str
    at_s: float


@attrs.frozen
class DeletionRecord:
    tenant: str
    contract_end_s: float
    deadline_s: float
    items: tuple[Deleted, ...] = ()
    left: tuple[tuple[str, str, str], ...] = ()  # (kind, id, why) not deleted by the deadline
    completed_s: float | None = None  # everything deleted

    @property
    def within_limit(self) -> bool:
        return self.completed_s is not None and self.completed_s <= self.deadline_s

    @property
    def sha256(self) -> str:
        body = json.dumps([self.tenant, self.contract_end_s, [attrs.astuple(i) for i in self.items],
                           [list(x) for x in self.left]], separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()


@attrs.define
class Eraser:
    """Erases one tenant's data through the region's services, as their public messages allow."""

    tenant: str
    ref: ActorRef
    backups: ActorRef | None
    sdrs: ActorRef | None
    now: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]]
    deadline_s: float
    items: list[Deleted] = attrs.field(factory=list)
    left: dict[tuple[str, str], str] = attrs.field(factory=dict)

    async def run(self) -> None:
        while True:
            self.left.clear()
            await self._groups()
            await self._backups()
            await self._servers()
            await self._volumes()
            if not self.left or self.now() + RETRY_S > self.deadline_s:
                return
            await self.sleep(RETRY_S)

    def _done(self, kind: str, ident: str) -> None:
        self.items.append(Deleted(kind, ident, self.now()))

    async def _try(self, kind: str, ident: str, step: Callable[[], Awaitable[Any]]) -> bool:
        try:
            await step()
        except NotFound:
            return True  # already gone (deleted by the tenant, or by an earlier pass)
        except CloudError as exc:
            self.left[(kind, ident)] = str(exc)
            return False
        return True

    async def _job(self, msg: object) -> None:
        assert self.sdrs is not None
        accepted = await self.sdrs.ask(msg, timeout=None)
        while (view := await self.sdrs.ask(GetJob(accepted.job))).status == "running":
            await self.sleep(1.0)
        if view.status != "success":
            raise _JobFailed(f"{type(msg).__name__} ended {view.status}: {view.error}")

    async def _groups(self) -> None:
        if self.sdrs is None:
            return
        for report in await self.sdrs.ask(ListGroups()):
            if report.tenant != self.tenant or report.state == "deleted":
                continue
            gid = report.group

            async def erase(gid: str = gid) -> None:
                assert self.sdrs is not None
                group = await self.sdrs.ask(GetGroup(gid))
                if group.drill_vpc is not None:
                    await self._job(DeleteDrill(gid))
                if group.state == "protected":
                    await self._job(StopProtection(gid))
                for sid in group.servers:
                    await self.sdrs.ask(UnprotectServer(gid, sid), timeout=None)
                await self._job(DeleteGroup(gid))
            if await self._try("protection-group", gid, erase):
                self._done("protection-group", gid)

    async def _backups(self) -> None:
        if self.backups is None:
            return
        backups = self.backups
        for b in await backups.ask(ListBackups(self.tenant)):
            if b.state not in ("deleting", "deleted"):
                if await self._try("backup", b.id, partial(backups.ask, DeleteBackup(self.tenant, b.id), None)):
                    self._done("backup", b.id)
        for b in await backups.ask(ListBackups(self.tenant)):
            if b.state != "deleted":
                self.left.setdefault(("backup", b.id), "its data is still being erased")

    async def _servers(self) -> None:
        for s in await self.ref.ask(ListServers()):
            if await self._try("server", s.id, partial(self.ref.ask, RemoveServer(s.id), None)):
                self._done("server", s.id)

    async def _volumes(self) -> None:
        for v in await self.ref.ask(ListVolumes(self.tenant)):
            if await self._try("volume", v.id, partial(self.ref.ask, DeleteVolume(self.tenant, v.id), None)):
                self._done("volume", v.id)

    def record(self, contract_end_s: float, finished: bool) -> DeletionRecord:
        """While erasing (`finished` False) the record lists what is deleted so far."""
        left = tuple((k, i, why) for (k, i), why in sorted(self.left.items()))
        done = finished and not left
        return DeletionRecord(self.tenant, contract_end_s, self.deadline_s, tuple(self.items), left,
                              (self.items[-1].at_s if self.items else contract_end_s) if done else None)


class _JobFailed(CloudError):
    pass

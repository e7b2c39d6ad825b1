"""The daemon's start (issue 5): settle the journal, reconcile the backends against the stored
desired state, then give the actors back what they owned.

Before any actor runs (so nothing races it), `reconcile` reads every record and:
1. settles the intents a crash left (daemon.control): a create that was never acknowledged is
   undone (its domain and system disk, named by the intent, are removed), a delete is finished
   (domain and owned system disk removed, data volumes detached, records deleted), an expand
   keeps the size the image really has (EVS-2: it cannot shrink back), a resize keeps the
   flavor the domain really has; the rest fall back to the last acknowledged state;
2. lists the domains of every host: a stored server found on several hosts keeps one copy
   (the running one), its power is made what the tenant last asked (started or stopped); one
   found nowhere is MISSING: the AZ builds it again (its record, quota and volumes stay),
   unless its host does not answer (then the AZ's failure handling owns it, as for any lost
   host);
3. lists the images of every RBD pool: a stored volume without its image is reported LOST
   (kept in the store for the operator, not given to the actors);
4. ORPHANS: a domain of the daemon's (the Hypervisor port lists only domains whose metadata
   names a server) or an image with a name of the daemon's shape (`control.OURS`) that no
   record names. Policy `delete` (the default) removes them, `keep` only reports them. Other
   domains and images are someone else's and are never touched.

Everything it did is in the returned `Report` (and the log).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import anyio
import attrs

from actors.az import AdoptServer, PlaceServer, ServerCommand
from actors.flavors import get_flavor
from actors.region import CreateTenant, GetTenant, RegionServices
from actors.scheduler import GroupPolicy
from actors.tenant import AdoptState, TenantServer, TenantVolume
from actors.volumes import AdoptVolume
from daemon.config import ORPHAN_POLICIES
from daemon.control import ASK_TIMEOUT_S, OURS, Value, write_mirrored
from runtime.actor import ActorRef
from runtime.errors import CloudError, NotFound
from runtime.ports import DomainInfo, Hypervisor
from runtime.state import Delete, Put, StateStore, Write
from runtime.storage import BlockStore, VolumeKind, VolumeRecord

log = logging.getLogger(__name__)

LIST_TIMEOUT_S = 30.0

Key = tuple[str, str]


@attrs.define
class Report:
    intents: dict[str, int] = attrs.Factory(dict)  # op -> settled
    adopted: int = 0
    started: list[str] = attrs.Factory(list)
    stopped: list[str] = attrs.Factory(list)
    duplicates: list[str] = attrs.Factory(list)  # "server@host" copies removed
    missing: list[str] = attrs.Factory(list)  # servers built again
    lost_volumes: list[str] = attrs.Factory(list)
    orphans: list[str] = attrs.Factory(list)  # "domain X on H" / "volume V in AZ"
    orphans_removed: int = 0
    unreachable: list[str] = attrs.Factory(list)  # hosts and AZ stores that did not answer

    def summary(self) -> str:
        return (f"{self.adopted} servers adopted, {len(self.missing)} missing rebuilt, "
                f"{len(self.started)} started, {len(self.stopped)} stopped, {len(self.duplicates)} duplicate copies "
                f"removed, {len(self.orphans)} orphans ({self.orphans_removed} removed), "
                f"{len(self.lost_volumes)} volumes lost, intents settled {self.intents or 'none'}, "
                f"unreachable: {', '.join(self.unreachable) or 'none'}")


@attrs.frozen
class Placement:
    host: str | None  # None: missing, to be built again
    running: bool


async def load(store: StateStore, kinds: tuple[str, ...]) -> dict[Key, Value]:
    records: dict[Key, Value] = {}
    for kind in kinds:
        for r in await store.list(kind):
            records[(kind, r.key)] = r.value
    return records


class Reconciler:
    """One start's reconciliation over the hosts' hypervisors and the AZs' block stores."""

    def __init__(self, store: StateStore, records: dict[Key, Value], hypervisors: Mapping[str, Hypervisor],
                 blocks: Mapping[str, BlockStore], orphans: str = "delete") -> None:
        assert orphans in ORPHAN_POLICIES, orphans
        self.store, self.records, self.hvs, self.blocks, self.policy = store, records, hypervisors, blocks, orphans
        self.report = Report()
        self.domains: dict[str, list[tuple[str, DomainInfo]]] = {}  # server id -> (host, domain)
        self.images: dict[str, dict[str, VolumeRecord]] = {}  # az -> volume id -> image
        self.placements: dict[str, Placement] = {}

    def of(self, kind: str) -> dict[str, Value]:
        return {key: v for (k, key), v in self.records.items() if k == kind}

    async def write(self, batch: list[Write]) -> None:
        await write_mirrored(self.store, self.records, batch)

    async def run(self) -> Report:
        await self._list()
        for key, intent in sorted(self.of("intent").items()):
            await self._settle(key, intent)
        await self._servers()
        await self._volumes()
        await self._orphans()
        return self.report

    # -- what the backends hold ----------------------------------------------------------------
    async def _list(self) -> None:
        for host, hv in self.hvs.items():
            try:
                with anyio.fail_after(LIST_TIMEOUT_S):
                    listed = await hv.list()
            except (CloudError, TimeoutError) as exc:
                self.report.unreachable.append(f"host {host}")
                log.warning("host %s does not answer (%s): its servers are left to the AZ's failure handling",
                            host, exc)
                continue
            for dom in listed:
                self.domains.setdefault(dom.server_id, []).append((host, dom))
        for az, store in self.blocks.items():
            try:
                with anyio.fail_after(LIST_TIMEOUT_S):
                    self.images[az] = {v.id: v for v in await store.list_volumes()}
            except (CloudError, TimeoutError) as exc:
                self.report.unreachable.append(f"block store of {az}")
                log.warning("block store of %s does not answer (%s): its volumes are not checked", az, exc)

    async def _undefine(self, host: str, sid: str) -> None:
        try:
            await self.hvs[host].undefine(sid)
        except NotFound:
            pass
        self.domains[sid] = [(h, d) for h, d in self.domains.get(sid, []) if h != host]
        if not self.domains[sid]:
            del self.domains[sid]

    async def _delete_image(self, az: str | None, vid: str) -> None:
        """Delete the volume `vid` wherever it is (in `az` when known), even half-made (a create
        killed before the store finished it is not listed)."""
        for name, store in self.blocks.items():
            if az is None or name == az:
                try:
                    await store.delete_volume(vid)
                except NotFound:
                    pass
                self.images.get(name, {}).pop(vid, None)

    # -- 1. intents ----------------------------------------------------------------------------
    async def _settle(self, key: str, intent: Value) -> None:
        op = intent.get("op", "?")
        batch: list[Write] = [Delete("intent", key)]
        sid, vid = str(intent.get("server")), str(intent.get("volume"))
        if op == "create_server" and ("server", sid) not in self.records:
            for host, _ in list(self.domains.get(sid, [])):
                await self._undefine(host, sid)
            if ("volume", intent["system_volume"]) not in self.records:
                await self._delete_image(intent.get("az"), intent["system_volume"])
        elif op == "create_volume" and ("volume", vid) not in self.records:
            await self._delete_image(intent.get("az"), vid)
        elif op == "delete_server" and ("server", sid) in self.records:
            for host, _ in list(self.domains.get(sid, [])):
                await self._undefine(host, sid)
            for other, vol in self.of("volume").items():
                if vol.get("server") != sid:
                    continue
                if vol["bootable"]:  # deleted with its server, as the tenant does
                    await self._delete_image(vol["az"], other)
                    batch.append(Delete("volume", other))
                else:
                    batch.append(Put("volume", other, {**vol, "server": None}))
            batch.append(Delete("server", sid))
        elif op == "delete_volume" and ("volume", vid) in self.records:
            await self._delete_image(self.records[("volume", vid)]["az"], vid)
            batch.append(Delete("volume", vid))
        elif op == "expand_volume" and ("volume", vid) in self.records:
            vol = self.records[("volume", vid)]
            image = self.images.get(vol["az"], {}).get(vid)
            if image is not None and image.size_gb > vol["size_gb"]:
                batch.append(Put("volume", vid, {**vol, "size_gb": image.size_gb}))
        elif op == "resize" and ("server", sid) in self.records:
            flavor = get_flavor(intent["flavor"])
            if any((d.vcpus, d.ram_mb) == (flavor.vcpus, flavor.ram_mb) for _, d in self.domains.get(sid, [])):
                batch.append(Put("server", sid, {**self.records[("server", sid)], "flavor": flavor.name}))
        await self.write(batch)
        self.report.intents[op] = self.report.intents.get(op, 0) + 1

    # -- 2. servers ----------------------------------------------------------------------------
    async def _servers(self) -> None:
        down = {u.removeprefix("host ") for u in self.report.unreachable}
        for sid, server in sorted(self.of("server").items()):
            copies = sorted(self.domains.get(sid, []), key=lambda c: not c[1].running)
            for host, _ in copies[1:]:
                await self._undefine(host, sid)
                self.report.duplicates.append(f"{sid}@{host}")
            if not copies:
                if server.get("host") in down:
                    self.placements[sid] = Placement(server["host"], False)
                else:
                    self.placements[sid] = Placement(None, False)
                    self.report.missing.append(sid)
                continue
            host, dom = copies[0]
            running = dom.running
            want = server.get("power", "on") == "on"
            try:
                if want and not running:
                    await self.hvs[host].start(sid)
                    self.report.started.append(sid)
                    running = True
                elif running and not want:
                    await self.hvs[host].stop(sid)
                    self.report.stopped.append(sid)
                    running = False
            except CloudError as exc:
                log.warning("server %s on %s: could not make its power %s: %s", sid, host,
                            server.get("power"), exc)
            self.placements[sid] = Placement(host, running)

    # -- 3. volumes ----------------------------------------------------------------------------
    async def _volumes(self) -> None:
        for vid, vol in sorted(self.of("volume").items()):
            images = self.images.get(vol["az"])
            if images is not None and vid not in images:
                self.report.lost_volumes.append(vid)
                log.error("volume %s of tenant %s (%s) has no image in the block store of %s: reported lost, "
                          "its record is kept", vid, vol["tenant"], vol["az"], vol["az"])

    # -- 4. orphans ----------------------------------------------------------------------------
    async def _orphans(self) -> None:
        servers = self.of("server")
        for sid, copies in sorted(self.domains.items()):
            if sid in servers:
                continue
            for host, _ in list(copies):
                self.report.orphans.append(f"domain {sid} on {host}")
                if self.policy == "delete":
                    await self._undefine(host, sid)
                    self.report.orphans_removed += 1
        volumes = self.of("volume")
        for az, images in sorted(self.images.items()):
            for vid in sorted(images):
                if vid in volumes or not OURS.fullmatch(vid):
                    continue
                self.report.orphans.append(f"volume {vid} in {az}")
                if self.policy == "delete":
                    try:
                        await self._delete_image(az, vid)
                        self.report.orphans_removed += 1
                    except CloudError as exc:
                        log.warning("orphan volume %s in %s not deleted: %s", vid, az, exc)
        for orphan in self.report.orphans:
            log.warning("orphan %s: %s", orphan, "removed" if self.policy == "delete" else "kept (policy keep)")


async def adopt(region: ActorRef, services: RegionServices, records: Mapping[Key, Value],
                placements: Mapping[str, Placement], lost: set[str], report: Report) -> None:
    """Give the actors back what the records hold: tenants (with their quotas), then each AZ's
    servers at their placements (missing ones are built again), each volume service's volumes
    (system disks first), then each tenant's inventory. Raises what an actor refuses."""
    def of(kind: str) -> dict[str, Value]:
        return {key: v for (k, key), v in records.items() if k == kind}

    tenants = of("tenant")
    for name, tenant in sorted(tenants.items()):
        await region.ask(CreateTenant(name, dict(tenant.get("quotas", {}))), timeout=ASK_TIMEOUT_S)
    groups: dict[str, dict[str, GroupPolicy]] = {name: {} for name in tenants}
    for group in of("group").values():
        groups.setdefault(group["tenant"], {})[group["name"]] = GroupPolicy(group["policy"])
    owned: dict[str, tuple[list[TenantServer], list[TenantVolume]]] = {name: ([], []) for name in tenants}
    stop_after: list[tuple[str, str]] = []
    for sid, s in sorted(of("server").items()):
        flavor = get_flavor(s["flavor"])
        policy = None if s["group"] is None else groups[s["tenant"]][s["group"]]
        place = PlaceServer(sid, s["tenant"], flavor, s["auto_recovery"],
                            None if s["group"] is None else f"{s['tenant']}/{s['group']}", policy, s["dedicated"])
        where = placements[sid]
        await services.azs[s["az"]].ask(AdoptServer(place, where.host, where.running), timeout=ASK_TIMEOUT_S)
        report.adopted += 1
        if where.host is None and s.get("power") == "off":
            stop_after.append((s["az"], sid))
        owned[s["tenant"]][0].append(TenantServer(sid, s["name"], flavor, s["az"], s["group"], s["system_volume"]))
    volumes = sorted(of("volume").items(), key=lambda kv: (not kv[1]["bootable"], kv[0]))
    for vid, v in volumes:
        if vid in lost:
            continue
        await services.volumes[v["az"]].ask(AdoptVolume(vid, v["tenant"], v["size_gb"], VolumeKind(v["kind"]),
                                                        v["bootable"], v["server"]), timeout=ASK_TIMEOUT_S)
        owned[v["tenant"]][1].append(TenantVolume(vid, v["az"], v["size_gb"]))
    for name, (servers, vols) in sorted(owned.items()):
        tenant = await region.ask(GetTenant(name), timeout=ASK_TIMEOUT_S)
        await tenant.ask(AdoptState(groups.get(name, {}), tuple(servers), tuple(vols)), timeout=ASK_TIMEOUT_S)
    for az, sid in stop_after:
        await services.azs[az].ask(ServerCommand(sid, "stop"), timeout=ASK_TIMEOUT_S)

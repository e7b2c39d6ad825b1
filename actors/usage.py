"""The server ledger (SPEC ECS-2, ECS-4, SDRS-2): when each server existed, ran, and with
which flavor, folded from the event log. Billing and availability both read it.

`ServerLedger` is an event-log sink (`runtime.events.Sink`). It keeps one record per
server COPY: a server lives in one AZ, except under sDRS, where the copy started in
the recovery AZ has the same id as the production one (`actors.sdrs`). The first copy
of an id is recorded under the id itself; a later copy (another AZ, or the same AZ
after the first was deleted) under `ID@AZ` (`ID@AZ#2`, ... if that is taken too). Each
record says its server id and AZ.

What changes whether a copy runs (every emitter is in actors/az.py unless named):
    ServerCreated                 built and started: runs (created_s)
    ServerStateChanged(state)     runs iff state is "active" (start, stop, reboot, parking)
    ServerResized(flavor)         the flavor from now on (the server is stopped meanwhile)
    ServerDeleted                 stops; deleted_s
    HostSuspected(host)           nothing yet: remembered as the host's suspicion time
    HostFenced / HostPresumedDown its `recovering` and `down` servers stopped running when
                                  their host was first suspected: that is the best estimate
                                  of the crash the control plane has
    ServerRecovered               rebuilt on another host: runs
    HostReturned / HostResynced   `restarted` servers run from now (a host that returned
                                  unfenced had stopped them: from its suspicion they did not
                                  run); `removed` are stale copies of servers running elsewhere;
                                  HostReturned's `running` also lists those found running (an
                                  unfenced partition: seen again from now)
    ServerParked / ServerUnparked nothing: the stop or start that follows is a ServerStateChanged
    DrServerStarted(az)           (actors/sdrs) the copy in `az` runs
    ServerBuildFailed             nothing: the server never existed
A copy runs from such an event at time t (inclusive) until the next one stops it.

A server a returning host finds running already (it kept running through an unfenced
partition) counts from the host's suspicion to its return as not running: the control
plane could not see it, and that is the conservative reading for availability and billing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

Span = tuple[float, float]


@attrs.define
class ServerCopy:
    """One copy of a server in one AZ: what the ledger knows of it."""

    server_id: str
    tenant: str
    az: str
    created_s: float
    deleted_s: float | None = None
    flavors: list[tuple[float, str]] = attrs.Factory(list)  # (since, flavor), in time order
    runs: list[Span] = attrs.Factory(list)  # closed running intervals
    running_since: float | None = None  # the open one

    def start(self, t: float) -> None:
        if self.running_since is None and self.deleted_s is None:
            self.running_since = t

    def stop(self, t: float) -> None:
        if self.running_since is not None:
            if t > self.running_since:
                self.runs.append((self.running_since, t))
            self.running_since = None

    def restart_after_gap(self, gap_from: float, t: float) -> None:
        """It was found stopped at `t` and had stopped at `gap_from` at the latest."""
        if self.running_since is not None and self.running_since < gap_from:
            self.stop(gap_from)
        elif self.running_since is not None:
            return
        self.start(t)


class ServerLedger:
    """Event sink: `ledger(time, source, kind, fields)`; see the module docstring."""

    def __init__(self) -> None:
        self.servers: dict[str, ServerCopy] = {}
        self._live: dict[tuple[str, str], str] = {}  # (server id, AZ) -> key of its live copy
        self._suspected: dict[tuple[str, str], float] = {}  # (AZ, host) -> when first suspected
        self._handlers = {
            "ServerCreated": self._created,
            "ServerStateChanged": self._state_changed,
            "ServerResized": self._resized,
            "ServerDeleted": self._deleted,
            "HostSuspected": self._suspect,
            "HostFenced": self._host_down,
            "HostPresumedDown": self._host_down,
            "ServerRecovered": self._recovered,
            "HostReturned": self._host_back,
            "HostResynced": self._resynced,
            "DrServerStarted": self._dr_started,
        }

    def __call__(self, time: float, source: str, kind: str, fields: dict[str, Any]) -> None:
        handler = self._handlers.get(kind)
        if handler is not None:
            handler(time, source.rsplit("/", 1)[-1], fields)

    def copy(self, server_id: str, az: str) -> ServerCopy | None:
        """The live (not deleted) copy of `server_id` in `az`, if any."""
        key = self._live.get((server_id, az))
        return None if key is None else self.servers[key]

    # -- queries ---------------------------------------------------------------------------
    def running(self, server_id: str, until: float) -> list[Span]:
        """The intervals during which the copy `server_id` (a key of `servers`) ran, clipped at `until`."""
        rec = self.servers[server_id]
        spans = list(rec.runs)
        if rec.running_since is not None:
            spans.append((rec.running_since, until))
        return [(s, min(e, until)) for s, e in spans if s < until and min(e, until) > s]

    def existed(self, server_id: str, until: float) -> Span | None:
        """From creation to deletion (or `until`), or None if it did not exist before `until`."""
        rec = self.servers[server_id]
        end = until if rec.deleted_s is None else min(rec.deleted_s, until)
        return (rec.created_s, end) if rec.created_s < end else None

    def flavor_intervals(self, server_id: str, until: float) -> list[tuple[float, float, str]]:
        """(start, end, flavor) over the copy's life, clipped at `until`."""
        rec = self.servers[server_id]
        life = self.existed(server_id, until)
        if life is None:
            return []
        out = []
        for i, (since, flavor) in enumerate(rec.flavors):
            end = rec.flavors[i + 1][0] if i + 1 < len(rec.flavors) else life[1]
            start, end = max(since, life[0]), min(end, life[1])
            if start < end:
                out.append((start, end, flavor))
        return out

    # -- events ----------------------------------------------------------------------------
    def _each(self, az: str, ids: Iterable[str]) -> Iterable[ServerCopy]:
        for sid in ids:
            rec = self.copy(sid, az)
            if rec is not None:
                yield rec

    def _created(self, t: float, az: str, f: dict[str, Any]) -> None:
        sid = f["server"]
        key, n = sid, 1
        while key in self.servers:
            n += 1
            key = f"{sid}@{az}" if n == 2 else f"{sid}@{az}#{n - 1}"
        rec = ServerCopy(sid, f["tenant"], az, t, flavors=[(t, f["flavor"])])
        rec.start(t)
        self.servers[key] = rec
        self._live[(sid, az)] = key

    def _state_changed(self, t: float, az: str, f: dict[str, Any]) -> None:
        for rec in self._each(az, [f["server"]]):
            if f["state"] == "active":
                rec.start(t)
            else:
                rec.stop(t)

    def _resized(self, t: float, az: str, f: dict[str, Any]) -> None:
        for rec in self._each(az, [f["server"]]):
            rec.flavors.append((t, f["flavor"]))

    def _deleted(self, t: float, az: str, f: dict[str, Any]) -> None:
        for rec in self._each(az, [f["server"]]):
            rec.stop(t)
            rec.deleted_s = t
            del self._live[(rec.server_id, az)]

    def _suspect(self, t: float, az: str, f: dict[str, Any]) -> None:
        self._suspected.setdefault((az, f["host"]), t)

    def _host_down(self, t: float, az: str, f: dict[str, Any]) -> None:
        since = self._suspected.pop((az, f["host"]), t)
        ids = list(f["recovering"]) + [sid for group in f["down"].values() for sid in group]
        for rec in self._each(az, ids):
            if rec.running_since is not None:
                rec.stop(max(since, rec.running_since))

    def _recovered(self, t: float, az: str, f: dict[str, Any]) -> None:
        for rec in self._each(az, [f["server"]]):
            rec.start(t)

    def _host_back(self, t: float, az: str, f: dict[str, Any]) -> None:
        since = self._suspected.pop((az, f["host"]), None)
        for rec in self._each(az, f["restarted"]):
            if since is None:
                rec.start(t)
            else:
                rec.restart_after_gap(since, t)
        for rec in self._each(az, f.get("running", ())):
            rec.start(t)  # found running: a no-op for those just restarted

    def _resynced(self, t: float, az: str, f: dict[str, Any]) -> None:
        for rec in self._each(az, f["restarted"]):
            rec.start(t)

    def _dr_started(self, t: float, az: str, f: dict[str, Any]) -> None:
        for rec in self._each(f["az"], [f["server"]]):
            rec.start(t)

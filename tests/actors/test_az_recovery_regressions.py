"""Regressions of the AZ's failure handling (ECS-4), found by the property suite.

Each test replays one history on a single AZ actor over SimPy host models, in virtual
time, and judges it by the models' truth of where servers run (`World.running_on`).
Timings are the `HostTiming` defaults: keepalive loss is noticed after 15 s, a define
takes 1 s, a boot 30 s, a stop 5 s, every call 0.01 s more.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import simpy

from actors.az import (
    AvailabilityZone,
    AZSnapshot,
    ParkServer,
    PlaceServer,
    ResizeServer,
    ServerCommand,
    ServerView,
    Snapshot,
)
from actors.flavors import get_flavor
from actors.topology import REGIONS, build_topology
from runtime.actor import ActorRef, ActorSystem
from runtime.errors import NoCapacity
from runtime.events import EventLog
from runtime.ports import HostCapacity, HostUnreachable
from sim.driver import Handle, SimDriver
from sim.hosts import HostModel, World, host_ports

AZ = REGIONS["eu-west-0"].azs[0]


class Zone:
    """One AZ actor on `hosts` simulated hosts, driven step by step from the test."""

    def __init__(self, hosts: int) -> None:
        self.env = simpy.Environment()
        self.driver = SimDriver(self.env)
        topology = build_topology(REGIONS["eu-west-0"], {AZ: hosts}, 16, 65536, rack_size=1,
                                  racks_per_power_domain=1)
        self.world = World(self.env)
        for h in topology.hosts:
            self.world.add_host(h.name, HostCapacity(h.vcpus, h.ram_mb))
        ports = host_ports(self.world, self.driver)
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        log = EventLog(lambda t, src, kind, fields: self.events.append((t, kind, fields)))
        system = ActorSystem(self.driver, 7, log)
        refs: list[ActorRef] = []
        self._stop = self.driver.event()
        stop = self._stop

        async def main() -> None:
            async with system.running():
                hosts_here = topology.hosts_in(AZ)
                refs.append(system.spawn(functools.partial(
                    AvailabilityZone, AZ, hosts_here, {h.name: ports[h.name] for h in hosts_here}), AZ))
                await stop.wait()

        self._main = self.driver.start(main)
        self.driver.advance(until=lambda: bool(refs))
        self.az = refs[0]

    def send(self, msg: Any) -> Handle:
        return self.driver.start(lambda: self.az.ask(msg, timeout=None))

    def ask(self, msg: Any) -> Any:
        handle = self.send(msg)
        self.wait(handle)
        if handle.error is not None:
            raise handle.error
        return handle.result

    def wait(self, handle: Handle) -> None:
        self.driver.advance(until=lambda: handle.done, to=self.env.now + 6 * 3600)
        assert handle.done, "no reply within 6 h"

    def run_until(self, t: float) -> None:
        self.driver.advance(to=t)

    def host(self, name: str) -> HostModel:
        return self.world.hosts[name]

    def view(self, sid: str) -> ServerView:
        snapshot: AZSnapshot = self.ask(Snapshot())
        return next(v for v in snapshot.servers if v.id == sid)

    def create(self, sid: str, flavor: str = "s3.large.2", auto_recovery: bool = True) -> str:
        """Place a server (its flavor has no local disk); its host."""
        host: str = self.ask(PlaceServer(sid, "acme", get_flavor(flavor), auto_recovery, None, None, False))
        return host

    def kinds(self, sid: str) -> list[str]:
        return [kind for _, kind, fields in self.events if fields.get("server") == sid]

    def close(self) -> None:
        self._stop.set()
        self.driver.advance(until=lambda: self._main.done, to=self.env.now + 3600)


MakeZone = Callable[[int], Zone]


@pytest.fixture
def zone_of() -> Iterator[MakeZone]:
    """Make zones; each is stopped after the test, failed or not."""
    made: list[Zone] = []

    def make(hosts: int) -> Zone:
        made.append(Zone(hosts))
        return made[-1]
    yield make
    for zone in made:
        zone.close()


def other(zone: Zone, host: str) -> str:
    return next(h for h in zone.world.hosts if h != host)


def restarts(zone: Zone) -> list[dict[str, Any]]:
    return [fields for _, kind, fields in zone.events if kind == "ActorRestarted"]


# -- 1. a rebuild that fails after the server's old host came back ---------------------
def test_a_rebuild_that_fails_after_the_old_host_returned_rebuilds_it_there_ECS_4(zone_of: MakeZone) -> None:
    """The old host returns during the rebuild: its copy is stale then, and removed. When the
    rebuild fails, the server is bound to that host again, which is up and has no copy:
    it must be rebuilt (there, the other host being down), not left down for good."""
    zone = zone_of(2)
    a = zone.create("srv")
    b = other(zone, a)
    t0 = zone.env.now
    zone.host(a).crash()
    zone.run_until(t0 + 20)  # noticed at +15, fenced, the rebuild on b runs until +46
    v = zone.view("srv")
    assert (v.state, v.host) == ("recovering", b)
    zone.host(a).repair()
    zone.run_until(t0 + 30)
    assert "srv" not in zone.host(a).domains, "the returning host keeps a copy of a server being rebuilt elsewhere"
    zone.host(b).crash()  # the boot on b fails: the server goes back to a, which is up
    zone.run_until(t0 + 3600)
    v = zone.view("srv")
    assert (v.state, v.host) == ("active", a), zone.kinds("srv")
    assert zone.world.running_on.get("srv") == {a}


def test_a_server_waiting_for_capacity_whose_host_returns_without_its_copy_is_rebuilt_ECS_4(zone_of: MakeZone) -> None:
    """Same, but the old host failed again before the rebuild failed: the server waits for
    capacity, bound to it. When it returns, its reconcile finds no copy to start; the
    server must be rebuilt, not left down on a host that is up."""
    zone = zone_of(2)
    a = zone.create("srv")
    b = other(zone, a)
    t0 = zone.env.now
    zone.host(a).crash()
    zone.run_until(t0 + 20)  # the rebuild on b runs until +46
    zone.host(a).repair()
    zone.run_until(t0 + 25)  # a is back, its stale copy removed
    zone.host(a).crash()
    zone.run_until(t0 + 30)
    zone.host(b).crash()  # the rebuild fails; a and b are down: no capacity
    zone.run_until(t0 + 200)
    v = zone.view("srv")
    assert (v.state, v.host, v.waiting_capacity) == ("down", a, True), zone.kinds("srv")
    zone.host(a).repair()
    zone.run_until(t0 + 3600)
    v = zone.view("srv")
    assert (v.state, v.host) == ("active", a), zone.kinds("srv")
    assert zone.world.running_on.get("srv") == {a}


# -- 2. a reboot that loses its connection ---------------------------------------------
def test_a_reboot_cut_off_midway_replies_once_the_server_runs_again_ECS_1(zone_of: MakeZone) -> None:
    """The host is cut off for 10 s as the boot half of a reboot ends (shorter than the
    keepalive: never suspected). The domain stayed stopped; the AZ must not call the
    server active while it runs nowhere: the failed reboot replies once it runs again."""
    zone = zone_of(2)
    a = zone.create("srv")
    t1 = zone.env.now
    reboot = zone.send(ServerCommand("srv", "reboot"))
    zone.run_until(t1 + 30)  # stopped at +5, booting until +35: that answer is lost
    zone.host(a).partition()
    zone.run_until(t1 + 40)
    zone.host(a).heal()
    zone.wait(reboot)
    assert isinstance(reboot.error, HostUnreachable), reboot.error
    assert zone.world.running_on.get("srv") == {a}, "the reply came while the server runs nowhere"
    v = zone.view("srv")
    assert (v.state, v.host) == ("active", a)
    assert not [e for e in zone.events if e[1] == "HostSuspected"], "a 10 s cut goes unnoticed"


# -- 3. a stop that finds the domain stopped already ------------------------------------
def test_a_stop_whose_host_rebooted_under_it_stops_the_server_ECS_1(zone_of: MakeZone) -> None:
    """The host crashes and boots again within the 5 s of a stop: the domain is stopped
    when the stop looks again, and the host refuses to stop a stopped domain. That is
    what the user asked for: the stop succeeds, and the host's reconcile on its return
    must not start the server again."""
    zone = zone_of(2)
    a = zone.create("srv")
    t1 = zone.env.now
    stop = zone.send(ServerCommand("srv", "stop"))
    zone.run_until(t1 + 2)
    zone.host(a).crash()
    zone.run_until(t1 + 3)
    zone.host(a).repair()
    zone.wait(stop)
    assert stop.error is None, f"stop refused: {stop.error}"
    zone.run_until(t1 + 600)  # the host's return was noticed and reconciled
    assert "HostReturned" in [kind for _, kind, _ in zone.events]
    v = zone.view("srv")
    assert (v.state, v.host) == ("shutoff", a)
    assert "srv" not in zone.world.running_on


# -- 4. a failed rebuild whose old host has no room left -------------------------------
def test_a_failed_rebuild_whose_old_host_filled_up_meanwhile_crashes_nothing_ECS_4(zone_of: MakeZone) -> None:
    """The old host returns during a rebuild and a new server takes all its room; then the
    rebuild fails. The server cannot be put back on its old host (it has no copy there
    anyway): it must stay placed somewhere, and the AZ must not crash (a restarted AZ
    forgets its servers and never answers the requests it was serving)."""
    zone = zone_of(2)
    a = zone.create("srv")
    b = other(zone, a)
    t0 = zone.env.now
    zone.host(a).crash()
    zone.run_until(t0 + 20)  # the rebuild on b runs until +46
    zone.host(a).repair()
    zone.run_until(t0 + 25)  # a is back and empty
    big = zone.send(PlaceServer("big", "acme", get_flavor("s3.4xlarge.2"), True, None, None, False))  # 16 vCPUs
    zone.run_until(t0 + 30)
    zone.host(b).crash()  # the rebuild fails at +46, while "big" boots on a
    zone.wait(big)
    assert big.error is None and big.result == a, big.error
    zone.run_until(t0 + 600)
    assert not restarts(zone)
    v = zone.view("srv")
    assert (v.state, v.host, v.waiting_capacity) == ("down", b, True), zone.kinds("srv")
    zone.host(b).repair()  # its host is back: the server starts there
    zone.run_until(t0 + 3600)
    v = zone.view("srv")
    assert (v.state, v.host) == ("active", b), zone.kinds("srv")
    assert zone.world.running_on.get("srv") == {b} and zone.world.running_on.get("big") == {a}


def test_a_failed_downsize_keeps_its_room_and_its_server_ECS_1(zone_of: MakeZone) -> None:
    """Same family: a resize that fails gives the server its old flavor back. Had the room
    the smaller flavor does not need been handed out meanwhile, the old flavor would no
    longer fit: the server would be left unplaced, and its host's next reconcile would
    destroy its domain as stale."""
    zone = zone_of(1)
    a = zone.create("srv", "s3.4xlarge.2")  # 16 vCPUs: the whole host
    zone.ask(ServerCommand("srv", "stop"))
    t1 = zone.env.now
    resize = zone.send(ResizeServer("srv", get_flavor("s3.large.2")))  # 1 s on the host
    zone.run_until(t1 + 0.5)
    zone.host(a).partition()  # the resize's answer is lost
    other_server = zone.send(PlaceServer("other", "acme", get_flavor("s3.2xlarge.2"), True, None, None, False))
    zone.wait(resize)
    assert isinstance(resize.error, HostUnreachable), resize.error
    zone.wait(other_server)
    assert isinstance(other_server.error, NoCapacity), "the room of the old flavor was handed out during the resize"
    zone.run_until(t1 + 60)  # suspected and fenced
    zone.host(a).heal()  # powered on again; reconciled
    zone.run_until(t1 + 600)
    v = zone.view("srv")
    assert (v.state, v.host) == ("error", a)
    assert "srv" in zone.host(a).domains, f"the server's domain was destroyed: {zone.kinds('srv')}"


# -- 5. a server found running on its returning host ------------------------------------
def test_a_server_that_runs_on_its_returned_host_is_active_there_not_rebuilt_ECS_4(zone_of: MakeZone) -> None:
    """The host crashes during the boot half of a reboot and is back before that boot
    ends, so the boot completes on the rebooted host. Meanwhile the AZ fenced the host
    and marked the server down. Its returning host's reconcile finds it running: it is
    active there, and must not be rebuilt elsewhere (it would run twice)."""
    zone = zone_of(2)
    b = zone.create("small", "s3.large.4")
    a = zone.create("srv")  # placed where most RAM is free
    assert a != b and zone.create("big", "s3.xlarge.4", auto_recovery=False) == a  # a rebuild would go to b
    t1 = zone.env.now
    reboot = zone.send(ServerCommand("srv", "reboot"))
    zone.run_until(t1 + 6)  # stopped at +5, booting until +35
    zone.host(a).crash()
    zone.run_until(t1 + 22)  # noticed at +21, fenced: the server is down
    assert zone.view("srv").state == "down"
    zone.host(a).repair()
    zone.wait(reboot)
    zone.run_until(t1 + 3600)
    assert not zone.world.split_brain, zone.kinds("srv")
    assert "ServerRecovered" not in zone.kinds("srv")
    v = zone.view("srv")
    assert (v.state, v.host) == ("active", a), zone.kinds("srv")
    assert zone.world.running_on.get("srv") == {a}


# -- parking (sDRS) must never crash the AZ -------------------------------------------------
def test_parking_a_server_whose_domain_vanished_replies_and_crashes_nothing_SDRS_2(zone_of: MakeZone) -> None:
    """The host answers, but the server's domain is gone: the server does not run, so the
    park succeeds; the AZ actor keeps all its servers (no restart)."""
    zone = zone_of(1)
    host = zone.create("srv")
    del zone.host(host).domains["srv"]  # gone behind the control plane's back
    zone.world._running("srv", host, False)
    view = zone.ask(ParkServer("srv"))
    assert view.parked and view.state == "shutoff"
    assert restarts(zone) == []
    assert zone.world.running_on.get("srv", set()) == set()

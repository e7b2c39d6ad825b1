"""`fe daemon --config fe.toml` (issue 5): the actor tree on the production driver against the
configured libvirt hosts, and the REST API (daemon.api.app) served by uvicorn.

What it assembles, from a `DaemonConfig`:
- one `LibvirtHypervisor` per host, and its `LibvirtPower` when the host has `power`. A host
  without one gets `NoPowerController`, which refuses every call, and a log line says so:
  fencing stays on (RecoverySettings.fencing: a host that was only cut off must never see its
  servers started twice), so a lost host of that kind is never fenced and its servers are not
  rebuilt elsewhere; they come back with their host.
- the Topology of exactly the configured hosts (each its own rack and power domain: the file
  does not describe racks yet), and the Region actor over them, on an `ActorSystem` with the
  `AnyioDriver` (asyncio).
- a `Directory` of users and projects with `SystemSecrets` (the OS CSPRNG) and argon2id.
- the API app (Keystone v3 + Nova v2.1), served by uvicorn on `daemon.listen`.

Everything runs in one anyio task group (`Daemon.run`): SIGTERM or SIGINT (or `stop()`) makes
uvicorn stop accepting and finish the requests in flight, then the actor tree is cancelled,
the libvirt connections closed, and `fe daemon` exits 0.

Bootstrap, at every start (environment variables, read here: the daemon is not an actor):
- `FE_ADMIN_PASSWORD` (required, at least 8 characters): the password of the first user;
- `FE_ADMIN_USER` (default `admin`) and `FE_ADMIN_PROJECT` (default `admin`): that user, with
  the `admin` role, and its project, which becomes a tenant of the region.
A project becomes a tenant when it is created (`Daemon.create_project`).

State stays in memory in this slice: `daemon.state` is read and checked but not used yet (the
StateStore comes next), so a restart forgets users, projects and servers (their libvirt
domains stay on the hosts). `[storage]` is not wired yet either: no volumes, backups or sDRS.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import signal
import socket
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import uvicorn

from actors.identity import PROVIDER_PROJECT, Directory, ProjectName, Role
from actors.region import Region
from actors.topology import HostSpec, Topology
from daemon.api.app import create_app
from daemon.api.cts import TraceRecorder
from daemon.backup_state import BackupSaver, restore_backups
from daemon.config import DaemonConfig
from daemon.control import IDENTITY_KINDS, Control, load_identity
from daemon.observability import Metrics, setup_logging
from daemon.restore import Reconciler, Report, adopt, load
from runtime.actor import ActorRef, ActorSystem
from runtime.backends.libvirt import LibvirtHypervisor, LibvirtPower
from runtime.backends.postgres_state import PostgresStateStore
from runtime.backends.rbd import RbdBlockStore
from runtime.backends.s3 import S3ObjectStore
from runtime.backends.sqlite_state import SqliteStateStore
from runtime.driver import AnyioDriver
from runtime.errors import BackendError, ConfigError
from runtime.ports import Hypervisor, Power, PowerState
from runtime.secrets import SystemSecrets
from runtime.state import Record, StateStore
from runtime.storage import BlockStore, ObjectStore

log = logging.getLogger(__name__)

ADMIN_PASSWORD_ENV = "FE_ADMIN_PASSWORD"
ADMIN_USER_ENV = "FE_ADMIN_USER"
ADMIN_PROJECT_ENV = "FE_ADMIN_PROJECT"
RECORD_KINDS = ("intent", "tenant", "server", "volume", "group", *IDENTITY_KINDS)


class NoPowerController:
    """The Power port of a host configured without `power`: every call is refused, so the AZ
    never fences it (and never rebuilds its servers elsewhere)."""

    def __init__(self, host: str) -> None:
        self.host = host

    def _refuse(self) -> BackendError:
        return BackendError(f"host {self.host} has no power controller (hosts.power in the daemon's config): "
                            f"it cannot be fenced")

    async def status(self) -> PowerState:
        raise self._refuse()

    async def power_off(self) -> None:
        raise self._refuse()

    async def power_on(self) -> None:
        raise self._refuse()

    async def aclose(self) -> None:
        return None


def topology_of(config: DaemonConfig) -> Topology:
    """The configured hosts, each its own rack and power domain."""
    return Topology(config.region, tuple(
        HostSpec(h.name, h.az, f"{h.az}/rack-{h.name}", f"{h.az}/pd-{h.name}", h.vcpus, h.ram_mb)
        for h in config.hosts))


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the daemon's task group handles the signals."""

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        return None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # uvicorn >= 0.29
        yield


class Daemon:
    """One daemon process: `await run()` serves until `stop()` or SIGTERM/SIGINT."""

    def __init__(self, config: DaemonConfig, environ: Mapping[str, str], directory: Directory | None = None,
                 sock: socket.socket | None = None, handle_signals: bool = True) -> None:
        self.config = config
        self.password = environ.get(ADMIN_PASSWORD_ENV, "")
        self.admin_user = environ.get(ADMIN_USER_ENV, "admin")
        self.admin_project = environ.get(ADMIN_PROJECT_ENV, "admin")
        if not self.password:
            raise ConfigError(f"environment variable {ADMIN_PASSWORD_ENV}", "not set: the first user needs a password",
                              f"export {ADMIN_PASSWORD_ENV}=... (at least 8 characters) before starting the daemon")
        self.directory = directory if directory is not None else Directory(SystemSecrets())
        self.sock = sock
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # asyncio sets TCP_NODELAY only on sockets made with IPPROTO_TCP; without it keep-alive
            # clients wait ~40 ms per answer (Nagle + delayed ACK)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.handle_signals = handle_signals
        host = f"[{config.listen_host}]" if ":" in config.listen_host else config.listen_host
        port = sock.getsockname()[1] if sock is not None else config.listen_port
        self.public_url = f"http://{host}:{port}"
        self.region: ActorRef | None = None
        self.control: Control | None = None
        self.store: StateStore | None = None
        self.reconciled: Report | None = None  # what the last start found and did (daemon.restore)
        self._server: _Server | None = None
        self._ready = False

    @property
    def ready(self) -> bool:
        """True once the API accepts connections (and until the daemon stops)."""
        return self._ready

    def stop(self) -> None:
        """Ask the daemon to stop as SIGTERM does (thread-safe: uvicorn polls the flag)."""
        if self._server is not None:
            self._server.should_exit = True

    async def create_project(self, name: str, quotas: Mapping[str, int] | None = None) -> None:
        """A new project, and its tenant in the region (TEN-1), durable on return; nothing is left
        half-made (the records are written only once the tenant exists)."""
        assert self.control is not None, "the daemon is not running"
        await self.control.create_project(name, quotas)

    async def create_user(self, project: str, name: str, password: str, roles: frozenset[Role]) -> None:
        """A new user of `project`, durable on return."""
        assert self.control is not None, "the daemon is not running"
        self.directory.create_user(project, name, password, roles)
        await self.control.save_identity()

    async def run(self) -> None:
        """Serve until stopped; returns normally after a clean shutdown."""
        ports: dict[str, tuple[Hypervisor, Power]] = {}
        closers: list[Any] = []
        for h in self.config.hosts:
            hv = LibvirtHypervisor(h.uri, h.name)
            if h.power is not None:
                power: LibvirtPower | NoPowerController = LibvirtPower(h.power.uri, h.power.domain)
            else:
                power = NoPowerController(h.name)
                log.warning("host %s has no power controller: it can never be fenced, so if it is lost its servers "
                            "are not rebuilt elsewhere (auto-recovery waits for the host to return)", h.name)
            ports[h.name] = (hv, power)
            closers += [hv, power]
        topology = topology_of(self.config)
        system = ActorSystem(AnyioDriver(), seed=secrets.randbits(64))
        try:
            async with contextlib.AsyncExitStack() as stores:
                self.store = await open_state(self.config.state)
                stores.push_async_callback(self.store.close)
                blocks, objects = await open_stores(self.config, stores)
                records = await load(self.store, RECORD_KINDS)
                load_identity(self.directory, [Record(k, key, v, 1, 0) for (k, key), v in records.items()
                                               if k in IDENTITY_KINDS])
                reconciler = Reconciler(self.store, records, {h: hv for h, (hv, _) in ports.items()}, blocks,
                                        self.config.orphans)
                self.reconciled = await reconciler.run()
                await self._serve(system, topology, ports, blocks, objects, reconciler)
        finally:
            self._ready = False
            with anyio.CancelScope(shield=True):
                for port in closers:
                    await port.aclose()

    async def _serve(self, system: ActorSystem, topology: Topology, ports: Mapping[str, tuple[Hypervisor, Power]],
                     blocks: Mapping[str, BlockStore], objects: ObjectStore | None, reconciler: Reconciler) -> None:
        metrics = Metrics()
        system.events.sinks.append(metrics.on_event)  # before the first actor: every event counted
        async with system.running(), anyio.create_task_group() as tg:
            self.region = region = system.spawn(lambda: Region(topology, ports, block_stores=blocks,
                                                               object_store=objects), self.config.region.name)
            self.control = Control(region, self.store, self.directory, reconciler.records)
            await adopt(region, await self.control.services(), reconciler.records, reconciler.placements,
                        set(reconciler.report.lost_volumes), reconciler.report)
            saver = BackupSaver(self.control, await self.control.services())  # daemon.backup_state
            system.events.sinks.append(saver.on_event)
            tg.start_soon(saver.run)
            log.info("backups restored: %d", await restore_backups(self.control, saver.services))
            self.control.after_backups = saver.save
            log.info("reconciled: %s", reconciler.report.summary())
            self.directory.purge(datetime.now(UTC))
            await self._bootstrap()
            await self.control.save_identity()
            assert self.store is not None
            traces = TraceRecorder(self.store, metrics)
            tg.start_soon(traces.run)  # cancelled after uvicorn stops: it writes what is pending first
            app = create_app(self.directory, lambda: datetime.now(UTC), self.public_url, self.control,
                             traces=traces, metrics=metrics)
            uv = uvicorn.Config(app, host=self.config.listen_host, port=self.config.listen_port,
                                log_level="info", log_config=None, lifespan="off", ws="none", http="h11",
                                timeout_graceful_shutdown=30)
            self._server = _Server(uv)
            if self.handle_signals:
                tg.start_soon(self._signals, self._server)
            tg.start_soon(self._watch_started, self._server)
            await self._server.serve(sockets=[self.sock] if self.sock is not None else None)
            self._ready = False
            log.info("API stopped; cancelling the actor tree")
            tg.cancel_scope.cancel()

    async def _bootstrap(self) -> None:
        """The first start makes the admin user and project; later starts find them in the store."""
        if ProjectName(self.admin_project) in self.directory.projects:
            log.info("state %s: %d projects, %d users restored", self.config.state, len(self.directory.projects),
                     len(self.directory.users))
            return
        await self.create_project(self.admin_project)
        await self.create_user(self.admin_project, self.admin_user, self.password, frozenset({Role.ADMIN}))
        await self.create_user(PROVIDER_PROJECT, self.admin_user, self.password, frozenset({Role.CLOUD_ADMIN}))
        log.info("bootstrap: user %r with role admin in project %r, and cloud_admin in project %r (opens "
                 "projects: POST /identity/v3/projects)", self.admin_user, self.admin_project, PROVIDER_PROJECT)

    async def _watch_started(self, server: _Server) -> None:
        while not server.started:
            await anyio.sleep(0.01)
        self._ready = True
        log.info("serving %s (region %s, %d hosts)", self.public_url, self.config.region.name,
                 len(self.config.hosts))

    async def _signals(self, server: _Server) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
            async for signum in received:
                log.info("%s: stopping (no new connections, requests in flight finish)", signal.Signals(signum).name)
                server.should_exit = True


async def open_state(location: str) -> StateStore:
    """The StateStore of `daemon.state`: a SQLite file (made with its directory), or PostgreSQL
    (`postgresql://USER:PASSWORD@HOST:PORT/DB`, optionally `?schema=NAME`, default fe_state)."""
    url = urlsplit(location)
    if url.scheme == "sqlite":
        path = Path(url.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return await SqliteStateStore.open(path)
    query = dict(parse_qsl(url.query))
    schema = query.pop("schema", "fe_state")
    return await PostgresStateStore.open(urlunsplit(url._replace(query=urlencode(query))), schema=schema)


async def open_stores(config: DaemonConfig, stack: contextlib.AsyncExitStack
                      ) -> tuple[dict[str, BlockStore], ObjectStore | None]:
    """The `[storage]` of `config`: an RBD BlockStore per configured AZ pool and the S3 ObjectStore,
    entered on `stack` (which closes them); none without `[storage]`."""
    storage = config.storage
    if storage is None:
        log.warning("no [storage] in %s: no volumes, backups or sDRS", config.source)
        return {}, None
    host, _, port = storage.mon_host.partition(":")
    blocks: dict[str, BlockStore] = {}
    for az, pool in storage.pools.items():
        blocks[az] = await stack.enter_async_context(RbdBlockStore(
            az, config.region.name, ceph_conf=storage.ceph_conf, mon_host=host, mon_port=int(port or 6789),
            pool=pool, libvirt_uri=storage.libvirt_uri))
    objects = None
    if storage.s3 is not None:
        objects = await stack.enter_async_context(S3ObjectStore(
            storage.s3.endpoint, storage.s3.access_key, storage.s3.secret_key, config.region.name))
    else:
        log.warning("no [storage.s3] in %s: no backups", config.source)
    return blocks, objects


def run(config: DaemonConfig, environ: Mapping[str, str]) -> int:
    """`fe daemon`: serve until SIGTERM/SIGINT; 0 after a clean stop."""
    setup_logging()  # JSON lines on stderr (daemon.observability)
    daemon = Daemon(config, environ)
    AnyioDriver().run(daemon.run)
    return 0

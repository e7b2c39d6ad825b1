"""`fe bench api` (issue 5, "Done when"): what an operator's daemon does under API load, measured
from outside, never asserted in tests.

The daemon runs as its own process (`python -m daemon.bench CONFIG PROJECT USER`): the real
`Daemon` (uvicorn, the actor tree, the SQLite StateStore) with its own interpreter, so the 50
clients of the load generator do not take the server's GIL and each side has its core, as an
operator's clients on other machines would. Only its bootstrap differs from `fe daemon`: after
the usual admin bootstrap it creates the bench's project with quotas for every server the bench
makes (the API has no quota update yet) and a member user, then prints `READY` on stdout.

The parent writes the configuration (one libvirt `test:///default` host big enough for the
servers, SQLite state, a free port of 127.0.0.1) in a temporary directory, starts the child, and:
1. creates `servers` servers through `POST /compute/v2.1/servers`: the first half one after the
   other, the second half by `concurrency` clients at once (a create returns once the server is
   built: creates per second is the rate of finished servers);
2. runs `clients` concurrent clients (one keep-alive httpx.AsyncClient each, after one warm-up
   request that is not counted) doing `GET /compute/v2.1/servers/{id}` over the created servers,
   `requests` requests in all: latency p50/p99/max and throughput, the CPU seconds of the daemon
   and of the load generator in that phase (a saturated load generator shows there);
3. stops the daemon with SIGTERM (its exit status is reported) and removes the directory (the
   test driver's domains live in the daemon's process and go with it).
Every request that did not get its expected status is counted in `errors` (never hidden).
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from runtime.errors import InvalidRequest

PROJECT, USER = "bench", "bench"
FLAVOR = "s3.small.1"  # 1 vCPU, 1 GiB: the smallest of the catalogue
AZ = "eu-west-0a"
READY = "READY"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
CONFIG = """\
[daemon]
region = "eu-west-0"
listen = "127.0.0.1:{port}"
state = "sqlite://{state}"

[[hosts]]
name = "bench-h1"
az = "{az}"
uri = "test:///default"
vcpus = {vcpus}
ram_gb = {ram_gb}
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank percentile of a non-empty ascending list."""
    return ordered[max(0, math.ceil(len(ordered) * q / 100) - 1)]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Bar:
    """A rich progress bar on `console`, or nothing."""

    def __init__(self, console: Console | None) -> None:
        self.progress = None if console is None else Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), console=console, transient=True)
        if self.progress is not None:
            self.progress.start()

    def task(self, description: str, total: int) -> Callable[[], None]:
        if self.progress is None:
            return lambda: None
        progress, task = self.progress, self.progress.add_task(description, total=total)
        return lambda: progress.advance(task)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


async def _token(client: httpx.AsyncClient, password: str) -> str:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": USER, "domain": {"name": "Default"}, "password": password}}},
        "scope": {"project": {"name": PROJECT, "domain": {"name": "Default"}}}}}
    response = await client.post("/identity/v3/auth/tokens", json=body)
    if response.status_code != 201:
        raise RuntimeError(f"the bench user could not authenticate: {response.status_code} {response.text[:300]}")
    return response.headers["X-Subject-Token"]


async def _creates(client: httpx.AsyncClient, names: list[str], concurrency: int, ids: list[str],
                   errors: list[str], advance: Callable[[], None]) -> float:
    """Create a server per name with `concurrency` workers; the seconds it took."""
    queue = list(reversed(names))

    async def worker() -> None:
        while queue:
            name = queue.pop()
            response = await client.post("/compute/v2.1/servers", json={"server": {
                "name": name, "flavorRef": FLAVOR, "availability_zone": AZ}})
            if response.status_code == 202:
                ids.append(response.json()["server"]["id"])
            else:
                errors.append(f"POST /servers {name}: {response.status_code} {response.text[:200]}")
            advance()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def _gets(url: str, token: str, ids: list[str], clients: int, requests: int, latencies: list[float],
                errors: list[str], advance: Callable[[], None]) -> float:
    """`clients` keep-alive clients share `requests` GETs of the servers; the seconds it took."""
    remaining = requests
    headers = {"X-Auth-Token": token}

    async def client_loop(n: int, client: httpx.AsyncClient) -> None:
        nonlocal remaining
        i = n
        while remaining > 0:
            remaining -= 1
            sid = ids[i % len(ids)]
            i += clients
            started = time.perf_counter()
            response = await client.get(f"/compute/v2.1/servers/{sid}", headers=headers)
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                errors.append(f"GET /servers/{sid}: {response.status_code} {response.text[:200]}")
            advance()

    pool = [httpx.AsyncClient(base_url=url, trust_env=False, timeout=60, limits=httpx.Limits(max_connections=1))
            for _ in range(clients)]
    try:
        for n, client in enumerate(pool):  # warm-up: open each client's connection, not counted
            warm = await client.get(f"/compute/v2.1/servers/{ids[n % len(ids)]}", headers=headers)
            if warm.status_code != 200:
                errors.append(f"warm-up GET: {warm.status_code} {warm.text[:200]}")
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(n, c) for n, c in enumerate(pool)))
        return time.perf_counter() - started
    finally:
        for client in pool:
            await client.aclose()


def _start(directory: Path, servers: int, password: str) -> tuple[subprocess.Popen[str], str, Path]:
    port = _free_port()
    state = directory / "state.db"
    config = directory / "fe.toml"
    config.write_text(CONFIG.format(port=port, state=state, az=AZ, vcpus=max(64, 2 * servers),
                                    ram_gb=max(64, 2 * servers)))
    log = directory / "daemon.log"
    env = {**os.environ, "FE_ADMIN_PASSWORD": password}
    with log.open("w") as sink:
        child = subprocess.Popen([sys.executable, "-m", "daemon.bench", str(config), str(servers)], env=env,
                                 stdout=subprocess.PIPE, stderr=sink, text=True,
                                 cwd=Path(__file__).resolve().parents[1])
    assert child.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    while (left := deadline - time.monotonic()) > 0 and child.poll() is None:
        if select.select([child.stdout], [], [], left)[0] and child.stdout.readline().strip() == READY:
            return child, f"http://127.0.0.1:{port}", state
    _stop(child)
    tail = log.read_text()[-2000:]
    raise RuntimeError(f"the bench daemon did not start (exit {child.returncode}); its log ends with:\n{tail}")


def _stop(child: subprocess.Popen[str]) -> int:
    """SIGTERM, as an operator stops `fe daemon` (SIGKILL if it has not stopped in time); its exit status."""
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    if child.stdout is not None:
        child.stdout.close()
    return int(child.returncode)


def api(servers: int = 200, concurrency: int = 10, clients: int = 50, requests: int = 20_000,
        console: Console | None = None) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); a flat report."""
    if servers < 2 or concurrency < 1 or clients < 1 or requests < 1:
        raise InvalidRequest(f"fe bench api: --servers {servers}, --concurrency {concurrency}, --clients {clients}, "
                             f"--requests {requests} (valid: --servers >= 2, the others >= 1)")
    password = secrets.token_urlsafe(18)
    with tempfile.TemporaryDirectory(prefix="fe-bench-api-") as tmp:
        child, url, state = _start(Path(tmp), servers, password)
        bar = _Bar(console)
        try:
            report = asyncio.run(_measure(url, password, child.pid, servers, concurrency, clients, requests, bar))
            report["state_db_bytes"] = sum(p.stat().st_size for p in state.parent.glob(state.name + "*"))
        finally:
            bar.stop()
            report_exit = _stop(child)
        report["daemon_exit_status"] = report_exit
        return report


async def _measure(url: str, password: str, pid: int, servers: int, concurrency: int, clients: int,
                   requests: int, bar: _Bar) -> dict[str, Any]:
    errors: list[str] = []
    ids: list[str] = []
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=120) as client:
        client.headers["X-Auth-Token"] = await _token(client, password)
        sequential = servers // 2
        names = [f"bench-{i:05d}" for i in range(servers)]
        seq_s = await _creates(client, names[:sequential], 1, ids, errors,
                               bar.task("creates, one at a time", sequential))
        conc_s = await _creates(client, names[sequential:], concurrency, ids, errors,
                                bar.task(f"creates, {concurrency} at a time", servers - sequential))
        token = str(client.headers["X-Auth-Token"])
    if not ids:
        raise RuntimeError(f"no server was created: {errors[:3]}")
    latencies: list[float] = []
    server_cpu, client_cpu = _cpu_seconds(pid), time.process_time()
    get_s = await _gets(url, token, ids, clients, requests, latencies, errors,
                        bar.task(f"GET /servers/{{id}}, {clients} clients", requests))
    server_cpu, client_cpu = _cpu_seconds(pid) - server_cpu, time.process_time() - client_cpu
    ordered = sorted(latencies)
    return {
        "servers": servers,
        "creates_sequential": sequential,
        "creates_per_s_sequential": round(sequential / seq_s, 1),
        "create_concurrency": concurrency,
        "creates_concurrent": servers - sequential,
        "creates_per_s_concurrent": round((servers - sequential) / conc_s, 1),
        "get_clients": clients,
        "get_requests": len(latencies),
        "get_seconds": round(get_s, 2),
        "get_per_s": round(len(latencies) / get_s, 1),
        "get_p50_ms": round(_percentile(ordered, 50) * 1000, 2),
        "get_p99_ms": round(_percentile(ordered, 99) * 1000, 2),
        "get_max_ms": round(ordered[-1] * 1000, 2),
        "daemon_cpu_s_during_gets": round(server_cpu, 2),
        "load_generator_cpu_s_during_gets": round(client_cpu, 2),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
    }


async def _child(config_path: str, servers: int) -> None:
    """The daemon process of the bench: `fe daemon`'s Daemon, then the bench's project and user."""
    import anyio

    from actors.identity import Role
    from daemon.config import load
    from daemon.service import Daemon

    daemon = Daemon(load(config_path, os.environ), os.environ)
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.run)
        while not daemon.ready:
            await anyio.sleep(0.01)
        await daemon.create_project(PROJECT, {"instances": servers, "vcpus": servers, "ram_mb": servers * 1024,
                                              "volumes": servers, "gigabytes": servers * 100})
        await daemon.create_user(PROJECT, USER, daemon.password, frozenset({Role.MEMBER}))
        print(READY, flush=True)


if __name__ == "__main__":
    from daemon.observability import setup_logging
    from runtime.driver import AnyioDriver

    setup_logging()  # as `fe daemon`: JSON lines at INFO, the access log included (here into daemon.log)
    AnyioDriver().run(_child, sys.argv[1], int(sys.argv[2]))

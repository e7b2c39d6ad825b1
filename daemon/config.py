"""The daemon's configuration file (`fe daemon --config fe.toml`, issue 5): which region
it runs, its hosts by libvirt URI, its Ceph pools and S3 endpoint, where it listens and
where it keeps its state. Read whole and validated before anything starts; every error
is `FILE:LINE: field: what is wrong (valid: ...)`.

```toml
[daemon]
region = "eu-west-0"                       # from actors/regions.toml
listen = "127.0.0.1:8774"                  # HOST:PORT of the API
state = "sqlite:///var/lib/fe-runtime/state.db"   # or postgresql://USER:PASSWORD@HOST:PORT/DB[?schema=NAME]
orphans = "delete"                         # at start: "delete" (default) or "keep" (report only) orphans

[[hosts]]                                  # one per hypervisor host
name = "par1-h01"
az = "eu-west-0a"
uri = "qemu+ssh://root@par1-h01/system"    # qemu, qemu+ssh, xen, xen+ssh, test
vcpus = 64                                 # what the scheduler may place there
ram_gb = 256
power = { uri = "qemu:///system", domain = "par1-h01" }   # optional: fencing by libvirt (VirtualBMC-like)

[storage]                                  # optional: without it, no volumes, backups or sDRS
ceph_conf = "/etc/ceph/ceph.conf"
mon_host = "127.0.0.1"
libvirt_uri = "qemu:///system"             # the libvirtd that manages the RBD pools
pools = { "eu-west-0a" = "fe-eu-west-0a" } # AZ -> RBD pool
s3 = { endpoint = "http://127.0.0.1:7480", access_key_env = "FE_S3_ACCESS_KEY", secret_key_env = "FE_S3_SECRET_KEY" }
```

Secrets are never in the file: `*_env` names environment variables the daemon reads at
start (the daemon is not an actor; actors still read nothing of the environment).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from actors.topology import REGIONS, RegionInfo
from runtime.errors import ConfigError
from runtime.toml_reader import TomlReader

ORPHAN_POLICIES = ("delete", "keep")  # daemon.restore

URI_SCHEMES = ("qemu", "qemu+ssh", "qemu+tcp", "xen", "xen+ssh", "test")
STATE_SCHEMES = ("sqlite", "postgresql")


@attrs.frozen
class PowerConfig:
    uri: str
    domain: str


@attrs.frozen
class HostConfig:
    name: str
    az: str
    uri: str
    vcpus: int
    ram_mb: int
    power: PowerConfig | None = None


@attrs.frozen
class S3Config:
    endpoint: str
    access_key: str
    secret_key: str


@attrs.frozen
class StorageConfig:
    ceph_conf: str
    mon_host: str
    libvirt_uri: str
    pools: Mapping[str, str]
    s3: S3Config | None


@attrs.frozen
class DaemonConfig:
    source: str
    region: RegionInfo
    listen_host: str
    listen_port: int
    state: str
    hosts: tuple[HostConfig, ...]
    storage: StorageConfig | None = None
    orphans: str = "delete"  # what the start does with orphan domains and volumes (daemon.restore)


def load(path: str | Path, environ: Mapping[str, str]) -> DaemonConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from exc
    return parse(text, str(path), environ)


def parse(text: str, source: str, environ: Mapping[str, str]) -> DaemonConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, f"not valid TOML: {exc}") from exc
    r = TomlReader(source, text)
    r.table(data, "(top level)", ("daemon", "hosts", "storage"), ("daemon", "hosts"))
    d = r.table(data["daemon"], "daemon", ("region", "listen", "state", "orphans"), ("region", "listen", "state"))
    orphans = r.choice(d.get("orphans", "delete"), "daemon.orphans", list(ORPHAN_POLICIES))
    region = REGIONS[r.choice(d["region"], "daemon.region", sorted(REGIONS))]
    host, port = _listen(r, d["listen"])
    state = _state(r, d["state"])
    hosts = data["hosts"]
    if not isinstance(hosts, list) or not hosts:
        raise r.error("hosts", "needs at least one [[hosts]] table", "[[hosts]] name, az, uri, vcpus, ram_gb")
    parsed = tuple(_host(r, h, i, region) for i, h in enumerate(hosts))
    names = [h.name for h in parsed]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise r.error(f"hosts[{i}].name", f"host {name!r} is declared twice")
    storage = _storage(r, data["storage"], region, environ) if "storage" in data else None
    return DaemonConfig(source, region, host, port, state, parsed, storage, orphans)


def _listen(r: TomlReader, value: Any) -> tuple[str, int]:
    match = re.fullmatch(r"\[?([^\]]+?)\]?:(\d{1,5})", str(value))
    if not match or not 0 < int(match[2]) < 65536:
        raise r.error("daemon.listen", f"{value!r} is not HOST:PORT", '"127.0.0.1:8774" or "[::1]:8774"')
    return match[1], int(match[2])


def _state(r: TomlReader, value: Any) -> str:
    url = urlsplit(str(value))
    if url.scheme not in STATE_SCHEMES:
        raise r.error("daemon.state", f"{value!r} is not a state location",
                      '"sqlite:///ABSOLUTE/PATH.db" or "postgresql://USER@HOST:PORT/DB"')
    if url.scheme == "sqlite" and not url.path.startswith("/"):
        raise r.error("daemon.state", f"{value!r}: the SQLite file needs an absolute path", "sqlite:///var/lib/fe/state.db")
    return str(value)


def _host(r: TomlReader, value: Any, i: int, region: RegionInfo) -> HostConfig:
    p = f"hosts[{i}]"
    h = r.table(value, p, ("name", "az", "uri", "vcpus", "ram_gb", "power"), ("name", "az", "uri", "vcpus", "ram_gb"))
    name = str(h["name"])
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise r.error(f"{p}.name", f"{name!r} is not a host name", "letters, digits, '.', '_' and '-'")
    az = r.choice(h["az"], f"{p}.az", list(region.azs))
    uri = _uri(r, h["uri"], f"{p}.uri")
    power = None
    if "power" in h:
        pw = r.table(h["power"], f"{p}.power", ("uri", "domain"), ("uri", "domain"))
        power = PowerConfig(_uri(r, pw["uri"], f"{p}.power.uri"), str(pw["domain"]))
    return HostConfig(name, az, uri, r.integer(h["vcpus"], f"{p}.vcpus", 1),
                      int(r.number(h["ram_gb"], f"{p}.ram_gb", 1) * 1024), power)


def _uri(r: TomlReader, value: Any, path: str) -> str:
    scheme = urlsplit(str(value)).scheme
    if scheme not in URI_SCHEMES:
        raise r.error(path, f"{value!r} is not a libvirt URI this daemon drives",
                      "qemu:///system, qemu+ssh://root@HOST/system, xen+ssh://root@HOST/, test:///default")
    return str(value)


def _storage(r: TomlReader, value: Any, region: RegionInfo, environ: Mapping[str, str]) -> StorageConfig:
    s = r.table(value, "storage", ("ceph_conf", "mon_host", "libvirt_uri", "pools", "s3"), ("ceph_conf", "pools"))
    pools = r.table(s["pools"], "storage.pools", tuple(region.azs))
    if not pools:
        raise r.error("storage.pools", "names no pool", f'AZ = "POOL", e.g. "{region.azs[0]}" = "fe-{region.azs[0]}"')
    s3 = None
    if "s3" in s:
        t = r.table(s["s3"], "storage.s3", ("endpoint", "access_key_env", "secret_key_env"),
                    ("endpoint", "access_key_env", "secret_key_env"))
        if urlsplit(str(t["endpoint"])).scheme not in ("http", "https"):
            raise r.error("storage.s3.endpoint", f"{t['endpoint']!r} is not an http(s) URL", "http://HOST:7480")
        keys = []
        for field in ("access_key_env", "secret_key_env"):
            name = str(t[field])
            if name not in environ:
                raise r.error(f"storage.s3.{field}", f"environment variable {name} is not set",
                              f"export {name}=... before starting the daemon")
            keys.append(environ[name])
        s3 = S3Config(str(t["endpoint"]), keys[0], keys[1])
    return StorageConfig(str(s["ceph_conf"]), str(s.get("mon_host", "127.0.0.1")),
                         _uri(r, s.get("libvirt_uri", "qemu:///system"), "storage.libvirt_uri"),
                         {az: str(pool) for az, pool in pools.items()}, s3)

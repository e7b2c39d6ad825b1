"""The daemon's configuration file (issue 5): read whole, refused with file, line and
field before anything starts."""

from __future__ import annotations

import pytest

from daemon.config import parse
from runtime.errors import ConfigError

GOOD = """
[daemon]
region = "eu-west-0"
listen = "127.0.0.1:8774"
state = "sqlite:///var/lib/fe-runtime/state.db"

[[hosts]]
name = "h1"
az = "eu-west-0a"
uri = "qemu:///system"
vcpus = 8
ram_gb = 16

[[hosts]]
name = "h2"
az = "eu-west-0b"
uri = "test:///default"
vcpus = 8
ram_gb = 16
power = { uri = "qemu:///system", domain = "h2" }

[storage]
ceph_conf = "/var/tmp/fe-ceph/ceph.conf"
pools = { "eu-west-0a" = "fe-eu-west-0a" }
s3 = { endpoint = "http://127.0.0.1:7480", access_key_env = "K", secret_key_env = "S" }
"""
ENV = {"K": "TESTKEY", "S": "TESTSECRET"}


def test_a_good_file_gives_the_hosts_storage_and_secrets_from_the_environment() -> None:
    cfg = parse(GOOD, "fe.toml", ENV)
    assert (cfg.region.name, cfg.listen_host, cfg.listen_port) == ("eu-west-0", "127.0.0.1", 8774)
    assert [h.name for h in cfg.hosts] == ["h1", "h2"] and cfg.hosts[0].ram_mb == 16 * 1024
    assert cfg.hosts[1].power is not None and cfg.hosts[1].power.domain == "h2"
    assert cfg.storage is not None and cfg.storage.pools == {"eu-west-0a": "fe-eu-west-0a"}
    assert cfg.storage.s3 is not None and cfg.storage.s3.secret_key == "TESTSECRET"


@pytest.mark.parametrize("old, new, where, valid", [
    ('region = "eu-west-0"', 'region = "eu-west-9"', "fe.toml:3: daemon.region", "eu-west-0"),
    ('listen = "127.0.0.1:8774"', 'listen = "localhost"', "fe.toml:4: daemon.listen", "127.0.0.1:8774"),
    ('state = "sqlite:///var/lib/fe-runtime/state.db"', 'state = "redis://x"', "fe.toml:5: daemon.state",
     "postgresql://"),
    ('az = "eu-west-0a"', 'az = "eu-west-1a"', "fe.toml:9: hosts[0].az", "eu-west-0b"),
    ('uri = "qemu:///system"\nvcpus', 'uri = "vbox:///session"\nvcpus', "fe.toml:10: hosts[0].uri", "qemu+ssh"),
    ('name = "h2"', 'name = "h1"', "fe.toml:15: hosts[1].name", ""),
    ('pools = { "eu-west-0a"', 'pools = { "eu-west-1a"', "fe.toml:24: storage.pools.eu-west-1a", "eu-west-0a"),
])
def test_each_bad_field_is_named_with_its_line(old: str, new: str, where: str, valid: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(GOOD.replace(old, new, 1), "fe.toml", ENV)
    assert err.value.where == where
    assert valid in err.value.valid


def test_a_missing_secret_names_the_variable() -> None:
    with pytest.raises(ConfigError) as err:
        parse(GOOD, "fe.toml", {"K": "x"})
    assert err.value.where.endswith("storage.s3.secret_key_env") and "S is not set" in err.value.problem

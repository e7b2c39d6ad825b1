"""Fixtures the daemon tests share."""

from __future__ import annotations

from collections.abc import Iterator

import libvirt
import pytest

PROXY_VARIABLES = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients reach the daemon on 127.0.0.1 directly, whatever proxy the environment names."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def libvirt_test() -> Iterator[libvirt.virConnect]:
    """A connection to libvirt's `test:///default` held for the whole test, so the test driver's
    domains outlive each in-process daemon; the domains the test made are removed at the end."""
    conn = libvirt.open("test:///default")
    try:
        yield conn
    finally:
        for dom in conn.listAllDomains():
            if dom.name() != "test":
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        conn.close()

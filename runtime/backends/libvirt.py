"""libvirt adapters: `LibvirtHypervisor` (Hypervisor port) and `LibvirtPower` (Power port).

A server is a persistent libvirt domain named after its server id and tagged with
`<fe:server id="..."/>` metadata in the `SERVER_NS` namespace. Domains without the
tag are not ours: `list` skips them and every other call treats them as absent
(`define` of a name they hold is still a `Conflict`). Domain XML comes from one
template per libvirt driver: `test` (test:// URIs, in-process, unit tests) and a
tiny TCG guest for qemu:// URIs (no disk, no NIC: other ports add those).

Refusals are those listed in `runtime.ports`, with the sim model's exceptions and
messages, plus `InvalidRequest` for a server id libvirt cannot name a domain after
or a size below 1 vCPU / 1 MiB (checked before any I/O). State checks and the
change they guard are two libvirt calls, not one transaction: actors serialise the
operations on one server, and a lost race still ends in a refusal, never a resize
of a running domain's live state.

Connections, keepalive and the mapping of lost connections to `HostUnreachable`
are in `runtime.backends.libvirt_connection`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urlsplit

import libvirt

from runtime.backends.libvirt_connection import Connection
from runtime.errors import BackendError, ConfigError, Conflict, InvalidTransition, NotFound
from runtime.ports import SERVER_ID, DomainInfo, DomainSpec, HostCapacity, PowerState, check_domain_request

SERVER_NS = "urn:fe-runtime:server:1"


_TEMPLATES = {
    "test": """<domain type='test'>
  <name>{name}</name>
  <metadata><fe:server xmlns:fe='{ns}' id='{name}'/></metadata>
  <memory unit='MiB'>{ram_mb}</memory>
  <vcpu>{vcpus}</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
</domain>""",
    # TCG ('qemu', so no /dev/kvm needed). With no disk and no NIC, SeaBIOS finds
    # nothing to boot and loops, which is all the lifecycle needs. No <graphics>:
    # type 'none' is invalid in libvirt 9.0.
    "qemu": """<domain type='qemu'>
  <name>{name}</name>
  <metadata><fe:server xmlns:fe='{ns}' id='{name}'/></metadata>
  <memory unit='MiB'>{ram_mb}</memory>
  <vcpu>{vcpus}</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='network'/></os>
  <devices><serial type='pty'/><video><model type='none'/></video><memballoon model='none'/></devices>
</domain>""",
}


def _refusal(server_id: str, running: bool, action: str) -> InvalidTransition:
    if running:
        return InvalidTransition("domain", server_id, "running", action, ["stop", "undefine"])
    return InvalidTransition("domain", server_id, "stopped", action, ["start", "resize", "undefine"])


def _code(exc: Any) -> int:
    return int(exc.get_error_code())


def _exists(conn: Any, name: str) -> bool:
    try:
        conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if _code(exc) == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise
    return True


def _lookup(conn: Any, server_id: str, host: str) -> Any:
    """The domain of `server_id`, or NotFound if there is none or it is not ours."""
    if not SERVER_ID.fullmatch(server_id):
        raise NotFound("domain", f"{server_id} on {host}")
    try:
        dom = conn.lookupByName(server_id)
        dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, SERVER_NS, 0)
    except libvirt.libvirtError as exc:
        if _code(exc) in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_DOMAIN_METADATA):
            raise NotFound("domain", f"{server_id} on {host}") from exc
        raise
    return dom


def _define(conn: Any, xml: str, server_id: str, host: str) -> None:
    try:
        conn.defineXML(xml)
    except libvirt.libvirtError as exc:
        # Without a <uuid> in the XML, libvirt refuses a second domain of one name.
        if _code(exc) == libvirt.VIR_ERR_OPERATION_FAILED and _exists(conn, server_id):
            raise Conflict(
                f"domain {server_id} is already defined on {host}; undefine it first or use another server id"
            ) from exc
        raise


def _start(conn: Any, server_id: str, host: str) -> None:
    dom = _lookup(conn, server_id, host)
    if dom.isActive():
        raise _refusal(server_id, True, "start")
    try:
        dom.create()
    except libvirt.libvirtError as exc:
        if _code(exc) == libvirt.VIR_ERR_OPERATION_INVALID:  # started meanwhile by someone else
            raise _refusal(server_id, True, "start") from exc
        raise


def _stop(conn: Any, server_id: str, host: str) -> None:
    dom = _lookup(conn, server_id, host)
    if not dom.isActive():
        raise _refusal(server_id, False, "stop")
    try:
        dom.destroy()
    except libvirt.libvirtError as exc:
        if _code(exc) == libvirt.VIR_ERR_OPERATION_INVALID:  # stopped meanwhile
            raise _refusal(server_id, False, "stop") from exc
        raise


def _undefine(conn: Any, server_id: str, host: str) -> None:
    dom = _lookup(conn, server_id, host)
    try:
        if dom.isActive():
            # A running domain that is only undefined keeps running (as a transient one).
            dom.destroy()
        dom.undefine()
    except libvirt.libvirtError as exc:
        if _code(exc) == libvirt.VIR_ERR_NO_DOMAIN:  # undefined meanwhile
            raise NotFound("domain", f"{server_id} on {host}") from exc
        raise


def _resized(xml: str, vcpus: int, ram_mb: int) -> str:
    """The persistent definition `xml` with new sizes, everything else kept."""
    root = ET.fromstring(xml)
    vcpu = root.find("vcpu")
    if vcpu is None:
        raise BackendError(f"domain definition without <vcpu>, cannot resize it: {xml[:200]}")
    vcpu.text = str(vcpus)
    vcpu.attrib.pop("current", None)
    for tag in ("memory", "currentMemory"):
        memory = root.find(tag)
        if memory is not None:
            memory.text = str(ram_mb)
            memory.set("unit", "MiB")
    return ET.tostring(root, encoding="unicode")


def _resize(conn: Any, server_id: str, vcpus: int, ram_mb: int, host: str) -> None:
    dom = _lookup(conn, server_id, host)
    if dom.isActive():
        raise _refusal(server_id, True, "resize")
    conn.defineXML(_resized(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), vcpus, ram_mb))


def _list(conn: Any) -> list[DomainInfo]:
    found = []
    for dom in conn.listAllDomains(0):
        try:
            tag = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, SERVER_NS, 0)
            _state, max_kib, _kib, vcpus, _cpu_ns = dom.info()
            running = bool(dom.isActive())
        except libvirt.libvirtError as exc:
            if _code(exc) in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_DOMAIN_METADATA):
                continue  # not ours, or undefined while we looked
            raise
        found.append(DomainInfo(str(ET.fromstring(tag).get("id")), int(vcpus), int(max_kib) // 1024, running))
    return sorted(found, key=lambda d: d.server_id)


class LibvirtHypervisor:
    """Hypervisor port on the libvirt at `uri`, for the host `host_name`.

    Losing the host is noticed by libvirt keepalive (probe every
    `keepalive_interval_s`, closed after `keepalive_count` misses); see
    `runtime.backends.libvirt_connection`.
    """

    def __init__(self, uri: str, host_name: str, *, keepalive_interval_s: int = 5, keepalive_count: int = 3) -> None:
        self._host = host_name
        self._driver = urlsplit(uri).scheme.partition("+")[0]
        self._conn = Connection(
            uri, host_name, keepalive_interval_s=keepalive_interval_s, keepalive_count=keepalive_count
        )

    @property
    def host(self) -> str:
        return self._host

    async def capacity(self) -> HostCapacity:
        info = await self._conn.call(lambda conn: conn.getInfo())
        return HostCapacity(vcpus=int(info[2]), ram_mb=int(info[1]))

    async def define(self, spec: DomainSpec) -> None:
        check_domain_request(spec.server_id, spec.vcpus, spec.ram_mb)
        template = _TEMPLATES.get(self._driver)
        if template is None:
            raise ConfigError(
                f"libvirt URI {self._conn.uri}", f"no domain template for the '{self._driver}' driver",
                ", ".join(sorted(_TEMPLATES)),
            )
        xml = template.format(name=spec.server_id, ns=SERVER_NS, vcpus=spec.vcpus, ram_mb=spec.ram_mb)
        await self._conn.call(lambda conn: _define(conn, xml, spec.server_id, self._host))

    async def start(self, server_id: str) -> None:
        await self._conn.call(lambda conn: _start(conn, server_id, self._host))

    async def stop(self, server_id: str) -> None:
        await self._conn.call(lambda conn: _stop(conn, server_id, self._host))

    async def undefine(self, server_id: str) -> None:
        await self._conn.call(lambda conn: _undefine(conn, server_id, self._host))

    async def resize(self, server_id: str, vcpus: int, ram_mb: int) -> None:
        check_domain_request(server_id, vcpus, ram_mb)
        await self._conn.call(lambda conn: _resize(conn, server_id, vcpus, ram_mb, self._host))

    async def list(self) -> list[DomainInfo]:
        return await self._conn.call(_list)

    async def wait_unreachable(self) -> None:
        await self._conn.wait_lost()

    async def wait_reachable(self) -> None:
        await self._conn.wait_back()

    async def aclose(self) -> None:
        await self._conn.aclose()


class LibvirtPower:
    """Power port for a lab host that is itself the libvirt domain `domain_name`.

    As OpenStack's VirtualBMC does: ON while the domain is active, `power_off`
    destroys it (a hard cut, as fencing needs), `power_on` starts it. Both are
    idempotent, like a BMC's.
    """

    def __init__(self, uri: str, domain_name: str, *, keepalive_interval_s: int = 5, keepalive_count: int = 3) -> None:
        self._name = domain_name
        self._conn = Connection(
            uri, domain_name, keepalive_interval_s=keepalive_interval_s, keepalive_count=keepalive_count
        )

    async def status(self) -> PowerState:
        active = await self._conn.call(lambda conn: bool(self._domain(conn).isActive()))
        return PowerState.ON if active else PowerState.OFF

    async def power_off(self) -> None:
        await self._conn.call(self._off)

    async def power_on(self) -> None:
        await self._conn.call(self._on)

    async def aclose(self) -> None:
        await self._conn.aclose()

    def _domain(self, conn: Any) -> Any:
        try:
            return conn.lookupByName(self._name)
        except libvirt.libvirtError as exc:
            if _code(exc) == libvirt.VIR_ERR_NO_DOMAIN:
                raise BackendError(
                    f"the power controller at {self._conn.uri} has no domain {self._name!r}; "
                    "check the host's power settings"
                ) from exc
            raise

    def _off(self, conn: Any) -> None:
        dom = self._domain(conn)
        try:
            if dom.isActive():
                dom.destroy()
        except libvirt.libvirtError as exc:
            if _code(exc) != libvirt.VIR_ERR_OPERATION_INVALID:  # already off
                raise

    def _on(self, conn: Any) -> None:
        dom = self._domain(conn)
        try:
            if not dom.isActive():
                dom.create()
        except libvirt.libvirtError as exc:
            if _code(exc) != libvirt.VIR_ERR_OPERATION_INVALID:  # already on
                raise

"""The state machine's own model of what succeeded: servers, groups, limits, requests in flight.

The model only changes when the region answered: a reply that succeeded changes it,
a refusal never does. With no request of a tenant in flight, the tenant's quota usage
must equal what `TenantModel.usage` computes from it.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from actors.flavors import Flavor
from actors.volumes import SYSTEM_DISK_GB
from runtime.errors import CloudError
from tests.properties.harness import Outcome


@attrs.define(eq=False)
class Server:
    """A bundle entry: a server a tenant asked for; `id` is set once it was created."""

    tenant: str
    name: str
    id: str | None = None

    def __repr__(self) -> str:
        return f"Server({self.tenant}/{self.name}, {self.id})"


@attrs.frozen
class QuotaRequest:
    tenant: str
    id: str
    resource: str
    limit: int


@attrs.define
class ServerModel:
    flavor: Flavor
    az: str
    group: str | None
    auto_recovery: bool
    expected: str | None = "active"  # state its last successful request left it in; None: unknown


@attrs.define
class TenantModel:
    limits: dict[str, int]
    servers: dict[str, ServerModel] = attrs.Factory(dict)
    groups: dict[str, str] = attrs.Factory(dict)  # name -> policy
    accepted: set[str] = attrs.Factory(set)

    def usage(self) -> dict[str, int]:
        """Each server has a system volume of the default size (ECS-3)."""
        flavors = [s.flavor for s in self.servers.values()]
        return {"instances": len(flavors), "vcpus": sum(f.vcpus for f in flavors),
                "ram_mb": sum(f.ram_mb for f in flavors), "server_groups": len(self.groups),
                "volumes": len(flavors), "gigabytes": SYSTEM_DISK_GB * len(flavors)}

    def members(self, group: str) -> int:
        return sum(1 for s in self.servers.values() if s.group == group)

    def in_use(self, resource: str) -> int:
        """What a limit on `resource` may not go below: usage, or the largest group for group members."""
        if resource == "server_group_members":
            return max((self.members(g) for g in self.groups), default=0)
        return self.usage()[resource]


@attrs.define
class Pending:
    """A request in flight; `done` updates the model with its outcome when it comes."""

    ticket: int
    msg: object
    tenant: str
    server_id: str | None
    allowed: tuple[type[CloudError], ...]
    done: Callable[[Outcome], None]


def needs(flavor: Flavor) -> dict[str, int]:
    return {"instances": 1, "vcpus": flavor.vcpus, "ram_mb": flavor.ram_mb, "volumes": 1, "gigabytes": SYSTEM_DISK_GB}

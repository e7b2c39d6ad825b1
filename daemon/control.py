"""`Control`: the one door from the API to the actor tree (issue 5).

Every API module asks the actors through `Control.ask(project, message)`: it finds the
project's tenant actor and asks it with the API's timeout. Requests that change what a
tenant owns are made durable here (the journal: an intent before the actors act, the
outcome after, both in the StateStore), so no API module decides about persistence.
"""

from __future__ import annotations

from typing import Any

from actors.region import GetServices, GetTenant, RegionServices
from runtime.actor import ActorRef

# How long a request waits for the actors: a create builds a domain on a real host.
ASK_TIMEOUT_S = 600.0


class Control:
    """The region actor, seen from the API."""

    def __init__(self, region: ActorRef) -> None:
        self.region = region

    async def tenant(self, project: str) -> ActorRef:
        """The tenant actor of `project` (NotFound if the project has none)."""
        ref = await self.region.ask(GetTenant(project), timeout=ASK_TIMEOUT_S)
        assert isinstance(ref, ActorRef)
        return ref

    async def services(self) -> RegionServices:
        """The region's AZ, volume, backup and sDRS actors."""
        services = await self.region.ask(GetServices(), timeout=ASK_TIMEOUT_S)
        assert isinstance(services, RegionServices)
        return services

    async def ask(self, project: str, msg: Any) -> Any:
        """Ask `project`'s tenant actor; its reply, or the CloudError it raised."""
        return await (await self.tenant(project)).ask(msg, timeout=ASK_TIMEOUT_S)

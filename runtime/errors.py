"""Typed errors of fe-runtime: one root, a short tree, typed fields.

    CloudError
    ├── InvalidRequest (ValueError)   bad input; the request changed nothing
    │   ├── QuotaExceeded             resource, limit, used, requested
    │   ├── InvalidTransition         state, action, allowed
    │   └── ConfigError               where (file:line or field), what is valid
    ├── NotFound (LookupError)        kind, id
    ├── Conflict                      the request clashes with current state
    ├── NoCapacity                    no host passes the filters
    ├── ServiceUnavailable            a service's API is down (outage or maintenance); retry later
    ├── BackendError                  a port's backend failed (vendor error chained)
    └── ActorError
        ├── AskTimeout (TimeoutError) the reply did not come before the deadline
        ├── ActorCrashed              the actor died while handling the request
        └── ActorStopped              the actor is no longer running

The REST layer (issue 5) maps these to status codes in one place.
"""

from __future__ import annotations

from collections.abc import Iterable


class CloudError(Exception):
    """Root of every error fe-runtime raises on purpose."""


class InvalidRequest(CloudError, ValueError):
    """Bad input: the request was refused and changed nothing."""


class QuotaExceeded(InvalidRequest):
    def __init__(self, resource: str, limit: int, used: int, requested: int) -> None:
        self.resource, self.limit, self.used, self.requested = resource, limit, used, requested
        super().__init__(
            f"Quota exceeded for {resource}: requested {requested}, but already used "
            f"{used} of {limit} {resource}; ask for a quota change or free some {resource}"
        )


class InvalidTransition(InvalidRequest):
    def __init__(self, kind: str, ident: str, state: str, action: str, allowed: Iterable[str]) -> None:
        self.kind, self.ident, self.state, self.action = kind, ident, state, action
        self.allowed = tuple(sorted(allowed))
        super().__init__(
            f"cannot {action} {kind} {ident} in state {state}; "
            f"allowed in this state: {', '.join(self.allowed) or 'none'}"
        )


class ConfigError(InvalidRequest):
    def __init__(self, where: str, problem: str, valid: str = "") -> None:
        self.where, self.problem, self.valid = where, problem, valid
        super().__init__(f"{where}: {problem}" + (f" (valid: {valid})" if valid else ""))


class NotFound(CloudError, LookupError):
    def __init__(self, kind: str, ident: str) -> None:
        self.kind, self.ident = kind, ident
        super().__init__(f"{kind} {ident!r} not found")


class Conflict(CloudError):
    """The request clashes with the current state (e.g. a name already taken)."""


class NoCapacity(CloudError):
    def __init__(self, where: str, need: str) -> None:
        self.where, self.need = where, need
        super().__init__(f"no host in {where} can take {need}")


class ServiceUnavailable(CloudError):
    def __init__(self, service: str, region: str) -> None:
        self.service, self.region = service, region
        super().__init__(f"the {service} API of {region} is unavailable; retry later")


class BackendError(CloudError):
    """A port's backend failed; the vendor exception is chained as __cause__."""


class ActorError(CloudError):
    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        super().__init__(f"actor {path}: {detail}")


class AskTimeout(ActorError, TimeoutError):
    pass


class ActorCrashed(ActorError):
    pass


class ActorStopped(ActorError):
    pass

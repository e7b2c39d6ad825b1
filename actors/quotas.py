"""Tenant quotas (SPEC TEN-3): limits, usage, and the only way limits change.

Invariant: for every resource, used <= limit. A reservation either fits entirely or
changes nothing; limits change only through an accepted `QuotaChange` request, and
never below what is in use.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

from actors.topology import DEFAULTS
from runtime.errors import InvalidRequest, QuotaExceeded

RESOURCES: tuple[str, ...] = tuple(DEFAULTS["quotas"])


def check_resources(names: Mapping[str, int], where: str) -> None:
    for name, value in names.items():
        if name not in RESOURCES:
            raise InvalidRequest(f"{where}: unknown quota resource {name!r}; valid: {', '.join(RESOURCES)}")
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidRequest(f"{where}: quota {name} must be a whole number >= 0, got {value!r}")


@attrs.define
class QuotaLedger:
    limits: dict[str, int]
    used: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(RESOURCES, 0))

    @classmethod
    def with_defaults(cls, overrides: Mapping[str, int] | None = None) -> QuotaLedger:
        limits = dict(DEFAULTS["quotas"])
        if overrides:
            check_resources(overrides, "quotas")
            limits.update(overrides)
        return cls(limits)

    def reserve(self, amounts: Mapping[str, int]) -> None:
        """Add `amounts` to usage if every resource stays within its limit; else raise, changing nothing."""
        for name, n in amounts.items():
            if n > 0 and self.used[name] + n > self.limits[name]:
                raise QuotaExceeded(name, self.limits[name], self.used[name], n)
        for name, n in amounts.items():
            self.used[name] += n

    def release(self, amounts: Mapping[str, int]) -> None:
        for name, n in amounts.items():
            self.used[name] -= n
            assert self.used[name] >= 0, f"released more {name} than was used"


class ChangeState(enum.Enum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


@attrs.define
class QuotaChange:
    id: str
    resource: str
    limit: int
    state: ChangeState = ChangeState.PENDING

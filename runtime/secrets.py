"""The port for unguessable values: token ids, STS keys, TOTP secrets, password salts (SEC-1).

Domain code (actors/) never calls the `secrets` module or `os.urandom` itself: it is handed a
`SecretSource`. Production passes `SystemSecrets` (the operating system's CSPRNG); simulations
and tests pass `SeededSecrets(seed)`, whose values repeat from run to run so that event logs
and reports stay deterministic.
"""

from __future__ import annotations

import base64
import random
import secrets
from typing import Protocol


class SecretSource(Protocol):
    def token(self, nbytes: int) -> str:
        """`nbytes` random bytes as URL-safe text (base64url, no padding): ids, keys, session tokens."""
        ...

    def token_bytes(self, nbytes: int) -> bytes:
        """`nbytes` random bytes: password salts, TOTP secrets."""
        ...


def _text(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class SystemSecrets:
    """Production source: the `secrets` module (the operating system's CSPRNG)."""

    def token(self, nbytes: int) -> str:
        return secrets.token_urlsafe(nbytes)

    def token_bytes(self, nbytes: int) -> bytes:
        return secrets.token_bytes(nbytes)


class SeededSecrets:
    """Deterministic source for simulation and tests: the same seed gives the same values.

    NEVER use it in production: anyone who knows or guesses the seed can forge every
    token, key and salt it produced.
    """

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def token(self, nbytes: int) -> str:
        return _text(self._random.randbytes(nbytes))

    def token_bytes(self, nbytes: int) -> bytes:
        return self._random.randbytes(nbytes)

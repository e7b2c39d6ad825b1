"""The `StateStore` port: the control plane's durable state (DESIGN.md "Production daemon", issue 5).

A record is a JSON document (a dict) stored under `(kind, key)`. Each record has a
`version`: 1 when made, +1 on each put; a record deleted and made again starts over at
1. The store has one global `revision`, +1 per committed batch; each record keeps the
revision of the batch that last wrote it, which never repeats (so it tells a record
made again from the one a caller read, where `version` alone cannot).

Writes come in batches: `apply(batch, expect)` applies every `Put` and `Delete` of the
batch or none of them. `expect` maps `(kind, key)` to the version the caller read
(`None`: the record must not exist); it may name records the batch does not write (a
read the batch depends on). Any mismatch raises `StaleWrite` and changes nothing
(optimistic concurrency: re-read, decide again, retry). `apply` returns the batch's
revision once the batch is durable, so the caller may then acknowledge the operation.

Adapters (`runtime/backends/`): `SqliteStateStore` (one file, WAL, synchronous=FULL;
the embedded default) and `PostgresStateStore` (a control plane on several machines).
Refusals they share, checked here before any I/O: an empty or NUL-bearing kind or key,
or one that is not valid UTF-8 text; a value that is not a dict or does not survive a
JSON round trip unchanged (tuples, non-string dict keys, NaN...); the same record twice
in one batch; an expected version that is not a positive int or None: `InvalidRequest`.
Backend failures (file locked or corrupt, server unreachable) raise `BackendError` with
the vendor exception chained. A batch whose `apply` was cancelled, or failed with
`BackendError` while committing, is wholly applied or not at all: re-read to know.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs

from runtime.errors import BackendError, Conflict, InvalidRequest

RecordId = tuple[str, str]  # (kind, key)


@attrs.frozen
class Record:
    """One stored record as read; `value` is the caller's own copy."""

    kind: str
    key: str
    value: dict[str, Any]
    version: int  # 1 when made, +1 per put
    revision: int  # the store revision of the batch that last wrote it


@attrs.frozen
class Put:
    """Make or replace the record `(kind, key)` with `value`."""

    kind: str
    key: str
    value: dict[str, Any]


@attrs.frozen
class Delete:
    """Remove the record `(kind, key)`; deleting a missing record changes nothing."""

    kind: str
    key: str


Write = Put | Delete


class StaleWrite(Conflict):
    """An expectation of `apply` did not hold: the record changed since the caller read it."""

    def __init__(self, kind: str, key: str, expected: int | None, actual: int | None) -> None:
        self.kind, self.key, self.expected, self.actual = kind, key, expected, actual

        def show(version: int | None) -> str:
            return "absent" if version is None else f"version {version}"

        super().__init__(
            f"{kind} {key!r} is {show(actual)}, the write expected it {show(expected)}; "
            f"nothing was written: read it again and retry"
        )


class SchemaTooNew(BackendError):
    """The store was made by a newer fe-runtime, whose schema this one cannot read."""

    def __init__(self, location: str, found: int, supported: int) -> None:
        self.location, self.found, self.supported = location, found, supported
        super().__init__(
            f"state store {location} has schema version {found}, this fe-runtime reads up to "
            f"{supported}: upgrade fe-runtime, or point it at another state location"
        )


class StateStore(Protocol):
    """Durable records under `(kind, key)` with versions, written in atomic batches."""

    async def get(self, kind: str, key: str) -> Record | None:
        """The record, or None if there is none."""
        ...

    async def list(self, kind: str, prefix: str = "") -> list[Record]:
        """Every record of `kind` whose key starts with `prefix`, sorted by key (code point order)."""
        ...

    async def apply(self, batch: Sequence[Write], expect: Mapping[RecordId, int | None] | None = None) -> int:
        """Apply all of `batch` or nothing, if every expectation holds; return the new revision once durable.

        Raises `StaleWrite` (nothing changed), `InvalidRequest` (nothing changed) or `BackendError`.
        """
        ...

    async def close(self) -> None:
        """Release the file or connection; idempotent. Later calls raise RuntimeError."""
        ...


@attrs.frozen
class EncodedWrite:
    """A checked write as adapters store it: `data` is the JSON text, None for a delete."""

    kind: str
    key: str
    data: str | None


def _check_name(what: str, name: object) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"a record {what} must be a non-empty string, not {name!r}")
    if "\x00" in name:
        raise InvalidRequest(f"record {what} {name!r} contains a NUL character, which PostgreSQL cannot store")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequest(f"record {what} {name!r} is not valid UTF-8 text (lone surrogate)") from exc
    return name


def encode_value(kind: str, key: str, value: object) -> str:
    """The JSON text of `value`; refuse what would not read back equal."""
    where = f"value of {kind} {key!r}"
    if not isinstance(value, dict):
        raise InvalidRequest(f"the {where} must be a dict (a JSON object), not {type(value).__name__}")
    try:
        # ASCII escapes keep control characters and lone surrogates storable on every backend.
        text = json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        valid = "dict, list, str, int, finite float, bool, None"
        raise InvalidRequest(f"the {where} is not JSON: {exc} (valid: {valid})") from exc
    if not _same(json.loads(text), value):
        raise InvalidRequest(
            f"the {where} would not read back equal (tuples come back as lists, subclasses such as "
            f"enums as their base type; dict keys must be strings)"
        )
    return text


def _same(read: object, written: object) -> bool:
    """Equal, with the same types all the way down (1, 1.0 and True do not pass for each other)."""
    if type(read) is not type(written):
        return False
    if isinstance(read, dict):
        assert isinstance(written, dict)
        return read.keys() == written.keys() and all(_same(read[k], written[k]) for k in read)
    if isinstance(read, list):
        assert isinstance(written, list)
        return len(read) == len(written) and all(_same(r, w) for r, w in zip(read, written, strict=True))
    return read == written


def decode_value(text: str) -> dict[str, Any]:
    value = json.loads(text)
    assert isinstance(value, dict), "the store holds a non-object value: it was not written through a StateStore"
    return value


def check_batch(
    batch: Sequence[Write], expect: Mapping[RecordId, int | None] | None
) -> tuple[list[EncodedWrite], dict[RecordId, int | None]]:
    """Validate and encode a batch and its expectations, or raise `InvalidRequest`; no I/O."""
    writes: list[EncodedWrite] = []
    seen: set[RecordId] = set()
    for op in batch:
        if not isinstance(op, Put | Delete):
            raise InvalidRequest(f"a batch holds Put and Delete, not {type(op).__name__}")
        kind, key = _check_name("kind", op.kind), _check_name("key", op.key)
        if (kind, key) in seen:
            raise InvalidRequest(f"{kind} {key!r} is written twice in one batch; write it once")
        seen.add((kind, key))
        writes.append(EncodedWrite(kind, key, encode_value(kind, key, op.value) if isinstance(op, Put) else None))
    checked: dict[RecordId, int | None] = {}
    for (kind, key), version in (expect or {}).items():
        _check_name("kind", kind), _check_name("key", key)
        if version is not None and (type(version) is not int or version < 1):
            raise InvalidRequest(f"expected version of {kind} {key!r} must be an int >= 1 or None, not {version!r}")
        checked[(kind, key)] = version
    return writes, checked

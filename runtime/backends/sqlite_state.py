"""SQLite adapter of the `StateStore` port: one file, WAL journal, synchronous=FULL (the embedded default).

One connection, used from a worker thread (`anyio.to_thread.run_sync`) and serialised
by an `anyio.Lock`, so the event loop never waits on the disk. Each `apply` is one
`BEGIN IMMEDIATE` transaction: it takes SQLite's single write lock first, then checks
the expectations, writes, bumps the revision and commits; with WAL and
synchronous=FULL the commit returns after the WAL is fsynced, so an applied batch
survives a process kill or a power cut. Another process holding the write lock longer
than `busy_timeout_s` makes the call fail with `BackendError` (the file is locked),
as does a file that is not a database.

Schema (version 1): `meta(name, value)` holds `schema_version` and `revision`;
`records(kind, key, value, version, revision)` with (kind, key) the primary key. Keys
compare as UTF-8 bytes, i.e. in code point order, like Python's `sorted`. Opening makes
the schema if the file is new, and refuses a file of a newer schema (`SchemaTooNew`) or
one that holds other tables (not a state store).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import anyio
import anyio.to_thread

from runtime.errors import BackendError
from runtime.state import Record, RecordId, SchemaTooNew, StaleWrite, Write, check_batch, decode_value

SCHEMA_VERSION = 1
T = TypeVar("T")

_SCHEMA = (
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE records (kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
    " version INTEGER NOT NULL, revision INTEGER NOT NULL, PRIMARY KEY (kind, key)) WITHOUT ROWID",
)


class SqliteStateStore:
    """StateStore in the SQLite file `path`; open with `await SqliteStateStore.open(path)` (or `async with`)."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        """Use `open()`: it makes the connection and the schema."""
        self.path = path
        self._conn: sqlite3.Connection | None = conn
        self._lock = anyio.Lock()

    @classmethod
    async def open(cls, path: str | Path, *, busy_timeout_s: float = 5.0) -> SqliteStateStore:
        """Open (or make) the store in `path`; raise `SchemaTooNew` or `BackendError` if it cannot be used."""
        where = Path(path)
        conn = await anyio.to_thread.run_sync(_connect, where, busy_timeout_s)
        return cls(where, conn)

    async def __aenter__(self) -> SqliteStateStore:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def get(self, kind: str, key: str) -> Record | None:
        def read(conn: sqlite3.Connection) -> Record | None:
            row = conn.execute(
                "SELECT value, version, revision FROM records WHERE kind = ? AND key = ?", (kind, key)
            ).fetchone()
            return None if row is None else Record(kind, key, decode_value(row[0]), row[1], row[2])

        return await self._run(read)

    async def list(self, kind: str, prefix: str = "") -> list[Record]:
        def read(conn: sqlite3.Connection) -> list[Record]:
            rows = conn.execute(
                "SELECT key, value, version, revision FROM records "
                "WHERE kind = ? AND key >= ? AND substr(key, 1, length(?)) = ? ORDER BY key",
                (kind, prefix, prefix, prefix),
            ).fetchall()
            return [Record(kind, key, decode_value(value), version, rev) for key, value, version, rev in rows]

        return await self._run(read)

    async def apply(self, batch: Sequence[Write], expect: Mapping[RecordId, int | None] | None = None) -> int:
        writes, expected = check_batch(batch, expect)

        def commit(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for (kind, key), want in expected.items():
                    row = conn.execute("SELECT version FROM records WHERE kind = ? AND key = ?", (kind, key)).fetchone()
                    have = None if row is None else int(row[0])
                    if have != want:
                        raise StaleWrite(kind, key, want, have)
                (revision,) = conn.execute(
                    "UPDATE meta SET value = value + 1 WHERE name = 'revision' RETURNING value"
                ).fetchone()
                for w in writes:
                    if w.data is None:
                        conn.execute("DELETE FROM records WHERE kind = ? AND key = ?", (w.kind, w.key))
                    else:
                        conn.execute(
                            "INSERT INTO records (kind, key, value, version, revision) VALUES (?, ?, ?, 1, ?) "
                            "ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, "
                            "version = records.version + 1, revision = excluded.revision",
                            (w.kind, w.key, w.data, revision),
                        )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return int(revision)

        return await self._run(commit)

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await anyio.to_thread.run_sync(conn.close)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        async with self._lock:
            conn = self._conn
            if conn is None:
                raise RuntimeError(f"the state store {self.path} is closed")
            try:
                return await anyio.to_thread.run_sync(fn, conn)
            except sqlite3.Error as exc:
                raise BackendError(f"SQLite state store {self.path}: {exc}") from exc


def _connect(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    """Open `path` in WAL mode with synchronous=FULL, making or checking its schema."""
    try:
        conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise BackendError(f"cannot open the SQLite state store {path}: {exc}") from exc
    try:
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode != "wal":
            raise BackendError(f"SQLite state store {path}: cannot use the WAL journal (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("BEGIN IMMEDIATE")
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            for statement in _SCHEMA:  # one by one: executescript would commit first
                conn.execute(statement)
            conn.executemany(
                "INSERT INTO meta (name, value) VALUES (?, ?)", [("schema_version", SCHEMA_VERSION), ("revision", 0)]
            )
        elif "meta" not in tables:
            raise BackendError(
                f"{path} is an SQLite database but not an fe-runtime state store (tables: {', '.join(sorted(tables))})"
            )
        else:
            (found,) = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
            if found > SCHEMA_VERSION:
                raise SchemaTooNew(str(path), found, SCHEMA_VERSION)
        conn.execute("COMMIT")
    except BaseException as exc:
        conn.close()
        if isinstance(exc, sqlite3.Error):
            raise BackendError(f"cannot open the SQLite state store {path}: {exc}") from exc
        raise
    return conn

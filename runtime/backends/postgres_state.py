"""PostgreSQL adapter of the `StateStore` port, for a control plane on several machines (psycopg 3, async).

One `psycopg.AsyncConnection` (asyncio only) in autocommit mode, serialised by an
`anyio.Lock`; each `apply` is one transaction that first bumps the revision row
(`UPDATE ... RETURNING`), whose row lock orders every writer of every process one after
the other, as SQLite's write lock does; then it checks the expectations, writes and
commits. `apply` returns after the COMMIT, i.e. once the server has made the batch
durable (with the server's default synchronous_commit=on).

A lost connection fails the call that meets it with `BackendError` (if that was a
COMMIT, the batch may or may not be applied: re-read); the next call connects again.
Every psycopg error is mapped to `BackendError` with the vendor error chained.

Schema (version 1) in the PostgreSQL schema `schema` (default "fe_state", so several
control planes can share one database): `meta(id = 1, schema_version, revision)` and
`records(kind, key, value, version, revision)`; kind and key use the "C" collation so
keys sort in code point order (in a UTF-8 database), like Python's `sorted` and the
SQLite adapter. Values are JSON text (not jsonb, which cannot hold "\\u0000").
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from runtime.errors import BackendError, InvalidRequest
from runtime.state import Record, RecordId, SchemaTooNew, StaleWrite, Write, check_batch, decode_value

if TYPE_CHECKING:
    import psycopg

SCHEMA_VERSION = 1
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_SCHEMA_LOCK = 0x6665_7374  # advisory lock key ("fest"): one process makes the schema at a time


class PostgresStateStore:
    """StateStore in a PostgreSQL database; open with `await PostgresStateStore.open(dsn)` (or `async with`)."""

    def __init__(self, dsn: str, schema: str, connect_timeout_s: float) -> None:
        """Use `open()`: it connects and makes the schema."""
        self.dsn, self.schema = dsn, schema
        self._connect_timeout_s = connect_timeout_s
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._closed = False
        self._lock = anyio.Lock()

    @classmethod
    async def open(cls, dsn: str, *, schema: str = "fe_state", connect_timeout_s: float = 5.0) -> PostgresStateStore:
        """Connect to `dsn` and make or check the schema; raise `SchemaTooNew` or `BackendError`."""
        if not _SCHEMA_NAME.fullmatch(schema):
            raise InvalidRequest(f"PostgreSQL schema name {schema!r} is not valid (valid: {_SCHEMA_NAME.pattern})")
        store = cls(dsn, schema, connect_timeout_s)
        async with store._lock:
            await store._connection()
        return store

    async def __aenter__(self) -> PostgresStateStore:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def _where(self) -> str:
        return f"PostgreSQL state store {self.schema!r}"

    async def get(self, kind: str, key: str) -> Record | None:
        rows = await self._query(
            "SELECT value, version, revision FROM {s}.records WHERE kind = %s AND key = %s", (kind, key)
        )
        return None if not rows else Record(kind, key, decode_value(rows[0][0]), rows[0][1], rows[0][2])

    async def list(self, kind: str, prefix: str = "") -> list[Record]:
        rows = await self._query(
            "SELECT key, value, version, revision FROM {s}.records "
            "WHERE kind = %s AND key >= %s AND starts_with(key, %s) ORDER BY key",
            (kind, prefix, prefix),
        )
        return [Record(kind, key, decode_value(value), version, rev) for key, value, version, rev in rows]

    async def apply(self, batch: Sequence[Write], expect: Mapping[RecordId, int | None] | None = None) -> int:
        import psycopg

        writes, expected = check_batch(batch, expect)
        async with self._lock:
            conn = await self._connection()
            try:
                async with conn.transaction(), conn.cursor() as cur:
                    await cur.execute(self._sql("UPDATE {s}.meta SET revision = revision + 1 RETURNING revision"))
                    row = await cur.fetchone()
                    assert row is not None
                    revision = int(row[0])
                    for (kind, key), want in expected.items():
                        await cur.execute(
                            self._sql("SELECT version FROM {s}.records WHERE kind = %s AND key = %s"), (kind, key)
                        )
                        found = await cur.fetchone()
                        have = None if found is None else int(found[0])
                        if have != want:
                            raise StaleWrite(kind, key, want, have)
                    for w in writes:
                        if w.data is None:
                            await cur.execute(
                                self._sql("DELETE FROM {s}.records WHERE kind = %s AND key = %s"), (w.kind, w.key)
                            )
                        else:
                            await cur.execute(
                                self._sql(
                                    "INSERT INTO {s}.records (kind, key, value, version, revision) "
                                    "VALUES (%s, %s, %s, 1, %s) ON CONFLICT (kind, key) DO UPDATE SET "
                                    "value = excluded.value, version = records.version + 1, "
                                    "revision = excluded.revision"
                                ),
                                (w.kind, w.key, w.data, revision),
                            )
            except psycopg.Error as exc:
                raise BackendError(f"{self._where}: {exc}") from exc
        return revision

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close()

    def _sql(self, text: str) -> psycopg.sql.Composed:
        from psycopg import sql

        return sql.SQL(text).format(s=sql.Identifier(self.schema))

    async def _query(self, text: str, params: tuple[Any, ...]) -> builtins.list[tuple[Any, ...]]:
        import psycopg

        async with self._lock:
            conn = await self._connection()
            try:
                async with conn.cursor() as cur:
                    await cur.execute(self._sql(text), params)
                    return await cur.fetchall()
            except psycopg.Error as exc:
                raise BackendError(f"{self._where}: {exc}") from exc

    async def _connection(self) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        """The open connection, connecting (and checking the schema) if there is none or it broke. Hold the lock."""
        import psycopg

        if self._closed:
            raise RuntimeError(f"the {self._where} is closed")
        if self._conn is not None and not self._conn.broken:
            return self._conn
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, connect_timeout=max(1, round(self._connect_timeout_s))
            )
        except psycopg.Error as exc:
            raise BackendError(f"cannot reach the {self._where} at {_safe(self.dsn)}: {exc}") from exc
        try:
            await self._ensure_schema(conn)
        except BaseException as exc:
            await conn.close()
            if isinstance(exc, psycopg.Error):
                raise BackendError(f"{self._where}: cannot make or check the schema: {exc}") from exc
            raise
        self._conn = conn
        return conn

    async def _ensure_schema(self, conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
        async with conn.transaction(), conn.cursor() as cur:
            await cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            await cur.execute("SELECT to_regclass(%s)", (f'"{self.schema}".meta',))
            row = await cur.fetchone()
            if row is not None and row[0] is not None:
                await cur.execute(self._sql("SELECT schema_version FROM {s}.meta"))
                found = await cur.fetchone()
                if found is not None and found[0] > SCHEMA_VERSION:
                    raise SchemaTooNew(f"{self.schema!r} at {_safe(self.dsn)}", found[0], SCHEMA_VERSION)
                return
            await cur.execute(self._sql("CREATE SCHEMA IF NOT EXISTS {s}"))
            await cur.execute(self._sql(
                "CREATE TABLE {s}.meta (id int PRIMARY KEY CHECK (id = 1), schema_version int NOT NULL, "
                "revision bigint NOT NULL)"
            ))
            await cur.execute(self._sql(
                'CREATE TABLE {s}.records (kind text COLLATE "C" NOT NULL, key text COLLATE "C" NOT NULL, '
                "value text NOT NULL, version bigint NOT NULL, revision bigint NOT NULL, PRIMARY KEY (kind, key))"
            ))
            await cur.execute(self._sql("INSERT INTO {s}.meta VALUES (1, %s, 0)"), (SCHEMA_VERSION,))


def _safe(dsn: str) -> str:
    """The DSN without its password, for error messages."""
    import psycopg.conninfo

    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(unparsable DSN)"
    params.pop("password", None)
    return psycopg.conninfo.make_conninfo("", **{k: v for k, v in params.items() if v is not None})

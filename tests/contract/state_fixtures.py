"""Targets of the StateStore contract suite: every adapter, on anyio's asyncio backend.

- `sqlite`: `SqliteStateStore` in a file under pytest's tmp_path.
- `postgres`: `PostgresStateStore` on the server of `.ci/postgres-start.sh`, at the DSN in
  FE_TEST_POSTGRES_DSN (default: that script's, 127.0.0.1:55432). Marker `postgres`.
  Every bench gets its own PostgreSQL schema, dropped afterwards. Without a server the
  tests fail and say how to start one: they never skip.

A bench names one store location; `await bench.open()` opens a store there (again after
a close: durability), `bench.fresh()` is a new empty location (one per hypothesis
example), `bench.child_argv()` tells the crash test's child process how to open it.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

import anyio
import pytest

from runtime.state import StateStore

T = TypeVar("T")
DEFAULT_DSN = "postgresql://fe:fe@127.0.0.1:55432/fe_test"
HOW_TO_START = "start it with `bash .ci/postgres-start.sh` (or deselect these tests with -m 'not postgres')"


def postgres_dsn() -> str:
    return os.environ.get("FE_TEST_POSTGRES_DSN", DEFAULT_DSN)


def run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run `fn` on anyio's asyncio backend (psycopg's async connection needs asyncio)."""
    return anyio.run(fn, backend="asyncio")


class Bench(Protocol):
    name: str

    async def open(self) -> StateStore: ...

    def fresh(self) -> Bench: ...

    def child_argv(self) -> list[str]: ...

    def set_schema_version(self, version: int) -> None: ...


class SqliteBench:
    name = "sqlite"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / f"state-{uuid.uuid4().hex[:8]}.db"

    async def open(self) -> StateStore:
        from runtime.backends.sqlite_state import SqliteStateStore

        return await SqliteStateStore.open(self.path)

    def fresh(self) -> SqliteBench:
        return SqliteBench(self.directory)

    def child_argv(self) -> list[str]:
        return ["sqlite", str(self.path)]

    def set_schema_version(self, version: int) -> None:
        with sqlite3.connect(self.path) as conn:
            conn.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'", (version,))
        conn.close()


class PostgresBench:
    name = "postgres"

    def __init__(self, dsn: str, made: list[str]) -> None:
        self.dsn = dsn
        self.schema = f"fe_test_{uuid.uuid4().hex[:12]}"
        self._made = made  # every schema of this test, dropped at its end
        made.append(self.schema)

    async def open(self) -> StateStore:
        from runtime.backends.postgres_state import PostgresStateStore

        return await PostgresStateStore.open(self.dsn, schema=self.schema)

    def fresh(self) -> PostgresBench:
        return PostgresBench(self.dsn, self._made)

    def child_argv(self) -> list[str]:
        return ["postgres", self.dsn, self.schema]

    def set_schema_version(self, version: int) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"UPDATE {self.schema}.meta SET schema_version = %s", (version,))


def _drop_schemas(dsn: str, schemas: list[str]) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        for schema in schemas:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _require_postgres(dsn: str) -> None:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=3):
            pass
    except psycopg.Error as exc:
        pytest.fail(f"no PostgreSQL answers at {dsn} (FE_TEST_POSTGRES_DSN): {exc}; {HOW_TO_START}", pytrace=False)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def state_bench(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Bench]:
    if request.param == "sqlite":
        yield SqliteBench(tmp_path)
        return
    dsn = postgres_dsn()
    _require_postgres(dsn)
    made: list[str] = []
    try:
        yield PostgresBench(dsn, made)
    finally:
        _drop_schemas(dsn, made)

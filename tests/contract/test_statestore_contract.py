"""The StateStore contract (runtime/state.py), the same tests on SQLite and PostgreSQL (issue 5: durable state).

What every adapter must do: records with versions and a global revision; list by prefix
in code point order; optimistic concurrency (`StaleWrite` changes nothing); all of a
batch or none; durability across close/reopen and across SIGKILL of the writer;
refusal of a newer schema; backend failures as `BackendError`.
"""

from __future__ import annotations

import math
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.errors import BackendError, Conflict, InvalidRequest
from runtime.state import Delete, Put, Record, SchemaTooNew, StaleWrite, StateStore, Write

from .state_fixtures import HOW_TO_START, Bench, postgres_dsn, run
from .state_fixtures import state_bench as state_bench  # the fixture

ROOT = Path(__file__).parents[2]


def test_put_get_list_delete(state_bench: Bench) -> None:
    async def body() -> None:
        store = await state_bench.open()
        assert await store.get("server", "s1") is None
        rev = await store.apply([Put("server", "s1", {"name": "web"}), Put("server", "s2", {"name": "db"})])
        assert await store.get("server", "s1") == Record("server", "s1", {"name": "web"}, 1, rev)
        assert [r.key for r in await store.list("server")] == ["s1", "s2"]
        assert await store.list("volume") == []
        rev2 = await store.apply([Delete("server", "s1"), Delete("server", "never-made")])
        assert rev2 == rev + 1
        assert await store.get("server", "s1") is None
        assert await store.list("server") == [Record("server", "s2", {"name": "db"}, 1, rev)]
        await store.close()
        await store.close()  # idempotent
        with pytest.raises(RuntimeError, match="closed"):
            await store.get("server", "s2")

    run(body)


def test_list_filters_by_prefix_and_sorts_keys_in_code_point_order(state_bench: Bench) -> None:
    keys = ["b", "a", "ab", "a/b", "Z", "é", "日本", "a%b", "a_b", "axb", "aé", "😀", "a"  + "\uffff", "10", "9"]

    async def body() -> None:
        store = await state_bench.open()
        await store.apply([Put("k", key, {"i": i}) for i, key in enumerate(keys)] + [Put("other", "a", {})])
        assert [r.key for r in await store.list("k")] == sorted(keys)
        assert [r.key for r in await store.list("k", "a")] == sorted(k for k in keys if k.startswith("a"))
        # LIKE wildcards in a prefix are plain characters.
        assert [r.key for r in await store.list("k", "a%")] == ["a%b"]
        assert [r.key for r in await store.list("k", "a_")] == ["a_b"]
        assert [r.key for r in await store.list("k", "日")] == ["日本"]
        assert await store.list("k", "c") == []
        assert [r.value for r in await store.list("other")] == [{}]
        await store.close()

    run(body)


def test_versions_count_puts_and_the_revision_counts_batches(state_bench: Bench) -> None:
    async def body() -> None:
        store = await state_bench.open()
        revs = [await store.apply([Put("vm", "a", {"n": n}), Put("vm", f"other{n}", {})]) for n in range(3)]
        assert revs == [revs[0], revs[0] + 1, revs[0] + 2]
        assert await store.get("vm", "a") == Record("vm", "a", {"n": 2}, 3, revs[2])
        assert await store.get("vm", "other0") == Record("vm", "other0", {}, 1, revs[0])
        assert await store.apply([]) == revs[2] + 1  # an empty batch commits too
        await store.apply([Delete("vm", "a")])
        remade = await store.apply([Put("vm", "a", {"n": 9})], {("vm", "a"): None})
        # Made again: version starts over, the record's revision tells it from the first.
        assert await store.get("vm", "a") == Record("vm", "a", {"n": 9}, 1, remade)
        assert remade == revs[2] + 3
        await store.close()

    run(body)


async def _snapshot(store: StateStore, kinds: list[str]) -> dict[str, list[Record]]:
    return {kind: await store.list(kind) for kind in kinds}


def test_a_stale_expectation_raises_and_changes_no_key_of_the_batch(state_bench: Bench) -> None:
    async def body() -> None:
        store = await state_bench.open()
        rev = await store.apply([Put("vm", "a", {"v": 1}), Put("vm", "b", {"v": 1}), Put("vol", "c", {"v": 1})])
        await store.apply([Put("vm", "a", {"v": 2})])
        before = await _snapshot(store, ["vm", "vol"])
        batch: list[Write] = [Put("vm", "a", {"v": 3}), Delete("vm", "b"), Put("vol", "c", {"v": 3}),
                              Put("vol", "new", {})]
        cases: list[tuple[dict[tuple[str, str], int | None], tuple[str, str, int | None, int | None]]] = [
            ({("vm", "a"): 1, ("vm", "b"): 1}, ("vm", "a", 1, 2)),  # a changed since read
            ({("vm", "a"): 2, ("vol", "c"): None}, ("vol", "c", None, 1)),  # c exists
            ({("vm", "a"): 2, ("vol", "new"): 1}, ("vol", "new", 1, None)),  # new does not
        ]
        for expect, (kind, key, expected, actual) in cases:
            with pytest.raises(StaleWrite) as caught:
                await store.apply(batch, expect)
            err = caught.value
            assert isinstance(err, Conflict)
            assert (err.kind, err.key, err.expected, err.actual) == (kind, key, expected, actual)
            assert key in str(err) and "read it again" in str(err)
            assert await _snapshot(store, ["vm", "vol"]) == before
        # No revision was spent on the refused batches.
        assert await store.apply(batch, {("vm", "a"): 2, ("vm", "b"): 1, ("vol", "c"): 1, ("vol", "new"): None}) \
            == rev + 2
        assert [(r.key, r.version) for r in await store.list("vol")] == [("c", 2), ("new", 1)]
        await store.close()

    run(body)


def test_a_batch_with_one_bad_expectation_writes_none_of_its_records(state_bench: Bench) -> None:
    async def body() -> None:
        store = await state_bench.open()
        await store.apply([Put("quota", "p1", {"used": 1}), Put("server", "old", {})])
        before = await _snapshot(store, ["server", "quota", "port"])
        batch: list[Write] = [Put("server", f"s{i}", {"i": i}) for i in range(20)]
        batch += [Delete("server", "old"), Put("port", "p", {"server": "s0"})]
        # The expectation names a record the batch only read: someone else used the quota meanwhile.
        await store.apply([Put("quota", "p1", {"used": 2})])
        with pytest.raises(StaleWrite):
            await store.apply(batch, {("quota", "p1"): 1})
        after = await _snapshot(store, ["server", "quota", "port"])
        assert after["server"] == before["server"] and after["port"] == []
        await store.close()

    run(body)


@pytest.mark.parametrize("bad", [
    pytest.param(([Put("vm", "a", {}), Delete("vm", "a")], {}), id="same-record-twice"),
    pytest.param(([Put("vm", "a", {"t": (1, 2)})], {}), id="tuple"),
    pytest.param(([Put("vm", "a", {1: "x"})], {}), id="int-dict-key"),  # type: ignore[dict-item]
    pytest.param(([Put("vm", "a", {"x": math.nan})], {}), id="nan"),
    pytest.param(([Put("vm", "a", {"x": {1, 2}})], {}), id="set"),
    pytest.param(([Put("vm", "a", ["not", "a", "dict"])], {}), id="list-value"),  # type: ignore[arg-type]
    pytest.param(([Put("", "a", {})], {}), id="empty-kind"),
    pytest.param(([Put("vm", "", {})], {}), id="empty-key"),
    pytest.param(([Put("vm", "a\x00b", {})], {}), id="nul-in-key"),
    pytest.param(([Put("vm", "\udc80", {})], {}), id="lone-surrogate-key"),
    pytest.param(([Put("vm", "a", {})], {("vm", "b"): 0}), id="version-0"),
    pytest.param(([Put("vm", "a", {})], {("vm", "b"): True}), id="version-bool"),
    pytest.param(([("vm", "a", {})], {}), id="not-a-write"),
])
def test_invalid_batches_are_refused_before_any_write(
        state_bench: Bench, bad: tuple[list[Write], dict[tuple[str, str], int | None]]) -> None:
    async def body() -> None:
        store = await state_bench.open()
        rev = await store.apply([Put("vm", "b", {"v": 1})])
        with pytest.raises(InvalidRequest):
            await store.apply([Put("vm", "z", {}), *bad[0]], bad[1])
        assert [r.key for r in await store.list("vm")] == ["b"]
        assert await store.apply([]) == rev + 1
        await store.close()

    run(body)


def test_records_and_revision_survive_close_and_reopen(state_bench: Bench) -> None:
    async def body() -> None:
        store = await state_bench.open()
        await store.apply([Put("vm", "a", {"v": 1}), Put("vm", "b", {"v": 1})])
        rev = await store.apply([Put("vm", "a", {"v": 2}), Delete("vm", "b")])
        before = await store.list("vm")
        await store.close()
        again = await state_bench.open()
        assert await again.list("vm") == before
        assert await again.apply([Put("vm", "a", {"v": 3})], {("vm", "a"): 2}) == rev + 1
        await again.close()

    run(body)


@pytest.mark.parametrize("connections", [1, 2])
def test_concurrent_writers_of_one_record_exactly_one_wins(state_bench: Bench, connections: int) -> None:
    """Two tasks read version v and write with expect v, through one store or two (two connections)."""

    async def body() -> None:
        first = await state_bench.open()
        stores = [first] if connections == 1 else [first, await state_bench.open()]
        await first.apply([Put("counter", "c", {"n": 0})])
        for round_ in range(10):
            record = await first.get("counter", "c")
            assert record is not None
            outcomes: list[int | StaleWrite] = []

            async def write(store: StateStore, me: int, record: Record = record,
                            outcomes: list[int | StaleWrite] = outcomes) -> None:
                try:
                    outcomes.append(await store.apply([Put("counter", "c", {"n": record.value["n"] + 1, "by": me})],
                                                      {("counter", "c"): record.version}))
                except StaleWrite as exc:
                    outcomes.append(exc)

            async with anyio.create_task_group() as tg:
                for me in range(2):
                    tg.start_soon(write, stores[me % len(stores)], me)
            wins = [o for o in outcomes if isinstance(o, int)]
            losses = [o for o in outcomes if isinstance(o, StaleWrite)]
            assert len(wins) == 1 and len(losses) == 1, outcomes
            assert (losses[0].expected, losses[0].actual) == (record.version, record.version + 1)
            now = await first.get("counter", "c")
            assert now is not None and now.value["n"] == round_ + 1 and now.revision == wins[0]
        for store in stores:
            await store.close()

    run(body)


def test_json_values_round_trip_exactly(state_bench: Bench) -> None:
    value: dict[str, Any] = {
        "nested": {"list": [1, [2, [3, {"deep": None}]], {"a": True, "b": False}], "empty": {}, "none": []},
        "floats": [0.1, -0.0, 1e300, 2.5e-300, 3.0],
        "ints": [0, -1, 2**53 + 1, 2**64, -(2**70)],
        "text": "é 日本 😀 \u0000 \n\t\" \\ \u2028",
        "ключ": "значение", "": "empty key", "😀": ["emoji key"],
    }

    async def body() -> None:
        store = await state_bench.open()
        await store.apply([Put("ünïcode kind", "日本/ключ/😀", value)])
        record = await store.get("ünïcode kind", "日本/ключ/😀")
        assert record is not None and record.value == value
        assert [type(x) for x in record.value["floats"]] == [float] * 5
        assert [type(x) for x in record.value["ints"]] == [int] * 5
        record.value["nested"]["list"].append("mutated by the caller")
        again = await store.get("ünïcode kind", "日本/ключ/😀")
        assert again is not None and again.value == value  # callers get copies
        await store.close()

    run(body)


def test_a_store_of_a_newer_schema_is_refused(state_bench: Bench) -> None:
    async def body() -> None:
        store = await state_bench.open()
        await store.apply([Put("vm", "a", {})])
        await store.close()
        state_bench.set_schema_version(99)
        with pytest.raises(SchemaTooNew, match="schema version 99.*upgrade fe-runtime") as caught:
            await state_bench.open()
        assert (caught.value.found, caught.value.supported) == (99, 1)
        assert isinstance(caught.value, BackendError)

    run(body)


# The crash test's child: applies batches of BATCH records (plus a "last" marker) as fast as it can and
# prints "<batch> <revision>" after each apply returns, until it is killed.
BATCH = 6
CHILD = f"""
import sys, anyio
from runtime.state import Put

async def main(round_, backend, *where):
    if backend == "sqlite":
        from runtime.backends.sqlite_state import SqliteStateStore
        store = await SqliteStateStore.open(where[0])
    else:
        from runtime.backends.postgres_state import PostgresStateStore
        store = await PostgresStateStore.open(where[0], schema=where[1])
    i = 0
    while True:
        batch = [Put("crash", f"r{{round_}}-b{{i:06d}}-{{j}}", {{"batch": i, "pad": "x" * 3000}})
                 for j in range({BATCH})]
        batch.append(Put("crash-last", f"r{{round_}}", {{"batch": i}}))
        revision = await store.apply(batch)
        print(i, revision, flush=True)
        i += 1

anyio.run(main, *sys.argv[1:])
"""


def test_batches_survive_sigkill_of_the_writer_whole_or_not_at_all(state_bench: Bench) -> None:
    """Kill a writing child process 8 times at random moments; every acknowledged batch is there, none is half there."""
    seed = random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    acknowledged: dict[int, dict[int, int]] = {}  # round -> batch -> revision
    for round_ in range(8):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(round_), *state_bench.child_argv()],
                                 cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert child.stdout is not None
        want, lines = rng.randint(1, 40), list[str]()
        while len(lines) < want:
            line = child.stdout.readline()
            if not line:
                child.wait()
                pytest.fail(f"the child died before it was killed: {child.stderr.read() if child.stderr else ''}")
            lines.append(line)
        # Wait a random while before the kill: right after a print the child is always at the start of a batch.
        time.sleep(rng.uniform(0, 0.03))
        child.kill()  # SIGKILL, at any point of an apply
        rest, _ = child.communicate()
        lines += rest.splitlines(keepends=True)
        assert child.returncode == -9
        acknowledged[round_] = {int(b): int(r) for b, r in (ln.split() for ln in lines if ln.endswith("\n"))}

        async def check() -> None:
            store = await state_bench.open()
            for r, acked in acknowledged.items():
                records = await store.list("crash", f"r{r}-")
                batches: dict[int, list[Record]] = {}
                for record in records:
                    batches.setdefault(record.value["batch"], []).append(record)
                where = f"(seed {seed}, round {r})"
                assert all(len(got) == BATCH for got in batches.values()), f"a batch is half there {where}"
                assert sorted(batches) == list(range(len(batches))), f"a batch is missing {where}"
                assert set(acked) <= set(batches), f"an acknowledged batch is lost {where}"
                assert all(rec.revision == acked[b] for b in acked for rec in batches[b]), where
                last = await store.get("crash-last", f"r{r}")
                assert last is not None and last.value["batch"] == len(batches) - 1, where
            await store.close()

        run(check)


_kinds = st.sampled_from(["vm", "vol"])
_keys = st.sampled_from(["a", "ab", "a/b", "b", "é", "日"])
_values = st.dictionaries(
    st.text(max_size=3),
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
              st.text(max_size=4), st.lists(st.integers(), max_size=2)),
    max_size=3,
)
_batches = st.lists(
    st.tuples(
        st.lists(st.tuples(_kinds, _keys, st.one_of(st.none(), _values)), max_size=4, unique_by=lambda w: w[:2]),
        st.lists(st.tuples(_kinds, _keys, st.booleans()), max_size=2, unique_by=lambda e: e[:2]),
    ),
    min_size=1, max_size=6,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=_batches)
def test_the_store_behaves_like_a_dict_over_random_batches(
        state_bench: Bench, batches: list[tuple[list[tuple[str, str, Any]], list[tuple[str, str, bool]]]]) -> None:
    """Each batch: writes (None deletes) and expectations, each right or wrong; the model is a dict."""
    bench = state_bench.fresh()

    async def body() -> None:
        store = await bench.open()
        model: dict[tuple[str, str], Record] = {}
        revision = 0
        for writes, expectations in batches:
            batch: list[Write] = [Delete(k, key) if v is None else Put(k, key, v) for k, key, v in writes]
            expect: dict[tuple[str, str], int | None] = {}
            for kind, key, right in expectations:
                have = model[(kind, key)].version if (kind, key) in model else None
                expect[(kind, key)] = have if right else (1 if have is None else have + 1)
            if all(right for *_, right in expectations):
                new = await store.apply(batch, expect)
                assert new == revision + 1  # one revision per committed batch, none for refused ones
                revision = new
                for kind, key, value in writes:
                    old = model.pop((kind, key), None)
                    if value is not None:
                        model[(kind, key)] = Record(kind, key, value, 1 if old is None else old.version + 1, revision)
            else:
                with pytest.raises(StaleWrite):
                    await store.apply(batch, expect)
            for kind in ("vm", "vol"):
                assert await store.list(kind) == sorted((r for r in model.values() if r.kind == kind),
                                                        key=lambda r: r.key)
        await store.close()

    run(body)


def test_a_locked_sqlite_file_is_a_backend_error(tmp_path: Path) -> None:
    from runtime.backends.sqlite_state import SqliteStateStore

    async def body() -> None:
        store = await SqliteStateStore.open(tmp_path / "s.db", busy_timeout_s=0.05)
        other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(BackendError, match="locked") as caught:
            await store.apply([Put("vm", "a", {})])
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
        assert await store.get("vm", "a") is None  # readers are not blocked in WAL mode
        other.execute("ROLLBACK")
        other.close()
        await store.apply([Put("vm", "a", {})])
        await store.close()

    run(body)


@pytest.mark.parametrize("content", [b"this is not a database" * 100, None])
def test_a_file_that_is_not_a_state_store_is_refused(tmp_path: Path, content: bytes | None) -> None:
    from runtime.backends.sqlite_state import SqliteStateStore

    path = tmp_path / "s.db"
    if content is None:  # a database of something else
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE invoices (id INTEGER)")
        conn.close()
    else:
        path.write_bytes(content)
    with pytest.raises(BackendError, match="not a database|not an fe-runtime state store"):
        run(lambda: SqliteStateStore.open(path))
    assert content is None or path.read_bytes() == content  # left as it was


def test_an_unreachable_postgres_is_a_backend_error() -> None:
    from runtime.backends.postgres_state import PostgresStateStore

    dsn = "postgresql://fe:secret-pw@127.0.0.1:1/fe_test"
    with pytest.raises(BackendError, match="cannot reach") as caught:
        run(lambda: PostgresStateStore.open(dsn, connect_timeout_s=2))
    assert "secret-pw" not in str(caught.value)
    assert type(caught.value.__cause__).__module__.startswith("psycopg")


@pytest.mark.postgres
def test_postgres_reconnects_after_a_lost_connection() -> None:
    """The call that meets a dropped connection fails with BackendError; the next one connects again."""
    import psycopg

    from runtime.backends.postgres_state import PostgresStateStore

    dsn = postgres_dsn()
    schema = "fe_test_reconnect"
    tagged = psycopg.conninfo.make_conninfo(dsn, application_name=schema)  # so only its session is cut

    async def body() -> None:
        store = await PostgresStateStore.open(tagged, schema=schema)
        await store.apply([Put("vm", "a", {})])
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
            cur = await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                      "WHERE application_name = %s", (schema,))
            assert len(await cur.fetchall()) == 1
        with pytest.raises(BackendError):
            await store.get("vm", "a")
        assert await store.get("vm", "a") is not None
        await store.close()

    try:
        run(body)
    except BackendError as exc:
        pytest.fail(f"{exc}; {HOW_TO_START}")
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

"""The dependency rules of DESIGN.md, checked on the source: actors -> runtime;
runtime/backends -> runtime; sim -> runtime, actors; vendor libraries only in
runtime/backends; actors read no clock, global random, uuid or environment."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
VENDOR = {"libvirt", "pyroute2", "aiobotocore", "botocore", "psycopg", "sqlite3"}
DRIVERS = {"simpy", "trio", "asyncio", "anyio"}


def imports(package: str) -> list[tuple[str, str]]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [(str(path.relative_to(ROOT)), a.name.split(".")[0]) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((str(path.relative_to(ROOT)), node.module.split(".")[0]))
    return found


def test_actors_import_only_the_runtime_and_plain_libraries() -> None:
    bad = [(f, m) for f, m in imports("actors") if m in VENDOR | DRIVERS | {"sim"}]
    assert bad == []


def test_the_runtime_imports_neither_actors_nor_sim_and_vendors_only_in_backends() -> None:
    bad = [(f, m) for f, m in imports("runtime") if m in {"actors", "sim", "simpy"}]
    bad += [(f, m) for f, m in imports("runtime") if m in VENDOR and not f.startswith("runtime/backends/")]
    assert bad == []


def test_the_daemon_never_imports_the_simulator() -> None:
    """daemon -> runtime (and its backends), actors; the simulator is for tests and `fe sim`."""
    assert [(f, m) for f, m in imports("daemon") if m in {"sim", "simpy"}] == []


def test_sim_uses_no_production_backend() -> None:
    assert [(f, m) for f, m in imports("sim") if m in VENDOR] == []


@pytest.mark.parametrize("call", ["time.time", "time.monotonic", "time.sleep", "datetime.now", "uuid.uuid4",
                                  "os.environ", "random.random", "random.randint", "random.choice", "random.seed"])
def test_actors_read_the_world_only_through_their_context(call: str) -> None:
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "actors").rglob("*.py") if call in p.read_text()]
    assert offenders == []

"""`fe bench api` run tiny (issue 5, "Done when": the API benchmark): a real daemon process on
libvirt `test:///default` with SQLite state, a few servers created through the API, a few GETs
by concurrent clients. The structure of the report and that every request succeeded are
checked; no figure is (these machines are noisy)."""

from __future__ import annotations

import json
import math

import pytest

from daemon.bench import _percentile, api
from runtime.errors import InvalidRequest
from sim.cli import main

FIGURES = {"servers", "creates_sequential", "creates_per_s_sequential", "create_concurrency", "creates_concurrent",
           "creates_per_s_concurrent", "get_clients", "get_requests", "get_seconds", "get_per_s", "get_p50_ms",
           "get_p99_ms", "get_max_ms", "daemon_cpu_s_during_gets", "load_generator_cpu_s_during_gets", "errors",
           "first_error", "state_db_bytes", "daemon_exit_status"}


def test_a_tiny_api_bench_creates_every_server_and_answers_every_get() -> None:
    report = api(servers=5, concurrency=2, clients=3, requests=40)
    assert set(report) == FIGURES
    assert (report["errors"], report["first_error"]) == (0, "")
    assert (report["servers"], report["creates_sequential"], report["creates_concurrent"]) == (5, 2, 3)
    assert (report["get_clients"], report["get_requests"]) == (3, 40)
    assert 0 < report["get_p50_ms"] <= report["get_p99_ms"] <= report["get_max_ms"]
    for figure in ("creates_per_s_sequential", "creates_per_s_concurrent", "get_per_s", "get_seconds"):
        assert report[figure] > 0, figure
    assert report["state_db_bytes"] > 0  # the daemon kept its state in the SQLite file of the run
    assert report["daemon_exit_status"] == 0  # SIGTERM: a clean stop


def test_fe_bench_api_prints_the_report_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "api", "--servers", "2", "--clients", "2", "--requests", "6", "--concurrency", "1",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == FIGURES and report["errors"] == 0 and report["get_requests"] == 6


def test_bad_bench_arguments_are_refused_before_anything_starts() -> None:
    with pytest.raises(InvalidRequest, match="--servers 1"):
        api(servers=1)
    assert main(["bench", "api", "--clients", "0"]) == 2


@pytest.mark.parametrize(("q", "expected"), [(50, 50.0), (99, 99.0), (100, 100.0), (1, 1.0)])
def test_percentiles_are_nearest_rank(q: float, expected: float) -> None:
    ordered = [float(v) for v in range(1, 101)]
    assert math.isclose(_percentile(ordered, q), expected)
    assert _percentile([7.0], q) == 7.0

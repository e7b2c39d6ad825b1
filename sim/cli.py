"""`fe`: the command line. `fe sim` runs scenarios, `fe bench` measures.

Exit codes: 0 every expectation holds, 1 one does not (or a run is not
deterministic), 2 invalid input (the message names file, line/field and what is valid).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from runtime.errors import InvalidRequest
from sim import report as reports
from sim import scenario as scenarios

console = Console(stderr=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):  # keep the digits a percentage like 99.95 needs
        return f"{value:,.2f}" if abs(value) >= 1000 else f"{value:.6g}"
    return str(value)


def _bounds(expected: Any) -> str:
    if isinstance(expected, dict):
        return " and ".join(f"{op} {_fmt(expected[k])}" for k, op in (("min", ">="), ("max", "<="))
                            if expected[k] is not None)
    return f"= {expected}"


def _summary(result: dict[str, Any]) -> Table:
    table = Table(title=f"{result['scenario']} (seed {result['seed']})", show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    idle = {"sdrs", "sdrs_totals"} if not result["sdrs_totals"]["groups"] else set()
    if not any(result["backups"].values()):
        idle.add("backups")
    for path in reports.known_paths(result):
        if path in ("source", "scenario", "seed", "event_log_sha256") or path.split(".")[0] in idle:
            continue
        value = reports.lookup(result, path)
        table.add_row(path, f"{len(value)} (in report.json)" if isinstance(value, list) else _fmt(value))
    table.add_row("event_log_sha256", result["event_log_sha256"][:16] + "...")
    for e in result["expectations"]:
        mark = "[green]ok[/green]" if e["ok"] else "[red]FAILED[/red]"
        table.add_row(f"expect {e['name']} {_bounds(e['expected'])}", f"{_fmt(e['value'])} {mark}")
    return table


def _run_with_progress(scn: scenarios.Scenario, seed: int, out: Path | None, quiet: bool, label: str) -> dict[str, Any]:
    from sim import runner

    if quiet:
        return runner.run(scn, seed, out)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[days]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task(label, total=scn.duration_s, days="")

        def progress(now: float, total: float) -> None:
            bar.update(task, completed=now, days=f"day {now / 86400:.1f}/{total / 86400:.1f}")
        return runner.run(scn, seed, out, progress)


def cmd_sim(args: argparse.Namespace) -> int:
    scn = scenarios.load(args.file, args.seed)
    reports.validate_expectations(scn)
    seed = scn.seed
    out = Path(args.out) if args.out else Path("runs") / f"{Path(args.file).stem}-seed{seed}"
    result = _run_with_progress(scn, seed, out, args.quiet, f"{scn.name} (seed {seed})")
    code = 0 if all(e["ok"] for e in result["expectations"]) else 1
    if args.check_determinism:
        with tempfile.TemporaryDirectory() as tmp:
            again = _run_with_progress(scn, seed, Path(tmp), args.quiet, "determinism check: second run")
        same = again["event_log_sha256"] == result["event_log_sha256"]
        result["determinism"] = {"ok": same, "second_sha256": again["event_log_sha256"]}
        (out / "report.json").write_text(json.dumps(result, indent=2) + "\n")
        if not same:
            code = 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        Console().print(_summary(result))
        if args.check_determinism:
            ok = result["determinism"]["ok"]
            Console().print(f"determinism: {'[green]same' if ok else '[red]DIFFERENT'} event log hash over two runs")
        Console().print(f"wrote {out}/: report.json, report.html (plots/), events.jsonl, the tables as CSV "
                        f"and the invoices (invoices/)")
    return code


def cmd_bench(args: argparse.Namespace) -> int:
    from sim.bench import kernel, scale

    if args.what == "kernel":
        result = kernel(args.n)
    elif args.what == "api":
        from daemon.bench import api

        result = api(args.servers or 200, args.concurrency, args.clients, args.requests,
                     None if args.json else console)
    else:
        result = scale(args.hosts, args.servers or 100_000, args.days, args.seed, None if args.json else console)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        table = Table(title=f"fe bench {args.what}")
        table.add_column("figure")
        table.add_column("value", justify="right")
        for key, value in result.items():
            table.add_row(key, _fmt(value))
        Console().print(table)
    return 1 if result.get("errors") else 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from sim import sweep

    return sweep.command(args.file, args.seeds, args.workers, args.cluster, args.out, args.figure or (), args.json,
                         args.quiet, console)


def cmd_daemon(args: argparse.Namespace) -> int:
    import logging
    import os

    from daemon import config, service

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return service.run(config.load(args.config, os.environ), os.environ)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fe", description="fe-runtime: Flexible Engine control plane as actors")
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("sim", help="run a scenario file in virtual time")
    sim.add_argument("file")
    sim.add_argument("--seed", type=int, help="override the scenario's seed")
    sim.add_argument("--out", help="output folder (default runs/NAME-seedN)")
    sim.add_argument("--check-determinism", action="store_true", help="run twice and compare event-log hashes")
    sim.add_argument("--json", action="store_true", help="print the report as JSON")
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    sim.set_defaults(fn=cmd_sim)
    bench = sub.add_parser("bench", help="benchmarks")
    bench.add_argument("what", choices=["kernel", "scale", "api"])
    bench.add_argument("--json", action="store_true")
    bench.add_argument("--n", type=int, default=200_000, help="kernel: round trips and events to time")
    bench.add_argument("--hosts", type=int, default=50_000)
    bench.add_argument("--servers", type=int, help="scale: servers simulated (default 100,000); api: servers "
                                                   "created through the API (default 200)")
    bench.add_argument("--concurrency", type=int, default=10, help="api: concurrent creates (second half)")
    bench.add_argument("--clients", type=int, default=50, help="api: concurrent GET clients")
    bench.add_argument("--requests", type=int, default=20_000, help="api: GET /servers/{id} requests in all")
    bench.add_argument("--days", type=float, default=365.0)
    bench.add_argument("--seed", type=int, default=1)
    bench.set_defaults(fn=cmd_bench)
    sweep = sub.add_parser("sweep", help="run a scenario over many seeds, locally or on a Dask cluster")
    sweep.add_argument("file")
    sweep.add_argument("--seeds", required=True, help="A-B (inclusive), N, or a comma list of those, e.g. 1-200")
    sweep.add_argument("--workers", type=int, help="local worker processes (default: the number of CPUs)")
    sweep.add_argument("--cluster", metavar="ADDRESS", help="Dask scheduler address, e.g. tcp://127.0.0.1:8786")
    sweep.add_argument("--figure", action="append", metavar="PATH",
                       help="a report figure to aggregate, e.g. recoveries.p99_s (repeat; default: a standard set)")
    sweep.add_argument("--out", help="output folder (default runs/sweeps/NAME-seedsA-B)")
    sweep.add_argument("--json", action="store_true", help="print sweep.json to stdout")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")
    sweep.set_defaults(fn=cmd_sweep)
    daemon = sub.add_parser("daemon", help="run the control plane on real libvirt hosts and serve its API")
    daemon.add_argument("--config", required=True, help="the daemon's TOML file (see daemon/config.py)")
    daemon.set_defaults(fn=cmd_daemon)
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except InvalidRequest as exc:
        console.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted: the events so far are in the output folder's events.jsonl; no report written")
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""`fe sweep`: one scenario over many seeds, in local worker processes or on a Dask
distributed cluster, and the distribution of chosen report figures over those seeds.

A run is a pure function of (scenario, seed) (sim.runner), so a sweep is one too: the
results are put in seed order before anything is aggregated, whichever worker finished
first, and the mean is an exactly rounded sum (math.fsum), so the aggregate is identical
locally and on a cluster. A worker sends back only the figures asked for, the failed
expectations and the event-log hash, never the whole report: 1,000 seeds stay light.
Each failed or crashed seed comes with the command that replays it alone (`fe sim`).

On a cluster the workers import `sim`: install fe-runtime there too (extra `cluster`), and
give each worker process one thread (`dask worker ADDRESS --nthreads 1`): a run holds the GIL.
"""

from __future__ import annotations

import csv
import html
import json
import math
import multiprocessing
import os
import re
import shlex
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import attrs
from rich.console import Console
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from runtime.errors import ConfigError
from sim import report as reports
from sim import runner
from sim import scenario as scenarios

DEFAULT_FIGURES = ("recoveries.p50_s", "recoveries.p99_s", "sdrs_totals.rto_p50_s", "sdrs_totals.rto_max_s",
                   "servers.lost", "split_brain", "availability.min_pct", "billing.credits", "incidents.count")
STATS = ("n", "min", "p1", "p50", "p99", "max", "mean")
SEEDS_VALID = "A-B with A <= B, e.g. 1-200; a single seed N; or a comma list of those, e.g. 1-100,250"

Number = int | float


def parse_seeds(text: str) -> tuple[int, ...]:
    """`A-B` (inclusive), `N`, or a comma list of those -> the sorted distinct seeds (>= 0)."""
    seeds: set[int] = set()
    for part in text.split(","):
        bad = repr(part.strip()) + (f" (in {text!r})" if part.strip() != text.strip() else "")
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise ConfigError("--seeds", f"{bad} is not a seed or a range of seeds", SEEDS_VALID)
        first = int(match[1])
        last = int(match[2]) if match[2] is not None else first
        if last < first:
            raise ConfigError("--seeds", f"{bad} is an empty range: {first} > {last}", SEEDS_VALID)
        seeds.update(range(first, last + 1))
    return tuple(sorted(seeds))


@attrs.frozen
class SeedTask:
    """What a worker needs for one seed: the scenario text (workers may not see the file)."""

    text: str
    source: str
    seed: int
    figures: tuple[str, ...]


@attrs.frozen
class SeedResult:
    """One seed's figures (absent from the report: left out; no value: None), failed
    expectations, event-log hash, or the error that stopped the run."""

    seed: int
    figures: dict[str, Number | None] = attrs.field(factory=dict)
    failed: tuple[dict[str, Any], ...] = ()
    sha256: str = ""
    error: str | None = None
    traceback: str | None = None


# runner.run tunes the process-wide garbage collector while it runs: a worker with
# several threads (a Dask worker's default) must not interleave two runs.
_ONE_RUN_AT_A_TIME = threading.Lock()


def run_seed(task: SeedTask) -> SeedResult:
    """Run one seed exactly as `fe sim FILE --seed N` does, and keep only the figures asked for."""
    try:
        scn = scenarios.parse(task.text, task.source, task.seed)
        with _ONE_RUN_AT_A_TIME:
            report = runner.run(scn, task.seed)
    except Exception as exc:  # noqa: BLE001 - a seed that crashes is a result of the sweep, reported with its error
        return SeedResult(task.seed, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    figures: dict[str, Number | None] = {}
    for name in task.figures:
        try:
            value = reports.lookup(report, name)
        except KeyError:
            continue
        figures[name] = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    failed = tuple({k: e[k] for k in ("name", "value", "expected")} for e in report["expectations"] if not e["ok"])
    return SeedResult(task.seed, figures, failed, report["event_log_sha256"])


Task = Callable[[SeedTask], SeedResult]
OnResult = Callable[[SeedResult], None]


def _crashed(seed: int, exc: BaseException) -> SeedResult:
    """The executor could not bring a result back (a worker process died, a cluster lost it)."""
    return SeedResult(seed, error=f"{type(exc).__name__}: {exc}",
                      traceback="".join(traceback.format_exception(exc)))


def run_local(tasks: Sequence[SeedTask], workers: int, on_result: OnResult, task: Task = run_seed) -> bool:
    """Run the seeds in `workers` processes; returns True when interrupted (Ctrl-C): the
    seeds not started are cancelled and the running workers are stopped."""
    # forkserver, not fork: the parent has threads (the progress bar) that fork would copy mid-lock.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
    futures: dict[Future[SeedResult], int] = {}
    try:
        for t in tasks:
            futures[pool.submit(task, t)] = t.seed
        for fut in as_completed(futures):
            try:
                result = fut.result()
            except Exception as exc:  # noqa: BLE001 - e.g. BrokenProcessPool: reported as that seed's crash
                result = _crashed(futures[fut], exc)
            on_result(result)
        return False
    except KeyboardInterrupt:
        for fut in futures:
            fut.cancel()
        # Python 3.14 has pool.terminate_workers(); before it, the pool's own processes.
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        return True
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_dask(tasks: Sequence[SeedTask], address: str, on_result: OnResult, task: Task = run_seed) -> bool:
    """Submit the same function to the Dask scheduler at `address`; True when interrupted
    (the seeds not started are cancelled; one already running on a worker ends there unread)."""
    try:
        import distributed
    except ImportError as exc:
        raise ConfigError("--cluster", f"needs Dask distributed, which is not installed ({exc})",
                          "pip install 'fe-runtime[cluster]', or run without --cluster") from None
    dask: Any = distributed  # its Client API is only partly typed
    try:
        client = dask.Client(address, timeout="20s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError("--cluster", f"cannot reach a Dask scheduler at {address!r}: {exc}",
                          "the address `dask scheduler` prints, e.g. tcp://127.0.0.1:8786") from None
    with client:
        futures = [client.submit(task, t, pure=False) for t in tasks]
        seed_of = {fut.key: t.seed for fut, t in zip(futures, tasks, strict=True)}
        try:
            for fut in dask.as_completed(futures, loop=client.loop):
                try:
                    result = fut.result()
                except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker: reported as that seed's crash
                    result = _crashed(seed_of[fut.key], exc)
                on_result(result)
            return False
        except KeyboardInterrupt:
            client.cancel(futures)
            return True


def aggregate(results: Iterable[SeedResult], figures: Sequence[str]) -> dict[str, dict[str, Number]]:
    """n, min, p1, p50, p99, max, mean of each figure over the seeds where it has a value;
    a figure with a value in no seed is left out."""
    ordered = sorted((r for r in results if r.error is None), key=lambda r: r.seed)
    out: dict[str, dict[str, Number]] = {}
    for name in figures:
        values = [v for r in ordered if (v := r.figures.get(name)) is not None]
        if not values:
            continue
        stats: dict[str, Number | None] = {
            "n": len(values), "min": min(values), "p1": reports.percentile(values, 1),
            "p50": reports.percentile(values, 50), "p99": reports.percentile(values, 99), "max": max(values),
            "mean": math.fsum(values) / len(values)}
        out[name] = {k: v for k, v in stats.items() if v is not None}
    return out


def replay(file: str, seed: int) -> str:
    return f"fe sim {shlex.quote(file)} --seed {seed}"


def summarize(file: str, scn: scenarios.Scenario, seeds_text: str, seeds: Sequence[int], figures: Sequence[str],
              results: Iterable[SeedResult], interrupted: bool, run: dict[str, Any]) -> dict[str, Any]:
    """Everything sweep.json holds. All but `run` (executor, wall time) is a pure function of
    (scenario, seeds, figures)."""
    ordered = sorted(results, key=lambda r: r.seed)
    table = aggregate(ordered, figures)
    return {
        "scenario": scn.name,
        "file": file,
        "seeds": seeds_text,
        "seed_count": len(seeds),
        "completed": len(ordered),
        "interrupted": interrupted,
        "figures": list(figures),
        "absent_figures": [f for f in figures if f not in table],
        "aggregate": table,
        "failed": [{"seed": r.seed, "expectations": list(r.failed), "replay": replay(file, r.seed)}
                   for r in ordered if r.error is None and r.failed],
        "crashed": [{"seed": r.seed, "error": r.error, "traceback": r.traceback, "replay": replay(file, r.seed)}
                    for r in ordered if r.error is not None],
        "per_seed": [{"seed": r.seed, "ok": r.error is None and not r.failed, "figures": r.figures,
                      "failed": [e["name"] for e in r.failed], "error": r.error, "event_log_sha256": r.sha256}
                     for r in ordered],
        "run": run,
    }


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    return "" if value is None else str(value)


def _bounds(expected: Any) -> str:
    if isinstance(expected, dict):
        return " and ".join(f"{op} {_show(expected[k])}" for k, op in (("min", ">="), ("max", "<="))
                            if expected.get(k) is not None)
    return f"= {expected}"


def failure_lines(summary: dict[str, Any]) -> list[str]:
    """One line per failed or crashed seed, ending with the command that replays it."""
    lines = []
    for f in summary["failed"]:
        what = "; ".join(f"{e['name']} = {_show(e['value'])} (expected {_bounds(e['expected'])})"
                         for e in f["expectations"])
        lines.append(f"seed {f['seed']} failed: {what}; replay: {f['replay']}")
    for c in summary["crashed"]:
        lines.append(f"seed {c['seed']} crashed: {c['error']}; replay: {c['replay']}")
    return lines


def plot(name: str, values: Sequence[Number], path: Path) -> None:
    """A histogram and the empirical CDF of one figure over the seeds (PNG, Agg). Values are
    drawn to 6 significant digits: float noise (46.03 vs 46.0300000000007) is one bar."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = [float(f"{v:.6g}") for v in values]
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    hist, cdf = fig.subplots(1, 2)
    hist.hist(shown, bins=min(50, len(set(shown))), color="#4477aa")
    hist.set(title=f"{name}: histogram", xlabel=name, ylabel="seeds")
    ordered = sorted(shown)
    cdf.step(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], where="post", color="#4477aa")
    cdf.set(title=f"{name}: CDF", xlabel=name, ylabel="fraction of seeds", ylim=(0, 1.02))
    cdf.grid(alpha=0.3)
    fig.suptitle(f"{name} over {len(values)} seeds")
    fig.savefig(path, dpi=90)


def _html(summary: dict[str, Any], plots: dict[str, str]) -> str:
    e = html.escape
    rows = "".join(f"<tr><td>{e(name)}</td>" + "".join(f"<td>{e(_show(s.get(k)))}</td>" for k in STATS) + "</tr>"
                   for name, s in summary["aggregate"].items())
    fails = "".join(f"<li><code>{e(line)}</code></li>" for line in failure_lines(summary))
    images = "".join(f'<h2>{e(name)}</h2><img src="{e(png)}" alt="{e(name)} histogram and CDF">'
                     for name, png in plots.items())
    absent = ", ".join(summary["absent_figures"])
    state = "interrupted: " if summary["interrupted"] else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>sweep {e(summary['scenario'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #bbb;padding:.3em .7em;text-align:right}}td:first-child,th:first-child{{text-align:left}}
img{{max-width:100%}}</style></head><body>
<h1>{e(summary['scenario'])}</h1>
<p>{e(summary['file'])}, seeds {e(summary['seeds'])}: {state}{summary['completed']} of {summary['seed_count']} ran,
{len(summary['failed'])} failed an expectation, {len(summary['crashed'])} crashed.</p>
<table><tr><th>figure</th>{''.join(f'<th>{k}</th>' for k in STATS)}</tr>{rows}</table>
{f'<p>No value in any seed&#39;s report (left out): {e(absent)}</p>' if absent else ''}
{images}
{f'<h2>Failed and crashed seeds</h2><ul>{fails}</ul>' if fails else ''}
</body></html>
"""


def write(out: Path, summary: dict[str, Any]) -> None:
    """sweep.json, seeds.csv, one PNG per aggregated figure and sweep.html beside them."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(summary, indent=2) + "\n")
    figures = summary["figures"]
    with (out / "seeds.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seed", "status", *figures, "failed_expectations", "error", "event_log_sha256"])
        for s in summary["per_seed"]:
            status = "ok" if s["ok"] else "crashed" if s["error"] else "failed"
            w.writerow([s["seed"], status, *(_csv(s["figures"].get(n)) for n in figures), " ".join(s["failed"]),
                        s["error"] or "", s["event_log_sha256"]])
    plots = {}
    for name in summary["aggregate"]:
        values = [v for s in summary["per_seed"] if (v := s["figures"].get(name)) is not None]
        plots[name] = f"{name}.png"
        plot(name, values, out / plots[name])
    (out / "sweep.html").write_text(_html(summary, plots))


def _csv(value: Number | None) -> str:
    return "" if value is None else repr(value)


def _table(summary: dict[str, Any]) -> Table:
    done = f"{summary['completed']} of {summary['seed_count']} seeds" if summary["interrupted"] \
        else f"{summary['seed_count']} seeds"
    table = Table(title=f"{summary['scenario']}: {done} ({summary['seeds']})")
    table.add_column("figure", no_wrap=True, min_width=max(map(len, summary["aggregate"]), default=6))
    for k in STATS:
        table.add_column(k, justify="right")
    for name, stats in summary["aggregate"].items():
        table.add_row(name, *(_show(stats.get(k)) for k in STATS))
    return table


def command(file: str, seeds_text: str, workers: int | None, cluster: str | None, out: str | None,
            figures: Sequence[str], as_json: bool, quiet: bool, err: Console, task: Task = run_seed) -> int:
    """`fe sweep`: 0 every seed ran and held its expectations, 1 one did not (or crashed),
    2 invalid input (raised as InvalidRequest before any worker starts), 130 interrupted
    (what finished is written). `task` runs one seed in a worker: run_seed, or a wrapper of it."""
    seeds = parse_seeds(seeds_text)
    if workers is not None and workers < 1:
        raise ConfigError("--workers", f"{workers} is not a number of worker processes", "a whole number >= 1")
    if workers is not None and cluster is not None:
        raise ConfigError("--workers", "applies to local runs; with --cluster the cluster's workers run the seeds",
                          "--workers N or --cluster ADDRESS, not both")
    try:
        text = Path(file).read_text()  # read once: the workers run exactly what was checked here
    except OSError as exc:
        raise ConfigError(file, f"cannot read: {exc.strerror}") from exc
    scn = scenarios.parse(text, str(Path(file)))
    reports.validate_expectations(scn)
    chosen = tuple(dict.fromkeys(figures)) or DEFAULT_FIGURES
    tasks = [SeedTask(text, scn.source, seed, chosen) for seed in seeds]
    folder = Path(out) if out else Path("runs") / "sweeps" / f"{Path(file).stem}-seeds{seeds[0]}-{seeds[-1]}"
    local = min(workers or os.cpu_count() or 1, len(tasks))
    results: list[SeedResult] = []
    started = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[bad]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=True, disable=quiet) as bar:
        where = f"on {cluster}" if cluster else f"in {local} processes"
        progress = bar.add_task(f"{scn.name}: seeds {where}", total=len(tasks), bad="")

        def on_result(result: SeedResult) -> None:
            results.append(result)
            bad = sum(1 for r in results if r.error or r.failed)
            bar.update(progress, advance=1, bad=f"[red]{bad} failed" if bad else "")
        if cluster:
            interrupted = run_dask(tasks, cluster, on_result, task)
        else:
            interrupted = run_local(tasks, local, on_result, task)
    run = {"executor": "dask" if cluster else "local", "workers": cluster or local,
           "wall_seconds": round(time.perf_counter() - started, 3)}
    summary = summarize(file, scn, seeds_text, seeds, chosen, results, interrupted, run)
    write(folder, summary)
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        console = Console()
        table = _table(summary)
        # Never elide a number: wider than the terminal rather than "7,77…".
        needed = Measurement.get(console, console.options.update(width=1000), table).maximum
        console = Console(width=max(console.width, needed))
        console.print(table)
        if summary["absent_figures"]:
            console.print(f"no value in any seed's report (left out): {', '.join(summary['absent_figures'])}",
                          highlight=False)
        for line in failure_lines(summary):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        console.print(f"wrote {folder / 'sweep.json'}, seeds.csv, sweep.html and {len(summary['aggregate'])} plots",
                      highlight=False, soft_wrap=True)
    if interrupted:
        err.print(f"interrupted: stopped the workers; {len(results)} of {len(tasks)} seeds finished and are written "
                  f"to {folder / 'sweep.json'}", highlight=False, soft_wrap=True)
        return 130
    return 0 if all(r.error is None and not r.failed for r in results) else 1

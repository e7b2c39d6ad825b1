"""`report.html`: the report of one run as a static page, with its plots (PNG files in
`plots/`) and its tables (one CSV each) beside it.

Everything the page shows comes from `report.json`'s dict, the tables and the recovery
durations the caller passes: no figure is computed or typed here, only formatted.
Every text goes through `html.escape`. A section whose key the report lacks is left off
the page. The page needs no network and no script. Long tables show their first
`MAX_ROWS` rows and say where all of them are (a CSV or report.json).

Plots use matplotlib's object API (`Figure`, saved through the Agg canvas), imported on
first use: the global backend and pyplot's state are never touched. Each plot draws a
bounded number of artists whatever the run's size (availability bars merged at the
plot's resolution, at most MAX_LANES lanes, a histogram of fixed bins); the rest of the
step is linear in the rows. Automatic garbage collection waits until the step ends
(see `tables.gc_paused`). Measured on `fe bench scale` (a year, 50,000 hosts) with
150,000 downtime intervals: under 2 s, against about a minute for the run.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from sim.tables import TABLE_NAME, gc_paused, write_csv

__all__ = ["MAX_LANES", "MAX_ROWS", "write_report"]

MAX_ROWS = 500
MAX_LANES = 60  # availability timeline rows; past that, the lanes with most downtime
TIMELINE_PIXELS = 1000  # a bar is at least this fraction of the period wide, so short outages show
HEADER_KEYS = ("scenario", "source", "seed", "sim_seconds", "wall_seconds", "events", "event_log_sha256")

STYLE = """
body { font-family: DejaVu Sans, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .2em .5em; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.ok { background: #e6f4e6; } td.bad { background: #f8e0e0; font-weight: bold; }
.grid { display: flex; flex-wrap: wrap; gap: 1.5em; } .grid h3 { margin: .3em 0; font-size: 1em; }
.note { color: #666; font-size: .85em; } img { max-width: 100%; border: 1px solid #eee; }
code { font-size: .85em; word-break: break-all; }
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


# -- formatting (text only; the caller escapes) -------------------------------------------
def number(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def seconds(value: Any) -> str:
    """`931.09 s (15.5 min)`: the exact figure, and a readable one past two minutes."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return number(value)
    text = f"{value:,.2f} s"
    for limit, unit, size in ((7200, "min", 60), (172800, "h", 3600), (float("inf"), "d", 86400)):
        if 120 <= value < limit:
            return f"{text} ({value / size:,.1f} {unit})"
    return text


def percent(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return number(value)
    return f"{value:.6f}".rstrip("0").rstrip(".") + " %"  # the report floors to 6 decimals: never rounds up


def label(key: str) -> str:
    """`p99_s` -> `p99`, `down_at_end` -> `down at end`."""
    for suffix in ("_s", "_pct"):
        if key.endswith(suffix):
            key = key[: -len(suffix)]
    return key.replace("_", " ")


def by_key(key: str) -> Callable[[Any], str]:
    """The formatter a figure's name implies: `_s` seconds, `_pct` percent."""
    if key.endswith("_s"):
        return seconds
    if key.endswith("_pct"):
        return percent
    return number


def met_class(value: Any) -> str:
    return {True: "ok", False: "bad"}.get(value, "") if isinstance(value, bool) else ""


def met(value: Any) -> str:
    """An objective's outcome; None (no objective, or not decided when the run ended): n/a."""
    return {True: "met", False: "missed"}.get(value, "n/a") if isinstance(value, bool) else number(value)


@attrs.frozen
class Column:
    key: str
    heading: str
    fmt: Callable[[Any], str] = number
    css: Callable[[Any], str] = lambda value: ""


@attrs.frozen
class Page:
    """What formats need from the report: the calendar instant of virtual time 0."""

    start: dt.datetime | None

    @classmethod
    def of(cls, report: Mapping[str, Any]) -> Page:
        period = report.get("period")
        return cls(dt.datetime.fromisoformat(period["start"]) if period else None)

    def at(self, value: Any) -> str:
        """A virtual time as its calendar instant (in period.start's UTC offset), or as
        seconds since the start when the report has no period."""
        if not isinstance(value, int | float) or isinstance(value, bool):
            return number(value)
        if self.start is None:
            return f"t+{value:,.2f} s"
        return (self.start + dt.timedelta(seconds=value)).isoformat(sep=" ", timespec="seconds")


# -- HTML pieces ----------------------------------------------------------------------------
def table(rows: Sequence[Mapping[str, Any]], cols: Sequence[Column], where: str) -> str:
    """Rows as a table, at most MAX_ROWS of them; `where` names where all rows are."""
    head = "".join(f"<th>{esc(c.heading)}</th>" for c in cols)
    body = []
    for row in rows[:MAX_ROWS]:
        cells = []
        for c in cols:
            value = row.get(c.key)
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            css = " ".join(filter(None, ("num" if numeric else "", c.css(value))))
            cells.append(f'<td class="{esc(css)}">{esc(c.fmt(value))}</td>' if css else f"<td>{esc(c.fmt(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = (f'<p class="note">The first {MAX_ROWS:,} of {len(rows):,} rows; all of them are in {esc(where)}.</p>'
            if len(rows) > MAX_ROWS else "")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{note}"


def figures(title: str, prefix: str, values: Mapping[str, Any]) -> str:
    """Named scalar figures; each value cell carries its report path in `data-figure`."""
    rows = []
    for key, value in values.items():
        if isinstance(value, dict | list):
            continue
        path = f"{prefix}.{key}" if prefix else key
        rows.append(f'<tr><th>{esc(label(key))}</th><td class="num" data-figure="{esc(path)}">'
                    f"{esc(by_key(key)(value))}</td></tr>")
    return f"<div><h3>{esc(title)}</h3><table>{''.join(rows)}</table></div>"


def expected(value: Any) -> str:
    if isinstance(value, dict):
        bounds = [f"{op} {number(value[k])}" for k, op in (("min", ">="), ("max", "<=")) if value.get(k) is not None]
        return " and ".join(bounds)
    return f"= {number(value)}"


def header(report: Mapping[str, Any]) -> str:
    facts: list[tuple[str, str]] = [("source", str(report.get("source", "n/a"))),
                                    ("seed", number(report.get("seed")))]
    period = report.get("period")
    if period:
        facts.append(("period", f"{period['start']} to {period['end']} (months: {', '.join(period['months'])})"))
    facts += [("simulated", seconds(report.get("sim_seconds"))), ("wall time", seconds(report.get("wall_seconds"))),
              ("events", number(report.get("events"))),
              ("event-log SHA-256", str(report.get("event_log_sha256", "n/a")))]
    determinism = report.get("determinism")
    if determinism:
        facts.append(("determinism", "same event-log hash over two runs" if determinism["ok"]
                      else f"DIFFERENT: second run {determinism['second_sha256']}"))
    checks = report.get("expectations", [])
    failed = [e for e in checks if not e["ok"]]
    verdict = (f"all {len(checks):,} expectations hold" if not failed
               else f"{len(failed):,} of {len(checks):,} expectations FAILED")
    facts.append(("expectations", verdict))
    dl = "".join(f"<tr><th>{esc(k)}</th><td><code>{esc(v)}</code></td></tr>" if k == "event-log SHA-256"
                 else f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts)
    rows = [{"name": e["name"], "expected": expected(e["expected"]), "value": e["value"], "ok": e["ok"]}
            for e in checks]
    expect = table(rows, [Column("name", "figure"), Column("expected", "expected", str),
                          Column("value", "value"),
                          Column("ok", "result", lambda v: "pass" if v else "FAIL", met_class)], "report.json")
    return (f"<header><h1>{esc(report.get('scenario', 'run'))}</h1><table>{dl}</table>"
            f"{expect if rows else ''}</header>")


def headline(report: Mapping[str, Any]) -> str:
    parts = [figures(title, key, report[key]) for key, title in
             (("servers", "Servers"), ("hosts", "Hosts"), ("recoveries", "Recoveries"), ("volumes", "Volumes"))
             if key in report]
    scalars = {k: v for k, v in report.items() if k not in HEADER_KEYS and not isinstance(v, dict | list)}
    parts.append(figures("Safety and faults", "", scalars))
    sdrs = report.get("sdrs_totals")
    if sdrs and sdrs.get("groups"):
        parts.append(figures("sDRS (RPO, RTO)", "sdrs_totals", sdrs))
    backups = report.get("backups")
    if backups and any(backups.values()):
        parts.append(figures("Backups", "backups", backups))
    return f"<section id=\"headline\"><h2>Headline figures</h2><div class=\"grid\">{''.join(parts)}</div></section>"


def image(src: str, alt: str) -> str:
    return f'<img src="{esc(src)}" alt="{esc(alt)}">'


def availability(report: Mapping[str, Any], page: Page, plots: Path) -> str:
    a = report["availability"]
    services, tenants = a.get("services", []), a.get("tenants", [])
    lanes, shown = _availability_plot(plots / "availability.png", a, report.get("sim_seconds") or 0.0, page)
    cut = (f" The {shown:,} lanes with the most downtime of {lanes:,} are drawn." if shown < lanes else "")
    pct = [Column("availability_pct", "availability", percent), Column("target_pct", "target", percent)]
    service_cols = [Column("service", "service"), Column("plane", "plane"), Column("scope", "scope"),
                    Column("month", "month"), Column("downtime_s", "downtime", seconds), *pct,
                    Column("met", "objective", met, met_class)]
    tenant_cols = [Column("tenant", "tenant"), Column("service", "service"), Column("plane", "plane"),
                   Column("scope", "scope"), Column("month", "month"),
                   Column("downtime_s", "downtime", seconds), *pct, Column("met", "objective", met, met_class),
                   Column("credit_pct", "credit", percent)]
    return (f'<section id="availability"><h2>Availability (SLA-1)</h2><div class="grid">'
            f'{figures("Targets", "availability", a)}</div>'
            f"{image('plots/availability.png', 'availability timeline per AZ and service')}"
            f'<p class="note">Downtime intervals per scope and service ({len(a.get("intervals", [])):,} intervals '
            f"in the report, tenant-level ones left out). A bar is widened to 1/{TIMELINE_PIXELS:,} of the run "
            f"so that short outages show.{esc(cut)}</p>"
            f"<h3>Per service and month</h3>{table(services, service_cols, 'report.json')}"
            f"<h3>Per tenant and month</h3>{table(tenants, tenant_cols, 'report.json')}</section>")


def recoveries(report: Mapping[str, Any], recovery_s: Sequence[float], plots: Path) -> str:
    rec = report.get("recoveries", {})
    if recovery_s:
        _recovery_plot(plots / "recovery-times.png", recovery_s, rec)
        body = image("plots/recovery-times.png", "histogram of recovery durations")
    else:
        body = "<p>No server was recovered in this run.</p>"
    return f'<section id="recovery-times"><h2>Recovery times (ECS-4)</h2>{body}</section>'


def incidents(report: Mapping[str, Any], page: Page) -> str:
    inc = report["incidents"]
    cols = [Column("id", "incident"), Column("priority", "priority"), Column("service", "service"),
            Column("plane", "plane"), Column("scope", "scope"), Column("opened_s", "opened", page.at),
            Column("resolved_s", "resolved", page.at), Column("affected_pct", "users affected", percent),
            Column("tenants", "tenants"), Column("tickets", "tickets")]
    return (f'<section id="incidents"><h2>Incidents (SLA-2, SLA-4, SLA-5)</h2><div class="grid">'
            f'{figures("Incidents and objectives", "incidents", inc)}</div>'
            f"{table(inc.get('list', []), cols, 'incidents.csv and report.json')}</section>")


def tickets(report: Mapping[str, Any], page: Page) -> str:
    t = report["tickets"]
    cols = [Column("id", "ticket"), Column("incident", "incident"), Column("tenant", "tenant"),
            Column("plan", "plan"), Column("priority", "priority"), Column("opened_s", "opened", page.at),
            Column("responded_s", "responded", page.at), Column("response_due_s", "response due", page.at),
            Column("response_met", "response", met, met_class), Column("resolved_s", "resolved", page.at),
            Column("repair_due_s", "repair due", page.at), Column("repair_met", "repair", met, met_class),
            Column("closed_s", "closed", page.at)]
    return (f'<section id="tickets"><h2>Support tickets (SLA-4, SLA-5, SLA-6)</h2><div class="grid">'
            f'{figures("Tickets", "tickets", t)}</div>{table(t.get("list", []), cols, "report.json")}</section>')


def billing(report: Mapping[str, Any]) -> str:
    b = report["billing"]
    currency = str(b.get("currency", ""))
    cols = [Column("tenant", "tenant"), Column("month", "month"), Column("total", f"total ({currency})"),
            Column("credits", f"credits ({currency})"), Column("lines", "invoice lines")]
    return (f'<section id="billing"><h2>Invoices</h2><div class="grid">{figures("Totals", "billing", b)}</div>'
            f"{table(b.get('tenants', []), cols, 'charges.csv and report.json')}</section>")


def changes(report: Mapping[str, Any]) -> str:
    return (f'<section id="changes"><h2>Changes (SLA-7)</h2><div class="grid">'
            f'{figures("Planned changes", "changes", report["changes"])}</div></section>')


def deletions(report: Mapping[str, Any], page: Page) -> str:
    cols = [Column("tenant", "tenant"), Column("contract_end_s", "contract end", page.at),
            Column("deadline_s", "deadline", page.at), Column("completed_s", "deletion completed", page.at),
            Column("items", "items deleted"), Column("left", "items left"),
            Column("within_limit", "within 2 months", met, met_class), Column("sha256", "record SHA-256")]
    return (f'<section id="deletions"><h2>Data deletion records (TEN-5)</h2>'
            f"{table(report['deletions'], cols, 'report.json')}</section>")


def files(out_dir: Path, written: Mapping[str, int]) -> str:
    items = [f'<li><a href="{esc(name)}">{esc(name)}</a> ({rows:,} rows)</li>' for name, rows in written.items()]
    items += [f'<li><a href="{esc(name)}">{esc(name)}</a></li>' for name in ("report.json", "events.jsonl")
              if (out_dir / name).exists()]
    return f'<section id="files"><h2>Data files</h2><ul>{"".join(items)}</ul></section>'


def write_report(out_dir: Path, report: dict[str, Any], tables: dict[str, list[dict[str, Any]]],
                 recovery_s: list[float] | None) -> Path:
    """Write `report.html`, `plots/*.png` and one `NAME.csv` per table into `out_dir`;
    return the page's path. `recovery_s` holds one duration per recovery (seconds);
    None leaves the recovery-time section off."""
    for name in tables:
        if not TABLE_NAME.fullmatch(name):
            raise ValueError(f"table name {name!r} cannot name a CSV file: use lower-case letters, digits, "
                             f"'_' or '-', starting with a letter")
    with gc_paused():
        return _write(out_dir, report, tables, recovery_s)


def _write(out_dir: Path, report: dict[str, Any], tables: dict[str, list[dict[str, Any]]],
           recovery_s: list[float] | None) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = out_dir / "plots"
    plots.mkdir(exist_ok=True)
    written = {}
    for name, rows in tables.items():
        write_csv(out_dir / f"{name}.csv", rows)
        written[f"{name}.csv"] = len(rows)
    page = Page.of(report)
    sections = [header(report), headline(report)]
    if "availability" in report:
        sections.append(availability(report, page, plots))
    if recovery_s is not None:
        sections.append(recoveries(report, recovery_s, plots))
    if "incidents" in report:
        sections.append(incidents(report, page))
    if "tickets" in report:
        sections.append(tickets(report, page))
    if "changes" in report:
        sections.append(changes(report))
    if "billing" in report:
        sections.append(billing(report))
    if "deletions" in report:
        sections.append(deletions(report, page))
    sections.append(files(out_dir, written))
    title = esc(f"{report.get('scenario', 'run')} (seed {report.get('seed')})")
    path = out_dir / "report.html"
    path.write_text(f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
                    f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>\n", encoding="utf-8")
    return path


# -- plots ----------------------------------------------------------------------------------
def _merged(spans: list[tuple[float, float]], min_width: float) -> list[tuple[float, float]]:
    """(start, width) bars: spans closer than `min_width` merged, each at least that wide."""
    bars: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        end = max(end, start + min_width)
        if bars and start <= bars[-1][0] + bars[-1][1]:
            first = bars[-1][0]
            bars[-1] = (first, max(bars[-1][1], end - first))
        else:
            bars.append((start, end - start))
    return bars


def _availability_plot(path: Path, a: Mapping[str, Any], sim_seconds: float, page: Page) -> tuple[int, int]:
    """A Gantt-like timeline: one lane per (scope, service, plane), red where down.
    Returns (lanes, lanes drawn)."""
    from matplotlib.figure import Figure

    spans: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for s in a.get("services", []):
        spans.setdefault((str(s["scope"]), str(s["service"]), str(s["plane"])), [])
    for i in a.get("intervals", []):
        if i.get("tenant") is None:
            spans.setdefault((str(i["scope"]), str(i["service"]), str(i["plane"])), []).append(
                (float(i["start_s"]), float(i["end_s"])))
    lanes = sorted(spans)
    if len(lanes) > MAX_LANES:
        lanes = sorted(sorted(lanes, key=lambda k: -sum(e - s for s, e in spans[k]))[:MAX_LANES])
    span = max([sim_seconds] + [e for k in lanes for _, e in spans[k]]) or 1.0
    day = 86400.0
    names = [f"{scope} · {service} ({plane})" for scope, service, plane in lanes]
    width, height = 10.0, 1.2 + 0.25 * max(1, len(lanes))
    fig = Figure(figsize=(width, height))
    # Fixed margins (the labels' length in inches at 8 pt) cost one draw less than a layout engine.
    left = min(0.5, (0.3 + 0.07 * max([len(n) for n in names] + [1])) / width)
    fig.subplots_adjust(left=left, right=0.98, top=1 - 0.45 / height, bottom=0.6 / height)
    ax = fig.add_subplot()
    for y, lane in enumerate(lanes):
        bars = _merged(spans[lane], span / TIMELINE_PIXELS)
        ax.broken_barh([(s / day, w / day) for s, w in bars], (y - 0.4, 0.8), facecolors="tab:red", linewidth=0)
    ax.set_yticks(range(len(lanes)), names)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_ylim(len(lanes) - 0.5, -0.5)
    ax.set_xlim(0, span / day)
    since = f"since {page.start.isoformat()}" if page.start is not None else "since the start"
    ax.set_xlabel(f"days {since}")
    ax.set_title("Downtime per scope and service")
    ax.grid(axis="x", alpha=0.3)
    fig.savefig(path, dpi=100)
    return len(spans), len(lanes)


def _recovery_plot(path: Path, values: Sequence[float], rec: Mapping[str, Any]) -> None:
    """Histogram of recovery durations, with the report's p50 and p99 marked."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    fig = Figure(figsize=(10, 4))
    fig.subplots_adjust(left=0.08, right=0.98, top=0.9, bottom=0.14)
    ax = fig.add_subplot()
    # Recoveries of one kind often last the same time to the nanosecond: at least one second of range.
    lo, hi = min(values), max(values)
    pad = max(0.0, 1.0 - (hi - lo)) / 2
    counts = [c for c in ax.hist(values, bins=60, range=(lo - pad, hi + pad), color="tab:blue")[0] if c]
    ax.ticklabel_format(axis="x", style="plain", useOffset=False)
    if max(counts) >= 100 * min(counts):  # a long tail: a linear axis would hide it
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(NullFormatter())
    for key, style in (("p50_s", "--"), ("p99_s", ":")):
        if rec.get(key) is not None:
            ax.axvline(rec[key], color="black", linestyle=style, label=f"{label(key)} {seconds(rec[key])}")
    if rec.get("p50_s") is not None or rec.get("p99_s") is not None:
        ax.legend()
    ax.set_xlabel("seconds from the server stopping to running again")
    ax.set_ylabel("recoveries")
    ax.set_title(f"Recovery times ({len(values):,} recoveries)")
    fig.savefig(path, dpi=100)

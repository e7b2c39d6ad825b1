"""`report.html`, its plots and CSV tables (sim/html.py, sim/tables.py): every figure shown
comes from the report, sections the report lacks are absent, text is escaped, the CSV
tables hold every row; and Chromium renders the page with its key figures and images
(rules ECS-4 recoveries, SLA-1 availability, SLA-2/4/5 incidents and tickets, TEN-5 deletions)."""

from __future__ import annotations

import copy
import csv
import gc
import json
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import attrs
import pytest

from sim import html as pages
from sim import report as reports
from sim import runner, scenario, tables

HOST_FAILURE = Path(__file__).parents[2] / "scenarios" / "host-failure.toml"
CHROMIUM = "/usr/bin/chromium"

# The sections the lead adds to the report this week, in the shape report.json will have.
SLA_SECTIONS: dict[str, Any] = {
    "period": {"start": "2026-01-01T00:00:00+01:00", "end": "2026-01-31T00:00:00+01:00", "months": ["2026-01"]},
    "availability": {
        "target_pct": 99.95, "min_pct": 99.86, "months_missed": 1, "maintenance_s": 7200.0,
        "services": [{"service": "ECS", "plane": "data", "scope": "eu-west-0a", "month": "2026-01",
                      "downtime_s": 3600.0, "availability_pct": 99.86, "target_pct": 99.95, "met": False}],
        "tenants": [{"tenant": "acme", "service": "ECS", "month": "2026-01", "downtime_s": 0.0,
                     "availability_pct": 100.0, "target_pct": 99.95, "met": True, "credit_pct": 0}],
        "intervals": [{"service": "ECS", "plane": "data", "scope": "eu-west-0a", "tenant": None,
                       "start_s": 86400.0, "end_s": 90000.0}]},
    "incidents": {"count": 3, "P1": 1, "P2": 0, "P3": 2, "P4": 0, "response_met": 5, "response_missed": 1,
                  "repair_met": 1, "repair_missed": 0,
                  "list": [{"id": "INC-1", "priority": "P1", "service": "ECS", "plane": "data",
                            "scope": "eu-west-0b", "opened_s": 10.0, "resolved_s": 400.0, "affected_pct": 60.0,
                            "tenants": 1, "tickets": 2}]},
    "tickets": {"count": 6, "list": [{"id": "T-1", "incident": "INC-1", "tenant": "acme", "plan": "Business",
                                      "priority": "P1", "opened_s": 10.0, "responded_s": 300.0,
                                      "response_due_s": 3610.0, "response_met": True, "resolved_s": 400.0,
                                      "repair_due_s": 14410.0, "repair_met": None, "closed_s": None}]},
    "changes": {"accepted": 2, "refused": 1, "maintenance_s": 7200.0},
    "billing": {"currency": "EUR", "total": "1234.56", "credits": "12.30",
                "tenants": [{"tenant": "acme", "month": "2026-01", "total": "1000.00", "credits": "0.00",
                             "lines": 120}]},
    "deletions": [{"tenant": "old-co", "contract_end_s": 100.0, "deadline_s": 5356900.0, "completed_s": 5000.0,
                   "items": 42, "left": 0, "within_limit": True, "sha256": "ab" * 32}],
}
SECTION_IDS = {"availability": "availability", "incidents": "incidents", "tickets": "tickets", "changes": "changes",
               "billing": "billing", "deletions": "deletions"}


@attrs.frozen
class Run:
    out: Path
    report: dict[str, Any]
    tables: dict[str, list[dict[str, Any]]]
    recovery_s: list[float]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """host-failure.toml once; the snapshot and world are taken from the runner's call
    to `report.build` (what the runner itself passes to the table functions)."""
    seen: dict[str, Any] = {}
    build = reports.build

    def keep(scn: scenario.Scenario, seed: int, snapshot: Any, world: Any, metrics: Any, *args: Any,
             **kwargs: Any) -> dict[str, Any]:
        seen.update(snapshot=snapshot, world=world, recovery_s=list(metrics.recovery_s))
        return build(scn, seed, snapshot, world, metrics, *args, **kwargs)

    scn = scenario.load(HOST_FAILURE)
    out = tmp_path_factory.mktemp("host-failure")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reports, "build", keep)
        report = runner.run(scn, None, out)
    rows = {"servers": tables.server_rows(seen["snapshot"], seen["world"]),
            "hosts": tables.host_rows(seen["snapshot"], seen["world"], scn.topology)}
    yield Run(out, report, rows, seen["recovery_s"])


class _Dom(HTMLParser):
    """Collects `data-figure` cells, image sources and section ids of a page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.figures: dict[str, str] = {}
        self.images: list[str] = []
        self.sections: set[str] = set()
        self.rows = 0
        self._figure: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "td" and a.get("data-figure"):
            self._figure = a["data-figure"]
            self.figures[self._figure or ""] = ""
        elif tag == "img":
            self.images.append(a.get("src") or "")
        elif tag == "section" and a.get("id"):
            self.sections.add(a["id"] or "")
        elif tag == "tr":
            self.rows += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._figure = None

    def handle_data(self, data: str) -> None:
        if self._figure is not None:
            self.figures[self._figure] += data


def test_server_and_host_rows_agree_with_the_report_ECS_4(run: Run) -> None:
    """One row per server copy, every server of the report; the truth columns count the
    report's running servers, down and dead hosts."""
    servers, hosts = run.tables["servers"], run.tables["hosts"]
    assert len({r["id"] for r in servers}) == run.report["servers"]["total"] == len(servers)
    running = [r for r in servers if not r["parked"] and r["state"] == "active" and r["running_on"] == r["host"]]
    assert len(running) == run.report["servers"]["running"]
    assert all(r["vcpus"] and r["ram_mb"] for r in running)
    assert len(hosts) == run.report["hosts"]["total"]
    assert sum(r["down_at_end"] for r in hosts) == run.report["hosts"]["down_at_end"] > 0
    assert sum(r["dead"] for r in hosts) == run.report["hosts"]["dead"]
    assert sum(r["servers_running"] for r in hosts) == len(running)
    assert {r["az"] for r in hosts} == {"eu-west-0a", "eu-west-0b", "eu-west-0c"}
    assert hosts[0]["rack"] == "eu-west-0a/rack-1" and hosts[0]["power_domain"] == "eu-west-0a/pd-1"


def test_one_csv_per_table_with_a_header_and_every_row(run: Run, tmp_path: Path) -> None:
    incidents = SLA_SECTIONS["incidents"]["list"]
    given = {**run.tables, "incidents": incidents, "charges": []}
    pages.write_report(tmp_path, run.report, given, run.recovery_s)
    for name, rows in given.items():
        with (tmp_path / f"{name}.csv").open(newline="") as f:
            lines = list(csv.reader(f))
        if not rows:
            assert lines == []
            continue
        assert lines[0] == list(rows[0])
        assert len(lines) - 1 == len(rows)
    with (tmp_path / "servers.csv").open(newline="") as f:
        first = next(csv.DictReader(f))
    row = run.tables["servers"][0]
    assert first["id"] == row["id"] and first["parked"] == str(row["parked"]).lower()
    assert first["group"] == (row["group"] or "")


def test_sections_the_report_lacks_are_absent_SLA_1(run: Run, tmp_path: Path) -> None:
    without = {k: v for k, v in run.report.items() if k not in SLA_SECTIONS}
    bare = _Dom(pages.write_report(tmp_path / "bare", without, {}, None).read_text())
    assert bare.sections == {"headline", "files"}
    assert bare.images == []
    full = _Dom(pages.write_report(tmp_path / "full", {**run.report, **SLA_SECTIONS}, {}, run.recovery_s).read_text())
    assert full.sections == {"headline", "files", "recovery-times", *SECTION_IDS.values()}
    assert full.images == ["plots/availability.png", "plots/recovery-times.png"]
    partial = {**without, "billing": SLA_SECTIONS["billing"]}
    assert _Dom(pages.write_report(tmp_path / "partial", partial, {}, None).read_text()).sections == {
        "headline", "files", "billing"}


def test_every_text_from_the_report_is_escaped(run: Run, tmp_path: Path) -> None:
    report = {**copy.deepcopy(run.report), **copy.deepcopy(SLA_SECTIONS)}
    report["scenario"] = '<script>alert("x")</script>'
    report["billing"]["tenants"][0]["tenant"] = "<img src=x onerror=alert(1)>"
    report["expectations"][0]["name"] = "a<b>"
    text = pages.write_report(tmp_path, report, {}, None).read_text()
    assert "<script" not in text.lower() and "<img src=x" not in text and "<b>" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text and "a&lt;b&gt;" in text


def test_figures_shown_are_the_reports(run: Run, tmp_path: Path) -> None:
    dom = _Dom(pages.write_report(tmp_path, {**run.report, **SLA_SECTIONS}, {}, run.recovery_s).read_text())
    servers = run.report["servers"]
    assert dom.figures["servers.total"] == f"{servers['total']:,}"
    assert dom.figures["servers.lost"] == f"{servers['lost']:,}"
    assert dom.figures["recoveries.p99_s"] == f"{run.report['recoveries']['p99_s']:,.2f} s"
    assert dom.figures["split_brain"] == str(run.report["split_brain"])
    assert dom.figures["incidents.response_missed"] == "1" and dom.figures["billing.total"] == "1234.56"
    assert dom.figures["availability.min_pct"] == "99.86 %" and dom.figures["changes.refused"] == "1"
    assert dom.figures["availability.maintenance_s"] == "7,200.00 s (2.0 h)"
    assert "backups.completed" not in dom.figures and "sdrs_totals.groups" not in dom.figures  # none in this run


def test_long_tables_and_many_lanes_are_cut_and_say_so_SLA_1(run: Run, tmp_path: Path) -> None:
    lanes = pages.MAX_LANES + 5
    scopes = ["eu-west-0a"] + [f"az-{k}" for k in range(1, lanes)]  # eu-west-0a: the interval's lane too
    services = [{**SLA_SECTIONS["availability"]["services"][0], "scope": scope} for scope in scopes]
    incident = SLA_SECTIONS["incidents"]["list"][0]
    report = {**run.report, **SLA_SECTIONS,
              "availability": {**SLA_SECTIONS["availability"], "services": services},
              "incidents": {**SLA_SECTIONS["incidents"],
                            "list": [{**incident, "id": f"INC-{k}"} for k in range(pages.MAX_ROWS + 1)]}}
    text = pages.write_report(tmp_path, report, {}, None).read_text()
    assert f"The {pages.MAX_LANES:,} lanes with the most downtime of {lanes:,} are drawn." in text
    assert f"The first {pages.MAX_ROWS:,} of {pages.MAX_ROWS + 1:,} rows" in text
    assert f"INC-{pages.MAX_ROWS - 1}<" in text and f"INC-{pages.MAX_ROWS}<" not in text


def test_a_table_name_that_cannot_name_a_file_is_refused_before_writing(run: Run, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'../servers'"):
        pages.write_report(tmp_path / "out", run.report, {"hosts": [], "../servers": []}, None)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("enabled", [True, False])
def test_the_garbage_collector_is_left_as_it_was(run: Run, tmp_path: Path, enabled: bool) -> None:
    """The step pauses automatic collection (a large run's heap made it 30 times slower) and
    restores the caller's choice."""
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        pages.write_report(tmp_path, run.report, {}, None)
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def _chromium(tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", *args, page.as_uri()],
        capture_output=True, text=True, timeout=300, check=True)


@pytest.mark.chromium
def test_chromium_renders_the_report_with_its_figures_and_plots_ECS_4(run: Run, tmp_path: Path) -> None:
    from PIL import Image

    report = json.loads((run.out / "report.json").read_text()) | SLA_SECTIONS
    page = pages.write_report(run.out, report, run.tables, run.recovery_s)
    shot = tmp_path / "page.png"
    _chromium(tmp_path, page, f"--screenshot={shot}", "--window-size=1280,4000", "--hide-scrollbars")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(shot) as image:
        assert image.size == (1280, 4000)
        assert len(image.convert("RGB").getcolors(1 << 24) or ()) > 1
    dom = _Dom(_chromium(tmp_path, page, "--dump-dom").stdout)
    servers = report["servers"]
    assert dom.figures["servers.total"] == f"{servers['total']:,}"
    assert dom.figures["servers.lost"] == f"{servers['lost']:,}"
    assert dom.figures["recoveries.p99_s"] == f"{report['recoveries']['p99_s']:,.2f} s"
    assert {"availability", "recovery-times", "incidents", "billing", "deletions"} <= dom.sections
    assert len(dom.images) == 2
    for src in dom.images:
        assert (run.out / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

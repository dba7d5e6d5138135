"""Every dashboard panel's query and every alert's expression, run by a real Prometheus server (issue 29).

The test writes an OpenMetrics file with 31 days of series under the names and labels the rendered
workflows emit (tests/argo_metrics.py reads workflows/rendered/*.yaml; Argo's Prometheus endpoint
prepends argo_workflows_), backfills it with `promtool tsdb create-blocks-from openmetrics`, starts
Debian's `prometheus` (`make promtool` installs the package) on 127.0.0.1 with that storage, and asks
/api/v1/query for each expression at EVAL, inside the backfilled range: each must parse and return data.
The series tell one story (below) in which every alert fires at EVAL, so an alert that could never fire
(a wrong name, a wrong label, a wrong comparison) shows up as an empty result.

The story: a daily run for each of the 31 days before DAY, file at about 06:10 UTC, published by 06:40;
DAY-10 one failed ingest attempt, retried; DAY-6 the file 50 minutes late (SLA missed); DAY-1 the file
90 minutes late, 5% of its rows quarantined, a volume warning, dbt tests failing twice, the run failed
at 13:00 (nothing published since DAY-2); DAY's file not there by EVAL (12:00) and its run, started at
08:05, still waiting; the weekly audit-trail verification found the trail broken on DAY-1 at 03:00.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from argo_metrics import ARGO_PREFIX, AUDIT_TRAIL_INTACT, Metric, emitted, stored_names

from chart_render import SCENARIOS, find, helm, scenario_docs, template_text
from conftest import ROOT

sys.path.insert(0, str(ROOT / "helm" / "tools"))
import alert_rules  # noqa: E402

DASHBOARD = ROOT / "helm" / "contribflow" / "dashboards" / "contribflow.json"
DAY = dt.date(2026, 11, 30)  # a Monday: the weekly verification ran on Sunday DAY-1
EVAL = int(dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC).timestamp())
HISTORY_DAYS = 31
# A sample every 6 hours, then every minute in the last 10 minutes before EVAL (the stuck-run alert's
# delta over 10m needs two): promtool of Debian's Prometheus 2.42 re-reads the whole file for each 2-hour
# block of the 31 days, so the file is kept small (the controller is scraped far more often; the values
# between two samples are the same gauges).
COARSE, FINE, FINE_SPAN = 6 * 3600, 60, 600
SCRAPE_LABELS = {"job": "argo-workflows-controller", "instance": "10.0.3.7:9090"}  # what the scrape adds
STATUS_VARIABLES = {"{{status}}", "{{workflow.status}}"}
RUN_DATE_VARIABLE = "{{workflow.parameters.run-date}}"


def _at(day: dt.date, hour: int, minute: int = 0) -> int:
    return int(dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=dt.UTC).timestamp())


def _midnight(day: dt.date) -> int:
    return _at(day, 0)


# --- the story --------------------------------------------------------------------------------------

STEP_SECONDS = {"init-db": 20, "generate": 30, "ingest": 300, "dbt-build": 600, "dbt-test": 180, "publish": 40,
                "finish": 15}


@dataclass
class Run:
    """One daily run: when each step ended and how, and what finish recorded."""

    day: dt.date
    start: int
    arrival: int | None
    steps: dict[str, tuple[int, int, str]] = field(default_factory=dict)  # template → (end, seconds, status)
    failed_attempts: dict[str, list[int]] = field(default_factory=dict)   # template → ends of failed attempts
    end: int | None = None
    succeeded: bool = True
    rows_in: int = 0
    quarantined: int = 0
    volume_warning: int = 0
    tests_failed: int = 0
    late_pick: bool = False

    @property
    def run_date(self) -> str:
        return self.day.isoformat()

    @property
    def seconds_late(self) -> int:
        return max(0, (self.arrival or 0) - (_midnight(self.day) + 28800))


def _runs() -> list[Run]:
    runs = []
    for back in range(HISTORY_DAYS, 0, -1):
        day = DAY - dt.timedelta(days=back)
        n = day.toordinal()
        run = Run(day, start=_at(day, 6), arrival=_at(day, 6, 10 + n % 7))
        run.rows_in = 10_000 + n * 37 % 900
        run.quarantined = run.rows_in * (4 + n % 5) // 1000
        failing: dict[str, int] = {}
        if back == 10:
            failing["ingest"] = 1
        if back == 6:
            run.arrival = _at(day, 8, 50)
        if back == 15:
            run.late_pick = True
        if back == 1:
            run.arrival = _at(day, 9, 30)
            run.quarantined = run.rows_in // 20
            run.volume_warning, run.tests_failed, run.succeeded = 1, 2, False
            failing["dbt-test"] = 2
        t = run.start
        for step in ("init-db", "generate"):
            t += STEP_SECONDS[step]
            run.steps[step] = (t, STEP_SECONDS[step], "Succeeded")
        assert run.arrival is not None
        t = max(t, run.arrival) + 30
        run.steps["pick"] = (t, t - run.steps["generate"][0], "Succeeded")
        for step in ("ingest", "dbt-build", "dbt-test", "publish"):
            for _ in range(failing.get(step, 0)):
                t += 20
                run.failed_attempts.setdefault(step, []).append(t)
            if step == "dbt-test" and not run.succeeded:
                run.steps[step] = (t, 20, "Failed")
                t = _at(day, 13) - STEP_SECONDS["finish"]
                break
            t += STEP_SECONDS[step]
            run.steps[step] = (t, STEP_SECONDS[step], "Succeeded")
        t += STEP_SECONDS["finish"]
        run.steps["finish"] = (t, STEP_SECONDS["finish"], "Succeeded")
        run.end = t
        runs.append(run)
    # DAY: started at 08:05, its file not there, still running at EVAL
    runs.append(Run(DAY, start=_at(DAY, 8, 5), arrival=None, succeeded=False))
    return runs


RUNS = _runs()


def _published_before(t: int) -> Run | None:
    done = [r for r in RUNS if r.end is not None and r.end <= t and "publish" in r.steps]
    return done[-1] if done else None


def _loaded_before(t: int) -> Run | None:
    done = [r for r in RUNS if "ingest" in r.steps and r.steps["ingest"][0] <= t]
    return done[-1] if done else None


# finish's gauges and ingest's, per run date: name (without prefix) → the value for a run
PER_RUN: dict[str, Callable[[Run], float]] = {
    "contribflow_rows_in": lambda r: r.rows_in,
    "contribflow_rows_loaded": lambda r: r.rows_in - r.quarantined,
    "contribflow_rows_rejected": lambda r: r.quarantined,
    "contribflow_rows_quarantined": lambda r: r.quarantined,
    "contribflow_dbt_tests_failed": lambda r: r.tests_failed,
    "contribflow_run_succeeded": lambda r: int(r.succeeded),
    "contribflow_sla_met": lambda r: int(r.succeeded and r.seconds_late == 0 and r.quarantined / r.rows_in <= 0.02),
    "contribflow_file_seconds_late": lambda r: r.seconds_late,
    "contribflow_quarantine_ratio": lambda r: round(r.quarantined / r.rows_in, 6),
    "contribflow_volume_warning": lambda r: r.volume_warning,
    "contribflow_run_finished_timestamp_seconds": lambda r: r.end or 0,
}
# finish's warehouse-wide gauges (no run date): the value when a run's finish ends
WAREHOUSE: dict[str, Callable[[Run], float]] = {
    "contribflow_publication_age_seconds": lambda r: (r.end or 0) - _published_before(r.end or 0).end,  # type: ignore[union-attr]
    "contribflow_marts_published_timestamp_seconds": lambda r: _published_before(r.end or 0).steps["publish"][0],  # type: ignore[union-attr]
    "contribflow_marts_published_run_date_seconds": lambda r: _midnight(_published_before(r.end or 0).day),  # type: ignore[union-attr]
    "contribflow_file_latest_run_date_seconds": lambda r: _midnight(_loaded_before(r.end or 0).day),  # type: ignore[union-attr]
}


# --- the series ---------------------------------------------------------------------------------------

Labels = tuple[tuple[str, str], ...]


class Series:
    """A gauge or counter as the Argo controller exports it: absent until first set, then its last value."""

    def __init__(self) -> None:
        self.changes: list[tuple[int, float]] = []
        self.function: Callable[[int], float | None] | None = None

    def set(self, t: int, value: float) -> None:
        self.changes.append((t, value))

    def add(self, t: int, value: float = 1) -> None:
        self.changes.append((t, (self.changes[-1][1] if self.changes else 0) + value))

    def at(self, t: int) -> float | None:
        if self.function:
            return self.function(t)
        found = None
        for when, value in sorted(self.changes, key=lambda c: c[0]):
            if when > t:
                break
            found = value
        return found


def _labels(metric: Metric, run: Run | None, status: str | None) -> Labels:
    """The metric's labels as the controller fills them in: literals as rendered, Argo's variables from
    the run; an Argo variable this story does not know fails the test (teach it)."""
    out = []
    for key, value in metric.labels:
        if value == RUN_DATE_VARIABLE:
            assert run is not None, f"{metric.name}: a run date label on a metric without a run"
            out.append((key, run.run_date))
        elif value in STATUS_VARIABLES:
            assert status is not None, f"{metric.name}: a status label without a status"
            out.append((key, status))
        elif "{{" in value:
            raise AssertionError(f"{metric.name}: the story does not know the Argo variable {value}")
        else:
            out.append((key, value))
    return tuple(sorted({**SCRAPE_LABELS, **dict(out)}.items()))


def build_series(metrics: list[Metric]) -> dict[tuple[str, Labels], Series]:
    """Every series the story's runs make the controller export, keyed by (stored name, labels)."""
    series: dict[tuple[str, Labels], Series] = {}

    def get(metric: Metric, run: Run | None = None, status: str | None = None) -> Series:
        return series.setdefault((metric.stored, _labels(metric, run, status)), Series())

    defined: set[tuple] = set()
    for metric in metrics:
        name, template = metric.name, metric.template
        # A definition two workflows share (the daily run's and contribflow-apply-request's dbt-test
        # template) exports one series per run, not one per workflow that defines it.
        if (name, metric.labels, template) in defined:
            continue
        defined.add((name, metric.labels, template))
        for run in RUNS:
            if name == "contribflow_run_elapsed_seconds":
                start, end = run.start, run.end
                s = get(metric, run)
                s.function = (lambda t, start=start, end=end: None if t < start else min(t, end or t) - start)
            elif template is None and run.end is not None:  # the workflow's own metrics, when it ends
                status = "Succeeded" if run.succeeded else "Failed"
                if name == "contribflow_run_duration_seconds":
                    get(metric, run, status).set(run.end, run.end - run.start)
                elif name == "contribflow_runs_total":
                    get(metric, run, status).add(run.end)
                else:
                    raise AssertionError(f"the story has no value for the workflow metric {name}: teach it")
            elif template is not None and template in run.steps:
                end, seconds, status = run.steps[template]
                if name == "contribflow_step_duration_seconds":
                    for failed_end in run.failed_attempts.get(template, []):
                        get(metric, run, "Failed").set(failed_end, 20)
                    get(metric, run, status).set(end, seconds)
                elif name == "contribflow_step_failures_total":
                    for failed_end in run.failed_attempts.get(template, []):
                        get(metric, run).add(failed_end)
                elif name == "contribflow_late_files_total":
                    if run.late_pick:
                        get(metric, run).add(end - 600)
                elif name in PER_RUN:
                    get(metric, run).set(end, PER_RUN[name](run))
                elif name in WAREHOUSE:
                    get(metric, run).set(end, WAREHOUSE[name](run))
                elif name != AUDIT_TRAIL_INTACT:
                    raise AssertionError(f"the story has no value for {name} (template {template}): teach it")
        if name == AUDIT_TRAIL_INTACT:  # weekly, Sundays 03:00: intact until DAY-1's check
            s = get(metric)
            for back in range(HISTORY_DAYS, 0, -1):
                day = DAY - dt.timedelta(days=back)
                if day.weekday() == 6:
                    s.set(_at(day, 3), 0 if back == 1 else 1)
    return series


def _grid() -> list[int]:
    start = _midnight(DAY - dt.timedelta(days=HISTORY_DAYS))
    coarse = list(range(start, EVAL - FINE_SPAN, COARSE))
    return coarse + list(range(EVAL - FINE_SPAN, EVAL + 1, FINE))


def openmetrics(series: dict[tuple[str, Labels], Series]) -> str:
    """The series sampled as Prometheus would have scraped them, in the OpenMetrics text format."""
    grid = _grid()
    lines = []
    for (name, labels), s in sorted(series.items()):
        text = ",".join(f'{k}="{v}"' for k, v in labels)
        for t in grid:
            value = s.at(t)
            if value is not None:
                number = str(int(value)) if float(value).is_integer() else repr(float(value))
                lines.append(f"{name}{{{text}}} {number} {t}")
    return "\n".join(lines) + "\n# EOF\n"


# --- the server ----------------------------------------------------------------------------------------

def _binary(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is missing: run `make promtool` (Debian package prometheus)"
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Prometheus:
    url: str

    def get(self, path: str, **params: str) -> dict:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:  # a bad query is a 400 with a JSON body
            return json.load(error)

    def problem(self, expr: str, at: int = EVAL) -> str | None:
        """None when ``expr`` parses and returns data at ``at``; else what is wrong."""
        answer = self.get("/api/v1/query", query=expr, time=str(at))
        if answer.get("status") != "success":
            return f"{answer.get('errorType')}: {answer.get('error')}"
        if not answer["data"]["result"]:
            return "no data"
        return None

    def range_problem(self, expr: str, start: int, end: int, step: int) -> str | None:
        answer = self.get("/api/v1/query_range", query=expr, start=str(start), end=str(end), step=str(step))
        if answer.get("status") != "success":
            return f"{answer.get('errorType')}: {answer.get('error')}"
        if not answer["data"]["result"]:
            return "no data"
        return None


@contextmanager
def backfilled_prometheus(tmp: Path) -> Iterator[Prometheus]:
    """Debian's prometheus on a free loopback port over the story's backfilled blocks (in ``tmp``);
    stopped on leaving. scripts/dashboard_preview.py uses it too."""
    data, storage = tmp / "series.om", tmp / "data"
    data.write_text(openmetrics(build_series(emitted())))
    done = subprocess.run([_binary("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(data),
                           str(storage)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    config = tmp / "prometheus.yml"
    config.write_text("global:\n  evaluation_interval: 1m\n")  # no scrape jobs: only the backfilled data
    port = _free_port()
    log = (tmp / "prometheus.log").open("w")
    process = subprocess.Popen(
        [_binary("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={storage}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=36500d",
         "--web.console.templates=", "--web.console.libraries=", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT)
    server = Prometheus(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, f"prometheus exited:\n{(tmp / 'prometheus.log').read_text()}"
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "prometheus not ready after 90 s"
            time.sleep(0.3)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory) -> Iterator[Prometheus]:
    with backfilled_prometheus(tmp_path_factory.mktemp("prometheus")) as server:
        yield server


# --- what is checked ----------------------------------------------------------------------------------

def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panel_targets(board: dict) -> list[tuple[str, dict]]:
    """(panel title, target) for every query of every panel (rows hold none)."""
    found = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target))
    return found


def alert_exprs() -> dict[str, str]:
    [rule] = alert_rules.render(helm())
    return {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}


def _names(expr: str) -> set[str]:
    return set(re.findall(r"\b[a-z_]*contribflow_[a-z0-9_]+", expr))


def test_the_story_covers_every_metric_the_rendered_workflows_emit():
    metrics = emitted()
    series = build_series(metrics)
    assert {name for name, _ in series} == stored_names()  # every emitted metric has series, no other
    # the labels are the rendered ones, Argo's variables filled in, plus what the scrape adds
    for metric in metrics:
        keys = {k for k, _ in metric.labels} | set(SCRAPE_LABELS)
        assert any(name == metric.stored and {k for k, _ in labels} == keys for name, labels in series), metric


def test_the_chart_prefix_is_the_one_argo_puts_on_custom_metrics():
    values = yaml.safe_load((ROOT / "helm" / "contribflow" / "values.yaml").read_text())
    assert values["monitoring"]["metricPrefix"] == ARGO_PREFIX


def test_every_panel_and_every_alert_names_only_metrics_the_workflows_emit():
    stored = stored_names()
    targets = panel_targets(dashboard())
    assert len(targets) >= 12
    for title, target in targets:
        assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        names = _names(target["expr"])
        assert names and names <= stored, (title, names - stored)
    for alert, expr in alert_exprs().items():
        names = _names(expr)
        assert names and names <= stored, (alert, names - stored)


def test_the_backfilled_server_holds_every_metric(prometheus):
    answer = prometheus.get("/api/v1/label/__name__/values", start=str(EVAL - 40 * 86400), end=str(EVAL))
    assert set(answer["data"]) == stored_names()


def test_every_dashboard_panel_query_parses_and_returns_data(prometheus):
    board = dashboard()
    problems = {}
    for title, target in panel_targets(board):
        problem = prometheus.problem(target["expr"])
        if problem is None and target.get("range"):  # a time series panel: the last 30 days
            start = _midnight(DAY - dt.timedelta(days=HISTORY_DAYS - 1))
            problem = prometheus.range_problem(target["expr"], start, EVAL, COARSE)
        if problem:
            problems[f"{title} [{target['refId']}]"] = f"{problem}: {target['expr']}"
    assert problems == {}


def test_every_alert_expression_parses_and_fires_on_the_story(prometheus):
    exprs = alert_exprs()
    assert len(exprs) == 8 and "ContribFlowAuditTrailBroken" in exprs
    problems = {alert: f"{p}: {expr}" for alert, expr in exprs.items() if (p := prometheus.problem(expr))}
    assert problems == {}


def test_the_latest_run_panels_show_what_the_story_says(prometheus):
    """Not only data: the right data (the latest finished run is DAY-1's: failed, SLA missed, 90 min late)."""
    by_title = {title: target for title, target in panel_targets(dashboard())}

    def values(title: str, by: str = "run_date") -> dict[str, float]:
        answer = prometheus.get("/api/v1/query", query=by_title[title]["expr"], time=str(EVAL))
        return {r["metric"].get(by, ""): float(r["value"][1]) for r in answer["data"]["result"]}

    latest = (DAY - dt.timedelta(days=1)).isoformat()
    assert values("Latest run: outcome") == {latest: 0}
    assert values("Latest run: SLA") == {latest: 0}
    assert values("Latest run: minutes late") == {latest: 90}
    assert values("Running now") == {DAY.isoformat(): EVAL - _at(DAY, 8, 5)}
    [age] = values("Age of the latest publication").values()
    assert age == EVAL - RUNS[-3].steps["publish"][0]  # DAY-2's publication
    history = values("SLA history")  # the run dates whose run finished in the 30 days before EVAL
    recent = {r.run_date for r in RUNS if r.end and r.end > EVAL - 30 * 86400}
    assert set(history) == recent and len(recent) == 29
    assert {d for d, met in history.items() if not met} == {(DAY - dt.timedelta(days=n)).isoformat() for n in (6, 1)}
    # the counters count what happened in the 30 days, the first increment too (Argo creates a counter at it)
    assert values("Failed step attempts, 30 days", by="step") == {"ingest": 1, "dbt-test": 2}
    succeeded = sum(1 for r in RUNS if r.succeeded and r.end and r.end > EVAL - 30 * 86400)
    assert values("Runs by outcome, 30 days", by="status") == {"Succeeded": succeeded, "Failed": 1}


def test_a_broken_expression_and_a_wrong_metric_name_fail_the_check(prometheus):
    exprs = alert_exprs()
    stale = exprs["ContribFlowMartsStale"]
    assert prometheus.problem(stale) is None
    broken = stale.replace("max(", "max((", 1)  # an unclosed parenthesis
    assert prometheus.problem(broken).startswith("bad_data: ")  # type: ignore[union-attr]
    renamed = exprs["ContribFlowRunFailed"].replace("contribflow_run_succeeded", "contribflow_run_success")
    assert prometheus.problem(renamed) == "no data"
    # and on the dashboard: a panel's query with the wrong name, or without Argo's prefix, has no data
    board = copy.deepcopy(dashboard())
    [(_, target)] = [(t, g) for t, g in panel_targets(board) if t == "Latest run: outcome"]
    assert prometheus.problem(target["expr"].replace(ARGO_PREFIX, "")) == "no data"
    assert prometheus.problem(target["expr"].replace("topk(1,", "topk(1")).startswith("bad_data: ")  # type: ignore[union-attr]


# --- the chart: the ConfigMap -------------------------------------------------------------------------

def _dashboard_configmaps(*args: str) -> list[dict]:
    from chart_render import docs

    return [d for d in find(docs(template_text(*args)), "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_dashboard_renders_only_where_enabled(scenario):
    values = {} if scenario == "defaults" else yaml.safe_load(
        (ROOT / "helm" / "contribflow" / "ci" / f"{scenario}.yaml").read_text()) or {}
    enabled = bool(values.get("monitoring", {}).get("grafanaDashboard", {}).get("enabled"))
    found = [d for d in find(scenario_docs(scenario), "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    assert len(found) == int(enabled)


def test_the_dashboard_configmap_carries_the_json_and_the_sidecar_label():
    [cm] = _dashboard_configmaps("--set", "monitoring.grafanaDashboard.enabled=true")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["labels"]["app.kubernetes.io/component"] == "dashboard"
    assert json.loads(cm["data"]["contribflow.json"]) == dashboard()
    # the label is the sidecar's to choose; a folder annotation; the prefix follows metricPrefix
    [cm] = _dashboard_configmaps("--set", "monitoring.grafanaDashboard.enabled=true",
                                 "--set", "monitoring.grafanaDashboard.labels.grafana_dashboard=null",
                                 "--set-string", "monitoring.grafanaDashboard.labels.dashboards=contribflow",
                                 "--set-string", "monitoring.grafanaDashboard.annotations.grafana_folder=Data",
                                 "--set", "monitoring.metricPrefix=")
    assert "grafana_dashboard" not in cm["metadata"]["labels"]
    assert cm["metadata"]["labels"]["dashboards"] == "contribflow"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Data"}
    bare = json.loads(cm["data"]["contribflow.json"])
    exprs = [t["expr"] for _, t in panel_targets(bare)]
    assert exprs and not any(ARGO_PREFIX in e for e in exprs)
    assert {n.removeprefix(ARGO_PREFIX) for _, t in panel_targets(dashboard()) for n in _names(t["expr"])} == \
        {n for e in exprs for n in _names(e)}


def test_wrong_dashboard_values_are_refused():
    from chart_render import run_helm

    for args, message in ((("--set", "monitoring.grafanaDashboard.enable=true"), "enable"),
                          (("--set", "monitoring.metricPrefix=argo-workflows-"), "metricPrefix")):
        done = run_helm("template", "contribflow", str(ROOT / "helm" / "contribflow"), *args)
        assert done.returncode != 0 and message in done.stderr, done.stderr

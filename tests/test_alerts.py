"""The chart's alert rules (issue 29): rendered only when enabled, valid against the Prometheus
Operator's PrometheusRule CRD (strictly), and checked and unit-tested by Prometheus's own promtool
(`make promtool` installs it) over tests/alerts/*.yaml; a broken expression, a wrong metric name
or an unknown key fails."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from argo_metrics import ARGO_PREFIX, stored_names
from crd_schema import CrdSchema
from reference import reference_dir

from chart_render import SCENARIOS, docs, find, helm, run_helm, scenario_docs, template_text
from conftest import ROOT

sys.path.insert(0, str(ROOT / "helm" / "tools"))
import alert_rules  # noqa: E402

from contribflow.settings import Settings  # noqa: E402

ALERTS = {"ContribFlowRunFailed", "ContribFlowRunStuck", "ContribFlowFileLate",
          "ContribFlowMartsNotPublishedByDeadline", "ContribFlowMartsStale", "ContribFlowQuarantineRatioHigh",
          "ContribFlowVolumeWarning", "ContribFlowAuditTrailBroken"}


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: run `make promtool` (Debian package prometheus)"
    return found


def rule(*args: str) -> dict:
    [found] = alert_rules.render(helm(), *args)
    return found


def rules_by_alert(doc: dict) -> dict[str, dict]:
    return {r["alert"]: r for g in doc["spec"]["groups"] for r in g["rules"]}


def run_promtool(doc: dict, out: Path) -> subprocess.CompletedProcess:
    return alert_rules.promtool(promtool(), out, alert_rules.write(doc, out))


def crd() -> CrdSchema:
    return CrdSchema(reference_dir("prometheus-operator-v0.93.0") / "crds" / "prometheusrules.yaml")


# --- off by default ---------------------------------------------------------------------------------

@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_scenario_renders_a_prometheus_rule_unless_enabled(scenario):
    values = {} if scenario == "defaults" else yaml.safe_load(
        (ROOT / "helm" / "contribflow" / "ci" / f"{scenario}.yaml").read_text()) or {}
    enabled = bool(values.get("monitoring", {}).get("prometheusRule", {}).get("enabled"))
    assert len(find(scenario_docs(scenario), "PrometheusRule")) == int(enabled)
    assert enabled == (scenario == "monitoring-values")  # the scenario that lint-chart checks it in


# --- promtool ---------------------------------------------------------------------------------------

def test_the_rules_pass_promtool_check_and_the_unit_tests_fire_what_they_expect(tmp_path):
    doc = rule()
    assert set(rules_by_alert(doc)) == ALERTS
    done = run_promtool(doc, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    tests = sorted(p.name for p in (ROOT / "tests" / "alerts").glob("*.yaml"))
    assert tests == ["audit.yaml", "run.yaml", "sla.yaml"]
    assert done.stdout.count("SUCCESS") == len(tests) and "FAILED" not in done.stdout
    check = subprocess.run([promtool(), "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True,
                           text=True)
    assert check.returncode == 0 and f"SUCCESS: {len(ALERTS)} rules found" in check.stdout
    # every alert is exercised by a unit test, firing at least once
    tested = "".join((ROOT / "tests" / "alerts" / t).read_text() for t in tests)
    for alert in ALERTS:
        assert re.search(rf"alertname: {alert}\n\s+exp_alerts:\n\s+- exp_labels", tested), alert


def test_a_broken_expression_fails_promtool_check(tmp_path):
    doc = rule()
    broken = copy.deepcopy(doc)
    rules_by_alert(broken)["ContribFlowMartsStale"]["expr"] = "time() - max(contribflow_marts_published_timestamp_seconds"
    done = run_promtool(broken, tmp_path)
    said = done.stdout + done.stderr
    assert done.returncode != 0 and "Unit Testing" not in said  # the check stopped it before the tests
    assert '"ContribFlowMartsStale": could not parse expression' in said and "unclosed left parenthesis" in said


def test_a_wrong_metric_name_fails_the_unit_tests(tmp_path):
    doc = copy.deepcopy(rule())
    failed = rules_by_alert(doc)["ContribFlowRunFailed"]
    failed["expr"] = failed["expr"].replace("contribflow_run_succeeded", "contribflow_run_success")
    done = run_promtool(doc, tmp_path)
    assert done.returncode != 0 and "FAILED" in done.stdout + done.stderr
    assert "ContribFlowRunFailed" in done.stdout + done.stderr


def _metric_names(text: str) -> set[str]:
    """Every metric name in ``text`` that has contribflow_ in it, whole (prefix included)."""
    return set(re.findall(r"\b[a-z_]*contribflow_[a-z0-9_]+", text))


def test_every_metric_the_rules_and_their_tests_use_is_one_the_templates_emit():
    emitted = stored_names()  # the rendered workflows' metric names, as Argo's endpoint exports them
    assert all(name.startswith(ARGO_PREFIX + "contribflow_") for name in emitted)
    used = _metric_names(" ".join(r["expr"] for r in rules_by_alert(rule()).values()))
    assert used and used <= emitted, used - emitted
    fed = _metric_names("".join(p.read_text() for p in (ROOT / "tests" / "alerts").glob("*.yaml")))
    assert fed and fed <= emitted, fed - emitted
    # and the check itself catches a name the templates do not emit, or one without Argo's prefix
    assert not _metric_names(f"{ARGO_PREFIX}contribflow_run_success == 0") <= emitted
    assert not _metric_names("contribflow_run_succeeded == 0") <= emitted
    # the prefix is a value: "" for metrics that reach Prometheus without it
    bare = _metric_names(" ".join(r["expr"] for r in rules_by_alert(
        rule("--set", "monitoring.metricPrefix=")).values()))
    assert bare == {name.removeprefix(ARGO_PREFIX) for name in used}


# --- the CRD, strictly ------------------------------------------------------------------------------

def test_the_rule_is_valid_against_the_prometheus_operator_crd_strictly():
    schema = crd()
    doc = rule("--set", "monitoring.prometheusRule.labels.release=kube-prometheus-stack")
    assert schema.errors(doc) == []
    assert doc["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    unknown = copy.deepcopy(doc)
    rules_by_alert(unknown)["ContribFlowRunFailed"]["annotation"] = {"summary": "x"}
    assert any("unknown field 'annotation' (did you mean 'annotations'?)" in e for e in schema.errors(unknown))
    in_spec = copy.deepcopy(doc)
    in_spec["spec"]["group"] = []
    assert any(".spec.group: unknown field 'group'" in e for e in schema.errors(in_spec))
    wrong_type = copy.deepcopy(doc)
    rules_by_alert(wrong_type)["ContribFlowRunFailed"]["labels"] = {"severity": 1}
    assert any("is not of type 'string'" in e for e in schema.errors(wrong_type))
    bad_for = copy.deepcopy(doc)
    rules_by_alert(bad_for)["ContribFlowRunFailed"]["for"] = "10 minutes"
    assert any("does not match" in e for e in schema.errors(bad_for))


# --- what each alert carries ------------------------------------------------------------------------

def _anchors(markdown: str) -> set[str]:
    """MkDocs' (Python-Markdown toc) anchors of the headings."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, re.M):
        slug = re.sub(r"[^\w\s-]", "", heading.strip().lower())
        found.add(re.sub(r"[-\s]+", "-", slug).strip("-"))
    return found


def test_every_alert_has_a_severity_a_summary_a_description_and_a_runbook_section():
    anchors = _anchors((ROOT / "docs" / "runbook.md").read_text())
    observability = (ROOT / "docs" / "observability.md").read_text()
    for name, r in rules_by_alert(rule()).items():
        assert r["labels"]["severity"] in {"critical", "warning"}, name
        assert set(r["annotations"]) == {"summary", "description", "runbook_url"}, name
        base, _, anchor = r["annotations"]["runbook_url"].partition("#")
        assert base.endswith("docs/runbook.md") and anchor == f"alert-{name.lower()}", name
        assert anchor in anchors, f"docs/runbook.md has no section for {name}"
        assert f"`{name}`" in observability, f"docs/observability.md does not list {name}"


# --- the SLA values: one source for the settings and the alerts ------------------------------------------

def _configmap(*args: str) -> dict[str, str]:
    [cm] = [d for d in docs(template_text(*args)) if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith(
        "-settings")]
    return cm["data"]


def test_the_sla_values_reach_the_steps_settings_and_the_alerts():
    data = _configmap()
    assert (data["CONTRIBFLOW_SLA_FILE_DUE_S"], data["CONTRIBFLOW_SLA_PUBLISH_DEADLINE_S"],
            data["CONTRIBFLOW_SLA_MAX_QUARANTINE_RATIO"]) == ("28800", "36000", "0.02")
    sla = {k: v for k, v in data.items() if k.startswith("CONTRIBFLOW_SLA_")}
    settings = Settings.from_env(sla)
    assert (settings.sla_file_due_s, settings.sla_publish_deadline_s, settings.sla_max_quarantine_ratio) == \
        (28800, 36000, 0.02)

    args = ("--set", "settings.sla.fileDueSeconds=90000", "--set", "settings.sla.publishDeadlineSeconds=100000",
            "--set-json", "settings.sla.maxQuarantineRatio=0.001")  # --set makes a decimal a string
    assert Settings.from_env({k: v for k, v in _configmap(*args).items()
                              if k.startswith("CONTRIBFLOW_SLA_")}).sla_file_due_s == 90000
    alerts = rules_by_alert(rule(*args))
    assert "vector(time() - 90000)" in alerts["ContribFlowFileLate"]["expr"]
    assert "vector(time() - 100000)" in alerts["ContribFlowMartsNotPublishedByDeadline"]["expr"]
    assert alerts["ContribFlowQuarantineRatioHigh"]["expr"].startswith(
        "argo_workflows_contribflow_quarantine_ratio > 0.001 ")

    # null leaves a part of the SLA out: no setting, no alert
    off = ("--set", "settings.sla.fileDueSeconds=null", "--set", "settings.sla.maxQuarantineRatio=null")
    assert not {"CONTRIBFLOW_SLA_FILE_DUE_S", "CONTRIBFLOW_SLA_MAX_QUARANTINE_RATIO"} & set(_configmap(*off))
    assert set(rules_by_alert(rule(*off))) == ALERTS - {"ContribFlowFileLate", "ContribFlowQuarantineRatioHigh"}


@pytest.mark.parametrize(("args", "message"), [
    (("--set", "settings.sla.fileDueSeconds=40000"), "publishDeadlineSeconds=36000 is before"),
    (("--set", "settings.sla.fileDueSeconds=172801"), "fileDueSeconds: Must be less than or equal to 172800"),
    (("--set-json", "settings.sla.maxQuarantineRatio=1.5"), "maxQuarantineRatio: Must be less than or equal to 1"),
    (("--set", "settings.sla.fileDue=1"), "fileDue"),
    (("--set", "monitoring.prometheusRule.enable=true"), "enable"),
    (("--set", "monitoring.prometheusRule.runbookBaseUrl=docs/runbook.md#x"), "runbookBaseUrl"),
])
def test_wrong_sla_or_monitoring_values_are_refused(args, message):
    done = run_helm("template", "contribflow", str(ROOT / "helm" / "contribflow"), *args)
    assert done.returncode != 0 and message in done.stderr, done.stderr

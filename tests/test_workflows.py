"""The Argo objects (issue 3): the rendered YAML is valid Argo v4.1.2, strictly; the Hera objects
are built from the stage graph, the image map and the cluster names; drift is caught."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from argo_schema import default_schema
from conftest import ROOT

sys.path.insert(0, str(ROOT))  # the workflows/ package lives at the repo root, not in the installed package
from contribflow import cli
from contribflow.cluster import k8s
from contribflow.cluster.imagemap import IMAGES, image_for
from contribflow.dates import date_range
from contribflow.graph import EXIT_STAGE, PARAMETERS, STAGES, by_name, topological_order
from contribflow.settings import DEV_PSEUDONYM_KEY
from workflows import (
    contribflow_apply_request,
    contribflow_audit,
    contribflow_backfill,
    contribflow_cron,
    contribflow_daily,
    render,
    steps,
)

RENDERED = ROOT / "workflows" / "rendered"
DAILY_FILE = RENDERED / "workflowtemplate-contribflow-daily.yaml"
SECRET_LIKE = ("PASSWORD", "KEY", "SECRET", "TOKEN", "PGUSER", "WEBHOOK")


def load(path: Path) -> dict:
    docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    assert len(docs) == 1, path
    return docs[0]


def daily() -> dict:
    return load(DAILY_FILE)


def templates(doc: dict) -> dict[str, dict]:
    spec = doc["spec"].get("workflowSpec", doc["spec"])
    return {t["name"]: t for t in spec.get("templates", [])}


def containers(doc: dict) -> list[dict]:
    return [t["container"] for t in templates(doc).values() if "container" in t]


def all_rendered() -> list[dict]:
    return [load(p) for p in sorted(RENDERED.glob("*.yaml"))]


# --- 1. schema validation, strict ------------------------------------------------------------------

def test_the_four_objects_are_rendered_and_each_is_valid_argo_strictly():
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in all_rendered())
    assert kinds == [("CronWorkflow", k8s.AUDIT_CRON_WORKFLOW), ("CronWorkflow", k8s.CRON_WORKFLOW),
                     ("WorkflowTemplate", k8s.APPLY_TEMPLATE),
                     ("WorkflowTemplate", k8s.BACKFILL_TEMPLATE), ("WorkflowTemplate", k8s.WORKFLOW_TEMPLATE)]
    for path in sorted(RENDERED.glob("*.yaml")):
        assert default_schema().check_file(path) == 1, path


def test_the_workflow_the_backfill_creates_per_date_is_valid_argo_too():
    run_day = templates(load(RENDERED / "workflowtemplate-contribflow-backfill.yaml"))["run-day"]
    manifest = yaml.safe_load(run_day["resource"]["manifest"])
    assert manifest["kind"] == "Workflow"
    assert manifest["spec"]["workflowTemplateRef"] == {"name": k8s.WORKFLOW_TEMPLATE}
    assert {p["name"] for p in manifest["spec"]["arguments"]["parameters"]} == set(PARAMETERS)
    assert default_schema().errors(manifest) == []


def broken(mutate) -> list[str]:
    doc = copy.deepcopy(daily())
    mutate(doc)
    return default_schema().errors(doc)


def ingest_container(doc: dict) -> dict:
    return templates(doc)["ingest"]["container"]


def test_a_misspelled_field_is_caught_with_its_path_and_the_likely_fix():
    def misspell(doc):
        ingest_container(doc)["imagePulPolicy"] = ingest_container(doc).pop("imagePullPolicy")

    errors = broken(misspell)
    assert errors, "a misspelled field must not pass"
    assert any("unknown field 'imagePulPolicy'" in e and "did you mean 'imagePullPolicy'" in e
               and ".spec.templates[4].container.imagePulPolicy" in e for e in errors), errors

    def misspell_spec(doc):
        doc["spec"]["podGc"] = doc["spec"].pop("podGC")

    assert any("unknown field 'podGc'" in e for e in broken(misspell_spec))


def test_a_container_without_an_image_is_caught():
    errors = broken(lambda doc: ingest_container(doc).pop("image"))
    assert any("'image' is a required property" in e and "container" in e for e in errors), errors


def test_a_secret_ref_without_a_key_is_caught():
    def drop_key(doc):
        env = {e["name"]: e for e in ingest_container(doc)["env"]}
        del env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["key"]

    errors = broken(drop_key)
    assert any("'key' is a required property" in e and "secretKeyRef" in e for e in errors), errors


def test_a_wrongly_typed_value_is_caught():
    errors = broken(lambda doc: doc["spec"].update(activeDeadlineSeconds="four hours"))
    assert any("activeDeadlineSeconds" in e for e in errors), errors


# --- 4. the Hera objects ---------------------------------------------------------------------------

def test_the_cron_runs_the_daily_template_each_morning_for_the_scheduled_date():
    cron = contribflow_cron.cron_workflow.build()
    assert cron.spec.schedules == ["0 6 * * *"]
    assert cron.spec.timezone == "Europe/Luxembourg"
    assert cron.spec.concurrency_policy == "Forbid"
    assert cron.spec.starting_deadline_seconds == 3600
    assert cron.spec.successful_jobs_history_limit and cron.spec.failed_jobs_history_limit
    wf = cron.spec.workflow_spec
    assert wf.workflow_template_ref.name == k8s.WORKFLOW_TEMPLATE == contribflow_daily.workflow_template.name
    assert [(p.name, p.value) for p in wf.arguments.parameters] == \
        [("run-date", "{{=sprig.trunc(10, workflow.scheduledTime)}}")]


def test_the_daily_dag_is_the_stage_graph():
    doc = daily()
    spec = doc["spec"]
    assert spec["entrypoint"] == "daily" and spec["onExit"] == EXIT_STAGE.name
    tasks = templates(doc)["daily"]["dag"]["tasks"]
    assert [t["name"] for t in tasks] == [s.name for s in topological_order(STAGES)]
    for task in tasks:
        stage = by_name()[task["name"]]
        assert task["template"] == stage.name
        assert task.get("depends", "") == " && ".join(stage.depends)
        assert ("when" in task) == bool(stage.when)
    assert by_name()["generate"].when == "generate"
    assert {t["name"]: t.get("when") for t in tasks}["generate"] == "{{workflow.parameters.generate}} == true"
    ingest_args = {t["name"]: t for t in tasks}["ingest"]["arguments"]["parameters"]
    assert ingest_args == [{"name": "pick-file", "value": "{{tasks.pick.outputs.parameters.file}}"}]
    assert [(p["name"], p.get("value")) for p in spec["arguments"]["parameters"]] == \
        [(name, contribflow_daily.DEPLOYED_DEFAULTS.get(name, value) or None) for name, value in PARAMETERS.items()]


def test_each_task_runs_the_cli_with_the_stage_args():
    tmpl = templates(daily())
    for stage in (*STAGES, EXIT_STAGE):
        container = tmpl[stage.name]["container"]
        assert container["command"] == ["contribflow"]
        assert container["args"][0] == stage.name
        assert len(container["args"]) == len(stage.command) - 1
    assert tmpl["finish"]["container"]["args"] == [
        "finish", "--date", "{{workflow.parameters.run-date}}", "--status", "{{workflow.status}}"]
    assert tmpl["ingest"]["container"]["args"][-2:] == ["--file", "{{inputs.parameters.pick-file}}"]


def test_every_task_image_comes_from_the_image_map():
    tmpl = templates(daily())
    for stage in (*STAGES, EXIT_STAGE):
        assert tmpl[stage.name]["container"]["image"] == image_for(stage.image).reference()
    known = {image.reference() for image in IMAGES.values()}
    for doc in all_rendered():
        for container in containers(doc):
            assert container["image"] in known


def test_no_container_runs_as_root_and_each_is_locked_down():
    for doc in all_rendered():
        spec = doc["spec"].get("workflowSpec", doc["spec"])
        if "templates" not in spec:
            continue  # the CronWorkflow only references the template
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == k8s.RUN_AS_USER != 0
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in containers(doc):
            ctx = container["securityContext"]
            assert ctx["runAsNonRoot"] is True
            assert ctx["runAsUser"] == ctx["runAsGroup"] == k8s.RUN_AS_USER
            assert ctx["allowPrivilegeEscalation"] is False
            assert ctx["readOnlyRootFilesystem"] is True
            assert ctx["capabilities"] == {"drop": ["ALL"]}
            assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
            assert container["resources"]["requests"] and container["resources"]["limits"]
            assert {"name": steps.TMP_VOLUME, "mountPath": "/tmp"} in container["volumeMounts"]


def test_every_secret_comes_from_a_secret_ref_and_none_is_literal():
    for doc in all_rendered():
        for container in containers(doc):
            for var in container.get("env", []):
                if any(word in var["name"] for word in SECRET_LIKE):
                    assert "value" not in var, var
                    ref = var["valueFrom"]["secretKeyRef"]
                    assert ref["name"] in (k8s.DB_SECRET, k8s.PSEUDONYM_SECRET, k8s.NOTIFY_SECRET) and ref["key"]
    text = "".join(p.read_text() for p in RENDERED.glob("*.yaml"))
    assert DEV_PSEUDONYM_KEY not in text and "password:" not in text.lower()


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container["env"]}


def test_each_stage_connects_as_its_own_role_and_only_ingest_sees_the_pseudonym_key():
    tmpl = templates(daily())
    for stage in (*STAGES, EXIT_STAGE):
        env = env_of(tmpl[stage.name]["container"])
        assert env["PGUSER"]["valueFrom"]["secretKeyRef"] == \
            {"name": k8s.DB_SECRET, "key": f"{stage.db_role}-username", "optional": False}
        assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == f"{stage.db_role}-password"
        assert env["PGOPTIONS"]["value"] == f"-c role=contribflow_{stage.db_role}"
        assert ("CONTRIBFLOW_PSEUDONYM_KEY" in env) == stage.needs_pseudonym_key
        assert ("CONTRIBFLOW_LANDING_DIR" in env) == stage.needs_landing
        assert ("CONTRIBFLOW_DBT_TARGET_DIR" in env) == stage.needs_dbt_target
        assert env["CONTRIBFLOW_RUN_ID"]["value"] == "{{workflow.uid}}"
        assert env["CONTRIBFLOW_WORKFLOW_NAME"]["value"] == "{{workflow.name}}"
        assert env["CONTRIBFLOW_TASK_NAME"]["value"] == stage.name
        assert env["CONTRIBFLOW_POD_NAME"]["value"] == "{{pod.name}}"
        assert tmpl[stage.name]["container"]["envFrom"] == [{"configMapRef": {"name": k8s.CONFIGMAP, "optional": False}}]
    assert env_of(tmpl["ingest"]["container"])["CONTRIBFLOW_PSEUDONYM_KEY"]["valueFrom"]["secretKeyRef"] == \
        {"name": k8s.PSEUDONYM_SECRET, "key": k8s.PSEUDONYM_SECRET_KEY, "optional": False}
    # only finish notifies: the webhook URL from an optional Secret (none: nothing posted), the namespace for the link
    for stage in (*STAGES, EXIT_STAGE):
        env = env_of(tmpl[stage.name]["container"])
        assert ("CONTRIBFLOW_NOTIFY_WEBHOOK_URL" in env) == (stage.name == "finish") == \
            ("CONTRIBFLOW_WORKFLOW_NAMESPACE" in env)
    finish = env_of(tmpl["finish"]["container"])
    assert finish["CONTRIBFLOW_NOTIFY_WEBHOOK_URL"]["valueFrom"]["secretKeyRef"] == \
        {"name": k8s.NOTIFY_SECRET, "key": k8s.NOTIFY_SECRET_KEY, "optional": True}
    assert finish["CONTRIBFLOW_WORKFLOW_NAMESPACE"]["value"] == "{{workflow.namespace}}"


def test_only_a_transient_failure_is_retried_and_dbt_test_never():
    assert steps.EXIT_TRANSIENT == cli.EXIT_TRANSIENT == 75
    tmpl = templates(daily())
    for stage in (*STAGES, EXIT_STAGE):
        retry = tmpl[stage.name].get("retryStrategy")
        if stage.waits_for_file:  # pick: 76 (the file has not arrived, deadline not passed) as well
            assert retry["expression"] == "asInt(lastRetry.exitCode) == 75 || asInt(lastRetry.exitCode) == 76"
            assert retry["limit"] == steps.WAIT_RETRY_LIMIT and retry["backoff"]["cap"] == "10m"
            continue
        if not stage.retry_transient:
            assert retry is None, stage.name
            continue
        assert retry["expression"] == "asInt(lastRetry.exitCode) == 75"
        assert retry["retryPolicy"] == "Always" and retry["limit"] == 3
        assert retry["backoff"]["duration"] and retry["backoff"]["factor"] == 2
    assert "retryStrategy" not in tmpl["dbt-test"]
    assert "retryStrategy" in tmpl["ingest"]  # its data-quality failures exit 1: not matched
    assert [s.name for s in STAGES if s.waits_for_file] == ["pick"]
    assert cli.EXIT_LATE == steps.EXIT_LATE == 76


def test_outputs_are_read_from_the_outputs_dir_with_a_default():
    tmpl = templates(daily())
    for stage in STAGES:
        declared = tmpl[stage.name].get("outputs", {}).get("parameters", [])
        assert [p["name"] for p in declared] == list(stage.outputs)
        for p in declared:
            assert p["valueFrom"] == {"path": f"{k8s.OUTPUTS_DIR}/{p['name']}", "default": ""}
    assert {"rows_loaded", "rows_rejected"} <= set(by_name()["ingest"].outputs)
    assert "tests_failed" in by_name()["dbt-test"].outputs


def test_runs_of_one_date_are_serialised_cleaned_up_and_readable_in_the_ui():
    spec = daily()["spec"]
    assert spec["synchronization"] == {"mutexes": [{"name": "contribflow-daily-{{workflow.parameters.run-date}}"}]}
    assert spec["podGC"] == {"strategy": "OnPodSuccess"}
    assert spec["ttlStrategy"]["secondsAfterSuccess"] > 0 and spec["ttlStrategy"]["secondsAfterFailure"] > 0
    assert spec["serviceAccountName"] == k8s.SERVICE_ACCOUNT
    assert spec["workflowMetadata"]["labelsFrom"] == \
        {"contribflow.io/run-date": {"expression": "workflow.parameters['run-date']"}}
    assert {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v} \
        == {k8s.LANDING_PVC}
    for doc in all_rendered():
        for notes in (doc["metadata"]["annotations"],
                      doc["spec"].get("workflowMetadata", {}).get("annotations")):
            if notes is not None:
                assert notes["workflows.argoproj.io/title"]
                assert notes["workflows.argoproj.io/description"]


def test_the_apply_request_template_applies_then_rebuilds_only_when_the_correction_changes_the_marts():
    doc = load(RENDERED / "workflowtemplate-contribflow-apply-request.yaml")
    spec, tmpl = doc["spec"], templates(doc)
    assert [p["name"] for p in spec["arguments"]["parameters"]] == ["request-id"]
    assert "value" not in spec["arguments"]["parameters"][0]  # an id must be given, never defaulted
    assert tmpl["apply"]["container"]["args"] == ["apply", "{{workflow.parameters.request-id}}", "--no-publish"]
    apply_env = env_of(tmpl["apply"]["container"])
    assert apply_env["PGUSER"]["valueFrom"]["secretKeyRef"]["key"].startswith("migrator")
    tasks = {t["name"]: t for t in tmpl["apply-request"]["dag"]["tasks"]}
    assert [tasks[n].get("depends") for n in ("apply", "dbt-build", "dbt-test", "publish")] == [
        None, "apply", "dbt-build", "dbt-test"]
    for name in ("dbt-build", "dbt-test", "publish"):
        assert tasks[name]["when"] == "{{tasks.apply.outputs.parameters.rebuild}} == true"
        assert tmpl[name]["container"]["args"] == [name, "--date", "{{inputs.parameters.apply-run_date}}"]
        assert tmpl[name]["container"]["image"] == templates(daily())[name]["container"]["image"]
    assert spec["synchronization"]["mutexes"] == [{"name": "contribflow-apply-request-{{workflow.parameters.request-id}}"}]


def test_the_backfill_fans_out_one_daily_run_per_date_with_bounded_parallelism():
    doc = load(RENDERED / "workflowtemplate-contribflow-backfill.yaml")
    spec = doc["spec"]
    assert spec["parallelism"] == contribflow_backfill.PARALLELISM == 2
    assert {p["name"] for p in spec["arguments"]["parameters"]} >= {"from", "to"}
    tmpl = templates(doc)
    dag = tmpl["backfill"]["dag"]
    assert dag["failFast"] is False
    fan_out = {t["name"]: t for t in dag["tasks"]}["run-day"]
    assert fan_out["withParam"] == "{{tasks.dates.outputs.parameters.dates}}"
    assert tmpl["dates"]["container"]["args"] == ["dates", "--from", "{{workflow.parameters.from}}",
                                                   "--to", "{{workflow.parameters.to}}"]
    assert tmpl["run-day"]["resource"]["successCondition"] == "status.phase == Succeeded"


def test_the_dates_command_expands_a_range_and_refuses_a_bad_one(tmp_path, capsys, monkeypatch):
    assert date_range(dt.date(2026, 2, 27), dt.date(2026, 3, 1)) == \
        [dt.date(2026, 2, 27), dt.date(2026, 2, 28), dt.date(2026, 3, 1)]
    with pytest.raises(ValueError, match="reversed"):
        date_range(dt.date(2026, 3, 2), dt.date(2026, 3, 1))
    with pytest.raises(ValueError, match="at most 366"):
        date_range(dt.date(2024, 1, 1), dt.date(2026, 1, 1))
    monkeypatch.setenv("CONTRIBFLOW_OUTPUTS_DIR", str(tmp_path))
    assert cli.main(["dates", "--from", "2026-11-20", "--to", "2026-11-22"]) == 0
    assert json.loads(capsys.readouterr().out) == ["2026-11-20", "2026-11-21", "2026-11-22"]
    assert json.loads((tmp_path / "dates").read_text()) == ["2026-11-20", "2026-11-21", "2026-11-22"]
    assert cli.main(["dates", "--from", "2026-11-22", "--to", "2026-11-20"]) == 1


# --- 3. drift -------------------------------------------------------------------------------------

def test_a_changed_stage_graph_renders_differently_from_the_committed_yaml(tmp_path):
    stages = tuple(dataclasses.replace(s, args=(*s.args, "--full-refresh")) if s.name == "dbt-build" else s
                   for s in STAGES)
    fresh = tmp_path / "rendered"
    render.render(fresh)
    assert render.drift(RENDERED, fresh) == [], "the committed YAML is stale: run `make render`"
    changed = contribflow_daily.build(stages)
    (fresh / DAILY_FILE.name).write_text(
        render.HEADER.format(source="workflows/contribflow_daily.py") + changed.to_yaml())
    diffs = render.drift(RENDERED, fresh)
    assert len(diffs) == 1 and DAILY_FILE.name in diffs[0] and "+      - --full-refresh" in diffs[0]


def copy_of_repo(dest: Path) -> Path:
    for part in ("contribflow", "workflows"):
        shutil.copytree(ROOT / part, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "Makefile", dest / "Makefile")
    return dest


def make_check_rendered(repo: Path) -> subprocess.CompletedProcess:
    """`make check-rendered` in a copy of the repo, with this venv (not reinstalled) and the copy's
    contribflow and workflows packages first on the path."""
    venv = ROOT / ".venv"
    env = {**os.environ, "PYTHONPATH": str(repo)}
    return subprocess.run(["make", "--no-print-directory", "-C", str(repo), "check-rendered", f"VENV={venv}",
                           "-o", f"{venv}/.installed"], env=env, capture_output=True, text=True, timeout=120)


def test_make_check_rendered_fails_when_the_graph_changes_without_re_rendering(tmp_path):
    repo = copy_of_repo(tmp_path / "repo")
    assert make_check_rendered(repo).returncode == 0
    graph = repo / "contribflow" / "graph.py"
    text = graph.read_text()
    assert text.count('"rows": "10000"') == 1
    graph.write_text(text.replace('"rows": "10000"', '"rows": "20000"'))
    result = make_check_rendered(repo)
    assert result.returncode != 0
    assert "out of date" in result.stderr and "make render" in result.stderr
    assert "-      value: '10000'" in result.stdout and "+      value: '20000'" in result.stdout


def test_each_module_holds_its_object_at_module_level_as_hera_generate_yaml_expects():
    from hera.workflows import Workflow

    found = {}
    for module in (contribflow_daily, contribflow_cron, contribflow_backfill, contribflow_apply_request,
                   contribflow_audit):
        objects = [v for v in vars(module).values() if isinstance(v, Workflow)]
        assert len(objects) == 1, module.__name__
        found[module.__name__] = objects[0]
    assert {id(obj) for obj, _ in render.objects().values()} == {id(obj) for obj in found.values()}
    text = "".join(p.read_text() for p in RENDERED.glob("*.yaml"))
    assert "'null'" not in text, "a parameter without a default must have no value, not the string 'null'"


def test_the_rendered_objects_are_not_offered_for_kubectl_apply_and_never_generate_by_default():
    """Issue 17: the rendered files lack the Secrets, PVC, launcher ServiceAccount and NetworkPolicy
    pod labels the chart adds, so the README installs the chart only; and should one be applied by
    mistake, its schedule still loads the dropped file and never writes a synthetic one."""
    rendered = ROOT / "workflows" / "rendered"
    for path in rendered.glob("*.yaml"):
        assert "Not for `kubectl apply`" in path.read_text(encoding="utf-8"), path.name
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for offer in ("apply -f workflows/rendered", "template create workflows/rendered",
                      "cron create workflows/rendered", "create -f workflows/rendered"):
            assert offer not in text, (page.name, offer)
    daily = yaml.safe_load((rendered / "workflowtemplate-contribflow-daily.yaml").read_text())
    cron = yaml.safe_load((rendered / "cronworkflow-contribflow-daily.yaml").read_text())
    backfill = yaml.safe_load((rendered / "workflowtemplate-contribflow-backfill.yaml").read_text())
    assert {p["name"]: p.get("value") for p in daily["spec"]["arguments"]["parameters"]}["generate"] == "false"
    assert [p["name"] for p in cron["spec"]["workflowSpec"]["arguments"]["parameters"]] == ["run-date"]
    assert {p["name"]: p.get("value") for p in backfill["spec"]["arguments"]["parameters"]}["generate"] == "false"
    assert PARAMETERS["generate"] == "true", "contribflow run still generates by default (a laptop)"


def test_the_weekly_audit_runs_verify_as_the_auditor_and_emits_the_intact_gauge():
    """Issue 27: contribflow verify weekly, with the auditor's login; a broken chain exits 1 (the step,
    hence the run, fails) and the gauge the alert reads is verify's output audit_trail_intact."""
    doc = load(RENDERED / "cronworkflow-contribflow-audit.yaml")
    assert doc["spec"]["schedules"] == contribflow_audit.SCHEDULES and doc["spec"]["concurrencyPolicy"] == "Forbid"
    verify = templates({"spec": doc["spec"]["workflowSpec"]})["verify"]
    assert verify["container"]["command"] == ["contribflow"] and verify["container"]["args"] == ["verify"]
    env = {e["name"]: e for e in verify["container"]["env"]}
    assert env["PGUSER"]["valueFrom"]["secretKeyRef"]["key"] == k8s.db_secret_keys("auditor")[0]
    assert env["PGOPTIONS"]["value"] == "-c role=contribflow_auditor"
    gauges = {p["name"]: p for p in verify["metrics"]["prometheus"]}
    assert gauges["contribflow_audit_trail_intact"]["gauge"]["value"] == "{{outputs.parameters.audit_trail_intact}}"
    assert "audit_trail_intact" in {p["name"] for p in verify["outputs"]["parameters"]}
    dag = templates({"spec": doc["spec"]["workflowSpec"]})[contribflow_audit.ENTRYPOINT]["dag"]["tasks"]
    assert [t["name"] for t in dag] == [s.name for s in contribflow_audit.CHECKS]

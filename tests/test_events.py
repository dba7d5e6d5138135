"""Start on arrival (issue 29 part 5): the chart's Argo Events objects, rendered with events enabled,
validated strictly against the Argo Events v1.9.11 JSON schema (tests/argo_schema.py, the same walk
as the Argo Workflows check: unknown keys refused, IntOrString widened), and what they do checked on
the rendered output: which files trigger, how the date is taken from the name, the retries and the
dead-letter trigger, the Workflow the Sensor creates (itself valid for Argo Workflows v4.1.2), and
the Sensor's RBAC (create Workflows, nothing else)."""

from __future__ import annotations

import copy
import datetime as dt
import re

import pytest

from contribflow import contract
from contribflow.cluster import k8s
from contribflow.ingest import completion

from argo_schema import EVENTS, ArgoSchema, argo_errors, check_all_argo, events_schema
from chart_render import CHART, NAMESPACE, docs, find, one, pods, restricted_violations, run_helm, template_text

MINIO = ["--set", "events.source=minio", "--set", "events.minio.bucket=landing",
         "--set", "events.minio.endpoint=minio.minio:9000", "--set", "events.minio.credentialsSecret.name=minio"]
SQS = ["--set", "events.source=sqs", "--set", "events.sqs.queue=landing", "--set", "events.sqs.region=eu-west-1"]
SOURCES = {"file": [], "minio": MINIO, "sqs": SQS}
# where each source's event data holds the marker's path or object key (Argo Events' event payloads)
PAYLOADS = {
    "file": lambda key: {"name": f"/data/landing/{key}", "op": "CREATE"},
    "minio": lambda key: {"notification": [{"s3": {"bucket": {"name": "landing"}, "object": {"key": key}}}]},
    "sqs": lambda key: {"messageId": "m-1", "body": {"Records": [{"s3": {"object": {"key": key}}}]}},
}


def rendered(source: str, *extra: str) -> list[dict]:
    return docs(template_text("--set", "events.enabled=true", *SOURCES[source], *extra))


def sensor_of(objects: list[dict]) -> dict:
    return one(objects, "Sensor", "contribflow-landing")


# --- off by default; strict schema validation ---------------------------------------------------------

def test_events_are_off_by_default_and_their_objects_render_only_when_enabled():
    assert not [o for o in docs(template_text()) if o["kind"] in EVENTS.kinds or "sensor" in o["metadata"]["name"]]


@pytest.mark.parametrize("source", SOURCES)
def test_every_eventsource_and_sensor_is_valid_for_argo_events_strictly(source):
    objects = rendered(source)
    checked = check_all_argo(objects)
    assert checked == {"argo-v4.1.2": 5, "argo-events-v1.9.11": 2}  # daily, cron, backfill, apply-request, audit
    assert {o["kind"] for o in objects if o["kind"] in EVENTS.kinds} == {"EventSource", "Sensor"}
    es = one(objects, "EventSource", "contribflow-landing")
    assert set(es["spec"]) - {"eventBusName", "template"} == {source}
    assert list(es["spec"][source]) == ["landed"]


def test_the_strict_walk_refuses_an_unknown_key_and_a_wrong_type_in_each_object():
    objects = rendered("file")
    schema = events_schema()
    es, sensor = one(objects, "EventSource", "contribflow-landing"), sensor_of(objects)
    assert schema.errors(es) == [] and schema.errors(sensor) == []

    bad = copy.deepcopy(es)
    bad["spec"]["file"]["landed"]["watchPathConfig"]["pathRegex"] = "x"  # misspelled pathRegexp
    [error] = schema.errors(bad)
    assert ".spec.file.landed.watchPathConfig.pathRegex: unknown field 'pathRegex'" in error
    assert "did you mean 'pathRegexp'" in error

    bad = copy.deepcopy(es)
    bad["spec"]["file"]["landed"]["polling"] = "yes"
    assert any("polling" in e and "'yes' is not of type 'boolean'" in e for e in schema.errors(bad))

    bad = copy.deepcopy(sensor)
    bad["spec"]["triggers"][0]["retryStrategy"]["retries"] = 3
    assert [e for e in schema.errors(bad) if "unknown field 'retries'" in e]
    bad = copy.deepcopy(sensor)
    bad["spec"]["triggers"][0]["retryStrategy"]["steps"] = "three"
    assert any("'three' is not of type 'integer'" in e for e in schema.errors(bad))
    bad = copy.deepcopy(sensor)
    bad["spec"]["dependencies"][0]["filters"]["data"][0]["values"] = ["x"]
    assert [e for e in schema.errors(bad) if "unknown field 'values'" in e]
    with pytest.raises(ValueError, match="unknown field 'retries'"):
        check_all_argo([es, {**sensor, "spec": {**sensor["spec"], "triggers": [
            {**sensor["spec"]["triggers"][0], "retryStrategy": {"retries": 3}}]}}])


def test_intorstring_is_widened_and_a_backoff_duration_may_be_a_number_or_a_string():
    sensor = sensor_of(rendered("file"))
    for duration in ("10s", 10):
        changed = copy.deepcopy(sensor)
        changed["spec"]["triggers"][0]["retryStrategy"]["duration"] = duration
        assert argo_errors(changed) == []
    changed["spec"]["triggers"][0]["retryStrategy"]["duration"] = [10]
    assert argo_errors(changed) != []


def test_the_events_schema_set_is_its_own_and_a_workflows_kind_is_not_an_events_kind(tmp_path, monkeypatch):
    assert events_schema().schema_dir.name == "argo-events-v1.9.11"
    wf = one(rendered("file"), "WorkflowTemplate", k8s.WORKFLOW_TEMPLATE)
    assert events_schema().errors(wf) == ["WorkflowTemplate/contribflow-daily: unknown kind 'WorkflowTemplate' "
                                          "for argo-events-v1.9.11"]
    monkeypatch.setenv("ARGO_EVENTS_SCHEMA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="ARGO_EVENTS_SCHEMA_DIR"):
        ArgoSchema(schema_set=EVENTS)


# --- what triggers, and the date taken from the name --------------------------------------------------

def go_regex_replace(template: str, text: str) -> str:
    """Evaluate the Sensor's `regexReplaceAll "<re>" <input> "<repl>"` dataTemplate on ``text`` the way
    sprig does (Go RE2 and Python agree on this pattern's syntax; ${n} is \\n)."""
    match = re.fullmatch(r'\{\{ regexReplaceAll "((?:[^"\\]|\\.)*)" (\S+(?: \S+)*?) "([^"]*)" \}\}', template)
    assert match, template
    pattern = match.group(1).encode().decode("unicode_escape")  # the Go string literal's escapes
    replacement = re.sub(r"\$\{(\d+)\}", r"\\\1", match.group(3))
    return re.sub(pattern, replacement, text)


def lookup(data: object, path: str) -> object:
    """A gjson path (a.0.b) into event data, as the Sensor's data filter reads it."""
    for part in path.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]  # type: ignore[index]
    return data


@pytest.mark.parametrize("source", SOURCES)
def test_only_a_completion_marker_of_the_contracts_file_name_triggers_and_its_date_is_the_run_date(source):
    sensor = sensor_of(rendered(source))
    [dependency] = sensor["spec"]["dependencies"]
    [data_filter] = dependency["filters"]["data"]
    [pattern] = data_filter["value"]
    [trigger] = sensor["spec"]["triggers"]
    [parameter] = trigger["template"]["k8s"]["parameters"]
    assert parameter["dest"] == "spec.arguments.parameters.0.value"
    template = parameter["src"]["dataTemplate"]
    day = dt.date(2026, 11, 1)
    data_file = contract.file_name(day)
    markers = [data_file + s for s in (*completion.CONTROL_SUFFIXES, completion.MANIFEST_SUFFIX)]
    for key in markers + [f"incoming/{m}" for m in markers]:
        payload = PAYLOADS[source](key)
        value = lookup(payload, data_filter["path"])
        assert re.search(pattern, value), f"{key} should trigger"
        assert go_regex_replace(template, value) == "2026-11-01"
    for key in (data_file, data_file + ".part", data_file + ".done.tmp", "contributions_2026111.csv.done",
                "other_20261101.csv.done", "xcontributions_20261101.csv.done", "contributions_20261101.txt.ok"):
        assert not re.search(pattern, lookup(PAYLOADS[source](key), data_filter["path"])), f"{key} must not trigger"
    if source == "file":
        es = one(rendered(source), "EventSource", "contribflow-landing")
        watch = es["spec"]["file"]["landed"]
        assert watch["eventType"] == "CREATE" and watch["watchPathConfig"]["directory"] == k8s.LANDING_MOUNT + "/"
        assert re.fullmatch(watch["watchPathConfig"]["pathRegexp"], markers[0])
        assert not re.search(watch["watchPathConfig"]["pathRegexp"], data_file)


# --- the Workflow it submits, retries, dead letters ------------------------------------------------

def test_the_sensor_creates_a_daily_workflow_from_the_template_with_retries_and_a_dead_letter_trigger():
    objects = rendered("file")
    [trigger] = sensor_of(objects)["spec"]["triggers"]
    k8s_trigger = trigger["template"]["k8s"]
    assert k8s_trigger["operation"] == "create"
    workflow = k8s_trigger["source"]["resource"]
    assert workflow["kind"] == "Workflow" and workflow["metadata"]["namespace"] == NAMESPACE
    assert workflow["spec"]["workflowTemplateRef"] == {"name": k8s.WORKFLOW_TEMPLATE}
    assert [p["name"] for p in workflow["spec"]["arguments"]["parameters"]] == ["run-date"]
    assert argo_errors(workflow) == []  # valid for Argo Workflows v4.1.2 too
    template = one(objects, "WorkflowTemplate", k8s.WORKFLOW_TEMPLATE)
    assert "run-date" in [p["name"] for p in template["spec"]["arguments"]["parameters"]]
    # one run of a date at a time, whichever of the cron and the arrival submitted it
    assert template["spec"]["synchronization"]["mutexes"] == [
        {"name": "contribflow-daily-{{workflow.parameters.run-date}}"}]
    assert trigger["retryStrategy"] == {"steps": 3, "duration": "10s", "factor": 2, "jitter": 0.2}
    assert trigger["atLeastOnce"] is True  # Argo Events calls dlqTrigger only with at-least-once
    assert trigger["dlqTrigger"]["template"]["name"] == "dead-letter" and "log" in trigger["dlqTrigger"]["template"]
    one(objects, "CronWorkflow", k8s.CRON_WORKFLOW)  # the fallback stays
    changed = sensor_of(rendered("file", "--set", "events.retry.steps=5", "--set", "events.retry.duration=30s"))
    assert changed["spec"]["triggers"][0]["retryStrategy"]["steps"] == 5
    assert changed["spec"]["triggers"][0]["retryStrategy"]["duration"] == "30s"


def test_the_sensor_may_create_workflows_and_nothing_else():
    objects = rendered("file")
    role = one(objects, "Role", "contribflow-sensor")
    assert role["rules"] == [{"apiGroups": ["argoproj.io"], "resources": ["workflows"], "verbs": ["create"]}]
    binding = one(objects, "RoleBinding", "contribflow-sensor")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "contribflow-sensor"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "contribflow-sensor", "namespace": NAMESPACE}]
    assert one(objects, "ServiceAccount", "contribflow-sensor")["automountServiceAccountToken"] is True
    assert sensor_of(objects)["spec"]["template"]["serviceAccountName"] == "contribflow-sensor"
    assert find(objects, "ClusterRole") == [] and find(objects, "ClusterRoleBinding") == []


def test_the_file_source_mounts_the_landing_claim_read_only_and_both_pods_are_restricted():
    objects = rendered("file")
    es = one(objects, "EventSource", "contribflow-landing")
    template = es["spec"]["template"]
    assert template["volumes"] == [{"name": "landing", "persistentVolumeClaim": {
        "claimName": "contribflow-landing", "readOnly": True}}]
    assert template["container"]["volumeMounts"] == [{"name": "landing", "mountPath": k8s.LANDING_MOUNT,
                                                      "readOnly": True}]
    one(objects, "PersistentVolumeClaim", "contribflow-landing")
    existing = one(rendered("file", "--set", "landing.existingClaim=shared-landing"), "EventSource", "contribflow-landing")
    assert existing["spec"]["template"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "shared-landing"
    found = [p for p in pods(objects) if p[0].startswith(("EventSource", "Sensor"))]
    assert len(found) == 2
    assert [v for where, pod, containers in found for v in restricted_violations(where, pod, containers)] == []
    for source in ("minio", "sqs"):
        assert "volumes" not in one(rendered(source), "EventSource", "contribflow-landing")["spec"]["template"]


def test_bucket_sources_take_credentials_from_a_secret_or_the_pods_role_and_need_their_settings():
    es = one(rendered("minio"), "EventSource", "contribflow-landing")["spec"]["minio"]["landed"]
    assert es["accessKey"] == {"name": "minio", "key": "accesskey"} and es["secretKey"] == {"name": "minio", "key": "secretkey"}
    assert es["bucket"] == {"name": "landing"} and es["events"] == ["s3:ObjectCreated:*"]
    sqs = one(rendered("sqs", "--set", "events.eventSourceServiceAccountName=irsa"), "EventSource", "contribflow-landing")
    assert sqs["spec"]["template"]["serviceAccountName"] == "irsa"
    assert "accessKey" not in sqs["spec"]["sqs"]["landed"] and sqs["spec"]["sqs"]["landed"]["jsonBody"] is True
    for args, message in (
        (["--set", "events.source=minio"], "events.source=minio needs events.minio.bucket"),
        (["--set", "events.source=sqs"], "events.source=sqs needs events.sqs.queue"),
        (["--set", "events.source=ftp"], "events.source"),
        (["--set", "workflows.enabled=false"], "workflows.enabled=false does not install"),
        (["--set", "events.retry.steps=-1"], "events.retry.steps"),
        (["--set", "events.pollng=true"], "pollng"),
    ):
        result = run_helm("template", "contribflow", str(CHART), "--set", "events.enabled=true", *args)
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)

"""Issue 19: OpenLineage events of a full run (file transport), JSON logs, lineage off by default.

The installed openlineage-python ships no copy of the spec's JSON schema (only the attrs classes
generated from it), so each event is validated strictly against what the package provides: it is
rebuilt with the generated classes (their validators: UUID run ids, ISO timestamps with a time,
producer and schema URLs), every key of the event and of each facet must be a field of its class,
and the rebuilt event must serialise back to exactly the event read from the file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import attr
import pytest

from conftest import ROOT, TEST_KEY

DAY = dt.date(2026, 11, 21)


# --- strict validation against the package's generated spec classes -------------------------------

def _facet_classes() -> dict[str, type]:
    """facet key → class, from the generated modules (the spec's own facet names)."""
    import importlib
    import pkgutil

    from openlineage.client import generated
    from openlineage.client.generated.base import BaseFacet

    known: dict[str, type] = {}
    for mod in pkgutil.iter_modules(generated.__path__):
        module = importlib.import_module(f"{generated.__name__}.{mod.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseFacet) and value is not BaseFacet \
                    and value.__module__ == module.__name__ and value.__name__.endswith("Facet"):
                known[value.__name__] = value
    return known


FACET_KEYS = {"parent": "ParentRunFacet", "errorMessage": "ErrorMessageRunFacet",
              "outputStatistics": "OutputStatisticsOutputDatasetFacet",
              "dataQualityAssertions": "DataQualityAssertionsDatasetFacet",
              "processing_engine": "ProcessingEngineRunFacet", "jobType": "JobTypeJobFacet",
              "sourceCodeLocation": "SourceCodeLocationJobFacet", "environmentVariables":
              "EnvironmentVariablesRunFacet", "tags": "TagsRunFacet"}


def _structure(cls: type, data: dict, where: str):
    """Rebuild ``data`` as ``cls`` (attrs), recursively; unknown keys are errors."""
    import typing

    fields = {a.name.lstrip("_"): a for a in attr.fields(cls)}
    unknown = set(data) - set(fields)
    assert not unknown, f"{where}: {sorted(unknown)} not in {cls.__name__}"
    hints = typing.get_type_hints(cls, {**vars(typing), **vars(sys.modules[cls.__module__])})
    kwargs = {}
    for key, value in data.items():
        a = fields[key]
        if not a.init:
            continue
        hint = hints.get(a.name)
        kwargs[a.name.lstrip("_") if a.name.startswith("_") and a.alias is None else (a.alias or a.name)] = \
            _value(hint, value, f"{where}.{key}")
    return cls(**kwargs)


def _value(hint, value, where):
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if value is None:
        return None
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        inner = [a for a in args if a is not type(None)]
        return _value(inner[0], value, where) if len(inner) == 1 else value
    if origin is list:
        assert isinstance(value, list), f"{where}: not a list"
        return [_value(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        assert isinstance(value, dict), f"{where}: not an object"
        return {k: _facet(k, v, f"{where}.{k}") if _is_facet_base(args[1]) else v for k, v in value.items()}
    if attr.has(hint):
        assert isinstance(value, dict), f"{where}: not an object"
        return _structure(hint, value, where)
    if hint in (str, int, bool, float):
        assert isinstance(value, hint) and not (hint is int and isinstance(value, bool)), \
            f"{where}: {value!r} is not {hint.__name__}"
    return value


def _is_facet_base(cls) -> bool:
    from openlineage.client.generated.base import BaseFacet

    return isinstance(cls, type) and issubclass(cls, BaseFacet)


def _facet(key: str, value: dict, where: str):
    cls = _facet_classes().get(FACET_KEYS.get(key, ""))
    assert cls is not None, f"{where}: facet {key!r} is not a facet of the spec this package implements"
    assert value.get("_producer") and value.get("_schemaURL", "").startswith("https://openlineage.io/spec/"), where
    body = {k: v for k, v in value.items() if k not in ("_producer", "_schemaURL", "_deleted")}
    facet = _structure(cls, body, where)
    facet._producer = value["_producer"]
    return facet


def validate(event: dict) -> None:
    from openlineage.client.event_v2 import RunEvent
    from openlineage.client.serde import Serde

    body = {k: v for k, v in event.items() if k != "schemaURL"}
    assert event["schemaURL"].startswith("https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent")
    rebuilt = _structure(RunEvent, body, "event")
    uuid.UUID(event["run"]["runId"])
    assert json.loads(Serde.to_json(rebuilt)) == event, "the event does not round-trip through the spec classes"


# --- a full run, lineage to a file -----------------------------------------------------------------

def _full_run(tmp_path: Path, extra_env: dict[str, str]) -> tuple[list[dict], str]:
    from contribflow.local import runner
    from contribflow.settings import Settings

    env = dict(os.environ, **extra_env)
    settings = Settings.from_env(env)
    params = {"run-date": DAY.isoformat(), "rows": "400", "defect-rate": "0.02"}
    results = runner.run_graph(settings, params, env)
    assert all(r.state in ("ok", "skipped") for r in results), results
    return results, settings.run_id


@pytest.mark.integration
def test_a_full_run_emits_valid_lineage_with_the_file_raw_staging_marts_graph(database, tmp_path, capfd):
    events_file = tmp_path / "lineage.ndjson"
    _, run_id = _full_run(tmp_path, {"OPENLINEAGE__TRANSPORT__TYPE": "file",
                                     "OPENLINEAGE__TRANSPORT__LOG_FILE_PATH": str(events_file),
                                     "OPENLINEAGE__TRANSPORT__APPEND": "true"})
    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    for event in events:
        validate(event)

    stages = {}
    for e in events:
        if e["job"]["name"].startswith("contribflow.") and not e["job"]["name"].startswith("contribflow.dbt."):
            stages.setdefault(e["job"]["name"], []).append(e)
    for stage in ("init-db", "generate", "pick", "ingest", "dbt-build", "dbt-test", "publish", "finish"):
        states = [e["eventType"] for e in stages[f"contribflow.{stage}"]]
        assert states == ["START", "COMPLETE"], (stage, states)
        for e in stages[f"contribflow.{stage}"]:
            assert e["run"]["facets"]["parent"]["run"]["runId"] == run_id
            assert e["run"]["facets"]["parent"]["job"]["name"] == "contribflow-daily"
    # every dbt model: a child run of dbt-build
    build_run = stages["contribflow.dbt-build"][0]["run"]["runId"]
    models = {e["job"]["name"] for e in events if e["job"]["name"].startswith("contribflow.dbt.")}
    assert {"contribflow.dbt.stg_contributions", "contribflow.dbt.fct_contributions_delta",
            "contribflow.dbt.dim_taxpayer"} <= models
    assert all(e["run"]["facets"]["parent"]["run"]["runId"] == build_run
               for e in events if e["job"]["name"].startswith("contribflow.dbt."))

    edges = set()
    for e in events:
        if e["eventType"] != "COMPLETE":
            continue
        for i in e["inputs"]:
            for o in e["outputs"]:
                edges.add((i["namespace"], i["name"].split(".", 1)[-1] if i["namespace"] != "file://landing"
                           else i["name"], o["name"].split(".", 1)[-1] if o["namespace"] != "file://landing"
                           else o["name"]))
    names = {(a, b) for _, a, b in edges}
    source = f"contributions_{DAY:%Y%m%d}.csv"
    assert (source, "raw.contributions") in names
    assert ("raw.contributions", "staging.stg_contributions") in names
    assert any(a == "staging.stg_contributions" and b.startswith("marts_build.") for a, b in names)
    assert ("marts_build.fct_contributions_delta", "marts.fct_contributions") in names
    assert ("marts_build.dim_taxpayer", "marts.dim_taxpayer") in names
    warehouse_ns = {o["namespace"] for e in events for o in e["outputs"] if o["namespace"] != "file://landing"}
    assert len(warehouse_ns) == 1 and warehouse_ns.pop().startswith("postgres://localhost:")

    ingest = stages["contribflow.ingest"][-1]
    raw = next(o for o in ingest["outputs"] if o["name"].endswith("raw.contributions"))
    assert raw["outputFacets"]["outputStatistics"]["rowCount"] > 0
    rules = ingest["inputs"][0]["inputFacets"]["dataQualityAssertions"]["assertions"]
    assert any(not a["success"] for a in rules), "a 2% defect rate fails some rules"
    tested = stages["contribflow.dbt-test"][-1]["inputs"]
    assertions = [a for i in tested for a in i["inputFacets"]["dataQualityAssertions"]["assertions"]]
    assert assertions and all(a["success"] for a in assertions)
    assert any(a["assertion"] == "unique" and a["column"] == "declaration_id" for a in assertions)


@pytest.mark.integration
def test_a_failing_stage_emits_fail_with_its_error_and_its_rejected_rows(database, tmp_path):
    from contribflow.local import runner
    from contribflow.settings import Settings

    events_file = tmp_path / "lineage.ndjson"
    env = dict(os.environ, OPENLINEAGE__TRANSPORT__TYPE="file",
               OPENLINEAGE__TRANSPORT__LOG_FILE_PATH=str(events_file), OPENLINEAGE__TRANSPORT__APPEND="true")
    settings = Settings.from_env(env)
    results = runner.run_graph(settings, {"run-date": DAY.isoformat(), "rows": "200", "defect-rate": "0.3"}, env)
    assert {r.stage: r.state for r in results}["ingest"] == "failed"
    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    for event in events:
        validate(event)
    ingest = [e for e in events if e["job"]["name"] == "contribflow.ingest"]
    assert [e["eventType"] for e in ingest] == ["START", "FAIL"]
    assert "failed validation" in ingest[1]["run"]["facets"]["errorMessage"]["message"]
    # the rejected file's counts reach its FAIL event (the stage declared raw and the quarantine)
    written = {o["name"].split(".", 1)[1]: o["outputFacets"] for o in ingest[1]["outputs"]}
    assert written["raw.contributions"]["outputStatistics"]["rowCount"] == 0
    assert written["raw.contributions_quarantine"]["outputStatistics"]["rowCount"] > 0
    [file] = ingest[1]["inputs"]
    assert {a["assertion"] for a in file["inputFacets"]["dataQualityAssertions"]["assertions"]} >= {
        "rows_rejected_within_threshold"}
    assert ingest[0]["run"]["runId"] == ingest[1]["run"]["runId"]
    assert not [e for e in events if e["job"]["name"] == "contribflow.dbt-build"]
    finish = [e["eventType"] for e in events if e["job"]["name"] == "contribflow.finish"]
    assert finish == ["START", "FAIL"]


@pytest.mark.integration
def test_lineage_is_off_without_configuration_and_a_broken_transport_never_fails_a_stage(database, tmp_path):
    from contribflow import lineage

    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENLINEAGE")}
    assert not lineage.configured(env)
    assert not lineage.configured({"OPENLINEAGE_URL": "http://x", "OPENLINEAGE_DISABLED": "true"})
    assert lineage.configured({"OPENLINEAGE_URL": "http://marquez:5000"})
    env.update(OPENLINEAGE_URL="http://127.0.0.1:9", OPENLINEAGE_ENDPOINT="api/v1/lineage")
    done = subprocess.run([sys.executable, "-m", "contribflow", "init-db"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "init-db" in done.stdout


# --- logging ------------------------------------------------------------------------------------

@pytest.mark.integration
def test_json_logs_are_one_object_per_line_with_run_and_step_and_no_secret(database, tmp_path):
    from contribflow import generate
    from contribflow.contract import file_name

    landing = Path(database["CONTRIBFLOW_LANDING_DIR"])
    landing.mkdir(parents=True, exist_ok=True)
    path = landing / file_name(DAY)
    generate.write_file(path, generate.rows_for(DAY, 50))
    env = dict(os.environ, CONTRIBFLOW_LOG_FORMAT="json", CONTRIBFLOW_RUN_ID="run-json-1",
               PGPASSWORD="pg-password-not-a-secret")
    records = []
    for args in (["init-db"], ["ingest", "--date", DAY.isoformat(), "--file", str(path)],
                 ["dbt-build", "--date", DAY.isoformat()]):
        done = subprocess.run([sys.executable, "-m", "contribflow", *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        for line in done.stderr.splitlines():
            records.append(json.loads(line))  # every stderr line is one JSON object
        assert TEST_KEY not in done.stdout + done.stderr and "pg-password-not-a-secret" not in done.stderr
        if args[0] == "dbt-build":  # dbt's own log lines are JSON too; the CLI's summary line is last
            *dbt_lines, summary = done.stdout.strip().splitlines()
            assert dbt_lines and all(isinstance(json.loads(line), dict) for line in dbt_lines)
            assert summary.startswith("dbt-build: build_id=")
    assert {r["step"] for r in records} == {"init-db", "ingest", "dbt-build"}
    for r in records:
        assert {"timestamp", "level", "logger", "message", "run_id", "step"} <= r.keys()
        assert r["run_id"] == "run-json-1" and r["logger"].startswith("contribflow")
        dt.datetime.fromisoformat(r["timestamp"])
    finished = [r for r in records if r.get("event") == "step_finished"]
    assert [r["status"] for r in finished] == ["SUCCESS", "SUCCESS", "SUCCESS"]
    assert int(finished[1]["rows_loaded"]) == 50


def test_a_secret_in_a_message_is_masked_in_both_formats(capsys):
    from contribflow import logs

    env = {"CONTRIBFLOW_LOG_FORMAT": "json", "CONTRIBFLOW_PSEUDONYM_KEY": "sekrit-key", "PGPASSWORD": "pw-1"}
    logs.setup("ingest", "r1", env)
    logs.get("x").warning("key sekrit-key and pw-1", extra={"detail": "pw-1"})
    err = capsys.readouterr().err
    record = json.loads(err)
    assert record["message"] == "key *** and ***" and record["detail"] == "***"
    logs.setup("ingest", "r1", dict(env, CONTRIBFLOW_LOG_FORMAT="text"))
    logs.get("x").warning("key sekrit-key")
    logs.get("x").info("lifecycle", extra={logs.LIFECYCLE: True})
    assert capsys.readouterr().err == "key ***\n"
    with pytest.raises(ValueError):
        logs.setup("ingest", "r1", {"CONTRIBFLOW_LOG_FORMAT": "xml"})


# --- Prometheus metrics in the rendered templates ---------------------------------------------------

def test_the_rendered_daily_template_carries_prometheus_metrics_named_and_labelled_by_convention():
    import re

    import yaml

    from argo_schema import ArgoSchema

    doc = yaml.safe_load((ROOT / "workflows/rendered/workflowtemplate-contribflow-daily.yaml").read_text())
    assert ArgoSchema().errors(doc) == []
    found = {p["name"]: p for p in doc["spec"]["metrics"]["prometheus"]}
    templates = {t["name"]: t for t in doc["spec"]["templates"]}
    for t in templates.values():
        for p in (t.get("metrics") or {}).get("prometheus", []):
            found.setdefault(p["name"], p)
            labels = {label["key"]: label["value"] for label in p.get("labels") or []}
            if "step" in labels:
                assert labels["step"] == t["name"]
    assert {"contribflow_run_duration_seconds", "contribflow_runs_total", "contribflow_step_duration_seconds",
            "contribflow_step_failures_total", "contribflow_rows_loaded", "contribflow_rows_rejected",
            "contribflow_dbt_tests_failed", "contribflow_late_files_total"} <= found.keys()
    for name, p in found.items():
        assert re.fullmatch(r"contribflow_[a-z][a-z0-9_]*", name) and p["help"]
        assert name.endswith("_total") == ("counter" in p), name
        for label in p.get("labels") or []:
            assert re.fullmatch(r"[a-z_]+", label["key"])
            assert "uid" not in label["value"] and "pod" not in label["value"] and "workflow.name" not in label["value"]
    assert "run_date" in {label["key"] for label in found["contribflow_rows_loaded"]["labels"]}
    late = templates["pick"]["metrics"]["prometheus"]
    assert any("error_class" in (p.get("when") or "") and "late" in p["when"] for p in late)
    assert {"name": "error_class", "valueFrom": {"path": "/tmp/outputs/error_class", "default": ""}} \
        in templates["pick"]["outputs"]["parameters"] or any(
            o["name"] == "error_class" for o in templates["pick"]["outputs"]["parameters"])


# --- logs that outlive pods: the chart's choice -----------------------------------------------------

def _templates(*args: str) -> list[dict]:
    from chart_render import docs, template_text

    return [d for d in docs(template_text(*args)) if d["kind"] == "WorkflowTemplate"]


def test_by_default_pods_and_their_logs_are_kept_for_a_delay():
    from argo_schema import default_schema

    for t in _templates():
        assert t["spec"]["podGC"] == {"strategy": "OnPodSuccess", "deleteDelayDuration": "24h"}
        assert "archiveLogs" not in t["spec"] and "artifactRepositoryRef" not in t["spec"]
        assert default_schema().errors(t) == []
    for t in _templates("--set", "workflows.logs.keepPods.strategy=OnWorkflowCompletion",
                        "--set", "workflows.logs.keepPods.deleteDelay=2h"):
        assert t["spec"]["podGC"] == {"strategy": "OnWorkflowCompletion", "deleteDelayDuration": "2h"}
        assert default_schema().errors(t) == []


def test_archived_logs_go_to_the_s3_repository_of_the_values_with_credentials_from_a_secret():
    from argo_schema import default_schema
    from chart_render import CHART, docs, template_text

    objects = docs(template_text("--values", str(CHART / "ci" / "log-archive-values.yaml")))
    repo = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-artifact-repositories"))
    s3 = yaml_load(repo["data"]["logs"])["s3"]
    assert s3["bucket"] == "contribflow-logs" and s3["accessKeySecret"] == {"name": "minio-credentials", "key": "accesskey"}
    assert s3["secretKeySecret"] == {"name": "minio-credentials", "key": "secretkey"}
    for t in (o for o in objects if o["kind"] == "WorkflowTemplate"):
        assert t["spec"]["archiveLogs"] is True
        assert t["spec"]["artifactRepositoryRef"] == {"configMap": repo["metadata"]["name"], "key": "logs"}
        assert t["spec"]["podGC"] == {"strategy": "OnPodSuccess"}
        assert default_schema().errors(t) == []
    # an existing repository instead: referenced, no ConfigMap from the chart
    objects = docs(template_text("--set", "workflows.logs.retention=archive",
                                 "--set", "workflows.logs.archive.artifactRepositoryRef.configMap=artifact-repositories",
                                 "--set", "workflows.logs.archive.artifactRepositoryRef.key=default-v1"))
    assert not [o for o in objects if o["metadata"]["name"].endswith("-artifact-repositories")]
    for t in (o for o in objects if o["kind"] == "WorkflowTemplate"):
        assert t["spec"]["artifactRepositoryRef"] == {"configMap": "artifact-repositories", "key": "default-v1"}
    # a bucket without its credentials Secret is refused
    from chart_render import run_helm

    done = run_helm("template", "x", str(CHART), "--set", "workflows.logs.retention=archive",
                    "--set", "workflows.logs.archive.s3.bucket=b", "--set", "workflows.logs.archive.s3.endpoint=e:9000")
    assert done.returncode != 0 and "credentialsSecret.name is required" in done.stderr


def yaml_load(text: str):
    import yaml

    return yaml.safe_load(text)


# --- dbt documentation: parse without warnings, described columns, contracts, the exposure ----------

def test_dbt_parse_shows_no_warnings_and_every_mart_column_is_described_under_contract(tmp_path, monkeypatch):
    from dbt.cli.main import dbtRunner

    monkeypatch.delenv("CONTRIBFLOW_PSEUDONYM_KEY", raising=False)
    warnings = []

    def collect(event) -> None:
        if event.info.level in ("warn", "error"):
            warnings.append(f"{event.info.name}: {event.info.msg}")

    project = str(ROOT / "dbt")
    result = dbtRunner(callbacks=[collect]).invoke(
        ["parse", "--project-dir", project, "--profiles-dir", project, "--target-path", str(tmp_path),
         "--log-path", str(tmp_path / "logs"), "--no-partial-parse"])
    assert result.success, result.exception
    assert warnings == []
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    models = {n["name"]: n for n in manifest["nodes"].values() if n["resource_type"] == "model"}
    for name in ("fct_contributions_delta", "fct_contributions", "dim_taxpayer"):
        node = models[name]
        assert node["description"].strip()
        assert node["columns"] and all(c["description"].strip() for c in node["columns"].values()), name
    for name in ("fct_contributions_delta", "dim_taxpayer"):  # the tables publish applies to marts
        node = models[name]
        assert node["contract"]["enforced"] is True
        assert all(c["data_type"] for c in node["columns"].values())
    dim = models["dim_taxpayer"]["columns"]
    assert {"type": "primary_key"} in [{"type": c["type"]} for c in dim["taxpayer_key"]["constraints"]]
    exposures = list(manifest["exposures"].values())
    assert [e["name"] for e in exposures] == ["contribution_analysts"]
    assert set(exposures[0]["depends_on"]["nodes"]) == {"model.contribflow.fct_contributions",
                                                         "model.contribflow.dim_taxpayer"}

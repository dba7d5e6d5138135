"""OpenLineage run events for every stage, through the ``openlineage-python`` client.

Off by default. On when the client's own configuration says where events go: ``OPENLINEAGE_URL``
(HTTP, e.g. Marquez), ``OPENLINEAGE_CONFIG`` or an ``openlineage.yml`` (cwd or ``~/.openlineage``),
or ``OPENLINEAGE__TRANSPORT__*`` variables (e.g. ``…__TYPE=file``, ``…__LOG_FILE_PATH=…``,
``…__APPEND=true``). ``OPENLINEAGE_DISABLED=true`` turns it off again. Emitting never fails a stage:
any error is a logged warning.

Each stage is an OpenLineage job ``contribflow.<stage>`` in namespace ``contribflow`` (or
``OPENLINEAGE_NAMESPACE``); its run (a fresh UUID per attempt) names the Argo workflow (its uid,
``settings.run_id``) as parent run. It is a listener of the step record (contribflow/step.py) and
knows no stage: each stage declares the datasets it reads and writes on its step — the source file
(``file://landing``, the file name) → ``raw.contributions`` → ``marts_build`` → ``marts``
(``postgres://host:port``, ``database.schema.table``) — with their row counts and checks, which become
``outputStatistics`` and ``dataQualityAssertions`` facets (ingest's rules from meta.data_quality_issue
on the file's content; dbt tests on the tested models). Facets carry counts, rules and error texts,
which name no raw value (contribflow/redact.py). The dbt models' own lineage is read from dbt's
artifacts (manifest.json, run_results.json): one child run per model, its inputs the model's
parents.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from contribflow import logs

if TYPE_CHECKING:  # pragma: no cover
    from contribflow.step import Dataset, StepRun

log = logs.get("lineage")
PRODUCER = "https://github.com/contribflow/contribflow"
DEFAULT_NAMESPACE = "contribflow"
PARENT_JOB = "contribflow-daily"
FILE_NAMESPACE = "file://landing"


def configured(environ: Mapping[str, str] | None = None) -> bool:
    """True when the client's own configuration names a transport (and lineage is not disabled)."""
    env = os.environ if environ is None else environ
    if env.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OPENLINEAGE_URL") or any(k.startswith("OPENLINEAGE__TRANSPORT") for k in env):
        return True
    candidates = [env.get("OPENLINEAGE_CONFIG"), "openlineage.yml",
                  os.path.expanduser("~/.openlineage/openlineage.yml")]
    return any(p and os.path.isfile(p) for p in candidates)


_CLIENT: Any = None


def _client():
    global _CLIENT
    if _CLIENT is None:
        from openlineage.client import OpenLineageClient

        _CLIENT = OpenLineageClient()
    return _CLIENT


@dataclass
class LineageRun:
    run_id: str
    job: str
    children: list[str] = field(default_factory=list)


def namespace() -> str:
    return os.environ.get("OPENLINEAGE_NAMESPACE") or DEFAULT_NAMESPACE


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def warehouse(settings) -> tuple[str, str]:
    """(namespace, database) of the warehouse, from CONTRIBFLOW_DSN or libpq's PG* variables."""
    from psycopg.conninfo import conninfo_to_dict

    info = {k: str(v) for k, v in conninfo_to_dict(settings.dsn or "").items() if v is not None}
    host = info.get("host") or os.environ.get("PGHOST") or "localhost"
    if host.startswith("/"):  # a Unix socket directory: the server on this host
        host = "localhost"
    port = info.get("port") or os.environ.get("PGPORT") or "5432"
    database = info.get("dbname") or os.environ.get("PGDATABASE") or info.get("user") \
        or os.environ.get("PGUSER") or "postgres"
    return f"postgres://{host.split(',')[0]}:{port.split(',')[0]}", database


def _parent(settings):
    from openlineage.client.generated import parent_run

    return parent_run.ParentRunFacet(
        run=parent_run.Run(runId=settings.run_id),
        job=parent_run.Job(namespace=namespace(), name=PARENT_JOB))


def _is_uuid(text: str) -> bool:
    import uuid

    try:
        uuid.UUID(text)
        return True
    except ValueError:
        return False


def _run_facets(settings, extra: dict | None = None) -> dict:
    facets: dict[str, Any] = {}
    if _is_uuid(settings.run_id):
        facets["parent"] = _parent(settings)
    facets.update(extra or {})
    return facets


def _emit(event) -> None:
    _client().emit(event)


def _event(state: str, settings, run_id: str, job: str, inputs=(), outputs=(), run_facets=None):
    from openlineage.client.event_v2 import Job, Run, RunEvent, RunState

    return RunEvent(eventType=getattr(RunState, state), eventTime=_now(), producer=PRODUCER,
                    run=Run(runId=run_id, facets=_run_facets(settings, run_facets)),
                    job=Job(namespace=namespace(), name=job), inputs=list(inputs), outputs=list(outputs))


class LineageListener:
    """Listens to every step (contribflow/step.py): a START event when it starts, COMPLETE or FAIL
    when it ends, with the datasets the stage declared on its step and, for a dbt step, the models
    and tests of its artifacts. Off (and free) when no transport is configured."""

    def step_started(self, step: StepRun) -> None:
        if not configured():
            return
        try:
            from openlineage.client.uuid import generate_new_uuid

            run = LineageRun(str(generate_new_uuid()), f"contribflow.{step.step}")
            _emit(_event("START", step.settings, run.run_id, run.job,
                         [_dataset(step.settings, d) for d in step.reads],
                         [_dataset(step.settings, d, output=True) for d in step.writes]))
            step.listened[KEY] = run
        except Exception as exc:  # lineage never fails a stage
            log.warning(f"{step.step}: OpenLineage START not emitted: {exc}")

    def step_finished(self, step: StepRun) -> None:
        run = step.listened.get(KEY)
        if run is None:
            return
        state = "COMPLETE" if step.status == "SUCCESS" else "FAIL"
        try:
            from openlineage.client.generated import error_message_run

            inputs = [_dataset(step.settings, d, final=True) for d in step.reads]
            outputs = [_dataset(step.settings, d, output=True, final=True) for d in step.writes]
            if step.artifacts is not None and (step.artifacts / "run_results.json").is_file():
                more_in, more_out = dbt_datasets(step, run)
                inputs, outputs = inputs + more_in, outputs + more_out
            facets = {}
            if step.status != "SUCCESS":
                facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                    message=step.error or "failed", programmingLanguage="python")
            _emit(_event(state, step.settings, run.run_id, run.job, inputs, outputs, facets))
        except Exception as exc:
            log.warning(f"{step.step}: OpenLineage {state} not emitted: {exc}")


LISTENER = LineageListener()
KEY = "lineage"
"""Where this listener keeps its run on a step (``StepRun.listened``)."""


# --- datasets ------------------------------------------------------------------------------------

def _dataset(settings, dataset: Dataset, output: bool = False, final: bool = False):
    """A declared dataset as an OpenLineage one; its row count and checks only when the step ends."""
    from openlineage.client.event_v2 import InputDataset, OutputDataset
    from openlineage.client.generated import data_quality_assertions_dataset as dq
    from openlineage.client.generated import output_statistics_output_dataset as stats

    if dataset.kind == "file":
        namespace_, name = FILE_NAMESPACE, dataset.name
    else:
        namespace_, database = warehouse(settings)
        name = f"{database}.{dataset.name}"
    if output:
        facets: dict[str, Any] = {}
        if final and dataset.rows is not None:
            facets["outputStatistics"] = stats.OutputStatisticsOutputDatasetFacet(rowCount=dataset.rows)
        return OutputDataset(namespace=namespace_, name=name, outputFacets=facets)
    input_facets: dict[str, Any] = {}
    if final and dataset.checks is not None:
        input_facets["dataQualityAssertions"] = dq.DataQualityAssertionsDatasetFacet(assertions=[
            dq.Assertion(assertion=c.name, success=c.success, column=c.column, actual=c.actual,
                         expected=c.expected)
            for c in dataset.checks()])
    return InputDataset(namespace=namespace_, name=name, inputFacets=input_facets)


def _table(settings, relation: str, output=False, rows: int | None = None, input_facets=None):
    from openlineage.client.event_v2 import InputDataset, OutputDataset
    from openlineage.client.generated import output_statistics_output_dataset as stats

    ns, database = warehouse(settings)
    name = f"{database}.{relation}"
    if output:
        facets: dict[str, Any] = {}
        if rows is not None:
            facets["outputStatistics"] = stats.OutputStatisticsOutputDatasetFacet(rowCount=rows)
        return OutputDataset(namespace=ns, name=name, outputFacets=facets)
    return InputDataset(namespace=ns, name=name, inputFacets=input_facets or {})


# --- dbt: lineage from its own artifacts -----------------------------------------------------------

def _artifacts(step: StepRun) -> tuple[dict, dict]:
    target = step.artifacts
    assert target is not None
    manifest = json.loads((target / "manifest.json").read_text())
    results = json.loads((target / "run_results.json").read_text())
    return manifest, results


def _relation(node: dict) -> str:
    return f"{node['schema']}.{node.get('alias') or node['name']}"


def _node_relation(manifest: dict, unique_id: str) -> str | None:
    node = manifest.get("nodes", {}).get(unique_id) or manifest.get("sources", {}).get(unique_id)
    if not node:
        return None
    if unique_id.startswith("source."):
        return f"{node['schema']}.{node.get('identifier') or node['name']}"
    return _relation(node)


def dbt_datasets(step: StepRun, parent: LineageRun | None) -> tuple[list, list]:
    """From dbt's artifacts of the step: the models built are outputs (with one child run each, its
    parents as inputs, so the graph has staging → marts edges) and their sources inputs; the models
    tested are inputs, each with its tests as dataQualityAssertions."""
    from openlineage.client.generated import data_quality_assertions_dataset as dq
    from openlineage.client.uuid import generate_new_uuid

    s = step.settings
    manifest, results = _artifacts(step)
    by_id = {r["unique_id"]: r for r in results.get("results", [])}
    tests: dict[str, list] = {}
    sources: set[str] = set()
    outputs: list = []
    for uid, r in sorted(by_id.items()):
        node = manifest["nodes"].get(uid)
        if not node:
            continue
        if node.get("resource_type") == "test":
            parents = [p for p in node.get("depends_on", {}).get("nodes", []) if p.startswith("model.")]
            target = node.get("attached_node") or (parents[0] if parents else None)
            if not target:
                continue
            meta = node.get("test_metadata") or {}
            tests.setdefault(target, []).append(dq.Assertion(
                assertion=meta.get("name") or node["name"], success=r["status"] == "pass",
                column=node.get("column_name"), name=node["name"],
                severity=(node.get("config") or {}).get("severity", "ERROR").lower(),
                actual=None if r.get("failures") is None else str(r["failures"])))
            continue
        if node.get("resource_type") != "model":
            continue
        deps = node.get("depends_on", {}).get("nodes", [])
        sources.update(d for d in deps if d.startswith("source."))
        rows = (r.get("adapter_response") or {}).get("rows_affected")
        rows = rows if isinstance(rows, int) and node["config"].get("materialized") == "table" else None
        out = _table(s, _relation(node), output=True, rows=rows)
        outputs.append(out)
        ins = [_table(s, rel) for d in deps if (rel := _node_relation(manifest, d))]
        child = str(generate_new_uuid())
        job = f"contribflow.dbt.{node['name']}"
        facets = {"parent": _child_parent(parent)} if parent else {}
        state = "COMPLETE" if r["status"] == "success" else "FAIL"
        try:
            _emit(_event("START", s, child, job, ins, [out], facets))
            _emit(_event(state, s, child, job, ins, [out], facets))
        except Exception as exc:
            log.warning(f"{step.step}: OpenLineage events of {node['name']} not emitted: {exc}")
    inputs = [_table(s, rel) for d in sorted(sources) if (rel := _node_relation(manifest, d))]
    inputs += [_table(s, rel, input_facets={"dataQualityAssertions": dq.DataQualityAssertionsDatasetFacet(
                   assertions=assertions)})
               for uid, assertions in sorted(tests.items()) if (rel := _node_relation(manifest, uid))]
    return inputs, outputs


def _child_parent(parent: LineageRun):
    from openlineage.client.generated import parent_run

    return parent_run.ParentRunFacet(run=parent_run.Run(runId=parent.run_id),
                                     job=parent_run.Job(namespace=namespace(), name=parent.job))

"""OpenLineage run events for every stage, through the ``openlineage-python`` client.

Off by default. On when the client's own configuration says where events go: ``OPENLINEAGE_URL``
(HTTP, e.g. Marquez), ``OPENLINEAGE_CONFIG`` or an ``openlineage.yml`` (cwd or ``~/.openlineage``),
or ``OPENLINEAGE__TRANSPORT__*`` variables (e.g. ``…__TYPE=file``, ``…__LOG_FILE_PATH=…``,
``…__APPEND=true``). ``OPENLINEAGE_DISABLED=true`` turns it off again. Emitting never fails a stage:
any error is a logged warning.

Each stage is an OpenLineage job ``contribflow.<stage>`` in namespace ``contribflow`` (or
``OPENLINEAGE_NAMESPACE``); its run (a fresh UUID per attempt) names the Argo workflow (its uid,
``settings.run_id``) as parent run. Datasets: the source file (``file://landing``, the file name)
→ ``raw.contributions`` → the dbt staging view → ``marts_build`` → ``marts`` (``postgres://host:port``,
``database.schema.table``). Facets: ``outputStatistics`` (row counts), ``dataQualityAssertions``
(ingest's rules from meta.data_quality_issue on the file's content; dbt tests on the tested
models). Facets carry counts, rules and error texts, which name no raw value (contribflow/redact.py).
The dbt models' own lineage is read from dbt's artifacts (manifest.json, run_results.json): one
child run per model, its inputs the model's parents.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contribflow import logs

if TYPE_CHECKING:  # pragma: no cover
    from contribflow.audit import StepRun

log = logs.get("lineage")
PRODUCER = "https://github.com/contribflow/contribflow"
DEFAULT_NAMESPACE = "contribflow"
PARENT_JOB = "contribflow-daily"
FILE_NAMESPACE = "file://landing"
PUBLISHED = {"fct_contributions_delta": "fct_contributions", "dim_taxpayer": "dim_taxpayer"}
"""What publish applies: marts_build.<key> → marts.<value> (contribflow/publish.py)."""


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


def start(step: StepRun) -> LineageRun | None:
    if not configured():
        return None
    try:
        from openlineage.client.uuid import generate_new_uuid

        run = LineageRun(str(generate_new_uuid()), f"contribflow.{step.step}")
        inputs, outputs = _datasets(step, final=False)
        _emit(_event("START", step.settings, run.run_id, run.job, inputs, outputs))
        return run
    except Exception as exc:  # lineage never fails a stage
        log.warning(f"{step.step}: OpenLineage START not emitted: {exc}")
        return None


def finish(step: StepRun) -> None:
    run = step.lineage
    if run is None:
        return
    try:
        from openlineage.client.generated import error_message_run

        inputs, outputs = _datasets(step, final=True)
        facets = {}
        if step.status != "SUCCESS":
            facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=step.error or "failed", programmingLanguage="python")
        _emit(_event("COMPLETE" if step.status == "SUCCESS" else "FAIL", step.settings, run.run_id,
                     run.job, inputs, outputs, facets))
    except Exception as exc:
        log.warning(f"{step.step}: OpenLineage {('COMPLETE' if step.status == 'SUCCESS' else 'FAIL')} "
                    f"not emitted: {exc}")


# --- datasets ------------------------------------------------------------------------------------

def _file(name: str, input_facets: dict | None = None, output_facets: dict | None = None, output=False):
    from openlineage.client.event_v2 import InputDataset, OutputDataset

    if output:
        return OutputDataset(namespace=FILE_NAMESPACE, name=name, outputFacets=output_facets or {})
    return InputDataset(namespace=FILE_NAMESPACE, name=name, inputFacets=input_facets or {})


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


def _ingest_assertions(step: StepRun) -> dict:
    """ingest's rules, as checked against the file: every rule with issues failed; the checks
    that found none passed (the rule names the contract knows of are not listed here)."""
    from openlineage.client.generated import data_quality_assertions_dataset as dq

    from contribflow.db import connect

    with connect(step.settings) as conn:
        # The issues of the file's content, whichever run first stored them: a re-ingest finds
        # the same issues again and stores none (contribflow/ledger.py, ISSUE_IS_NEW).
        rows = conn.execute(
            """SELECT rule, column_name, count(*) FROM meta.data_quality_issue
                WHERE source_file = %(file)s AND source_sha256 IN (
                      SELECT sha256 FROM meta.source_file WHERE run_id = %(run)s AND file_name = %(file)s)
                GROUP BY rule, column_name ORDER BY 1, 2""",
            {"run": step.settings.run_id, "file": step.source_file or ""}).fetchall()
    assertions = [dq.Assertion(assertion=rule, success=False, column=column, actual=str(n))
                  for rule, column, n in rows]
    if step.rows_rejected is not None:
        assertions.append(dq.Assertion(assertion="rows_rejected_within_threshold",
                                       success=step.status == "SUCCESS", actual=str(step.rows_rejected),
                                       expected=f"<= {step.settings.reject_threshold:g} of rows_in"))
    return {"dataQualityAssertions": dq.DataQualityAssertionsDatasetFacet(assertions=assertions)}


def _datasets(step: StepRun, final: bool) -> tuple[list, list]:
    s, name = step.settings, step.step
    if name == "generate":
        path = step.details.get("path")
        if not path:
            return [], []
        from openlineage.client.event_v2 import OutputDataset
        from openlineage.client.generated import output_statistics_output_dataset as stats

        facets: dict[str, Any] = {}
        if final and step.rows_in is not None:
            facets["outputStatistics"] = stats.OutputStatisticsOutputDatasetFacet(rowCount=step.rows_in)
        return [], [OutputDataset(namespace=FILE_NAMESPACE, name=Path(path).name, outputFacets=facets)]
    if name == "pick":
        return ([_file(step.source_file)] if step.source_file else []), []
    if name == "ingest":
        if not step.source_file:
            return [], []
        inputs = [_file(step.source_file, _ingest_assertions(step) if final else None)]
        return inputs, [_table(s, "raw.contributions", output=True, rows=step.rows_loaded if final else None),
                        _table(s, "raw.contributions_quarantine", output=True,
                               rows=step.rows_rejected if final else None)]
    if name == "publish":
        from contribflow.publish import BUILD_SCHEMA

        return ([_table(s, f"{BUILD_SCHEMA}.{m}") for m in PUBLISHED],
                [_table(s, f"marts.{m}", output=True) for m in PUBLISHED.values()])
    if name in ("dbt-build", "dbt-test") and final:
        return dbt_datasets(step)
    return [], []


# --- dbt: lineage from its own artifacts -----------------------------------------------------------

def _artifacts(step: StepRun) -> tuple[dict, dict]:
    from contribflow.transform import target_dir

    target = target_dir(step.settings)
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


def dbt_datasets(step: StepRun) -> tuple[list, list]:
    """dbt-build: inputs the sources, outputs every model built, and one child run per model (its
    parents as inputs) so the graph has staging → marts edges. dbt-test: the tested models as
    inputs, each with its tests as dataQualityAssertions."""
    from openlineage.client.generated import data_quality_assertions_dataset as dq
    from openlineage.client.uuid import generate_new_uuid

    s = step.settings
    manifest, results = _artifacts(step)
    by_id = {r["unique_id"]: r for r in results.get("results", [])}
    if step.step == "dbt-test":
        tests: dict[str, list] = {}
        for uid, r in by_id.items():
            node = manifest["nodes"].get(uid)
            if not node or node.get("resource_type") != "test":
                continue
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
        inputs = [_table(s, rel, input_facets={"dataQualityAssertions": dq.DataQualityAssertionsDatasetFacet(
                      assertions=assertions)})
                  for uid, assertions in sorted(tests.items()) if (rel := _node_relation(manifest, uid))]
        return inputs, []
    # dbt-build
    sources: set[str] = set()
    outputs: list = []
    parent = step.lineage
    for uid, r in sorted(by_id.items()):
        node = manifest["nodes"].get(uid)
        if not node or node.get("resource_type") != "model":
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
            log.warning(f"dbt-build: OpenLineage events of {node['name']} not emitted: {exc}")
    return [_table(s, rel) for d in sorted(sources) if (rel := _node_relation(manifest, d))], outputs


def _child_parent(parent: LineageRun):
    from openlineage.client.generated import parent_run

    return parent_run.ParentRunFacet(run=parent_run.Run(runId=parent.run_id),
                                     job=parent_run.Job(namespace=namespace(), name=parent.job))

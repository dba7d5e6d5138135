"""WorkflowTemplate ``contribflow-daily``: one run of the stage graph for one logical date.

Every stage is a DAG task running ``contribflow <stage>`` in its own image; ``finish`` is the exit
handler. A mutex named after the run date keeps two runs of one date (cron, backfill, a manual
re-run) from overlapping.
"""

from __future__ import annotations

from collections.abc import Iterable

from hera.workflows import DAG, Parameter, Task, WorkflowTemplate
from hera.workflows import models as m

from contribflow.cluster import k8s
from contribflow.graph import EXIT_STAGE, PARAMETERS, STAGES, Stage, topological_order
from workflows import metrics, steps

ENTRYPOINT = "daily"
PARAMETER_HELP = {
    "run-date": "the logical date to load, YYYY-MM-DD: the file contributions_YYYYMMDD.csv",
    "rows": "rows the generate step writes (only when generate=true)",
    "defect-rate": "share of deliberately defective rows the generate step writes (0-1)",
    "generate": "true: write a synthetic file first (dev/demo); false: the source system drops it",
}
TITLE = "ContribFlow daily load"
DESCRIPTION = ("Loads contributions_YYYYMMDD.csv for the run date (label contribflow.io/run-date) into "
               "raw, pandera-validated with bad rows quarantined, then builds the dbt marts out of "
               "analysts' sight, tests them, and publishes them only when every test passed. "
               "Every step is a row in meta.etl_run whose run_id is this workflow's uid.")
LABELS = {
    "app.kubernetes.io/name": "contribflow",
    "app.kubernetes.io/part-of": "contribflow",
    "app.kubernetes.io/component": "daily-load",
    "app.kubernetes.io/managed-by": "hera",
}
DEPLOYED_DEFAULTS = {"generate": "false"}
"""Defaults that differ from ``contribflow run``'s: on a cluster a run loads the file the source
system dropped unless ``generate=true`` is asked for (the chart sets it from
``workflows.generate``, false by default)."""
TTL_SECONDS_AFTER_SUCCESS = 3 * 24 * 3600
TTL_SECONDS_AFTER_FAILURE = 7 * 24 * 3600
ACTIVE_DEADLINE_SECONDS = 4 * 3600


def parameter(name: str, default: str) -> Parameter:
    """A workflow parameter; one without a default (run-date) must be given at submission."""
    if default:
        return Parameter(name=name, value=default, description=PARAMETER_HELP.get(name))
    return Parameter(name=name, description=PARAMETER_HELP.get(name))


def mutex_name() -> str:
    return f"{k8s.WORKFLOW_TEMPLATE}-{steps.param('run-date')}"


def daily_dag(stages: Iterable[Stage]) -> DAG:
    tasks = []
    for stage in topological_order(stages):
        tasks.append(Task(
            name=stage.name,
            template=stage.name,
            arguments=steps.task_arguments(stage) or None,
            depends=" && ".join(stage.depends) or None,
            when=f"{steps.param(stage.when)} == true" if stage.when else None,
        ))
    return DAG(name=ENTRYPOINT, tasks=tasks)


def build(stages: Iterable[Stage] = STAGES, exit_stage: Stage = EXIT_STAGE) -> WorkflowTemplate:
    stages = tuple(stages)
    return WorkflowTemplate(
        name=k8s.WORKFLOW_TEMPLATE,
        labels=LABELS,
        annotations={"workflows.argoproj.io/title": TITLE,
                     "workflows.argoproj.io/description": DESCRIPTION},
        entrypoint=ENTRYPOINT,
        on_exit=exit_stage.name,
        arguments=[parameter(name, DEPLOYED_DEFAULTS.get(name, value)) for name, value in PARAMETERS.items()],
        service_account_name=k8s.SERVICE_ACCOUNT,
        security_context=steps.pod_security_context(),
        volumes=steps.volumes(),
        synchronization=m.Synchronization(mutexes=[m.Mutex(name=mutex_name())]),
        pod_gc=m.PodGC(strategy="OnPodSuccess"),
        ttl_strategy=m.TTLStrategy(seconds_after_success=TTL_SECONDS_AFTER_SUCCESS,
                                   seconds_after_failure=TTL_SECONDS_AFTER_FAILURE),
        active_deadline_seconds=ACTIVE_DEADLINE_SECONDS,
        metrics=metrics.workflow_metrics(),
        workflow_metadata=m.WorkflowMetadata(
            labels=LABELS,
            annotations={"workflows.argoproj.io/title": TITLE,
                         "workflows.argoproj.io/description": DESCRIPTION},
            labels_from={"contribflow.io/run-date": m.LabelValueFrom(expression="workflow.parameters['run-date']")},
        ),
        templates=[daily_dag(stages), *(steps.stage_template(s) for s in stages),
                   steps.stage_template(exit_stage)],
    )


workflow_template = build()

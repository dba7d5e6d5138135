"""WorkflowTemplate ``contribflow-apply-request``: an approved correction request applied (issue 28).

``contribflow apply REQUEST_ID --no-publish`` (as the migrator: PostgreSQL checks the request is
approved by a second person, unexpired and not applied yet, and records the application in the
transaction that runs it), then, when the correction changes the marts (a withdrawal, a
re-processing, a re-load), the request's day rebuilt, tested and published by the daily graph's own
dbt stages (write-audit-publish). A mutex per request keeps two submissions of one request apart;
a second run of an applied request changes nothing (apply reports it, and nothing is rebuilt).
"""

from __future__ import annotations

from hera.workflows import DAG, Parameter, Task, WorkflowTemplate
from hera.workflows import models as m

from contribflow.cluster import k8s
from contribflow.graph import APPLY_PARAMETERS, APPLY_STAGES, topological_order
from workflows import contribflow_daily, steps

ENTRYPOINT = "apply-request"
TITLE = "ContribFlow correction request"
DESCRIPTION = ("Applies one approved correction request (contribflow requests lists them; the approver is "
               "another person than the requester, as PostgreSQL enforces), then rebuilds and publishes the "
               "request's day when the correction changes the marts.")
LABELS = {**contribflow_daily.LABELS, "app.kubernetes.io/component": "apply-request"}


def dag() -> DAG:
    tasks = []
    for stage in topological_order(APPLY_STAGES):
        when = None
        if stage.when:
            upstream, output = stage.when.split(".")
            when = "{{tasks." + upstream + ".outputs.parameters." + output + "}} == true"
        tasks.append(Task(name=stage.name, template=stage.name, arguments=steps.task_arguments(stage) or None,
                          depends=" && ".join(stage.depends) or None, when=when))
    return DAG(name=ENTRYPOINT, tasks=tasks)


workflow_template = WorkflowTemplate(
    name=k8s.APPLY_TEMPLATE,
    labels=LABELS,
    annotations={"workflows.argoproj.io/title": TITLE, "workflows.argoproj.io/description": DESCRIPTION},
    entrypoint=ENTRYPOINT,
    arguments=[Parameter(name=name, description="the id of an approved request (contribflow requests --open)")
               for name in APPLY_PARAMETERS],
    service_account_name=k8s.SERVICE_ACCOUNT,
    security_context=steps.pod_security_context(),
    volumes=steps.volumes(),
    synchronization=m.Synchronization(mutexes=[m.Mutex(name=f"{k8s.APPLY_TEMPLATE}-{steps.param('request-id')}")]),
    pod_gc=m.PodGC(strategy="OnPodSuccess"),
    ttl_strategy=m.TTLStrategy(seconds_after_success=contribflow_daily.TTL_SECONDS_AFTER_SUCCESS,
                               seconds_after_failure=contribflow_daily.TTL_SECONDS_AFTER_FAILURE),
    active_deadline_seconds=contribflow_daily.ACTIVE_DEADLINE_SECONDS,
    workflow_metadata=m.WorkflowMetadata(
        labels=LABELS,
        annotations={"workflows.argoproj.io/title": TITLE, "workflows.argoproj.io/description": DESCRIPTION},
        labels_from={"contribflow.io/request-id": m.LabelValueFrom(expression="workflow.parameters['request-id']")},
    ),
    templates=[dag(), *(steps.stage_template(s) for s in APPLY_STAGES)],
)

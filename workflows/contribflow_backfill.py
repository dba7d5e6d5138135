"""WorkflowTemplate ``contribflow-backfill``: the daily run for every date of a range.

Each date becomes its own ``contribflow-daily`` Workflow (created by a resource template and
awaited until it ends), so every backfilled day is audited exactly like a scheduled one: its own
workflow uid as run id, its own exit handler, and the run-date mutex that keeps it from
overlapping a scheduled or manual run of the same date. ``parallelism`` bounds how many days run
at once; a failed day does not stop the others (``failFast: false``) but fails the backfill.
The workflow's ServiceAccount needs create/get/list/watch on ``workflows`` for this.
"""

from __future__ import annotations

import yaml
from hera.workflows import DAG, Container, Parameter, Resource, Task, WorkflowTemplate
from hera.workflows import models as m

from contribflow.cluster import k8s
from contribflow.cluster.imagemap import image_for
from contribflow.graph import PARAMETERS, Stage
from workflows import contribflow_daily as daily
from workflows import steps

PARALLELISM = 2
ENTRYPOINT = "backfill"
DATES_STAGE = Stage(name="dates", image="migrations", args=("--from", "{param:from}", "--to", "{param:to}"),
                    outputs=("dates", "days"))
"""Not a pipeline stage (it touches no database): only expands the range into a list of dates."""
PASSED_ON = tuple(name for name in PARAMETERS if name != "run-date")


def dates_template() -> Container:
    return Container(
        name=DATES_STAGE.name,
        image=image_for(DATES_STAGE.image).reference(),
        image_pull_policy="IfNotPresent",
        command=[steps.COMMAND],
        args=[DATES_STAGE.name, *steps.container_args(DATES_STAGE)],
        outputs=[Parameter(name=o, value_from=m.ValueFrom(path=f"{k8s.OUTPUTS_DIR}/{o}", default=""))
                 for o in DATES_STAGE.outputs],
        env=[m.EnvVar(name="CONTRIBFLOW_OUTPUTS_DIR", value=k8s.OUTPUTS_DIR)],
        resources=steps.resources(DATES_STAGE.image),
        security_context=steps.security_context(),
        volume_mounts=[m.VolumeMount(name=steps.TMP_VOLUME, mount_path="/tmp")],
    )


def daily_workflow_manifest() -> str:
    """The Workflow created for one date: the daily template with this date and the backfill's
    other parameters, labelled with the backfill that made it."""
    return yaml.safe_dump({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "generateName": f"{k8s.WORKFLOW_TEMPLATE}-{{{{inputs.parameters.run-date}}}}-",
            "labels": {**daily.LABELS, "contribflow.io/backfill": "{{workflow.name}}"},
        },
        "spec": {
            "workflowTemplateRef": {"name": k8s.WORKFLOW_TEMPLATE},
            "arguments": {"parameters": [
                {"name": "run-date", "value": "{{inputs.parameters.run-date}}"},
                *({"name": name, "value": steps.param(name)} for name in PASSED_ON),
            ]},
        },
    }, sort_keys=False)


def run_day_template() -> Resource:
    return Resource(
        name="run-day",
        inputs=[Parameter(name="run-date")],
        action="create",
        set_owner_reference=True,
        manifest=daily_workflow_manifest(),
        success_condition="status.phase == Succeeded",
        failure_condition="status.phase in (Failed, Error)",
        outputs=[Parameter(name="workflow-name", value_from=m.ValueFrom(json_path="{.metadata.name}"))],
    )


def build() -> WorkflowTemplate:
    return WorkflowTemplate(
        name=k8s.BACKFILL_TEMPLATE,
        labels={**daily.LABELS, "app.kubernetes.io/component": "backfill"},
        annotations={"workflows.argoproj.io/title": "ContribFlow backfill",
                     "workflows.argoproj.io/description":
                         f"Runs {k8s.WORKFLOW_TEMPLATE} once per date from `from` to `to` (included), "
                         f"at most {PARALLELISM} dates at a time; each date is its own audited run."},
        entrypoint=ENTRYPOINT,
        arguments=[
            Parameter(name="from", description="first date to load, YYYY-MM-DD"),
            Parameter(name="to", description="last date to load (included), YYYY-MM-DD"),
            *(Parameter(name=name, value=PARAMETERS[name], description=daily.PARAMETER_HELP.get(name))
              for name in PASSED_ON if name != "generate"),
            Parameter(name="generate", value="false",
                      description="false: load the files the source system dropped; true: synthesise them"),
        ],
        parallelism=PARALLELISM,
        service_account_name=k8s.SERVICE_ACCOUNT,
        security_context=steps.pod_security_context(),
        volumes=[m.Volume(name=steps.TMP_VOLUME, empty_dir=m.EmptyDirVolumeSource(size_limit=m.Quantity("64Mi")))],
        pod_gc=m.PodGC(strategy="OnPodSuccess"),
        ttl_strategy=m.TTLStrategy(seconds_after_success=daily.TTL_SECONDS_AFTER_SUCCESS,
                                   seconds_after_failure=daily.TTL_SECONDS_AFTER_FAILURE),
        workflow_metadata=m.WorkflowMetadata(
            labels={**daily.LABELS, "app.kubernetes.io/component": "backfill"},
            annotations={"workflows.argoproj.io/title": "ContribFlow backfill",
                         "workflows.argoproj.io/description": "One contribflow-daily run per date of the range."},
        ),
        templates=[
            DAG(name=ENTRYPOINT, fail_fast=False, tasks=[
                Task(name="dates", template=DATES_STAGE.name),
                Task(name="run-day", template="run-day", depends="dates",
                     with_param="{{tasks.dates.outputs.parameters.dates}}",
                     arguments=[Parameter(name="run-date", value="{{item}}")]),
            ]),
            dates_template(),
            run_day_template(),
        ],
    )


workflow_template = build()

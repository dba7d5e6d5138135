"""CronWorkflow ``contribflow-daily``: runs the ``contribflow-daily`` template every morning, its run
date taken from the scheduled time.

``workflow.scheduledTime`` is RFC 3339 (``2026-11-25T05:00:00Z``, in UTC); its first ten characters
are the run date. The schedule is early morning in Europe/Luxembourg, so the UTC date and the
local date are the same day whatever the daylight-saving offset. Missed days are not caught up
(Argo has no catch-up): ``contribflow-backfill`` runs them.
"""

from __future__ import annotations

from hera.workflows import CronWorkflow, Parameter
from hera.workflows import models as m

from contribflow.cluster import k8s
from workflows import contribflow_daily as daily

SCHEDULES = ["0 6 * * *"]
TIMEZONE = "Europe/Luxembourg"
RUN_DATE_FROM_SCHEDULE = "{{=sprig.trunc(10, workflow.scheduledTime)}}"
STARTING_DEADLINE_SECONDS = 3600
"""A run the controller could not start within an hour of its time (controller down) is skipped
and left to a backfill, rather than started late and overlapping the next day."""


def build() -> CronWorkflow:
    return CronWorkflow(
        name=k8s.CRON_WORKFLOW,
        labels=daily.LABELS,
        annotations={"workflows.argoproj.io/title": "ContribFlow daily load (schedule)",
                     "workflows.argoproj.io/description":
                         f"Every day at 06:00 {TIMEZONE}: submits WorkflowTemplate {k8s.WORKFLOW_TEMPLATE} "
                         "with run-date = the scheduled date. Missed days: submit contribflow-backfill."},
        schedules=SCHEDULES,
        timezone=TIMEZONE,
        concurrency_policy="Forbid",
        starting_deadline_seconds=STARTING_DEADLINE_SECONDS,
        successful_jobs_history_limit=7,
        failed_jobs_history_limit=14,
        workflow_template_ref=m.WorkflowTemplateRef(name=k8s.WORKFLOW_TEMPLATE),
        arguments=[Parameter(name="run-date", value=RUN_DATE_FROM_SCHEDULE)],
    )


cron_workflow = build()

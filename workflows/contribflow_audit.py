"""CronWorkflow ``contribflow-audit``: once a week, the auditor's checks of the warehouse's record.

- ``verify`` (``contribflow verify``, contribflow/audit/chain.py) walks the hash chain of the audit
  trail as the auditor role, which reads ``meta`` and writes nothing. It exits 1 when a record was
  changed, deleted or inserted around the chain: the step fails, so the workflow fails (the Argo UI
  shows it red, ``contribflow_runs``-style alerting sees it) and its gauge
  ``contribflow_audit_trail_intact`` says 0 (1 when intact). The name is fixed: the alert rule is
  written against it. A verify that could not run at all also reports 0 (not proven intact).
- ``reproduce --check-published`` (contribflow/warehouse/reproduce.py) recomputes the content hash of
  each published mart, as the auditor, and compares it with the latest publication's record: a row
  changed behind the pipeline's back (even by a superuser) fails the step, naming the table.
- ``CHECKS`` is where further weekly checks go, each a stage of its own.

The checks run side by side; any failing one fails the run.
"""

from __future__ import annotations

from hera.workflows import DAG, CronWorkflow, Task
from hera.workflows import models as m

from contribflow.cluster import k8s
from contribflow.graph import Stage
from workflows import contribflow_daily as daily
from workflows import metrics, steps

SCHEDULES = ["0 7 * * 1"]
"""Mondays 07:00, after the daily run of the same morning."""
TIMEZONE = "Europe/Luxembourg"
ENTRYPOINT = "audit"
INTACT = "audit_trail_intact"
"""verify's output parameter, and (prefixed) the gauge the alert reads: 1 intact, 0 broken."""
LABELS = {**daily.LABELS, "app.kubernetes.io/component": "audit"}

VERIFY = Stage(name="verify", image="migrations", args=(),
               outputs=(INTACT, "audit_chain_entries", "audit_chain_seq", "audit_chain_head"),
               db_role="auditor")

CHECK_PUBLISHED = Stage(name="reproduce", image="dbt", args=("--check-published",), db_role="auditor")
"""Only reads (marts and meta.publication_output), so the auditor runs it; no dbt, no pseudonym key."""

CHECKS: list[Stage] = [VERIFY, CHECK_PUBLISHED]


def check_template(stage: Stage):
    template = steps.stage_template(stage)
    if INTACT in stage.outputs:
        assert template.metrics is not None
        template.metrics.prometheus.append(metrics.gauge(
            INTACT, "1 when the weekly contribflow verify found the audit trail's hash chain intact, 0 when "
                    "it found a record changed, deleted or inserted around it (or could not run)",
            "{{outputs.parameters." + INTACT + "}}"))
    return template


def build(checks: list[Stage] = CHECKS) -> CronWorkflow:
    return CronWorkflow(
        name=k8s.AUDIT_CRON_WORKFLOW,
        labels=LABELS,
        annotations={"workflows.argoproj.io/title": "ContribFlow weekly audit",
                     "workflows.argoproj.io/description":
                         "Every week, as the auditor role: contribflow verify (the audit trail's hash chain) and "
                         "contribflow reproduce --check-published (the published marts against their "
                         "publication's record); fails when a record or a published row was changed behind "
                         "the pipeline's back."},
        schedules=SCHEDULES,
        timezone=TIMEZONE,
        concurrency_policy="Forbid",
        starting_deadline_seconds=6 * 3600,
        successful_jobs_history_limit=4,
        failed_jobs_history_limit=8,
        entrypoint=ENTRYPOINT,
        service_account_name=k8s.SERVICE_ACCOUNT,
        security_context=steps.pod_security_context(),
        volumes=[v for v in steps.volumes() if v.name == steps.TMP_VOLUME],
        pod_gc=m.PodGC(strategy="OnPodSuccess"),
        ttl_strategy=m.TTLStrategy(seconds_after_success=daily.TTL_SECONDS_AFTER_SUCCESS,
                                   seconds_after_failure=daily.TTL_SECONDS_AFTER_FAILURE),
        active_deadline_seconds=2 * 3600,
        workflow_metadata=m.WorkflowMetadata(labels=LABELS),
        templates=[DAG(name=ENTRYPOINT, tasks=[Task(name=s.name, template=s.name) for s in checks]),
                   *(check_template(s) for s in checks)],
    )


cron_workflow = build()

"""Prometheus metrics the Argo controller emits for every run (``metrics.prometheus``).

Named per Prometheus conventions (``contribflow_`` prefix, snake_case, ``_seconds`` for durations,
``_total`` for counters), labelled with low-cardinality values only: the step, the outcome, and the
run date where a value is per day (one series per date, never per run: no run id or pod name).

Workflow level (emitted when a run ends):
  contribflow_run_duration_seconds{status}          gauge, the run's duration
  contribflow_runs_total{status}                    counter, runs by outcome (Succeeded/Failed/Error)
Template level (emitted when a step's node ends):
  contribflow_step_duration_seconds{step,status}    gauge, the last duration of each step
  contribflow_step_failures_total{step}             counter, failed step attempts
  contribflow_rows_loaded{run_date}                 gauge, ingest's rows loaded into raw
  contribflow_rows_rejected{run_date}               gauge, ingest's rows quarantined
  contribflow_dbt_tests_failed{run_date}            gauge, dbt-test's failed tests
  contribflow_late_files_total                      counter, pick failing because the file is late

Their values come from the steps' output parameters (contribflow/step.py writes them); a value an
attempt did not write is empty, and the controller skips that sample.
"""

from __future__ import annotations

from hera.workflows import models as m

from contribflow.graph import Stage

PREFIX = "contribflow_"
RUN_DATE = "{{workflow.parameters.run-date}}"


def _label(key: str, value: str) -> m.MetricLabel:
    return m.MetricLabel(key=key, value=value)


def gauge(name: str, help_text: str, value: str, labels: dict[str, str] | None = None,
          when: str | None = None) -> m.Prometheus:
    return m.Prometheus(name=PREFIX + name, help=help_text, when=when,
                        labels=[_label(k, v) for k, v in (labels or {}).items()] or None,
                        gauge=m.Gauge(value=value, realtime=False))


def counter(name: str, help_text: str, labels: dict[str, str] | None = None,
            when: str | None = None) -> m.Prometheus:
    return m.Prometheus(name=PREFIX + name, help=help_text, when=when,
                        labels=[_label(k, v) for k, v in (labels or {}).items()] or None,
                        counter=m.Counter(value="1"))


def workflow_metrics() -> m.Metrics:
    return m.Metrics(prometheus=[
        gauge("run_duration_seconds", "Duration of the last ContribFlow daily run, by outcome",
              "{{workflow.duration}}", {"status": "{{workflow.status}}"}),
        counter("runs_total", "ContribFlow daily runs, by outcome", {"status": "{{workflow.status}}"}),
    ])


def _output(name: str) -> str:
    return "{{outputs.parameters." + name + "}}"


def stage_metrics(stage: Stage) -> m.Metrics:
    metrics = [
        gauge("step_duration_seconds", "Duration of the last attempt of a ContribFlow step",
              "{{duration}}", {"step": stage.name, "status": "{{status}}"}),
        counter("step_failures_total", "Failed attempts of a ContribFlow step", {"step": stage.name},
                when="{{status}} == Failed"),
    ]
    if "rows_loaded" in stage.outputs:
        metrics.append(gauge("rows_loaded", "Rows of the run date's file loaded into raw.contributions",
                             _output("rows_loaded"), {"run_date": RUN_DATE}, when="{{status}} == Succeeded"))
    if "rows_rejected" in stage.outputs:
        metrics.append(gauge("rows_rejected", "Rows of the run date's file quarantined by validation",
                             _output("rows_rejected"), {"run_date": RUN_DATE}))
    if "tests_failed" in stage.outputs:
        metrics.append(gauge("dbt_tests_failed", "dbt tests that failed against the run date's build",
                             _output("tests_failed"), {"run_date": RUN_DATE}))
    if "error_class" in stage.outputs:
        metrics.append(counter("late_files_total", "Source files that missed their deadline (pick: late)",
                               when="{{status}} == Failed && " + _output("error_class") + " == late"))
    return m.Metrics(prometheus=metrics)

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
  contribflow_rows_in{run_date}                     gauge, ingest's rows read from the file
  contribflow_rows_quarantined{run_date}            gauge, ingest's rows quarantined (= rows_rejected)
Workflow level, realtime (updated while the run is running, frozen when it ends):
  contribflow_run_elapsed_seconds{run_date}         gauge, how long the run has been running
The run's outcome and SLA, from finish (the exit handler; contribflow/finish.py), when it ends:
  contribflow_run_succeeded{run_date}               gauge, 1 the run succeeded, 0 it did not
  contribflow_sla_met{run_date}                     gauge, 1 the run date's SLA was met, 0 missed
  contribflow_file_seconds_late{run_date}           gauge, how late the file was (0: on time)
  contribflow_quarantine_ratio{run_date}            gauge, share of the file's rows quarantined (0-1)
  contribflow_volume_warning{run_date}              gauge, 1 ingest's volume check warned (low/high/empty)
  contribflow_run_finished_timestamp_seconds{run_date}  gauge, when finish ran (Unix time)
  contribflow_publication_age_seconds               gauge, age of the latest publication of the marts
  contribflow_marts_published_timestamp_seconds     gauge, when the marts were last published (Unix time)
  contribflow_marts_published_run_date_seconds      gauge, the latest run date published (its 00:00 UTC)
  contribflow_file_latest_run_date_seconds          gauge, the latest run date whose file was loaded
The last three carry no run date: each run overwrites them with what the warehouse says, so the
alerts (helm/contribflow/templates/prometheusrule.yaml) compare them with ``time()``.

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
          when: str | None = None, realtime: bool = False) -> m.Prometheus:
    return m.Prometheus(name=PREFIX + name, help=help_text, when=when,
                        labels=[_label(k, v) for k, v in (labels or {}).items()] or None,
                        gauge=m.Gauge(value=value, realtime=realtime))


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
        gauge("run_elapsed_seconds", "Seconds the ContribFlow run of a date has been running (realtime)",
              "{{workflow.duration}}", {"run_date": RUN_DATE}, realtime=True),
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
    if "rows_in" in stage.outputs:
        metrics.append(gauge("rows_in", "Rows read from the run date's file",
                             _output("rows_in"), {"run_date": RUN_DATE}))
    if "rows_rejected" in stage.outputs:
        metrics.append(gauge("rows_rejected", "Rows of the run date's file quarantined by validation",
                             _output("rows_rejected"), {"run_date": RUN_DATE}))
        metrics.append(gauge("rows_quarantined", "Rows of the run date's file quarantined by validation",
                             _output("rows_rejected"), {"run_date": RUN_DATE}))
    if "tests_failed" in stage.outputs:
        metrics.append(gauge("dbt_tests_failed", "dbt tests that failed against the run date's build",
                             _output("tests_failed"), {"run_date": RUN_DATE}))
    if "error_class" in stage.outputs:
        metrics.append(counter("late_files_total", "Source files that missed their deadline (pick: late)",
                               when="{{status}} == Failed && " + _output("error_class") + " == late"))
    metrics += [gauge(name, help_text, _output(output), labels)
                for name, output, help_text, labels in SLA_METRICS if output in stage.outputs]
    return m.Metrics(prometheus=metrics)


PER_DATE = {"run_date": RUN_DATE}
SLA_METRICS: tuple[tuple[str, str, str, dict[str, str]], ...] = (
    # (metric, finish's output, help, labels)
    ("run_succeeded", "run_succeeded", "1 when the ContribFlow run of the date succeeded, else 0", PER_DATE),
    ("sla_met", "sla_met", "1 when the run date's SLA was met (file on time, marts published by their "
                           "deadline, quarantine under the limit, run succeeded), else 0", PER_DATE),
    ("file_seconds_late", "file_seconds_late", "Seconds the run date's file arrived after it was due "
                                               "(0: on time)", PER_DATE),
    ("quarantine_ratio", "quarantine_ratio", "Share of the run date's rows quarantined (0 to 1)", PER_DATE),
    ("volume_warning", "volume_warning", "1 when ingest's volume check warned about the run date's row "
                                         "count (low, high or empty), else 0", PER_DATE),
    ("run_finished_timestamp_seconds", "run_finished_timestamp_seconds",
     "When the run of the date ended (Unix time)", PER_DATE),
    ("publication_age_seconds", "publication_age_seconds",
     "Age of the latest publication of the marts when the last run ended", {}),
    ("marts_published_timestamp_seconds", "marts_published_timestamp_seconds",
     "When the marts were last published (Unix time)", {}),
    ("marts_published_run_date_seconds", "marts_published_run_date_seconds",
     "The latest run date whose marts are published (its 00:00 UTC, Unix time)", {}),
    ("file_latest_run_date_seconds", "file_latest_run_date_seconds",
     "The latest run date whose file was loaded (its 00:00 UTC, Unix time)", {}),
)
"""The gauges of finish's outputs (contribflow/finish.py), emitted when the exit handler ends."""

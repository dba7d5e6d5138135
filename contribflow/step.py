"""The step record: meta.etl_run, one row per step of every run, RUNNING at start, then SUCCESS or
FAILED; and the listeners told when a step starts and ends.

The row is written on its own autocommit connection, so it survives the rollback of the step's
work, and a process killed mid-step leaves it RUNNING (reported as stale by ``contribflow audit``).

Cross-cutting concerns (OpenLineage, contribflow/lineage.py) are listeners, as dlt's tracking is:
each stage declares on its step the datasets it reads and writes (``reads``, ``writes``) and,
for dbt, where its artifacts are; a listener reads those and knows no stage by name. The CLI
registers the listeners (``add_listener``); a listener's failure never fails a step.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from psycopg.types.json import Jsonb

from contribflow import logs, redact
from contribflow.db import connect, transient
from contribflow.settings import Settings

log = logs.get("step")
COUNTERS = ("rows_in", "rows_loaded", "rows_rejected")


@dataclass(frozen=True)
class Check:
    """One data-quality check of a dataset, as the step that ran it saw it."""

    name: str
    success: bool
    column: str | None = None
    actual: str | None = None
    expected: str | None = None


@dataclass
class Dataset:
    """A file of the landing folder or a warehouse relation (``schema.table``) a step reads or writes."""

    name: str
    kind: str = "table"
    """``file`` (the landing folder) or ``table`` (the warehouse)."""
    rows: int | None = None
    """Rows written, once the step knows them."""
    checks: Callable[[], list[Check]] | None = None
    """The data-quality checks of this dataset, asked for when the step ends (only by a listener
    that wants them: they may query the warehouse)."""


class StepListener(Protocol):
    def step_started(self, step: StepRun) -> None: ...

    def step_finished(self, step: StepRun) -> None: ...


_LISTENERS: list[StepListener] = []


def add_listener(listener: StepListener) -> None:
    """Tell ``listener`` of every step this process runs from now on (once, however often added)."""
    if listener not in _LISTENERS:
        _LISTENERS.append(listener)


def remove_listener(listener: StepListener) -> None:
    if listener in _LISTENERS:
        _LISTENERS.remove(listener)


def _tell(event: str, step: StepRun) -> None:
    for listener in list(_LISTENERS):
        try:
            getattr(listener, event)(step)
        except Exception as exc:  # a listener never fails a step
            log.warning(f"{step.step}: listener {type(listener).__name__}.{event} failed: {exc}")


@dataclass
class StepRun:
    """What a step reports about itself; filled in while it runs."""

    settings: Settings
    step: str
    logical_date: dt.date | None
    source_file: str | None = None
    rows_in: int | None = None
    rows_loaded: int | None = None
    rows_rejected: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    status: str = "RUNNING"
    error: str | None = None
    error_class: str | None = None
    """'late' (the file missed its deadline), 'waiting' (not arrived yet: retried), 'transient'."""
    row_id: int | None = None
    reads: list[Dataset] = field(default_factory=list)
    """The datasets the stage reads (its inputs for listeners)."""
    writes: list[Dataset] = field(default_factory=list)
    """The datasets the stage writes."""
    artifacts: Path | None = None
    """dbt's target folder (manifest.json, run_results.json) of a dbt step."""
    listened: dict[str, Any] = field(default_factory=dict)
    """Each listener's own state for this step (e.g. lineage's run id), by listener."""
    _conn: Any = None
    _t0: float = 0.0

    def __enter__(self) -> StepRun:
        self._t0 = time.monotonic()
        self._conn = connect(self.settings, autocommit=True)
        s = self.settings
        self.row_id = self._conn.execute(
            """INSERT INTO meta.etl_run (run_id, step, logical_date, status, ran_on,
                                         workflow_name, task_name, pod_name)
               VALUES (%s, %s, %s, 'RUNNING', %s, %s, %s, %s) RETURNING id""",
            (s.run_id, self.step, self.logical_date, s.where,
             s.workflow_name or None, s.task_name or None, s.pod_name or None),
        ).fetchone()[0]
        log.info(f"{self.step}: started", extra={logs.LIFECYCLE: True, "event": "step_started",
                                                 "logical_date": str(self.logical_date)})
        _tell("step_started", self)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.status = "SUCCESS"
        else:
            self.status = "FAILED"
            self.error = redact.error_text(exc)  # a database error without the values it quotes
            self.error_class = getattr(exc, "error_class", None) or (
                "transient" if transient(exc) else None)
        try:
            self._conn.execute(
                """UPDATE meta.etl_run
                      SET status = %s, finished_at = clock_timestamp(), duration_s = %s,
                          rows_in = %s, rows_loaded = %s, rows_rejected = %s,
                          source_file = %s, error = %s, details = %s, error_class = %s
                    WHERE id = %s""",
                (self.status, round(time.monotonic() - self._t0, 3), self.rows_in,
                 self.rows_loaded, self.rows_rejected, self.source_file, self.error,
                 Jsonb(self.details), self.error_class, self.row_id),
            )
        finally:
            self._conn.close()
            write_outputs(self.settings, self.outputs())
            log.log(logging.INFO if self.status == "SUCCESS" else logging.ERROR, f"{self.step}: {self.status}"
                    + (f": {self.error}" if self.error else ""),
                    extra={logs.LIFECYCLE: True, "event": "step_finished", "status": self.status,
                           "duration_s": round(time.monotonic() - self._t0, 3),
                           "error_class": self.error_class, **logs.fields(self.outputs())})
            _tell("step_finished", self)

    def outputs(self) -> dict[str, str]:
        """The values Argo shows as output parameters (and the local runner prints)."""
        out = {name: str(getattr(self, name)) for name in COUNTERS if getattr(self, name) is not None}
        out.update({k: str(v) for k, v in self.details.items() if isinstance(v, (int, str))})
        if self.error_class:
            out["error_class"] = self.error_class  # pick's 'late' feeds the Argo late-files counter
        return out


def write_outputs(settings: Settings, values: dict[str, str]) -> None:
    """One file per value under CONTRIBFLOW_OUTPUTS_DIR, where Argo reads output parameters."""
    if settings.outputs_dir is None:
        return
    settings.outputs_dir.mkdir(parents=True, exist_ok=True)
    for name, value in values.items():
        (settings.outputs_dir / name).write_text(value, encoding="utf-8")
    (settings.outputs_dir / "outputs.json").write_text(json.dumps(values, sort_keys=True))

"""finish: the exit handler. Records the outcome of the whole run as its own meta.etl_run row."""

from __future__ import annotations

import datetime as dt

import psycopg

from contribflow.db import connect
from contribflow.errors import StageError
from contribflow.settings import Settings
from contribflow.step import StepRun
from contribflow.warehouse import build_slot

SUCCEEDED = "Succeeded"


def run(settings: Settings, day: dt.date, status: str) -> StepRun:
    """``status`` is Argo's ``{{workflow.status}}``: Succeeded, Failed or Error."""
    with connect(settings, autocommit=True) as conn:
        steps = conn.execute(
            """SELECT DISTINCT ON (step) step, status, error FROM meta.etl_run
                WHERE run_id = %s AND step <> 'finish' ORDER BY step, id DESC""",
            (settings.run_id,),
        ).fetchall()
    not_ok = sorted(step for step, state, _ in steps if state != "SUCCESS")
    errors = [f"{step}: {error}" for step, state, error in steps if state != "SUCCESS" and error]
    try:  # a build this run left open (killed, retries exhausted) must not hold the slot
        abandoned = build_slot.abandon_open(settings)
    except psycopg.errors.UndefinedTable:  # init-db never ran
        abandoned = 0
    with StepRun(settings, "finish", day) as step:
        step.details = {"workflow_status": status, "steps": len(steps),
                        "steps_not_successful": ",".join(not_ok), "builds_abandoned": abandoned}
        if status != SUCCEEDED or not_ok:
            raise StageError(
                f"run {settings.run_id} for {day} ended {status}"
                + (f"; steps not successful: {', '.join(not_ok)}" if not_ok else "")
                + (f" ({'; '.join(errors)})"[:2000] if errors else "")
            )
    return step

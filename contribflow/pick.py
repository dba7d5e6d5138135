"""pick: the source file for the run's logical date, never "the newest file".

A file that has not arrived yet is not an error like the others: pick waits for it up to
``CONTRIBFLOW_LATE_DEADLINE_S`` seconds, counted from the run's first pick attempt (recorded in
meta.etl_run, so the count survives Argo's retries of the pod). Before the deadline an attempt
exits 76 (``FileNotYetArrived``), which the Argo retryStrategy retries with backoff; ``--wait``
polls in-process instead (``contribflow run``). After it, pick fails with "file for D is late",
recorded with error_class 'late'.
"""

from __future__ import annotations

import datetime as dt
import time

from contribflow import logs
from contribflow.audit import StepRun
from contribflow.contract import file_name
from contribflow.db import connect
from contribflow.errors import FileLate, FileNotYetArrived
from contribflow.settings import Settings

log = logs.get("pick")


def _waited_s(settings: Settings) -> float:
    """Seconds since this run first looked for its file (this attempt's row included)."""
    with connect(settings, autocommit=True) as conn:
        return float(conn.execute(
            """SELECT extract(epoch FROM clock_timestamp() - min(started_at)) FROM meta.etl_run
                WHERE run_id = %s AND step = 'pick'""", (settings.run_id,)).fetchone()[0] or 0.0)


def run(settings: Settings, day: dt.date, wait: bool = False) -> StepRun:
    with StepRun(settings, "pick", day) as step:
        path = settings.landing_dir / file_name(day)
        step.source_file = path.name
        deadline = settings.late_deadline_s
        waited = _waited_s(settings)
        said = False
        while not path.is_file() and wait and waited < deadline:
            if not said:
                log.info(f"pick: no {path.name} yet; waiting up to {deadline - waited:.0f}s more "
                         f"(polling every {settings.late_poll_s:g}s)")
                said = True
            time.sleep(max(0.0, min(settings.late_poll_s, deadline - waited)))
            waited = _waited_s(settings)
        if not path.is_file():
            nearby = sorted(p.name for p in settings.landing_dir.glob("contributions_*.csv"))[-3:]
            hint = f"; latest files there: {', '.join(nearby)}" if nearby else "; the folder has no source files"
            step.details = {"waited_s": round(waited), "deadline_s": deadline}
            if waited < deadline:
                raise FileNotYetArrived(
                    f"file for {day.isoformat()} has not arrived yet: expected {path}; waited {waited:.0f}s "
                    f"of {deadline}s (CONTRIBFLOW_LATE_DEADLINE_S), retrying")
            raise FileLate(f"file for {day.isoformat()} is late: expected {path}, waited {waited:.0f}s "
                           f"(deadline CONTRIBFLOW_LATE_DEADLINE_S={deadline}s){hint}")
        step.details = {"file": str(path), "waited_s": round(waited)}
    return step

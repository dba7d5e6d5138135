"""pick: the source file for the run's logical date, never "the newest file"."""

from __future__ import annotations

import datetime as dt

from contribflow.audit import StepRun
from contribflow.contract import file_name
from contribflow.errors import StageError
from contribflow.settings import Settings


def run(settings: Settings, day: dt.date) -> StepRun:
    with StepRun(settings, "pick", day) as step:
        path = settings.landing_dir / file_name(day)
        step.source_file = path.name
        if not path.is_file():
            nearby = sorted(p.name for p in settings.landing_dir.glob("contributions_*.csv"))[-3:]
            hint = f"; latest files there: {', '.join(nearby)}" if nearby else "; the folder has no source files"
            raise StageError(f"no source file for {day.isoformat()}: expected {path}{hint}")
        step.details = {"file": str(path)}
    return step

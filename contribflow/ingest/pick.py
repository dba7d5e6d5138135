"""pick: the source file for the run's logical date, never "the newest file", once it is complete.

A file that has not arrived yet, or is there but not complete (contribflow/ingest/completion.py: no
control file or manifest yet, or still changing within the stability window), is not an error like
the others: pick waits for it up to ``CONTRIBFLOW_LATE_DEADLINE_S`` seconds, counted from the run's
first pick attempt (recorded in meta.etl_run, so the count survives Argo's retries of the pod).
Before the deadline an attempt exits 76 (``FileNotYetArrived``), which the Argo retryStrategy
retries with backoff; ``--wait`` polls in-process instead (``contribflow run``). After it, pick
fails with "file for D is late", recorded with error_class 'late'. The stability window is watched
within each attempt, whatever the deadline.

What is at the file's name must be a regular file: a folder, a FIFO or a symbolic link (which could
point anywhere, or at another day's file) is refused at once.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import time
from pathlib import Path

from contribflow import logs
from contribflow.contract import file_name
from contribflow.db import connect
from contribflow.errors import FileLate, FileNotYetArrived, FileNotYetComplete, FileRefused
from contribflow.ingest import completion
from contribflow.settings import Settings
from contribflow.step import Dataset, StepRun

log = logs.get("pick")


def _waited_s(settings: Settings) -> float:
    """Seconds since this run first looked for its file (this attempt's row included)."""
    with connect(settings, autocommit=True) as conn:
        return float(conn.execute(
            """SELECT extract(epoch FROM clock_timestamp() - min(started_at)) FROM meta.etl_run
                WHERE run_id = %s AND step = 'pick'""", (settings.run_id,)).fetchone()[0] or 0.0)


def _kind(mode: int) -> str:
    return ("a symbolic link" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode)
            else "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device")


def _look(settings: Settings, path: Path) -> completion.Verdict | None:
    """None while nothing is at ``path``; else whether the file there is complete."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as exc:  # e.g. a landing folder this user may not search
        raise FileRefused(f"{path} cannot be looked at: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise FileRefused(f"{path} is {_kind(st.st_mode)}, not a regular file: a source file must be a plain "
                          "file in the landing folder (a link could point anywhere, or at another day's file)")
    return completion.assess(settings, path)


def _hint(landing: Path, expected: str) -> str:
    """What is in the landing folder instead: near-misses of the name, orphan signals, latest files."""
    try:
        names = [p.name for p in landing.iterdir()]
    except OSError:
        return "; the landing folder cannot be listed (does it exist?)"
    near = [n for n in names if n != expected and n.strip().lower() == expected]
    signals = [n for n in names if n.startswith(expected) and n != expected and not n.startswith(".")]
    latest = sorted(n for n in names if n.startswith("contributions_") and n.endswith(".csv"))[-3:]
    hint = ""
    if near:
        hint += f"; {', '.join(repr(n) for n in near)} is there, which is not the contract's name (exact, lower case)"
    if signals:
        hint += f"; {', '.join(signals)} is there but not the file itself"
    return hint + (f"; latest files there: {', '.join(latest)}" if latest else "; the folder has no source files")


def run(settings: Settings, day: dt.date, wait: bool = False) -> StepRun:
    with StepRun(settings, "pick", day) as step:
        path = settings.landing_dir / file_name(day)
        step.source_file = path.name
        step.reads.append(Dataset(path.name, kind="file"))
        deadline = settings.late_deadline_s
        waited = _waited_s(settings)
        said = ""
        while True:
            verdict = _look(settings, path)
            waited = _waited_s(settings) if verdict is not None and verdict.watched_s else waited
            if (verdict is not None and verdict.complete) or not wait or waited >= deadline:
                break
            state = "no file yet" if verdict is None else f"not complete: {verdict.reason}"
            if state != said:
                log.info(f"pick: {path.name}: {state}; waiting up to {deadline - waited:.0f}s more "
                         f"(polling every {settings.late_poll_s:g}s)")
                said = state
            if verdict is None or not verdict.watched_s:
                time.sleep(max(0.0, min(settings.late_poll_s, deadline - waited)))
            waited = _waited_s(settings)
        step.details = {"waited_s": round(waited), "deadline_s": deadline}
        if verdict is None:
            hint = _hint(settings.landing_dir, path.name)
            if waited < deadline:
                raise FileNotYetArrived(
                    f"file for {day.isoformat()} has not arrived yet: expected {path}; waited {waited:.0f}s "
                    f"of {deadline}s (CONTRIBFLOW_LATE_DEADLINE_S), retrying")
            raise FileLate(f"file for {day.isoformat()} is late: expected {path}, waited {waited:.0f}s "
                           f"(deadline CONTRIBFLOW_LATE_DEADLINE_S={deadline}s){hint}")
        if not verdict.complete:
            step.details["incomplete"] = verdict.reason
            if waited < deadline:
                raise FileNotYetComplete(
                    f"file for {day.isoformat()} is not complete yet: {path.name}: {verdict.reason}; waited "
                    f"{waited:.0f}s of {deadline}s (CONTRIBFLOW_LATE_DEADLINE_S), retrying")
            raise FileLate(f"file for {day.isoformat()} is late: {path} is there but not complete: "
                           f"{verdict.reason}; waited {waited:.0f}s (deadline CONTRIBFLOW_LATE_DEADLINE_S="
                           f"{deadline}s, CONTRIBFLOW_COMPLETION={settings.completion})")
        step.details = {"file": str(path), "waited_s": round(waited), "completion": verdict.how}
    return step

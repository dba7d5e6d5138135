"""``contribflow ingest``, its light front: the source file resolved and fingerprinted, and the
ledger asked whether it was loaded already, before pandas, pandera or numpy are imported (~1 s of a
process's start-up). A file already loaded, or refused outright (outside the landing folder,
misnamed, empty, not UTF-8, not matching its manifest), is answered here; any other is handed, with
its fingerprint, to contribflow/ingest/load.py, which looks the ledger up again under the raw-writer
lock, and commits only if the file did not change while it was read (completion.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from contribflow.db import connect
from contribflow.errors import FileRefused
from contribflow.ingest.ledger import answer_earlier, earlier_load, file_checks, record, report_earlier
from contribflow.ingest.source import checked_fingerprint, resolve_source
from contribflow.settings import Settings
from contribflow.step import Dataset, StepRun

RAW = "raw.contributions"
QUARANTINE = "raw.contributions_quarantine"


def run(settings: Settings, day: dt.date, path: Path) -> StepRun:
    """``contribflow ingest``: a known or refused file answered without the data libraries."""
    source = resolve_source(settings, day, path)  # an argument: refused before any work
    with StepRun(settings, "ingest", day) as step:
        step.source_file = path.name
        step.reads.append(Dataset(source.name, kind="file", checks=lambda: file_checks(step)))
        raw, quarantine = Dataset(RAW), Dataset(QUARANTINE)
        step.writes += [raw, quarantine]
        try:
            _ingest(step, settings, day, source)
        finally:  # a rejected file's counts too
            raw.rows, quarantine.rows = step.rows_loaded, step.rows_rejected
    return step


def _ingest(step: StepRun, settings: Settings, day: dt.date, source: Path) -> None:
    facts, before_commit = checked_fingerprint(settings, source)
    with connect(settings) as conn:
        if facts.problem:  # as contribflow.ingest.load records it
            record(conn, settings, day, source.name, facts, None, "REFUSED", facts.problem)
            conn.commit()
            raise FileRefused(facts.problem)
        earlier = earlier_load(conn, facts.sha256, day, source.name)
        if earlier is not None:
            try:
                answer_earlier(conn, settings, day, source.name, facts, earlier)
            except FileRefused as exc:
                conn.rollback()
                record(conn, settings, day, source.name, facts, None, "REFUSED", str(exc))
                conn.commit()
                raise
            conn.commit()
    if earlier is not None:
        report_earlier(step, day, source.name, earlier)
        return
    from contribflow.ingest import load as ingest  # numpy, pandas, pandera: only for a file to load

    ingest.load_into(step, settings, day, source, facts, before_commit)

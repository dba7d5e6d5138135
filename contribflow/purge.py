"""purge-quarantine: the end of the quarantine's retention, for the raw taxpayer ids it holds.

raw.contributions is the record of what arrived and is kept for the legal retention of tax
records: it is append-only and nothing here touches it. The quarantine is different: its raw text
(and the failing values in meta.data_quality_issue) hold raw taxpayer identifiers of rows that
never became records, kept only so that someone can correct and re-load them. Once that window has
passed they are personal data without a purpose (GDPR art. 5(1)(e)), so this removes the
quarantined rows of files dated before a cut-off, and masks the failing identifier values recorded
for those files. What was checked, which rule failed and on which line all stay in the audit trail.

It runs as the warehouse's owner (the migrator login, or the local embedded server), never as a
pipeline step: the loader may only add to the quarantine.
"""

from __future__ import annotations

import datetime as dt

from contribflow.audit import StepRun
from contribflow.contract import BASE
from contribflow.db import connect
from contribflow.settings import Settings

MASK = "[purged]"
IDENTIFIER_COLUMNS = tuple(c.name for c in BASE.columns if c.type == "identifier")


def run(settings: Settings, before: dt.date) -> StepRun:
    with StepRun(settings, "purge-quarantine", None) as step, connect(settings) as conn, conn.transaction():
        files = conn.execute(
            "SELECT DISTINCT source_sha256 FROM raw.contributions_quarantine WHERE file_date < %s",
            (before,)).fetchall()
        removed = conn.execute("DELETE FROM raw.contributions_quarantine WHERE file_date < %s",
                               (before,)).rowcount
        masked = conn.execute(
            """UPDATE meta.data_quality_issue SET failing_value = %s
                WHERE source_sha256 IN (SELECT sha256 FROM meta.source_file WHERE file_date < %s)
                  AND column_name = ANY(%s) AND failing_value IS DISTINCT FROM %s""",
            (MASK, before, list(IDENTIFIER_COLUMNS), MASK)).rowcount
        step.rows_in = removed
        step.details = {"before": before.isoformat(), "files": len(files),
                        "quarantined_rows_removed": removed, "identifier_values_masked": masked}
    return step

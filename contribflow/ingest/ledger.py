"""The ledger: meta.source_file (what became of every file each run was given) and
meta.data_quality_issue (each issue once per file content), written only here.

The ledger's counts add up for every outcome: ``rows_in = rows_loaded + rows_already_in_raw +
rows_rejected + rows_withheld`` (a CHECK of migration 0011). ``rows_loaded`` are the rows this
entry's run inserted into raw, ``rows_already_in_raw`` those raw held already, ``rows_rejected``
those in the quarantine, ``rows_withheld`` the valid rows a REJECTED file did not load.

A re-sent export: a file whose content (sha256) was LOADED for another date (or under another
name). Its rows are not loaded again for this date: they are in raw already, as the arrivals of
the date they were first sent for, and loading them again would make that old state look like a
new arrival of this date (a status that later files changed would come back). It is recorded for
its own date as DUPLICATE, with a warning (meta.data_quality_issue ``resent_file``), or refused
(``CONTRIBFLOW_RESENT_FILE=refuse``: REFUSED, exit 1).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg

from contribflow.db import connect
from contribflow.errors import FileRefused
from contribflow.ingest.source import FileFacts
from contribflow.settings import Settings
from contribflow.step import Check, StepRun

RESENT_RULE = "resent_file"
EARLIER_SQL = """
SELECT id, outcome, file_name, file_date, run_id, rows_in, rows_rejected FROM meta.source_file
 WHERE sha256 = %s AND outcome IN ('LOADED', 'DUPLICATE') ORDER BY id
"""
_NEWER_FOR_DATE = """
SELECT EXISTS (SELECT FROM meta.source_file s
                WHERE s.file_date = %s AND s.outcome = 'LOADED' AND s.id > %s AND s.sha256 <> %s
                  AND NOT EXISTS (SELECT FROM meta.file_withdrawal w
                                   WHERE w.file_name = s.file_name AND w.run_id = s.run_id))
"""
"""Whether another content was loaded for the date after a given load (and not withdrawn)."""
_LEDGER_SQL = """
INSERT INTO meta.source_file (file_name, sha256, file_date, size_bytes, rows_in, rows_loaded,
                              rows_already_in_raw, rows_rejected, rows_withheld, outcome, detail, run_id)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""
ISSUE_COLUMNS = ("run_id", "source_file", "source_sha256", "source_line", "rule", "column_name",
                 "failing_value", "severity")
ISSUE_IS_NEW = """NOT EXISTS (
    SELECT FROM meta.data_quality_issue d
     WHERE d.source_sha256 = i.source_sha256 AND d.source_file = i.source_file AND d.rule = i.rule
       AND coalesce(d.source_line, 0) = coalesce(i.source_line, 0)
       AND coalesce(d.column_name, '') = coalesce(i.column_name, ''))"""
"""A quality issue is stored once per file content, name, line, rule and column: a re-ingest of a
file (after a rejection, say) finds its issues again and adds none (the index of migration 0011
answers this)."""
_ISSUE_SQL = f"""
INSERT INTO meta.data_quality_issue ({', '.join(ISSUE_COLUMNS)})
SELECT * FROM (VALUES (%s::text, %s::text, %s::text, %s::integer, %s::text, %s::text, %s::text, %s::text))
    AS i ({', '.join(ISSUE_COLUMNS)})
 WHERE {ISSUE_IS_NEW}
"""


@dataclass(frozen=True)
class Counts:
    """What became of a file's rows (see the module's doc); None for a file refused before reading."""

    rows_in: int = 0
    rows_loaded: int = 0
    rows_already_in_raw: int = 0
    rows_rejected: int = 0
    rows_withheld: int = 0


def record(conn: psycopg.Connection, settings: Settings, day: dt.date, name: str, facts: FileFacts,
           counts: Counts | None, outcome: str, detail: str | None) -> None:
    """One row of the ledger."""
    c = counts
    conn.execute(_LEDGER_SQL, (
        name, facts.sha256, day, facts.size_bytes, c and c.rows_in, c and c.rows_loaded,
        c and c.rows_already_in_raw, c and c.rows_rejected, c and c.rows_withheld, outcome, detail,
        settings.run_id))


def record_issue(conn: psycopg.Connection, run_id: str, name: str, sha256: str, line: int | None,
                 rule: str, column: str | None, text: str | None, severity: str) -> None:
    """A quality issue about a whole file (schema drift, volume, a re-send), unless already stored."""
    conn.execute(_ISSUE_SQL, (run_id, name, sha256, line, rule, column, text, severity))


@dataclass(frozen=True)
class Earlier:
    """The load of a file with the same content, as the ledger holds it."""

    file_name: str
    file_date: dt.date
    run_id: str
    rows_in: int
    rows_rejected: int
    recorded: bool
    """Whether this date's re-send of it is already recorded (a DUPLICATE row for this file)."""

    def same_file(self, day: dt.date, name: str) -> bool:
        return (self.file_date, self.file_name) == (day, name)

    @property
    def counts(self) -> Counts:
        """Of its rows: in raw since that load (loaded then, or already there), quarantined then."""
        return Counts(self.rows_in, 0, self.rows_in - self.rows_rejected, self.rows_rejected, 0)


def earlier_load(conn: psycopg.Connection, sha256: str, day: dt.date, name: str) -> Earlier | None:
    """The LOADED ledger row of this content that answers this file, if any: its latest load for
    this date, else its first load for another date (a re-sent export).

    None, so that the file loads, also when this content was loaded for this date but another
    content was loaded for it since: a day's file corrected (v2) and then sent back as it was (v1
    again) is the newest arrival of that date, and its states win again (migration 0012: the ledger
    may hold one content as LOADED more than once; loads never overlap, ingest.RAW_WRITER_LOCK)."""
    rows = conn.execute(EARLIER_SQL, (sha256,)).fetchall()
    loaded = [r for r in rows if r[1] == "LOADED"]
    if not loaded:
        return None
    this_date = [r for r in loaded if r[3] == day]
    if this_date and conn.execute(_NEWER_FOR_DATE, (day, this_date[-1][0], sha256)).fetchone()[0]:
        return None
    _, _, file_name, file_date, run_id, rows_in, rejected = (this_date or loaded)[-1 if this_date else 0]
    recorded = any(r[1] == "DUPLICATE" and (r[3], r[2]) == (day, name) for r in rows)
    return Earlier(file_name, file_date, run_id, rows_in or 0, rejected or 0, recorded)


def resent_detail(name: str, earlier: Earlier) -> str:
    return (f"{name} has the same content (sha256) as {earlier.file_name}, loaded for "
            f"{earlier.file_date} by run {earlier.run_id}: a re-sent export; its rows are not "
            "loaded again for this date")


def answer_earlier(conn: psycopg.Connection, settings: Settings, day: dt.date, name: str,
                   facts: FileFacts, earlier: Earlier) -> None:
    """What an already loaded content means for this date: nothing more for the same file (an
    idempotent re-run); for another date, a DUPLICATE entry and a warning, once, or a refusal
    (FileRefused: the caller records it) under CONTRIBFLOW_RESENT_FILE=refuse."""
    if earlier.same_file(day, name) or earlier.recorded:
        return
    detail = resent_detail(name, earlier)
    if settings.resent_file == "refuse":
        raise FileRefused(f"{detail} (CONTRIBFLOW_RESENT_FILE=refuse)")
    record(conn, settings, day, name, facts, earlier.counts, "DUPLICATE", detail)
    record_issue(conn, settings.run_id, name, facts.sha256, None, RESENT_RULE, None, detail, "warning")


def report_earlier(step: StepRun, day: dt.date, name: str, earlier: Earlier) -> None:
    """A step that loaded nothing because the content was loaded before: its counts say where each
    row is (in raw since, or quarantined when the content was first seen)."""
    counts = earlier.counts
    step.rows_in, step.rows_loaded, step.rows_rejected = counts.rows_in, 0, 0
    step.details = {"rows_already_loaded": counts.rows_already_in_raw,
                    "rows_quarantined_earlier": counts.rows_rejected, "rows_withheld": 0,
                    "quality_issues": 0, "chunks_deduplicated": 0, "already_ingested_by": earlier.run_id}
    if not earlier.same_file(day, name):
        step.details["duplicate_of"] = earlier.file_name
        step.details["duplicate_of_date"] = earlier.file_date.isoformat()


def file_checks(step: StepRun) -> list[Check]:
    """ingest's rules as checked against the step's file: every rule with issues failed (whichever
    run first stored them: a re-ingest finds the same issues again and stores none, ISSUE_IS_NEW),
    and the rejected share against CONTRIBFLOW_REJECT_THRESHOLD."""
    with connect(step.settings) as conn:
        rows = conn.execute(
            """SELECT rule, column_name, count(*) FROM meta.data_quality_issue
                WHERE source_file = %(file)s AND source_sha256 IN (
                      SELECT sha256 FROM meta.source_file WHERE run_id = %(run)s AND file_name = %(file)s)
                GROUP BY rule, column_name ORDER BY 1, 2""",
            {"run": step.settings.run_id, "file": step.source_file or ""}).fetchall()
    checks = [Check(rule, False, column, str(n)) for rule, column, n in rows]
    if step.rows_rejected is not None:
        checks.append(Check("rows_rejected_within_threshold", step.status == "SUCCESS", None,
                            str(step.rows_rejected), f"<= {step.settings.reject_threshold:g} of rows_in"))
    return checks


def mask_details(conn: psycopg.Connection, before: dt.date) -> list[str]:
    """The end of the quarantine's retention (``contribflow purge-quarantine``): the ledger's
    details of the files before ``before`` keep no source value (meta.masked_message); the ids of
    the entries changed (purge records them in the audit chain)."""
    return [str(i) for (i,) in conn.execute(
        """UPDATE meta.source_file SET detail = meta.masked_message(detail)
            WHERE file_date < %s AND detail IS DISTINCT FROM meta.masked_message(detail) RETURNING id""",
        (before,)).fetchall()]

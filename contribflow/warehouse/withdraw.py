"""withdraw-file: take a loaded file out of the marts, without deleting raw.

raw.contributions stays append-only (its trigger refuses any change): a withdrawal is a record in
``meta.file_withdrawal`` (which file: name, sha256, file date, the run that loaded it; why; who, as
``session_user`` and ``current_user``; when), and from the next build on the rows of that file
(raw rows are tied to their file by (source_file, run_id)) are no declaration's state: a
declaration falls back to its state from the latest remaining file that mentioned it, or leaves the
marts if none remains (dbt: the macro current_declarations, fct_contributions_delta,
fct_contributions_removed). ``contribflow publish`` records in the withdrawal the build that
applied it; until then the published marts still show the file.

Who may withdraw: the warehouse's owner (the migrator login, or the local embedded server), like
purge-quarantine; the pipeline's roles may only read the record. Everything that records a
withdrawal is here (``record``), so that it can become a request that a second person approves.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg

from contribflow.db import connect
from contribflow.errors import StageError
from contribflow.settings import Settings
from contribflow.step import StepRun
from contribflow.warehouse.publish import DBT_LOCK


@dataclass
class Withdrawal:
    id: int
    file_name: str
    sha256: str
    file_date: dt.date
    run_id: str
    raw_rows: int
    withdrawn_by_login: str
    withdrawn_by_role: str
    withdrawn_at: dt.datetime
    kept_by_later_files: int
    """Declarations whose state in this file a later file of the same date repeated
    (raw.contributions_restated): they keep that state, from the later file."""


_LOADED = """SELECT id, file_name, sha256, file_date, run_id, rows_loaded, seen_at FROM meta.source_file
              WHERE file_name = %s AND outcome = 'LOADED' AND (%s::text IS NULL OR run_id = %s) ORDER BY id"""
_FILE_ROWS = """
SELECT count(*), min(ingestion_ts), max(ingestion_ts) FROM raw.contributions
 WHERE source_file = %(name)s AND run_id = %(run)s
   AND ingestion_ts BETWEEN coalesce((SELECT min(started_at) FROM meta.etl_run
                                       WHERE run_id = %(run)s AND step = 'ingest'), '-infinity')
                        AND %(seen)s
"""
"""The file's rows, found through raw's ingestion_ts index: they were loaded after its run's ingest
step started and before its ledger row was written (in the same transaction)."""


def record(conn: psycopg.Connection, name: str, run_id: str | None, reason: str) -> Withdrawal:
    """Record the withdrawal of the file ``name`` loaded by run ``run_id`` (or by its only run),
    inside the caller's transaction. Refuses what is not a loaded file, an ambiguous name, an empty
    reason and a second withdrawal of the same load."""
    if not reason or not reason.strip():
        raise StageError("withdraw-file needs a --reason: say why the file is withdrawn (it is kept in "
                         "meta.file_withdrawal with who and when)")
    # Waits for a dbt build, test or publication in progress: a build applies the withdrawals that
    # were recorded before it started, every model of it the same ones.
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (DBT_LOCK,))
    loads = conn.execute(_LOADED, (name, run_id, run_id)).fetchall()
    if not loads:
        other = conn.execute("SELECT outcome, run_id FROM meta.source_file WHERE file_name = %s ORDER BY id",
                             (name,)).fetchall()
        seen = "; ".join(f"{outcome} by run {run}" for outcome, run in other)
        raise StageError(f"no file {name!r} was loaded" + (f" by run {run_id}" if run_id else "")
                         + (f" (meta.source_file has: {seen})" if seen else " (meta.source_file has no such name)")
                         + ": only a LOADED file can be withdrawn")
    if len(loads) > 1:
        listed = "; ".join(f"run {r[4]} (sha256 {r[2]}, file date {r[3]}, {r[5]} rows loaded, at {r[6]})"
                           for r in loads)
        raise StageError(f"{name} was loaded by {len(loads)} runs: {listed}. Say which with --run RUN_ID")
    source_id, file_name, sha256, file_date, run, _, seen_at = loads[0]
    done = conn.execute("SELECT withdrawn_at, withdrawn_by_login FROM meta.file_withdrawal "
                        "WHERE file_name = %s AND run_id = %s", (file_name, run)).fetchone()
    if done:
        raise StageError(f"{file_name} of run {run} was already withdrawn at {done[0]} by {done[1]}")
    rows, first, last = conn.execute(_FILE_ROWS, {"name": file_name, "run": run, "seen": seen_at}).fetchone() \
        or (0, None, None)
    row = conn.execute(
        """INSERT INTO meta.file_withdrawal (source_file_id, file_name, sha256, file_date, run_id, raw_rows,
                                            first_loaded_at, last_loaded_at, reason)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
           RETURNING id, withdrawn_by_login, withdrawn_by_role, withdrawn_at""",
        (source_id, file_name, sha256, file_date, run, rows, first, last, reason.strip())).fetchone()
    kept = conn.execute(
        """SELECT count(DISTINCT m.declaration_id) FROM raw.contributions_restated m
             JOIN raw.contributions r USING (declaration_id, file_date, record_hash, revision)
            WHERE r.source_file = %s AND r.run_id = %s
              AND NOT EXISTS (SELECT FROM meta.file_withdrawal w
                               WHERE w.file_name = m.source_file AND w.run_id = m.run_id)""",
        (file_name, run)).fetchone()[0]
    return Withdrawal(row[0], file_name, sha256, file_date, run, rows, row[1], row[2], row[3], kept)


def run(settings: Settings, name: str, run_id: str | None, reason: str) -> StepRun:
    with StepRun(settings, "withdraw-file", None) as step, connect(settings) as conn:
        try:
            with conn.transaction():
                w = record(conn, name, run_id, reason)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise StageError("only the warehouse's owner (the migrator login) may withdraw a file: "
                             f"{str(exc).strip().splitlines()[0]}") from None
        step.source_file = w.file_name
        step.rows_in = w.raw_rows
        step.details = {"withdrawal_id": w.id, "file": w.file_name, "sha256": w.sha256,
                        "file_date": w.file_date.isoformat(), "loaded_by_run": w.run_id, "raw_rows": w.raw_rows,
                        "withdrawn_by": f"{w.withdrawn_by_login} as {w.withdrawn_by_role}"}
        if w.kept_by_later_files:
            step.details["kept_by_later_files"] = w.kept_by_later_files
    return step

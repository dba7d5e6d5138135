"""purge-quarantine: the end of the quarantine's retention, for the raw taxpayer ids it holds.

raw.contributions is the record of what arrived and is kept for the legal retention of tax
records: it is append-only and nothing here touches it. The quarantine is different: its raw text
holds raw taxpayer identifiers of rows that never became records, kept only so that someone can
correct and re-load them. Once that window has passed they are personal data without a purpose
(GDPR art. 5(1)(e)), so this removes the quarantined rows of files dated before a cut-off, and
masks the failing identifier values recorded for those files. What was checked, which rule failed
and on which line all stay in the audit trail.

Since issue 25 nothing outside raw and the quarantine's raw text holds a raw taxpayer id
(contribflow/redact.py), and migration 0011 masked what older versions had written. A version
older than that may still write while a warehouse is upgraded, so for the files it purges this
also masks, with 0011's functions, every other place such a version put a raw value: the failing
values of every column, the ledger's details (a header refusal that quoted a file's first row)
and the ingest steps' errors and details of those dates.

Since issue 28 it is a request that a second person approves (``contribflow request
purge-quarantine``); ``contribflow apply`` runs it as the warehouse's owner (the migrator login, or
the local embedded server), never as a daily pipeline step: the loader may only add to the quarantine.
The rows it masks are sealed into the audit chain (migration 0015): it records its change there, in
the same transaction, with ``meta.chain_reseal`` (one ``reseal`` entry per row it changed, the
reason naming the purge), so ``contribflow verify`` stays intact and the chain says who changed
what, when and why.
"""

from __future__ import annotations

import datetime as dt

import psycopg

from contribflow.contract import BASE
from contribflow.ingest import ledger

MASK = "[purged]"
IDENTIFIER_COLUMNS = tuple(c.name for c in BASE.columns if c.type == "identifier")
_FILES = "SELECT sha256 FROM meta.source_file WHERE file_date < %(before)s"


def ids(cursor: psycopg.Cursor) -> list[str]:
    """The ids an ``UPDATE … RETURNING id`` changed, as the chain's row keys."""
    return [str(i) for (i,) in cursor.fetchall()]


def purge(conn: psycopg.Connection, before: dt.date) -> dict:
    """Purge inside the caller's transaction, which must have applied an approved purge-quarantine
    request (meta.apply_correction, migration 0016): the quarantine's DELETE trigger refuses it
    otherwise, to every role. What it masks is resealed into the audit chain in the same transaction."""
    params = {"before": before, "mask": MASK, "identifiers": list(IDENTIFIER_COLUMNS)}
    files = conn.execute(
        "SELECT DISTINCT source_sha256 FROM raw.contributions_quarantine WHERE file_date < %(before)s",
        params).fetchall()
    removed = conn.execute("DELETE FROM raw.contributions_quarantine WHERE file_date < %(before)s",
                           params).rowcount
    masked = ids(conn.execute(
        f"""UPDATE meta.data_quality_issue SET failing_value = %(mask)s
             WHERE source_sha256 IN ({_FILES})
               AND column_name = ANY(%(identifiers)s) AND failing_value IS DISTINCT FROM %(mask)s
         RETURNING id""",
        params))
    values = ids(conn.execute(
        f"""UPDATE meta.data_quality_issue SET failing_value = meta.masked_failing_value(column_name, failing_value)
             WHERE source_sha256 IN ({_FILES})
               AND failing_value IS DISTINCT FROM meta.masked_failing_value(column_name, failing_value)
         RETURNING id""",
        params))
    details = ledger.mask_details(conn, before)
    errors = ids(conn.execute(
        """UPDATE meta.etl_run
              SET error = meta.masked_message(error),
                  details = CASE WHEN details ? 'extra_columns' THEN jsonb_set(details, '{extra_columns}',
                                 to_jsonb(meta.masked_names(details->>'extra_columns', ','))) ELSE details END
            WHERE step = 'ingest' AND logical_date < %(before)s
              AND (error IS DISTINCT FROM meta.masked_message(error)
                   OR details->>'extra_columns'
                      IS DISTINCT FROM meta.masked_names(details->>'extra_columns', ','))
        RETURNING id""",
        params))
    reason = f"purge-quarantine --before {before.isoformat()}: values masked at the end of retention"
    changed = {"meta.data_quality_issue": masked + values, "meta.source_file": details, "meta.etl_run": errors}
    resealed = sum(conn.execute("SELECT meta.chain_reseal(%s, %s, %s)", (relation, reason, keys)).fetchone()[0]
                   for relation, keys in changed.items() if keys)
    return {"before": before.isoformat(), "files": len(files),
            "quarantined_rows_removed": removed, "identifier_values_masked": len(masked),
            "other_values_masked": len(values), "ledger_details_masked": len(details),
            "step_errors_masked": len(errors), "chain_entries_resealed": resealed}

-- Issue 25: a state is what the latest file says, and a loaded file can be withdrawn.
--
-- 1. raw's unique index becomes (declaration_id, file_date, record_hash, revision), replacing
--    (declaration_id, record_hash) (0009). The record hash stays the hash of a row's business
--    values (its state); what is unique now is a state's arrival for a file date:
--    - the same state of a declaration for the same file date is a no-op (a re-sent file, a
--      re-ingest, the same rows twice on one day), as before;
--    - the same state for another file date is a new arrival, kept: a reversal DUE -> PAID -> DUE
--      is three rows, and the marts show the latest file's state (0009's index made the third a
--      no-op, and the marts kept PAID);
--    - within one file date, a state that returns after another one (file v1 DUE, v2 PAID, v3 DUE)
--      is inserted by ingest's slow path with revision = the greatest revision of that state for
--      that date + 1 (contribflow/ingest.py, _Load._copy_good); a state equal to the latest one
--      of that date is a no-op. revision's default is a constant (no table rewrite), COPY does not
--      name it, so ingest's fast path is unchanged: its rows are revision 0, and whenever a state
--      of a date is there at all its revision 0 is too, so a fast-path row that repeats one hits
--      the index and goes through the slow path, which decides.
--    Load order (recordhash.load_order: declaration_id, then record hash) is still the index's
--    order: a file has one file_date, and the fast path one revision. The leading column still
--    answers trace's lookup by declaration_id.
--    On a warehouse that already holds rows, the new index is built before the old one is dropped,
--    in this migration's one transaction: loads wait meanwhile. Measured here on 1M rows of raw
--    loaded at 0009 (scripts/measure_issue25.py): 1.0 s for this whole migration (the column is a
--    catalog change; the index build is the cost, so expect about ten times that at 10M rows).
ALTER TABLE raw.contributions ADD COLUMN IF NOT EXISTS revision smallint NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX contributions_declaration_id_file_date_record_hash_revision_key
    ON raw.contributions (declaration_id, file_date, record_hash, revision);
DROP INDEX raw.contributions_declaration_id_record_hash_key;
COMMENT ON COLUMN raw.contributions.revision IS
    'n > 0: the nth return of this state for this file date after another state of the same date (issue 25)';

-- 2. Withdrawn files (`contribflow withdraw-file`, docs/runbook.md "Withdraw a loaded file"): raw
--    stays append-only; a withdrawn file's rows (raw rows are tied to their file by (source_file,
--    run_id)) stop counting for any declaration's state from the next build on, and that build's
--    publication records itself in applied_build_id. Written by the warehouse's owner only (the
--    migrator login, or the local embedded server), like purge-quarantine; the transformer reads it
--    and sets applied_build_id when it publishes; the loader reads it (a withdrawn file's rows do
--    not make a state of the same date "already there"); the auditor reads it.
CREATE TABLE meta.file_withdrawal (
    id                 bigserial   PRIMARY KEY,
    source_file_id     bigint      NOT NULL REFERENCES meta.source_file (id),
    file_name          text        NOT NULL,
    sha256             text        NOT NULL,
    file_date          date        NOT NULL,
    run_id             text        NOT NULL,
    -- The file's rows in raw when it was withdrawn, and the span of their ingestion_ts: the build
    -- finds them through raw's ingestion_ts index instead of scanning raw.
    raw_rows           bigint      NOT NULL,
    first_loaded_at    timestamptz,
    last_loaded_at     timestamptz,
    reason             text        NOT NULL CHECK (btrim(reason) <> ''),
    withdrawn_by_login text        NOT NULL DEFAULT session_user,
    withdrawn_by_role  text        NOT NULL DEFAULT current_user,
    withdrawn_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    applied_build_id   bigint      REFERENCES meta.mart_build (id)
);
-- A loaded file is withdrawn once.
CREATE UNIQUE INDEX file_withdrawal_once ON meta.file_withdrawal (file_name, run_id);
CREATE INDEX file_withdrawal_file_date ON meta.file_withdrawal (file_date);

GRANT SELECT ON meta.file_withdrawal TO contribflow_loader, contribflow_transformer, contribflow_auditor;
GRANT UPDATE (applied_build_id) ON meta.file_withdrawal TO contribflow_transformer;

-- A later file of the same date that repeats a state (issue 25).
--
-- The same state of a declaration for the same file date is stored once in raw.contributions
-- (0010: a re-sent or corrected file of a day adds only what changed). But that later file still
-- *mentioned* the declaration: it is now the latest file that did, and if the earlier file is
-- withdrawn (`contribflow withdraw-file`) the state must stay, because the later file says so too.
-- Each such repeat is recorded here, by ingest's slow path (the only one where a row can be a
-- repeat: it hits raw's unique index), in the same transaction as the load: which raw row it
-- repeats (its unique key) and where the repeat stood (file, line, run, time).
--
-- The marts read a declaration's candidate states from raw.contributions and from these repeats
-- (dbt's macro current_declarations): a repeat is that state, arriving with its own file, line and
-- time. So the marts name the latest file that mentioned a declaration, and a withdrawal of the
-- earlier file leaves the state in place, now from the later one. Append-only, like raw.
CREATE TABLE raw.contributions_restated (
    declaration_id text        NOT NULL,
    file_date      date        NOT NULL,
    record_hash    uuid        NOT NULL,
    revision       smallint    NOT NULL,
    source_file    text        NOT NULL,
    source_line    integer     NOT NULL,
    run_id         text        NOT NULL,
    ingestion_ts   timestamptz NOT NULL DEFAULT statement_timestamp()
);
-- No foreign key to raw.contributions: its checks would run on every row a REJECTED file's load
-- removes from raw (its own, uncommitted rows); ingest writes a repeat only of a row it just read.
-- One repeat per file and run of a declaration (a file holds a declaration once).
CREATE UNIQUE INDEX contributions_restated_key
    ON raw.contributions_restated (declaration_id, file_date, source_file, run_id);
-- The incremental fact build reads the repeats that arrived after its watermark.
CREATE INDEX contributions_restated_ingestion_ts ON raw.contributions_restated (ingestion_ts);

-- The append-only trigger of raw.contributions (0002), naming whichever table it guards.
CREATE OR REPLACE FUNCTION raw.refuse_rewriting_history() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'UPDATE' OR OLD.ingestion_ts < transaction_timestamp() THEN
        RAISE EXCEPTION '%.% is append-only: % of declaration % (loaded at %) refused',
            TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP, OLD.declaration_id, OLD.ingestion_ts;
    END IF;
    RETURN OLD;
END
$fn$;
CREATE TRIGGER contributions_restated_append_only BEFORE UPDATE OR DELETE ON raw.contributions_restated
    FOR EACH ROW EXECUTE FUNCTION raw.refuse_rewriting_history();

ALTER TABLE raw.contributions_restated OWNER TO contribflow_migrator;
-- DELETE only for what raw.contributions has it for: a REJECTED file's own, uncommitted rows.
GRANT SELECT, INSERT, DELETE ON raw.contributions_restated TO contribflow_loader;
GRANT SELECT ON raw.contributions_restated TO contribflow_transformer, contribflow_auditor;

-- The same content may now be LOADED more than once, for the date it was loaded for: a day's file
-- corrected (v2) and then sent back as it was (v1's bytes again) is the newest arrival of that date,
-- and must load again so that its states win (contribflow/ledger.py, earlier_load). Loads never
-- overlap (ingest's raw-writer lock), which is what kept a content from being claimed twice at once.
DROP INDEX meta.source_file_loaded_once;
CREATE INDEX source_file_loaded_sha256 ON meta.source_file (sha256) WHERE outcome = 'LOADED';

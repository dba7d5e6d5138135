-- raw: what arrived, append-only. meta: the audit trail. dbt owns staging and marts.
CREATE SCHEMA IF NOT EXISTS raw;
CREATE SCHEMA IF NOT EXISTS meta;

-- The business content of a row, hashed on its typed values. Immutable by construction: the date
-- enters as a day number (not text, which would follow DateStyle) and the encoding is fixed.
CREATE FUNCTION raw.contribution_hash(
    declaration_id text, taxpayer_id text, event_date date, amount numeric,
    currency text, contribution_type text, status text, country text
) RETURNS bytea LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
RETURN sha256(convert_to(concat_ws('|', declaration_id, taxpayer_id,
    (event_date - date '2000-01-01')::text, amount::text, currency, contribution_type, status,
    country), 'UTF8'));

CREATE TABLE raw.contributions (
    declaration_id    text          NOT NULL,
    taxpayer_id       text          NOT NULL,
    taxpayer_key      text          NOT NULL,
    event_date        date          NOT NULL,
    amount            numeric(14,2) NOT NULL,
    currency          text          NOT NULL,
    contribution_type text          NOT NULL,
    status            text          NOT NULL,
    country           text          NOT NULL,
    file_date         date          NOT NULL,
    source_file       text          NOT NULL,
    source_line       integer       NOT NULL,
    run_id            text          NOT NULL,
    ingestion_ts      timestamptz   NOT NULL DEFAULT clock_timestamp(),
    -- The same declaration in the same state is stored once, whichever file or line it came from.
    record_hash       bytea GENERATED ALWAYS AS (raw.contribution_hash(
        declaration_id, taxpayer_id, event_date, amount, currency, contribution_type, status,
        country)) STORED
);
CREATE UNIQUE INDEX contributions_record_hash_key ON raw.contributions (record_hash);
-- Append-only and loaded in time order, so a BRIN index finds a day's new rows for the
-- incremental fact model at almost no cost to COPY.
CREATE INDEX contributions_ingestion_ts_brin ON raw.contributions USING brin (ingestion_ts);

CREATE TABLE raw.contributions_quarantine (
    source_sha256 text        NOT NULL,
    source_line   integer     NOT NULL,
    source_file   text        NOT NULL,
    file_date     date        NOT NULL,
    raw_line      text        NOT NULL,
    reasons       text[]      NOT NULL,
    run_id        text        NOT NULL,
    ingestion_ts  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (source_sha256, source_line)
);

CREATE TABLE meta.etl_run (
    id            bigserial PRIMARY KEY,
    run_id        text        NOT NULL,
    step          text        NOT NULL,
    logical_date  date,
    status        text        NOT NULL CHECK (status IN ('RUNNING', 'SUCCESS', 'FAILED')),
    started_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at   timestamptz,
    duration_s    numeric(12,3),
    rows_in       bigint,
    rows_loaded   bigint,
    rows_rejected bigint,
    source_file   text,
    error         text,
    ran_on        text,
    workflow_name text,
    task_name     text,
    pod_name      text,
    details       jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX etl_run_run_id_idx ON meta.etl_run (run_id);
CREATE INDEX etl_run_logical_date_idx ON meta.etl_run (logical_date);

CREATE TABLE meta.data_quality_issue (
    id            bigserial PRIMARY KEY,
    run_id        text        NOT NULL,
    source_file   text        NOT NULL,
    source_sha256 text        NOT NULL,
    source_line   integer,
    rule          text        NOT NULL,
    column_name   text,
    failing_value text,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX data_quality_issue_run_id_idx ON meta.data_quality_issue (run_id);

CREATE TABLE meta.source_file (
    id            bigserial PRIMARY KEY,
    file_name     text        NOT NULL,
    sha256        text        NOT NULL,
    file_date     date        NOT NULL,
    size_bytes    bigint      NOT NULL,
    rows_in       bigint,
    rows_loaded   bigint,
    rows_rejected bigint,
    outcome       text        NOT NULL CHECK (outcome IN ('LOADED', 'REJECTED', 'REFUSED')),
    detail        text,
    run_id        text        NOT NULL,
    seen_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- A file's content is claimed by at most one successful load.
CREATE UNIQUE INDEX source_file_loaded_once ON meta.source_file (sha256) WHERE outcome = 'LOADED';

CREATE TABLE meta.dbt_node_result (
    id               bigserial PRIMARY KEY,
    run_id           text        NOT NULL,
    step             text        NOT NULL,
    invocation_id    text        NOT NULL,
    unique_id        text        NOT NULL,
    resource_type    text        NOT NULL,
    status           text        NOT NULL,
    failures         integer,
    execution_time_s numeric(12,3),
    message          text,
    recorded_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX dbt_node_result_run_id_idx ON meta.dbt_node_result (run_id);

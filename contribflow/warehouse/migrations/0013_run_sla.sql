-- Each run's SLA outcome (issue 29), written by `finish`, the exit handler, once per run.
--
-- The SLA is three settings (contribflow/settings.py): the run date's file is due, and its marts are
-- published, so many seconds after the run date's 00:00 UTC (CONTRIBFLOW_SLA_FILE_DUE_S,
-- CONTRIBFLOW_SLA_PUBLISH_DEADLINE_S), and at most a share of its rows may be quarantined
-- (CONTRIBFLOW_SLA_MAX_QUARANTINE_RATIO). An unset setting is not part of the SLA (its columns are
-- NULL). The file's arrival is the first LOADED entry of the date in meta.source_file; its
-- publication the first PUBLISHED build of the date in meta.mart_build: a rerun of a date records
-- the same facts. `missed` lists what was missed: file_late, not_published, published_late,
-- quarantine_ratio, run_failed; sla_met is true when it is empty. Append-only, like meta.etl_run.
CREATE TABLE meta.run_sla (
    id                      bigserial PRIMARY KEY,
    run_id                  text        NOT NULL,
    logical_date            date        NOT NULL,
    workflow_status         text        NOT NULL,
    file_due_at             timestamptz,
    file_arrived_at         timestamptz,
    file_seconds_late       bigint      CHECK (file_seconds_late >= 0),
    publish_deadline_at     timestamptz,
    published_at            timestamptz,
    rows_in                 bigint,
    rows_quarantined        bigint,
    quarantine_ratio        double precision CHECK (quarantine_ratio BETWEEN 0 AND 1),
    max_quarantine_ratio    double precision CHECK (max_quarantine_ratio BETWEEN 0 AND 1),
    missed                  text[]      NOT NULL DEFAULT '{}',
    sla_met                 boolean     NOT NULL GENERATED ALWAYS AS (cardinality(missed) = 0) STORED,
    recorded_at             timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX run_sla_logical_date_idx ON meta.run_sla (logical_date);
CREATE INDEX run_sla_run_id_idx ON meta.run_sla (run_id);

-- finish connects as the loader (graph.EXIT_STAGE); the auditor reads every meta table.
GRANT SELECT, INSERT ON meta.run_sla TO contribflow_loader;
GRANT SELECT ON meta.run_sla TO contribflow_transformer, contribflow_auditor;
GRANT USAGE ON SEQUENCE meta.run_sla_id_seq TO contribflow_loader;

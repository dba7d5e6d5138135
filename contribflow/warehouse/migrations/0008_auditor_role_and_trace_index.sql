-- Issue 18: the auditor's question, per number.
--
-- 1. contribflow_auditor: a read-only group role for `contribflow trace` and `contribflow audit`.
--    It reads meta (the audit trail), raw (what arrived), the staging view and the published marts
--    (the number being traced); it writes nothing (no INSERT/UPDATE/DELETE/TRUNCATE anywhere, no
--    CREATE on any schema). It may NOT read raw.contributions_quarantine.raw_line: the quarantine's
--    raw text holds raw taxpayer ids. It reads every other quarantine column (file, line, reasons,
--    run), through column privileges. Whoever must read the raw text gets it explicitly, e.g.
--        GRANT SELECT (raw_line) ON raw.contributions_quarantine TO contribflow_auditor;
--    (README, "The auditor role"). raw.contributions.taxpayer_id is readable: raw is the evidence
--    of what arrived, and an auditor checking a taxpayer_key against a file line needs it; the
--    analyst role still never sees raw.
DO $auditor$
DECLARE
    me record;
BEGIN
    SELECT rolname, rolsuper, rolcreaterole INTO me FROM pg_roles WHERE rolname = current_user;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'contribflow_auditor') THEN
        IF NOT (me.rolsuper OR me.rolcreaterole) THEN
            RAISE EXCEPTION 'init-db: the group role contribflow_auditor does not exist and % may not create roles (no CREATEROLE): run init-db once as a role with CREATEROLE, or have an administrator run CREATE ROLE contribflow_auditor NOLOGIN',
                me.rolname;
        END IF;
        CREATE ROLE contribflow_auditor NOLOGIN;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO contribflow_auditor', current_database());
END
$auditor$;

GRANT USAGE ON SCHEMA raw, meta, staging, marts TO contribflow_auditor;
GRANT SELECT ON ALL TABLES IN SCHEMA meta TO contribflow_auditor;
GRANT SELECT ON raw.contributions TO contribflow_auditor;
GRANT SELECT (source_sha256, source_line, source_file, file_date, reasons, run_id, ingestion_ts)
    ON raw.contributions_quarantine TO contribflow_auditor;
GRANT SELECT ON ALL TABLES IN SCHEMA staging, marts TO contribflow_auditor;
-- dbt re-creates the staging view, and publish creates marts.fct_contributions, as the transformer:
-- what it creates there later is readable by the auditor too. (dim_taxpayer is moved into marts,
-- not created there; trace does not need it.)
ALTER DEFAULT PRIVILEGES FOR ROLE contribflow_transformer IN SCHEMA staging, marts
    GRANT SELECT ON TABLES TO contribflow_auditor;
-- Tables the migrator adds to meta in later migrations.
ALTER DEFAULT PRIVILEGES FOR ROLE contribflow_migrator IN SCHEMA meta
    GRANT SELECT ON TABLES TO contribflow_auditor;

-- 2. `contribflow trace --declaration`: every raw state of one declaration, in arrival order.
--    Without an index that is a scan of all of raw (10M rows: seconds). Declaration ids arrive
--    grouped by day (DEC_<yyyymmdd>_<n>), so a day's inserts land at a few places of the index,
--    not at random pages; measured in README ("contribflow trace").
CREATE INDEX contributions_declaration_id ON raw.contributions (declaration_id);

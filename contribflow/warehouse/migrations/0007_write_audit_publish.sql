-- Write-audit-publish (issue 17). dbt builds a day's marts into marts_build, which analysts cannot
-- read; dbt's tests run against it; `contribflow publish` applies the build to marts in one
-- transaction. meta.mart_build records every build and its fate, and which one analysts see now.
CREATE SCHEMA IF NOT EXISTS marts_build;
ALTER SCHEMA marts_build OWNER TO contribflow_transformer;
REVOKE ALL ON SCHEMA marts_build FROM PUBLIC;
-- The last failed build, moved out of marts_build when the next build starts, kept for inspection
-- until the next publication.
CREATE SCHEMA IF NOT EXISTS marts_failed;
ALTER SCHEMA marts_failed OWNER TO contribflow_transformer;
REVOKE ALL ON SCHEMA marts_failed FROM PUBLIC;

CREATE TABLE meta.mart_build (
    id               bigserial PRIMARY KEY,
    run_id           text        NOT NULL,
    logical_date     date,
    status           text        NOT NULL CHECK (status IN ('BUILDING', 'BUILT', 'TESTED', 'TEST_FAILED',
                                                            'BUILD_FAILED', 'PUBLISHED', 'ABANDONED')),
    -- The publication the build was made against: publish refuses a build whose base moved on.
    base_build_id    bigint,
    full_refresh     boolean     NOT NULL DEFAULT false,
    delta_rows       bigint,
    dim_rows         bigint,
    started_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    built_at         timestamptz,
    tested_at        timestamptz,
    published_at     timestamptz,
    error            text
);
CREATE INDEX mart_build_run_id_idx ON meta.mart_build (run_id);
-- At most one build in flight (being built, built or tested but not yet published or failed):
-- builds of two runs never interleave in marts_build.
CREATE UNIQUE INDEX mart_build_one_open ON meta.mart_build ((true))
    WHERE status IN ('BUILDING', 'BUILT', 'TESTED');

-- dbt source freshness, every run.
CREATE TABLE meta.source_freshness (
    id              bigserial PRIMARY KEY,
    run_id          text        NOT NULL,
    source          text        NOT NULL,
    max_loaded_at   timestamptz,
    snapshotted_at  timestamptz,
    age_s           numeric(14,3),
    status          text        NOT NULL,
    checked_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX source_freshness_run_id_idx ON meta.source_freshness (run_id);

-- What kind of failure a step had: 'late' (the source file did not arrive in time), 'transient'
-- (the database could not be reached: retried), or null (anything else).
ALTER TABLE meta.etl_run ADD COLUMN error_class text;

GRANT SELECT, INSERT, UPDATE ON meta.mart_build TO contribflow_transformer;
-- finish (the exit handler, a loader) closes a build its run left open.
GRANT SELECT, UPDATE (status, error) ON meta.mart_build TO contribflow_loader;
GRANT SELECT, INSERT ON meta.source_freshness TO contribflow_transformer;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA meta TO contribflow_loader, contribflow_transformer;
GRANT UPDATE (error_class) ON meta.etl_run TO contribflow_loader, contribflow_transformer;

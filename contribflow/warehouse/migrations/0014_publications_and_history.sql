-- Issue 27, parts 1-3: every publication recorded, as-of history for analysts, exact reproduction.
-- docs/auditors.md defines the hashes below exactly; contribflow/warehouse/publication.py writes
-- these tables, in the publication's own transaction.
--
-- 1. The content hash of a published table (order-independent, computed in SQL, the same on
--    every PostgreSQL version): each row's canonical text is its columns in the table's order,
--    each written as <length in characters>:<text>, or '-' for NULL, joined by ','; a column's
--    text is the value itself (text), its decimal digits (integers), YYYY-MM-DD (dates), the
--    value rounded to 2 decimals as PostgreSQL writes a numeric ('-5.00', amounts),
--    YYYY-MM-DDTHH:MM:SS.ffffffZ in UTC (timestamps). The row's digest is md5 of that text (UTF-8)
--    read as an unsigned 128-bit integer; the table's hash is the sum of its rows' digests modulo
--    2^128, written as 32 lowercase hex digits. A sum does not depend on the rows' order, and
--    lets publish keep it up to date from the day's changes alone (minus the digests of the rows
--    it replaces, plus those of the rows it writes).
CREATE FUNCTION meta.canonical_field(value text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN value IS NULL THEN '-' ELSE length(value)::text || ':' || value END;

-- Plain SQL the planner inlines (its argument, a column, appears thrice): a per-row call of a
-- non-inlined function cost ~100 times the md5 itself.
CREATE FUNCTION meta.hex128(hex text) RETURNS numeric
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN ('x' || substr(hex, 1, 16))::bit(64)::bigint::numeric * 18446744073709551616
         + ('x' || substr(hex, 17, 16))::bit(64)::bigint::numeric
         + CASE WHEN ('x' || substr(hex, 17, 16))::bit(64)::bigint < 0 THEN 18446744073709551616 ELSE 0 END;
COMMENT ON FUNCTION meta.hex128(text) IS
    '32 hex digits (an md5) as the 128-bit integer they write, modulo 2^128 (the high half read signed)';

-- A sum of digests (or a difference of two) as the 32 hex digits of its value modulo 2^128.
CREATE FUNCTION meta.digest_hex(total numeric) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN (SELECT lpad(to_hex(div(m, 79228162514264337593543950336)::bigint), 8, '0')
                || lpad(to_hex(mod(div(m, 18446744073709551616), 4294967296)::bigint), 8, '0')
                || lpad(to_hex(mod(div(m, 4294967296), 4294967296)::bigint), 8, '0')
                || lpad(to_hex(mod(m, 4294967296)::bigint), 8, '0')
              FROM (SELECT mod(mod(total, 340282366920938463463374607431768211456)
                               + 340282366920938463463374607431768211456,
                               340282366920938463463374607431768211456) AS m) AS normalised);

-- A row's digest, as the md5's 32 hex digits (meta.hex128 reads them as the integer). STABLE,
-- not IMMUTABLE: to_char is STABLE, and an IMMUTABLE SQL function calling it is never inlined.
CREATE FUNCTION meta.fct_row_digest(
    declaration_id text, taxpayer_key text, event_date date, amount numeric, currency text,
    contribution_type text, status text, country text, file_date date, source_file text,
    source_line integer, raw_loaded_at timestamptz) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN md5(
        meta.canonical_field(declaration_id) || ',' || meta.canonical_field(taxpayer_key) || ','
        || meta.canonical_field(to_char(event_date, 'YYYY-MM-DD')) || ','
        || meta.canonical_field(round(amount, 2)::text) || ',' || meta.canonical_field(currency) || ','
        || meta.canonical_field(contribution_type) || ',' || meta.canonical_field(status) || ','
        || meta.canonical_field(country) || ',' || meta.canonical_field(to_char(file_date, 'YYYY-MM-DD')) || ','
        || meta.canonical_field(source_file) || ',' || meta.canonical_field(source_line::text) || ','
        || meta.canonical_field(to_char(raw_loaded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')));

CREATE FUNCTION meta.dim_row_digest(
    taxpayer_key text, main_country text, first_event_date date, last_event_date date, declarations bigint,
    amount_paid numeric, amount_due numeric) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN md5(
        meta.canonical_field(taxpayer_key) || ',' || meta.canonical_field(main_country) || ','
        || meta.canonical_field(to_char(first_event_date, 'YYYY-MM-DD')) || ','
        || meta.canonical_field(to_char(last_event_date, 'YYYY-MM-DD')) || ','
        || meta.canonical_field(declarations::text) || ',' || meta.canonical_field(round(amount_paid, 2)::text) || ','
        || meta.canonical_field(round(amount_due, 2)::text));

-- 2. Every publication. INSERT-only: no role but the owner (the migrator) may UPDATE or DELETE a
--    row (issue 27's hash chain covers these tables too). Written by publish in the transaction
--    that changes the marts, so a publication exists exactly when its marts do.
CREATE TABLE meta.publication (
    id                 bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    build_id           bigint      NOT NULL UNIQUE REFERENCES meta.mart_build (id),
    run_id             text        NOT NULL,
    logical_date       date,
    full_refresh       boolean     NOT NULL,
    published_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_by       text        NOT NULL DEFAULT session_user,
    -- The inputs. raw_high_water: the greatest ingestion_ts of raw.contributions and
    -- raw.contributions_restated that the build's fact model could read, taken in that model's
    -- transaction while it holds the raw-writer lock (no load commits meanwhile; a later load's
    -- rows have later ingestion_ts). ledger_high_water: the greatest meta.source_file id of a
    -- LOADED file then (the ledger row commits with its file's rows). NULL: a build made before
    -- migration 0014, which recorded neither (such a publication cannot be reproduced).
    raw_high_water     timestamptz,
    ledger_high_water  bigint,
    -- meta.file_withdrawal ids in force: applied by this publication or an earlier one.
    withdrawal_ids     bigint[]    NOT NULL DEFAULT '{}',
    -- The code: package version, git revision (CONTRIBFLOW_GIT_REVISION, else 'unknown'), dbt's
    -- version and the dbt project's checksum (transform.project_checksum), the image digests the
    -- deployment states (CONTRIBFLOW_IMAGE_DIGESTS), as JSON.
    project_version    text        NOT NULL,
    git_revision       text        NOT NULL,
    dbt_version        text,
    dbt_checksum       text,
    image_digests      jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX publication_logical_date ON meta.publication (logical_date);

-- Each LOADED source file up to the ledger's high-water mark, and whether it was withdrawn then.
CREATE TABLE meta.publication_input (
    publication_id  bigint  NOT NULL REFERENCES meta.publication (id),
    source_file_id  bigint  NOT NULL REFERENCES meta.source_file (id),
    file_name       text    NOT NULL,
    sha256          text    NOT NULL,
    file_date       date    NOT NULL,
    run_id          text    NOT NULL,
    rows_loaded     bigint,
    withdrawn       boolean NOT NULL,
    PRIMARY KEY (publication_id, source_file_id)
);

-- Each published table's row count and content hash right after the publication.
CREATE TABLE meta.publication_output (
    publication_id  bigint  NOT NULL REFERENCES meta.publication (id),
    table_name      text    NOT NULL,
    row_count       bigint  NOT NULL,
    content_hash    text    NOT NULL CHECK (content_hash ~ '^[0-9a-f]{32}$'),
    -- How the hash was made: 'full' (every row hashed) or 'incremental' (the previous publication's
    -- hash, minus the replaced rows' digests, plus the new rows').
    computed        text    NOT NULL CHECK (computed IN ('full', 'incremental')),
    PRIMARY KEY (publication_id, table_name)
);

-- The code of a build, recorded by dbt-build (publish copies it into the publication).
ALTER TABLE meta.mart_build ADD COLUMN dbt_version text, ADD COLUMN dbt_checksum text;

-- 3. The scratch schema `contribflow reproduce` rebuilds a publication in (dbt, as the
--    transformer), emptied after every attempt; analysts cannot read it.
CREATE SCHEMA IF NOT EXISTS marts_reproduce;
ALTER SCHEMA marts_reproduce OWNER TO contribflow_transformer;
REVOKE ALL ON SCHEMA marts_reproduce FROM PUBLIC;

-- Grants. Functions are executable by PUBLIC by default; only who may use their schema reaches them.
REVOKE EXECUTE ON FUNCTION meta.canonical_field(text), meta.hex128(text), meta.digest_hex(numeric),
    meta.fct_row_digest(text, text, date, numeric, text, text, text, text, date, text, integer, timestamptz),
    meta.dim_row_digest(text, text, date, date, bigint, numeric, numeric) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION meta.canonical_field(text), meta.hex128(text), meta.digest_hex(numeric),
    meta.fct_row_digest(text, text, date, numeric, text, text, text, text, date, text, integer, timestamptz),
    meta.dim_row_digest(text, text, date, date, bigint, numeric, numeric)
    TO contribflow_transformer, contribflow_auditor;
GRANT SELECT, INSERT ON meta.publication, meta.publication_input, meta.publication_output TO contribflow_transformer;
GRANT SELECT ON meta.publication, meta.publication_input, meta.publication_output TO contribflow_auditor;
GRANT UPDATE (dbt_version, dbt_checksum) ON meta.mart_build TO contribflow_transformer;
-- publish lists the files a publication read (the ledger; no detail column).
GRANT SELECT (id, file_name, sha256, file_date, run_id, rows_loaded, outcome) ON meta.source_file
    TO contribflow_transformer;

-- 4. As-of history, in marts: created as the transformer, which owns marts (and publishes).
SET LOCAL ROLE contribflow_transformer;
-- Every published version of a row, with the publication that made it current
--    and the one that superseded it (NULL: current). Kept by publish from the day's changes (a
--    version closed per replaced row, one opened per new row). Created here, not by a
--    publication: the as-of functions below read them. Column types as the marts' contracts.
CREATE TABLE marts.fct_contributions_history (
    declaration_id         text        NOT NULL,
    taxpayer_key           text        NOT NULL,
    event_date             date,
    amount                 numeric(14, 2),
    currency               text,
    contribution_type      text,
    status                 text,
    country                text,
    file_date              date,
    source_file            text,
    source_line            integer,
    raw_loaded_at          timestamptz,
    row_digest             text        NOT NULL,
    valid_from_publication bigint      NOT NULL,
    valid_to_publication   bigint,
    valid_from             timestamptz NOT NULL,
    valid_to               timestamptz
);
CREATE UNIQUE INDEX fct_contributions_history_current
    ON marts.fct_contributions_history (declaration_id) WHERE valid_to_publication IS NULL;
CREATE INDEX fct_contributions_history_declaration
    ON marts.fct_contributions_history (declaration_id, valid_from_publication);

CREATE TABLE marts.dim_taxpayer_history (
    taxpayer_key           text        NOT NULL,
    main_country           text,
    first_event_date       date,
    last_event_date        date,
    declarations           bigint,
    amount_paid            numeric(38, 2),
    amount_due             numeric(38, 2),
    row_digest             text        NOT NULL,
    valid_from_publication bigint      NOT NULL,
    valid_to_publication   bigint,
    valid_from             timestamptz NOT NULL,
    valid_to               timestamptz
);
CREATE UNIQUE INDEX dim_taxpayer_history_current
    ON marts.dim_taxpayer_history (taxpayer_key) WHERE valid_to_publication IS NULL;
CREATE INDEX dim_taxpayer_history_taxpayer
    ON marts.dim_taxpayer_history (taxpayer_key, valid_from_publication);

-- The marts as publication N showed them, or as they were published at time T. SQL functions
-- the planner inlines: `... as_of(N) WHERE declaration_id = 'X'` is an index lookup.
CREATE FUNCTION marts.fct_contributions_as_of(publication bigint)
    RETURNS TABLE (declaration_id text, taxpayer_key text, event_date date, amount numeric(14, 2),
                   currency text, contribution_type text, status text, country text, file_date date,
                   source_file text, source_line integer, raw_loaded_at timestamptz)
    LANGUAGE sql STABLE
    AS $$
    SELECT h.declaration_id, h.taxpayer_key, h.event_date, h.amount, h.currency, h.contribution_type,
           h.status, h.country, h.file_date, h.source_file, h.source_line, h.raw_loaded_at
      FROM marts.fct_contributions_history h
     WHERE h.valid_from_publication <= publication
       AND (h.valid_to_publication IS NULL OR h.valid_to_publication > publication)
$$;
CREATE FUNCTION marts.fct_contributions_as_of_time(at timestamptz)
    RETURNS TABLE (declaration_id text, taxpayer_key text, event_date date, amount numeric(14, 2),
                   currency text, contribution_type text, status text, country text, file_date date,
                   source_file text, source_line integer, raw_loaded_at timestamptz)
    LANGUAGE sql STABLE
    AS $$
    SELECT h.declaration_id, h.taxpayer_key, h.event_date, h.amount, h.currency, h.contribution_type,
           h.status, h.country, h.file_date, h.source_file, h.source_line, h.raw_loaded_at
      FROM marts.fct_contributions_history h
     WHERE h.valid_from <= at AND (h.valid_to IS NULL OR h.valid_to > at)
$$;
CREATE FUNCTION marts.dim_taxpayer_as_of(publication bigint)
    RETURNS TABLE (taxpayer_key text, main_country text, first_event_date date, last_event_date date,
                   declarations bigint, amount_paid numeric(38, 2), amount_due numeric(38, 2))
    LANGUAGE sql STABLE
    AS $$
    SELECT h.taxpayer_key, h.main_country, h.first_event_date, h.last_event_date, h.declarations,
           h.amount_paid, h.amount_due
      FROM marts.dim_taxpayer_history h
     WHERE h.valid_from_publication <= publication
       AND (h.valid_to_publication IS NULL OR h.valid_to_publication > publication)
$$;
CREATE FUNCTION marts.dim_taxpayer_as_of_time(at timestamptz)
    RETURNS TABLE (taxpayer_key text, main_country text, first_event_date date, last_event_date date,
                   declarations bigint, amount_paid numeric(38, 2), amount_due numeric(38, 2))
    LANGUAGE sql STABLE
    AS $$
    SELECT h.taxpayer_key, h.main_country, h.first_event_date, h.last_event_date, h.declarations,
           h.amount_paid, h.amount_due
      FROM marts.dim_taxpayer_history h
     WHERE h.valid_from <= at AND (h.valid_to IS NULL OR h.valid_to > at)
$$;

GRANT SELECT ON marts.fct_contributions_history, marts.dim_taxpayer_history
    TO contribflow_analyst, contribflow_auditor;
REVOKE EXECUTE ON FUNCTION marts.fct_contributions_as_of(bigint), marts.fct_contributions_as_of_time(timestamptz),
    marts.dim_taxpayer_as_of(bigint), marts.dim_taxpayer_as_of_time(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION marts.fct_contributions_as_of(bigint), marts.fct_contributions_as_of_time(timestamptz),
    marts.dim_taxpayer_as_of(bigint), marts.dim_taxpayer_as_of_time(timestamptz)
    TO contribflow_analyst, contribflow_auditor, contribflow_transformer;
-- Back to the role the migration runs as (the role given at connection, if any): migrate records
-- the migration as that role.
RESET ROLE;

-- The source contract as data (issue 15).
-- 1. Schema drift, policy `keep`: the values of a file's extra columns, per row, as
--    {"column": "value"}; NULL when the file had none. Nothing that arrived is dropped.
ALTER TABLE raw.contributions ADD COLUMN extra jsonb;
COMMENT ON COLUMN raw.contributions.extra IS
    'Values of columns outside the source contract, kept under CONTRIBFLOW_SCHEMA_DRIFT=keep';

-- 2. A quality issue is a failed check (error: the row was quarantined) or a warning about the
--    file that did not stop it (schema_drift, volume). A constant default adds no table rewrite.
ALTER TABLE meta.data_quality_issue
    ADD COLUMN severity text NOT NULL DEFAULT 'error' CHECK (severity IN ('error', 'warning'));

-- 3. Identifiers may now hold a comma or a double quote (the contract asks only for what safety
--    needs), so the record hash's text quotes such a value as CSV does; every value without one is
--    unchanged, so every hash already stored stays what this function computes.
CREATE FUNCTION raw.csv_field(value text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
RETURN CASE WHEN value ~ '[,"]' THEN '"' || replace(value, '"', '""') || '"' ELSE value END;

CREATE OR REPLACE FUNCTION raw.record_hash(
    declaration_id text, taxpayer_id text, event_date date, amount numeric,
    currency text, contribution_type text, status text, country text
) RETURNS uuid LANGUAGE sql STABLE PARALLEL SAFE STRICT
RETURN encode(substr(sha256(convert_to(concat_ws(',', raw.csv_field(declaration_id),
    raw.csv_field(taxpayer_id), to_char(event_date, 'YYYY-MM-DD'), amount::numeric(14,2)::text,
    currency, contribution_type, status, country), 'UTF8')), 1, 16), 'hex')::uuid;

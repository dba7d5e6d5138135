-- Issue 25 (ingest tells the truth, and keeps raw identifiers where they belong).
--
-- 1. The ledger's counts add up for every outcome:
--      rows_in = rows_loaded + rows_already_in_raw + rows_rejected + rows_withheld
--    rows_loaded: inserted into raw by this entry's run; rows_already_in_raw: rows raw held already;
--    rows_rejected: rows in the quarantine (for a DUPLICATE: quarantined when the content was first
--    loaded); rows_withheld: valid rows of a REJECTED file, not loaded.
ALTER TABLE meta.source_file
    ADD COLUMN rows_already_in_raw bigint,
    ADD COLUMN rows_withheld bigint;
COMMENT ON COLUMN meta.source_file.rows_already_in_raw IS
    'Rows of the file that raw already held (not inserted again); counted as each chunk is stored';
COMMENT ON COLUMN meta.source_file.rows_withheld IS
    'Valid rows of a REJECTED file: not loaded (0 for every other outcome)';

-- What older versions recorded, completed. A LOADED row's rows_in was loaded + quarantined + the
-- rows raw held already, which is what the new column holds. A REJECTED row said rows_loaded = the
-- rows its load had inserted before the rejection undid them (nothing of a REJECTED file is ever
-- loaded): they were withheld, and the rest were in raw already. (The right-hand sides read the
-- row as it was.)
UPDATE meta.source_file
   SET rows_already_in_raw = rows_in - rows_loaded - rows_rejected, rows_withheld = 0
 WHERE outcome = 'LOADED' AND rows_in IS NOT NULL;
UPDATE meta.source_file
   SET rows_withheld = rows_loaded, rows_loaded = 0,
       rows_already_in_raw = rows_in - rows_loaded - rows_rejected
 WHERE outcome = 'REJECTED' AND rows_in IS NOT NULL;

-- 2. A re-sent export (the content of a file LOADED for another date) is recorded for its own date
--    as DUPLICATE, once per date and name.
ALTER TABLE meta.source_file DROP CONSTRAINT source_file_outcome_check;
ALTER TABLE meta.source_file ADD CONSTRAINT source_file_outcome_check
    CHECK (outcome IN ('LOADED', 'REJECTED', 'REFUSED', 'DUPLICATE'));
ALTER TABLE meta.source_file ADD CONSTRAINT source_file_counts_add_up
    CHECK (rows_in IS NULL OR rows_in = rows_loaded + rows_already_in_raw + rows_rejected + rows_withheld);
CREATE UNIQUE INDEX source_file_duplicate_once ON meta.source_file (sha256, file_date, file_name)
    WHERE outcome = 'DUPLICATE';

-- 3. A quality issue is stored once per file content, name, line, rule and column: a re-ingest
--    (after a rejection) finds the same issues and adds none (ingest inserts WHERE NOT EXISTS,
--    under the raw-writer lock; this index answers it). Duplicates older versions stored stay (no
--    row of the audit trail is deleted); `contribflow audit` and the evidence pack count each once.
CREATE INDEX data_quality_issue_identity ON meta.data_quality_issue
    (source_sha256, source_file, rule, (coalesce(source_line, 0)), (coalesce(column_name, '')));

-- 4. No raw taxpayer id outside raw and the quarantine's raw_line (contribflow/redact.py has the
--    rule and the same functions in Python; tests/test_masking.py proves they agree). These mask
--    what older versions wrote: failing values and quarantine reasons that quoted an identifier or a
--    value that may be one, a header refusal that quoted a file's first (data) row, database errors
--    that quoted a value. purge-quarantine applies them again to the files it purges.
CREATE FUNCTION meta.describe_value(value text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
RETURN '[' || length(value) || CASE WHEN length(value) = 1 THEN ' character' ELSE ' characters' END
    || coalesce(': ' || nullif(concat_ws(', ',
        CASE WHEN value ~ '[A-Z]' THEN 'uppercase' END,
        CASE WHEN value ~ '[a-z]' THEN 'lowercase' END,
        CASE WHEN value ~ '[0-9]' THEN 'digits' END,
        CASE WHEN value ~ ' ' THEN 'spaces' END,
        CASE WHEN value ~ '[!-/:-@[-`{-~]' THEN 'punctuation' END,
        CASE WHEN value ~ '[\x01-\x1f\x7f-\x9f]' THEN 'control characters' END,
        CASE WHEN value ~ '[^\x01-\x9f]' THEN 'non-ASCII' END), ''), '')
    || ']';
COMMENT ON FUNCTION meta.describe_value(text) IS
    'A value as its length and character classes (contribflow/redact.py describe)';

-- The shape rule of redact.FailingValues, without what SQL cannot know of the value's file (the
-- taxpayer ids of its chunk, the deployment's taxpayer_id pattern).
CREATE FUNCTION meta.quotable_failing_value(column_name text, value text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
RETURN length(value) <= 64 AND CASE
    WHEN column_name = 'amount' THEN value ~ '^[0-9.,+eE -]*$' AND value !~ '[0-9]{13}'
    WHEN column_name = 'event_date' THEN value ~ '^[0-9/.:T -]*$' AND value !~ '[0-9]{9}'
    WHEN column_name IN ('currency', 'contribution_type', 'status', 'country') THEN value ~ '^[A-Za-z_ -]*$'
    ELSE false END;

CREATE FUNCTION meta.masked_failing_value(column_name text, value text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN value IS NULL OR column_name IS NULL THEN value
    WHEN column_name NOT IN ('declaration_id', 'taxpayer_id', 'event_date', 'amount', 'currency',
                             'contribution_type', 'status', 'country') THEN value
    WHEN value = '[purged]' OR value ~ '^\[[0-9]+ characters?(: [a-zA-Z ,-]+)?\]$' THEN value
    WHEN meta.quotable_failing_value(column_name, value) THEN value
    ELSE meta.describe_value(value) END;
COMMENT ON FUNCTION meta.masked_failing_value(text, text) IS
    'A failing value of a column as meta may hold it: itself where it cannot be a taxpayer id, else its description';

-- A quarantine reason "column: rule ('value')" (the value as Python's repr wrote it) with the value
-- masked as above; any other reason is left as it is.
CREATE FUNCTION meta.masked_reason(reason text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT AS $fn$
DECLARE
    parts text[] := regexp_match(reason, '^([a-z_]+): ([a-z0-9_]+) \((.*)\)$');
    quoted text;
    value text;
BEGIN
    IF parts IS NULL THEN
        RETURN reason;
    END IF;
    quoted := parts[3];
    IF length(quoted) < 2 OR left(quoted, 1) NOT IN ('''', '"') OR right(quoted, 1) <> left(quoted, 1) THEN
        RETURN reason;  -- not a quoted value: a description, or a database's message
    END IF;
    value := regexp_replace(substr(quoted, 2, length(quoted) - 2), '\\(.)', '\1', 'g');
    IF meta.masked_failing_value(parts[1], value) = value THEN
        RETURN reason;
    END IF;
    RETURN parts[1] || ': ' || parts[2] || ' (' || meta.describe_value(value) || ')';
END
$fn$;

-- A message (a ledger detail, a step's error) with every quoted text that is not a name (of a
-- column, a table, a file) replaced by its description, and a constraint's failing row dropped.
CREATE FUNCTION meta.masked_message(message text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT AS $fn$
DECLARE
    rest text := regexp_replace(message, 'Failing row contains \([^\n]*\)', 'Failing row contains (…)', 'g');
    result text := '';
    found text[];
    content text;
    at integer;
BEGIN
    LOOP
        found := regexp_match(rest, $re$('(?:[^'\\\n]|\\.)*'|"[^"\n]*")$re$);
        EXIT WHEN found IS NULL;
        at := strpos(rest, found[1]);
        content := substr(found[1], 2, length(found[1]) - 2);
        result := result || left(rest, at - 1)
            || CASE WHEN content ~ '^[A-Za-z_][A-Za-z_ .]{0,63}$' OR content ~ '^[A-Za-z0-9_.-]{1,200}\.csv$'
                    THEN found[1] ELSE meta.describe_value(content) END;
        rest := substr(rest, at + length(found[1]));
    END LOOP;
    RETURN result || rest;
END
$fn$;

-- A list of header names (", " between them) with every name that is not a column name described.
CREATE FUNCTION meta.masked_names(names text, separator text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
RETURN array_to_string(ARRAY(
    SELECT CASE WHEN n ~ '^[A-Za-z_][A-Za-z_ ]{0,63}$' OR n ~ '^column [0-9]+ \[' THEN n
                ELSE 'column ' || meta.describe_value(n) END
      FROM unnest(string_to_array(names, separator)) WITH ORDINALITY AS u(n, i) ORDER BY i), separator);

UPDATE meta.data_quality_issue
   SET failing_value = meta.masked_failing_value(column_name, failing_value)
 WHERE failing_value IS DISTINCT FROM meta.masked_failing_value(column_name, failing_value);
UPDATE meta.data_quality_issue
   SET column_name = meta.masked_names(column_name, ', ')
 WHERE rule = 'schema_drift' AND column_name IS DISTINCT FROM meta.masked_names(column_name, ', ');
UPDATE raw.contributions_quarantine
   SET reasons = ARRAY(SELECT meta.masked_reason(r) FROM unnest(reasons) WITH ORDINALITY AS u(r, i) ORDER BY i)
 WHERE reasons IS DISTINCT FROM
       ARRAY(SELECT meta.masked_reason(r) FROM unnest(reasons) WITH ORDINALITY AS u(r, i) ORDER BY i);
UPDATE meta.source_file
   SET detail = meta.masked_message(detail)
 WHERE detail IS DISTINCT FROM meta.masked_message(detail);
UPDATE meta.etl_run
   SET error = meta.masked_message(error)
 WHERE step = 'ingest' AND error IS DISTINCT FROM meta.masked_message(error);
UPDATE meta.etl_run
   SET details = jsonb_set(details, '{extra_columns}', to_jsonb(meta.masked_names(details->>'extra_columns', ',')))
 WHERE step = 'ingest' AND details ? 'extra_columns'
   AND details->>'extra_columns' IS DISTINCT FROM meta.masked_names(details->>'extra_columns', ',');

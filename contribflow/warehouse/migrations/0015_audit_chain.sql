-- The audit trail is hash-chained (issue 27, point 4): a row of a chained relation is sealed into
-- one central, totally ordered chain when it reaches its final state, in the same transaction as
-- the INSERT or UPDATE that makes it final; once sealed it can no longer change, except by the
-- migrator, whose change `contribflow verify` reports until a `meta.chain_reseal` records it.
-- The definitions (canonical encoding, row hash, link) are in docs/verify.md; `contribflow verify`
-- (contribflow/audit/chain.py) recomputes them independently of the functions below.
--
-- Why sealing at the final state rather than insert-only events: a step's row is written RUNNING
-- and closed later (contribflow/step.py, so that a killed step leaves a trace), a build moves
-- through BUILDING..PUBLISHED, a withdrawal is applied by a later publication. A row is evidence
-- once it stops moving; the WHEN clause of each relation's triggers says when that is.

-- One chain: seq is gapless, each entry's link hashes its content and the previous link.
CREATE TABLE meta.audit_chain (
    seq        bigint      PRIMARY KEY CHECK (seq > 0),
    relation   text        NOT NULL,
    row_key    text        NOT NULL,
    -- seal: the row reached its final state; reseal: the migrator changed a sealed row and recorded
    -- it (meta.chain_reseal); delete: the migrator removed a sealed row and recorded it.
    kind       text        NOT NULL CHECK (kind IN ('seal', 'reseal', 'delete')),
    row_hash   bytea       CHECK ((kind = 'delete') = (row_hash IS NULL)),
    reason     text,
    sealed_by  text        NOT NULL,
    sealed_at  timestamptz NOT NULL,
    prev_link  bytea       NOT NULL,
    link       bytea       NOT NULL
);
CREATE INDEX audit_chain_row ON meta.audit_chain (relation, row_key, seq);

-- The head: the last entry (the genesis link, 32 zero bytes, at seq 0 while the chain is empty).
-- A view, not a row every append updates: a transaction that seals many rows (a file's quality
-- issues) would otherwise leave as many dead versions of one row, each next append walking them all.
CREATE VIEW meta.audit_chain_head AS
SELECT
    coalesce(max(seq), 0) AS seq,
    coalesce(
        (SELECT c.link FROM meta.audit_chain AS c ORDER BY c.seq DESC LIMIT 1),
        decode(repeat('00', 32), 'hex')
    ) AS link
FROM meta.audit_chain;

-- The registry of chained relations: adding a relation is one line, SELECT meta.chain_relation(...).
CREATE TABLE meta.chained_relation (
    relation    text        PRIMARY KEY,
    key_column  text        NOT NULL,
    -- A predicate over the row, named r: true once the row is final (sealed).
    sealed_when text        NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The canonical text of an object: its non-null members sorted by name (bytewise), each
-- name=<length in UTF-8 bytes>:<value>, joined by ';'. A value is the member's JSON scalar as text
-- (a string unquoted), or the jsonb text of an array or object. NULL members are left out, so a
-- NULL and an empty string differ ("" is name=0:) and a nullable column added later leaves earlier
-- rows' hashes as they were.
CREATE FUNCTION meta.chain_canon(obj jsonb) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
    SELECT coalesce(string_agg(e.key || '=' || octet_length(convert_to(e.value #>> '{}', 'UTF8'))
                               || ':' || (e.value #>> '{}'), ';' ORDER BY e.key COLLATE "C"), '')
      FROM jsonb_each(obj) AS e
     WHERE jsonb_typeof(e.value) <> 'null'
$fn$;

-- row_hash = sha256(UTF-8 of 'contribflow-chain-row/1' LF relation LF canon(to_jsonb(row))).
-- to_jsonb writes dates and timestamps in ISO 8601 whatever DateStyle; the callers fix TimeZone,
-- extra_float_digits and the bytea and interval styles (their SET clauses), so the text does not
-- depend on the session.
CREATE FUNCTION meta.chain_row_hash(relation text, row_json jsonb) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
    SELECT sha256(convert_to('contribflow-chain-row/1' || chr(10) || relation || chr(10)
                             || meta.chain_canon(row_json), 'UTF8'))
$fn$;

-- Append one entry. Owned by the migrator and SECURITY DEFINER: the stages append through the
-- triggers below without any privilege on the chain itself.
CREATE FUNCTION meta.chain_append(p_relation text, p_key text, p_kind text, p_row_hash bytea,
                                  p_reason text DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET TimeZone = 'UTC' AS $fn$
DECLARE
    head record;
    e meta.audit_chain;
BEGIN
    -- One append at a time, whatever the stage: this lock (held to the commit) serialises them into
    -- one order, so the chain never forks; the primary key on seq refuses a second entry at a seq.
    PERFORM pg_advisory_xact_lock(4859223969370825283);  -- the bytes of 'ContribC', migration 0015
    SELECT * INTO head FROM meta.audit_chain_head;
    e.seq := head.seq + 1;
    e.relation := p_relation;
    e.row_key := p_key;
    e.kind := p_kind;
    e.row_hash := p_row_hash;
    e.reason := p_reason;
    e.sealed_by := session_user;
    e.sealed_at := date_trunc('microseconds', clock_timestamp());
    e.prev_link := head.link;
    -- link = sha256(prev_link || UTF-8 of 'contribflow-chain-link/1' LF canon(entry)), the entry's
    -- sealed_at as microseconds since the Unix epoch, its row_hash as lowercase hex.
    e.link := sha256(head.link || convert_to('contribflow-chain-link/1' || chr(10) || meta.chain_canon(
        jsonb_build_object('seq', e.seq::text, 'relation', e.relation, 'row_key', e.row_key, 'kind', e.kind,
                           'row_hash', encode(e.row_hash, 'hex'), 'reason', e.reason,
                           'sealed_by', e.sealed_by,
                           'sealed_at', (extract(epoch FROM e.sealed_at) * 1000000)::bigint::text)), 'UTF8'));
    INSERT INTO meta.audit_chain VALUES (e.*);
    RETURN e.seq;
END
$fn$;
REVOKE ALL ON FUNCTION meta.chain_append(text, text, text, bytea, text) FROM PUBLIC;

-- The sealing trigger (deferred to the commit of the row's transaction, so the head is locked only
-- while committing). TG_ARGV[0] is the key column.
CREATE FUNCTION meta.chain_seal() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET TimeZone = 'UTC' SET extra_float_digits = 1
SET bytea_output = 'hex' SET IntervalStyle = 'postgres' AS $fn$
DECLARE
    rel text := format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME);
    doc jsonb := to_jsonb(NEW);
BEGIN
    PERFORM meta.chain_append(rel, doc ->> TG_ARGV[0], 'seal', meta.chain_row_hash(rel, doc));
    RETURN NULL;
END
$fn$;
REVOKE ALL ON FUNCTION meta.chain_seal() FROM PUBLIC;

-- Sealed rows never change: UPDATE, DELETE and TRUNCATE refused (insufficient_privilege) to every
-- role but the migrator (and superusers, whom nothing can refuse: verify finds what they do).
-- SECURITY INVOKER on purpose: current_user is the caller's role.
CREATE FUNCTION meta.chain_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF pg_has_role(current_user, 'contribflow_migrator', 'USAGE') THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_LEVEL = 'STATEMENT' THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = format('%s of %I.%I refused to %s: its rows are sealed into the audit chain',
                             TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME, current_user);
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
        MESSAGE = format('%s of %I.%I row %s=%s refused to %s: the row is sealed into the audit chain '
                         '(only the migrator may change it, and verify reports it until meta.chain_reseal records it)',
                         TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_ARGV[0], to_jsonb(OLD) ->> TG_ARGV[0],
                         current_user);
END
$fn$;

-- Chain a relation: its triggers, and the seal of the rows already final (in key order).
-- sealed_when is a predicate over the row named r (default: every row is final when inserted).
CREATE FUNCTION meta.chain_relation(rel regclass, key_column text, sealed_when text DEFAULT 'true')
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp SET TimeZone = 'UTC' SET extra_float_digits = 1
SET bytea_output = 'hex' SET IntervalStyle = 'postgres' AS $fn$
DECLARE
    nsp text;
    tab text;
    name text;
    pred text;
    sealed bigint;
BEGIN
    SELECT n.nspname, c.relname INTO nsp, tab
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel;
    name := format('%I.%I', nsp, tab);
    pred := format('%I.%I', nsp, 'chain_sealed_' || tab);
    INSERT INTO meta.chained_relation (relation, key_column, sealed_when) VALUES (name, key_column, sealed_when);
    EXECUTE format('CREATE FUNCTION %s(r %s) RETURNS boolean LANGUAGE sql IMMUTABLE AS %L',
                   pred, name, 'SELECT coalesce((' || sealed_when || '), false)');
    EXECUTE format('CREATE CONSTRAINT TRIGGER chain_seal_insert AFTER INSERT ON %s DEFERRABLE INITIALLY DEFERRED '
                   'FOR EACH ROW WHEN (%s(NEW)) EXECUTE FUNCTION meta.chain_seal(%L)', name, pred, key_column);
    EXECUTE format('CREATE CONSTRAINT TRIGGER chain_seal_update AFTER UPDATE ON %s DEFERRABLE INITIALLY DEFERRED '
                   'FOR EACH ROW WHEN (NOT %s(OLD) AND %s(NEW)) EXECUTE FUNCTION meta.chain_seal(%L)',
                   name, pred, pred, key_column);
    EXECUTE format('CREATE TRIGGER chain_refuse_change BEFORE UPDATE OR DELETE ON %s '
                   'FOR EACH ROW WHEN (%s(OLD)) EXECUTE FUNCTION meta.chain_refuse_change(%L)',
                   name, pred, key_column);
    EXECUTE format('CREATE TRIGGER chain_refuse_truncate BEFORE TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION meta.chain_refuse_change(%L)', name, key_column);
    EXECUTE format('SELECT count(meta.chain_append(%L, k, ''seal'', h)) FROM ('
                   'SELECT to_jsonb(r) ->> %L AS k, meta.chain_row_hash(%L, to_jsonb(r)) AS h '
                   'FROM %s r WHERE %s(r) ORDER BY r.%I) s',
                   name, key_column, name, name, pred, key_column) INTO sealed;
    RETURN sealed;
END
$fn$;
REVOKE ALL ON FUNCTION meta.chain_relation(regclass, text, text) FROM PUBLIC;

-- The migrator's record of its own change to sealed rows (a migration that rewrites history, or
-- purge-quarantine masking old values), in the transaction that made it: one reseal entry per sealed
-- row (of `keys`, or all) whose content no longer matches its latest entry, one delete entry per
-- sealed row that is gone. A final row that was never sealed (inserted around the chain) is not
-- sealed here: verify goes on reporting it, for someone to find out how it got there. Returns how
-- many entries it appended.
CREATE FUNCTION meta.chain_reseal(rel regclass, reason text, keys text[] DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp SET TimeZone = 'UTC' SET extra_float_digits = 1
SET bytea_output = 'hex' SET IntervalStyle = 'postgres' AS $fn$
DECLARE
    reg meta.chained_relation;
    appended bigint;
BEGIN
    IF reason IS NULL OR btrim(reason) = '' THEN
        RAISE EXCEPTION 'meta.chain_reseal(%): give the reason for the change it records', rel;
    END IF;
    SELECT * INTO reg FROM meta.chained_relation c
     WHERE c.relation = (SELECT format('%I.%I', n.nspname, cl.relname)
                           FROM pg_class cl JOIN pg_namespace n ON n.oid = cl.relnamespace WHERE cl.oid = rel);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'meta.chain_reseal: % is not a chained relation (meta.chained_relation)', rel;
    END IF;
    SET CONSTRAINTS ALL IMMEDIATE;  -- this transaction's own pending seals first
    EXECUTE format(
        'WITH latest AS (SELECT DISTINCT ON (row_key) row_key, seq, kind, row_hash FROM meta.audit_chain '
        '                 WHERE relation = %1$L AND ($1 IS NULL OR row_key = ANY($1)) '
        '                 ORDER BY row_key, seq DESC), '
        '     cur AS (SELECT to_jsonb(r) ->> %2$L AS row_key, meta.chain_row_hash(%1$L, to_jsonb(r)) AS h '
        '               FROM %1$s r WHERE %3$s(r)) '
        'SELECT count(meta.chain_append(%1$L, x.row_key, x.kind, x.h, %4$L)) FROM ( '
        '    SELECT l.row_key, c.h, CASE WHEN c.row_key IS NULL THEN ''delete'' ELSE ''reseal'' END AS kind '
        '      FROM latest l LEFT JOIN cur c ON c.row_key = l.row_key '
        '     WHERE l.kind <> ''delete'' AND l.row_hash IS DISTINCT FROM c.h '
        '     ORDER BY l.seq) x',
        reg.relation, reg.key_column, format('%I.%I', split_part(reg.relation, '.', 1),
                                            'chain_sealed_' || split_part(reg.relation, '.', 2)), reason)
        INTO appended USING keys;
    RETURN appended;
END
$fn$;
REVOKE ALL ON FUNCTION meta.chain_reseal(regclass, text, text[]) FROM PUBLIC;

-- The audit trail.
SELECT meta.chain_relation('meta.etl_run', 'id', $$r.status <> 'RUNNING'$$);
SELECT meta.chain_relation('meta.source_file', 'id');
SELECT meta.chain_relation('meta.data_quality_issue', 'id');
SELECT meta.chain_relation('meta.dbt_node_result', 'id');
SELECT meta.chain_relation('meta.source_freshness', 'id');
SELECT meta.chain_relation('meta.mart_build', 'id',
                           $$r.status IN ('PUBLISHED', 'TEST_FAILED', 'BUILD_FAILED', 'ABANDONED')$$);
SELECT meta.chain_relation('meta.file_withdrawal', 'id', $$r.applied_build_id IS NOT NULL$$);
SELECT meta.chain_relation('meta.run_sla', 'id');

-- The auditor reads the whole chain (verify); every stage may read the head (finish reports it).
GRANT SELECT ON meta.audit_chain, meta.chained_relation TO contribflow_auditor;
GRANT SELECT ON meta.audit_chain_head TO contribflow_auditor, contribflow_loader, contribflow_transformer;
-- The migrator records its own changes (meta.chain_reseal) and chains new relations. It owns these
-- objects when init-db runs as the migrator login; the grants make it so when an administrator ran it.
GRANT SELECT ON meta.audit_chain, meta.audit_chain_head, meta.chained_relation TO contribflow_migrator;
GRANT EXECUTE ON FUNCTION meta.chain_append(text, text, text, bytea, text), meta.chain_reseal(regclass, text, text[]),
    meta.chain_relation(regclass, text, text) TO contribflow_migrator;

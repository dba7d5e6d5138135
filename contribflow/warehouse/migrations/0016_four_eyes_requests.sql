-- Issue 28: four eyes on every correction. A correction (withdraw a file, re-process a day with a
-- one-run threshold, re-load corrected quarantined rows, purge the quarantine) is a REQUEST that one
-- person makes and a DIFFERENT person approves; the pipeline then applies it once, in the same
-- transaction that records the application. People are database roles: personal LOGIN roles,
-- members of
--
--   contribflow_operator  may request (meta.request_correction)
--   contribflow_approver  may approve or reject (meta.decide_correction)
--
-- and a person is session_user, the login that connected (neither SET ROLE, PGOPTIONS' role nor a
-- SECURITY DEFINER function changes it), never a command-line flag.
--
-- Three append-only tables, never UPDATEd or DELETEd (a trigger refuses it, whoever asks), so that
-- a hash chain over them (issue 27) can cover them: correction_request, correction_decision,
-- correction_application. Nobody may INSERT into them directly; only the SECURITY DEFINER
-- functions below do, after their checks. The actions themselves are refused without an applied
-- request in the same transaction, to every role including the owner (triggers): a withdrawal
-- (INSERT into meta.file_withdrawal) and a purge (DELETE from raw.contributions_quarantine).
DO $people$
DECLARE
    role_name text;
    me record;
BEGIN
    SELECT rolname, rolsuper, rolcreaterole INTO me FROM pg_roles WHERE rolname = current_user;
    FOREACH role_name IN ARRAY ARRAY['contribflow_operator', 'contribflow_approver'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
            IF NOT (me.rolsuper OR me.rolcreaterole) THEN
                RAISE EXCEPTION 'init-db: the group role % does not exist and % may not create roles (no CREATEROLE): run init-db once as a role with CREATEROLE, or have an administrator run CREATE ROLE % NOLOGIN',
                    role_name, me.rolname, role_name;
            END IF;
            EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
        END IF;
    END LOOP;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO contribflow_operator, contribflow_approver',
                   current_database());
END
$people$;

CREATE TABLE meta.correction_request (
    id           bigserial   PRIMARY KEY,
    kind         text        NOT NULL CHECK (kind IN ('withdraw-file', 'reprocess', 'reload-corrected',
                                                      'purge-quarantine')),
    -- The action's arguments: {"date": ...}, {"date", "threshold"}, {"date", "file"}, {"before": ...}.
    arguments    jsonb       NOT NULL,
    reason       text        NOT NULL CHECK (btrim(reason) <> '' AND length(reason) <= 1000),
    requested_by text        NOT NULL,
    requested_at timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL CHECK (expires_at > requested_at)
);

CREATE TABLE meta.correction_decision (
    id          bigserial   PRIMARY KEY,
    -- One decision per request: approved or rejected, never both, never twice.
    request_id  bigint      NOT NULL UNIQUE REFERENCES meta.correction_request (id),
    approved    boolean     NOT NULL,
    reason      text        CHECK (approved OR btrim(reason) <> ''),
    decided_by  text        NOT NULL,
    decided_at  timestamptz NOT NULL
);

CREATE TABLE meta.correction_application (
    id           bigserial   PRIMARY KEY,
    -- Applied once.
    request_id   bigint      NOT NULL UNIQUE REFERENCES meta.correction_request (id),
    applied_by   text        NOT NULL,
    applied_role text        NOT NULL,
    applied_at   timestamptz NOT NULL,
    -- The transaction that applied it: the action's triggers look for it (meta.require_applied).
    applied_xact xid8        NOT NULL
);
CREATE INDEX correction_application_xact ON meta.correction_application (applied_xact);

-- What a reload-corrected request re-loaded: each quarantined line a corrected row replaces.
CREATE TABLE meta.correction_link (
    id                bigserial PRIMARY KEY,
    request_id        bigint    NOT NULL REFERENCES meta.correction_request (id),
    declaration_id    text      NOT NULL,
    quarantine_sha256 text      NOT NULL,
    quarantine_line   integer   NOT NULL,
    corrected_file    text      NOT NULL,
    corrected_line    integer   NOT NULL
);
CREATE INDEX correction_link_declaration ON meta.correction_link (declaration_id);

CREATE FUNCTION meta.refuse_changing_corrections() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION '%.% is append-only: % refused (a request, its decision and its application are never changed)',
        TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END
$fn$;
CREATE TRIGGER correction_request_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON meta.correction_request
    FOR EACH STATEMENT EXECUTE FUNCTION meta.refuse_changing_corrections();
CREATE TRIGGER correction_decision_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON meta.correction_decision
    FOR EACH STATEMENT EXECUTE FUNCTION meta.refuse_changing_corrections();
CREATE TRIGGER correction_application_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
    ON meta.correction_application FOR EACH STATEMENT EXECUTE FUNCTION meta.refuse_changing_corrections();
CREATE TRIGGER correction_link_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON meta.correction_link
    FOR EACH STATEMENT EXECUTE FUNCTION meta.refuse_changing_corrections();

-- Make a request. ttl_hours: CONTRIBFLOW_REQUEST_TTL_HOURS, bounded here too (a caller of the
-- function cannot make a request that never expires).
CREATE FUNCTION meta.request_correction(p_kind text, p_arguments jsonb, p_reason text, p_ttl_hours integer)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    new_id bigint;
    now_ts timestamptz := clock_timestamp();
BEGIN
    IF NOT pg_has_role(session_user, 'contribflow_operator', 'MEMBER') THEN
        RAISE EXCEPTION 'contribflow request: % is not an operator (not a member of contribflow_operator): an administrator adds people with contribflow db add-person NAME --role operator',
            session_user USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF p_ttl_hours IS NULL OR p_ttl_hours < 1 OR p_ttl_hours > 720 THEN
        RAISE EXCEPTION 'contribflow request: a request expires after 1 to 720 hours, not %', p_ttl_hours
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_reason IS NULL OR btrim(p_reason) = '' THEN
        RAISE EXCEPTION 'contribflow request: a reason is required (say why; it is recorded with who and when)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO meta.correction_request (kind, arguments, reason, requested_by, requested_at, expires_at)
    VALUES (p_kind, p_arguments, btrim(p_reason), session_user, now_ts, now_ts + make_interval(hours => p_ttl_hours))
    RETURNING id INTO new_id;
    RETURN new_id;
END
$fn$;

-- The state of a request, for the CLI's messages.
CREATE FUNCTION meta.correction_state(p_id bigint) RETURNS text LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT CASE WHEN a.id IS NOT NULL THEN 'APPLIED'
                WHEN d.id IS NOT NULL AND NOT d.approved THEN 'REJECTED'
                WHEN r.expires_at <= clock_timestamp() THEN 'EXPIRED'
                WHEN d.id IS NOT NULL THEN 'APPROVED'
                ELSE 'OPEN' END
      FROM meta.correction_request r
      LEFT JOIN meta.correction_decision d ON d.request_id = r.id
      LEFT JOIN meta.correction_application a ON a.request_id = r.id
     WHERE r.id = p_id
$fn$;

-- Approve (p_approved) or reject a request: by an approver who is not its requester, before it
-- expires, once.
CREATE FUNCTION meta.decide_correction(p_id bigint, p_approved boolean, p_reason text)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    req meta.correction_request;
    earlier meta.correction_decision;
    new_id bigint;
    verb text := CASE WHEN p_approved THEN 'approve' ELSE 'reject' END;
BEGIN
    SELECT * INTO req FROM meta.correction_request WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'contribflow %: there is no request %', verb, p_id USING ERRCODE = 'no_data_found';
    END IF;
    IF NOT pg_has_role(session_user, 'contribflow_approver', 'MEMBER') THEN
        RAISE EXCEPTION 'contribflow %: % is not an approver (not a member of contribflow_approver): request % must be decided by an approver',
            verb, session_user, p_id USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF req.requested_by = session_user THEN
        RAISE EXCEPTION 'contribflow %: request % was made by % and cannot be decided by its requester: four eyes, another approver must decide it',
            verb, p_id, session_user USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO earlier FROM meta.correction_decision WHERE request_id = p_id;
    IF FOUND THEN
        RAISE EXCEPTION 'contribflow %: request % was already % by % at %', verb, p_id,
            CASE WHEN earlier.approved THEN 'approved' ELSE 'rejected' END, earlier.decided_by, earlier.decided_at
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF req.expires_at <= clock_timestamp() THEN
        RAISE EXCEPTION 'contribflow %: request % expired at %: make a new request', verb, p_id, req.expires_at
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF NOT p_approved AND (p_reason IS NULL OR btrim(p_reason) = '') THEN
        RAISE EXCEPTION 'contribflow reject: a reason is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO meta.correction_decision (request_id, approved, reason, decided_by, decided_at)
    VALUES (p_id, p_approved, nullif(btrim(p_reason), ''), session_user, clock_timestamp())
    RETURNING id INTO new_id;
    RETURN new_id;
END
$fn$;

-- Record the application of an approved, unexpired request, in the caller's transaction: the
-- action that follows in that transaction is then allowed by its trigger. Returns false, and
-- records nothing, when the request was applied already (a second apply changes nothing).
CREATE FUNCTION meta.apply_correction(p_id bigint) RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    req meta.correction_request;
    dec meta.correction_decision;
BEGIN
    SELECT * INTO req FROM meta.correction_request WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'contribflow apply: there is no request %', p_id USING ERRCODE = 'no_data_found';
    END IF;
    IF EXISTS (SELECT FROM meta.correction_application WHERE request_id = p_id) THEN
        RETURN false;
    END IF;
    SELECT * INTO dec FROM meta.correction_decision WHERE request_id = p_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'contribflow apply: request % is not approved: an approver other than % must approve it first (contribflow approve %)',
            p_id, req.requested_by, p_id USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF NOT dec.approved THEN
        RAISE EXCEPTION 'contribflow apply: request % was rejected by % at %: it is never applied',
            p_id, dec.decided_by, dec.decided_at USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF req.expires_at <= clock_timestamp() THEN
        RAISE EXCEPTION 'contribflow apply: request % expired at % before it was applied: make a new request',
            p_id, req.expires_at USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    INSERT INTO meta.correction_application (request_id, applied_by, applied_role, applied_at, applied_xact)
    VALUES (p_id, session_user, current_setting('role'), clock_timestamp(), pg_current_xact_id());
    RETURN true;
END
$fn$;

-- The request applied in this transaction, of this kind, or an error naming the request command.
CREATE FUNCTION meta.applied_request(p_kind text) RETURNS meta.correction_request LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    req meta.correction_request;
BEGIN
    SELECT r.* INTO req FROM meta.correction_application a JOIN meta.correction_request r ON r.id = a.request_id
     WHERE a.applied_xact = pg_current_xact_id() AND r.kind = p_kind
     ORDER BY a.id DESC LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% needs an approved request: contribflow request % … --reason TEXT, approved by another person (contribflow approve ID), then contribflow apply ID',
            p_kind, p_kind USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN req;
END
$fn$;

CREATE FUNCTION meta.require_applied_withdrawal() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    req meta.correction_request := meta.applied_request('withdraw-file');
BEGIN
    IF NEW.file_date IS DISTINCT FROM (req.arguments->>'date')::date THEN
        RAISE EXCEPTION 'request % withdraws the file of %, not of %', req.id, req.arguments->>'date', NEW.file_date
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    NEW.request_id := req.id;
    RETURN NEW;
END
$fn$;

CREATE FUNCTION meta.require_applied_purge() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    req meta.correction_request := meta.applied_request('purge-quarantine');
BEGIN
    IF OLD.file_date >= (req.arguments->>'before')::date THEN
        RAISE EXCEPTION 'request % purges the quarantine before %, not a row of %', req.id,
            req.arguments->>'before', OLD.file_date USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN OLD;
END
$fn$;

ALTER TABLE meta.file_withdrawal ADD COLUMN request_id bigint REFERENCES meta.correction_request (id);
CREATE TRIGGER file_withdrawal_needs_request BEFORE INSERT ON meta.file_withdrawal
    FOR EACH ROW EXECUTE FUNCTION meta.require_applied_withdrawal();
CREATE TRIGGER quarantine_purge_needs_request BEFORE DELETE ON raw.contributions_quarantine
    FOR EACH ROW EXECUTE FUNCTION meta.require_applied_purge();
CREATE TRIGGER quarantine_no_truncate BEFORE TRUNCATE ON raw.contributions_quarantine
    FOR EACH STATEMENT EXECUTE FUNCTION meta.refuse_changing_corrections();

-- Owned by the migrator (as every object of raw and meta): the SECURITY DEFINER functions run as
-- it, never as the superuser who may have run init-db.
ALTER TABLE meta.correction_request OWNER TO contribflow_migrator;
ALTER TABLE meta.correction_decision OWNER TO contribflow_migrator;
ALTER TABLE meta.correction_application OWNER TO contribflow_migrator;
ALTER TABLE meta.correction_link OWNER TO contribflow_migrator;
ALTER FUNCTION meta.refuse_changing_corrections() OWNER TO contribflow_migrator;
ALTER FUNCTION meta.request_correction(text, jsonb, text, integer) OWNER TO contribflow_migrator;
ALTER FUNCTION meta.correction_state(bigint) OWNER TO contribflow_migrator;
ALTER FUNCTION meta.decide_correction(bigint, boolean, text) OWNER TO contribflow_migrator;
ALTER FUNCTION meta.apply_correction(bigint) OWNER TO contribflow_migrator;
ALTER FUNCTION meta.applied_request(text) OWNER TO contribflow_migrator;
ALTER FUNCTION meta.require_applied_withdrawal() OWNER TO contribflow_migrator;
ALTER FUNCTION meta.require_applied_purge() OWNER TO contribflow_migrator;

REVOKE ALL ON FUNCTION meta.request_correction(text, jsonb, text, integer),
    meta.decide_correction(bigint, boolean, text), meta.apply_correction(bigint) FROM PUBLIC;
GRANT USAGE ON SCHEMA meta TO contribflow_operator, contribflow_approver;
-- Every person may call them: the functions themselves refuse a non-operator's request and a
-- non-approver's decision, with a message that says so (a missing EXECUTE would only say
-- "permission denied").
GRANT EXECUTE ON FUNCTION meta.request_correction(text, jsonb, text, integer),
    meta.decide_correction(bigint, boolean, text)
    TO contribflow_operator, contribflow_approver, contribflow_auditor;
-- Applying is the pipeline's: the migrator login (contribflow apply, the apply-request workflow).
GRANT EXECUTE ON FUNCTION meta.apply_correction(bigint) TO contribflow_migrator;
-- Everyone involved reads the requests; nobody but the functions writes them.
GRANT SELECT ON meta.correction_request, meta.correction_decision, meta.correction_application,
    meta.correction_link TO contribflow_operator, contribflow_approver, contribflow_auditor,
    contribflow_loader, contribflow_transformer;
-- An operator checks what a request names: the ledger of files.
GRANT SELECT ON meta.source_file TO contribflow_operator, contribflow_approver;

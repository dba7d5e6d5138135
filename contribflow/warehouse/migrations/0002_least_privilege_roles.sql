-- Least privilege: one NOLOGIN group role per kind of work. Logins (one per stage in the cluster,
-- from the contribflow-db Secret) are made members of a group role and connect with
-- PGOPTIONS='-c role=contribflow_<role>', so whatever they create is owned by the group role,
-- not by a person's or a pod's login.
--
--   contribflow_migrator     owns raw and meta (all their DDL)
--   contribflow_loader       reads raw, appends to raw and meta (never updates or deletes history)
--   contribflow_transformer  reads raw, owns staging and marts (dbt), records its steps in meta
--   contribflow_analyst      reads marts, nothing else (dbt grants SELECT on each mart it builds)
--
-- Creating roles needs CREATEROLE (or a superuser). Without it this migration stops with a message
-- saying what to do, and nothing of it is applied: grants silently missing would be worse.
DO $roles$
DECLARE
    role_name text;
    me record;
BEGIN
    SELECT rolname, rolsuper, rolcreaterole INTO me FROM pg_roles WHERE rolname = current_user;
    FOREACH role_name IN ARRAY ARRAY['contribflow_migrator', 'contribflow_loader',
                                     'contribflow_transformer', 'contribflow_analyst'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
            IF NOT (me.rolsuper OR me.rolcreaterole) THEN
                RAISE EXCEPTION 'init-db: the group role % does not exist and % may not create roles (no CREATEROLE): run init-db once as a role with CREATEROLE, or have an administrator run CREATE ROLE % NOLOGIN (and the other contribflow_* roles, see README) and grant them to % WITH INHERIT TRUE, SET TRUE',
                    role_name, me.rolname, role_name, me.rolname;
            END IF;
            EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
        END IF;
        IF NOT me.rolsuper AND NOT pg_has_role(me.rolname, role_name, 'SET') THEN
            -- A CREATEROLE creator holds ADMIN OPTION on its roles, enough to give itself SET.
            BEGIN
                EXECUTE format('GRANT %I TO %I WITH INHERIT TRUE, SET TRUE', role_name, me.rolname);
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'init-db: % must be a member of the group role % to hand it its objects: have an administrator run GRANT % TO % WITH INHERIT TRUE, SET TRUE',
                    me.rolname, role_name, role_name, me.rolname;
            END;
        END IF;
    END LOOP;
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO contribflow_migrator, '
                   'contribflow_loader, contribflow_transformer', current_database());
    EXECUTE format('GRANT CREATE ON DATABASE %I TO contribflow_migrator', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO contribflow_analyst', current_database());
END
$roles$;

-- raw may only grow. The loader needs DELETE for one thing: when a file fails the reject
-- threshold, ingest removes the rows its own, still uncommitted, transaction inserted. Anything
-- committed earlier is refused here, whoever asks.
CREATE FUNCTION raw.refuse_rewriting_history() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'UPDATE' OR OLD.ingestion_ts < transaction_timestamp() THEN
        RAISE EXCEPTION 'raw.contributions is append-only: % of declaration % (loaded at %) refused',
            TG_OP, OLD.declaration_id, OLD.ingestion_ts;
    END IF;
    RETURN OLD;
END
$fn$;
CREATE TRIGGER contributions_append_only BEFORE UPDATE OR DELETE ON raw.contributions
    FOR EACH ROW EXECUTE FUNCTION raw.refuse_rewriting_history();

-- dbt's schemas exist before dbt runs, owned by the transformer (dbt then only creates relations).
CREATE SCHEMA IF NOT EXISTS staging;
CREATE SCHEMA IF NOT EXISTS marts;

DO $owners$
DECLARE
    obj record;
BEGIN
    ALTER SCHEMA raw OWNER TO contribflow_migrator;
    ALTER SCHEMA meta OWNER TO contribflow_migrator;
    ALTER SCHEMA staging OWNER TO contribflow_transformer;
    ALTER SCHEMA marts OWNER TO contribflow_transformer;
    -- Tables and views (their indexes and serial sequences follow), and functions.
    FOR obj IN
        SELECT c.oid::regclass AS name, n.nspname, c.relkind
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname IN ('raw', 'meta', 'staging', 'marts') AND c.relkind IN ('r', 'p', 'v', 'm')
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO %I',
                       CASE obj.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
                       obj.name,
                       CASE WHEN obj.nspname IN ('raw', 'meta') THEN 'contribflow_migrator'
                            ELSE 'contribflow_transformer' END);
    END LOOP;
    FOR obj IN
        SELECT p.oid::regprocedure AS name FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname IN ('raw', 'meta')
    LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO contribflow_migrator', obj.name);
    END LOOP;
END
$owners$;

REVOKE ALL ON SCHEMA raw, meta, staging, marts FROM PUBLIC;

GRANT USAGE ON SCHEMA raw TO contribflow_loader, contribflow_transformer;
GRANT SELECT, INSERT ON raw.contributions, raw.contributions_quarantine TO contribflow_loader;
GRANT DELETE ON raw.contributions TO contribflow_loader;
GRANT SELECT ON raw.contributions TO contribflow_transformer;

GRANT USAGE ON SCHEMA meta TO contribflow_loader, contribflow_transformer;
GRANT SELECT, INSERT ON meta.etl_run TO contribflow_loader, contribflow_transformer;
-- A step closes its own row; who, which step and when it started are never rewritten.
GRANT UPDATE (status, finished_at, duration_s, rows_in, rows_loaded, rows_rejected, source_file,
              error, details)
    ON meta.etl_run TO contribflow_loader, contribflow_transformer;
GRANT SELECT, INSERT ON meta.source_file, meta.data_quality_issue TO contribflow_loader;
GRANT SELECT, INSERT ON meta.dbt_node_result TO contribflow_transformer;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA meta TO contribflow_loader, contribflow_transformer;

-- Marts built before this migration; later ones get SELECT from dbt's `grants` config
-- (dbt_project.yml), applied inside the transaction that swaps the new table in.
GRANT USAGE ON SCHEMA marts TO contribflow_analyst;
GRANT SELECT ON ALL TABLES IN SCHEMA marts TO contribflow_analyst;

-- Who wrote each step: the login (session_user) and the role it acted as (current_user).
ALTER TABLE meta.etl_run
    ADD COLUMN db_login text NOT NULL DEFAULT session_user,
    ADD COLUMN db_role  text NOT NULL DEFAULT current_user;

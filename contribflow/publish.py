"""Write-audit-publish: the build slot in ``meta.mart_build``, and the ``publish`` stage.

dbt-build writes a day's marts into ``marts_build`` (analysts have no access to it), dbt-test
tests them there, and ``publish`` applies them to ``marts`` in one transaction:

- the fct delta (``marts_build.fct_contributions_delta``: the declarations that arrived since the
  last publication) replaces the published rows with the same declaration_id, so publishing costs
  the day's rows, never a copy of the history;
- ``marts_build.dim_taxpayer`` replaces ``marts.dim_taxpayer`` (the old table dropped, the new one
  moved with ``SET SCHEMA``, SELECT granted to the analyst role in the same transaction);
- the build is recorded PUBLISHED: the newest such row of ``meta.mart_build`` is what analysts see.

A reader under READ COMMITTED sees the day's fct rows and the new dim together, or neither. A
failed build or test leaves ``marts`` as it was; the failed build stays in ``marts_build``, and is
moved to ``marts_failed`` when the next build starts, where it is kept for inspection until the next
publication (analysts can read neither schema).

Two runs' builds never interleave in ``marts_build``: a run claims the slot (one open build at a
time, enforced by a unique index) before dbt-build, and releases it when its test fails or its
build is published. A run that ends without either (killed, retries exhausted) has its open build
closed as ABANDONED by its exit handler, or by the next run once it is stale.
"""

from __future__ import annotations

import datetime as dt
import time

import psycopg
import psycopg.sql

from contribflow import logs
from contribflow.audit import StepRun
from contribflow.db import connect
from contribflow.errors import StageError
from contribflow.settings import Settings

log = logs.get("publish")

DBT_LOCK = "contribflow:dbt"
ANALYST_ROLE = "contribflow_analyst"
OPEN = ("BUILDING", "BUILT", "TESTED")
FCT_COLUMNS = ("declaration_id", "taxpayer_key", "event_date", "amount", "currency", "contribution_type",
               "status", "country", "file_date", "source_file", "source_line", "raw_loaded_at")
BUILD_SCHEMA = "marts_build"
FAILED_SCHEMA = "marts_failed"
PUBLISHED_SCHEMA = "marts"

_OPEN_BUILD = """SELECT id, run_id, status, greatest(started_at, built_at, tested_at) AS touched,
                        clock_timestamp() - greatest(started_at, built_at, tested_at) > make_interval(secs => %s),
                        EXISTS (SELECT FROM meta.etl_run e WHERE e.run_id = b.run_id AND e.step = 'finish'
                                AND e.status <> 'RUNNING')
                   FROM meta.mart_build b WHERE status IN ('BUILDING', 'BUILT', 'TESTED')"""
_LAST_PUBLISHED = "SELECT max(id) FROM meta.mart_build WHERE status = 'PUBLISHED'"


def claim(settings: Settings, day: dt.date, full_refresh: bool, poll_s: float = 2.0) -> int:
    """The id of this run's open build: a new one, or the one a retried dbt-build left open.
    Waits while another run's build is open (being built, tested or published)."""
    said = False
    with connect(settings, autocommit=True) as conn:
        while True:
            row = conn.execute(_OPEN_BUILD, (settings.stale_after_s,)).fetchone()
            if row is not None:
                build_id, run_id, status, touched, stale, finished = row
                if run_id == settings.run_id:
                    conn.execute("""UPDATE meta.mart_build SET status = 'BUILDING', full_refresh = %s,
                                           started_at = clock_timestamp(), built_at = NULL, tested_at = NULL,
                                           base_build_id = (""" + _LAST_PUBLISHED + """)
                                     WHERE id = %s""", (full_refresh, build_id))
                    return build_id
                if stale or finished:
                    conn.execute("""UPDATE meta.mart_build SET status = 'ABANDONED',
                                           error = coalesce(error, %s) WHERE id = %s AND status = %s""",
                                 (f"closed by run {settings.run_id}: "
                                  + ("its run ended" if finished else f"untouched since {touched}"),
                                  build_id, status))
                    continue
                if not said:
                    log.info(f"run {run_id}'s build {build_id} is {status}; waiting for it to be published "
                             "or to fail")
                    said = True
                time.sleep(poll_s)
                continue
            try:
                return conn.execute(
                    """INSERT INTO meta.mart_build (run_id, logical_date, status, base_build_id, full_refresh)
                       VALUES (%s, %s, 'BUILDING', (""" + _LAST_PUBLISHED + """), %s) RETURNING id""",
                    (settings.run_id, day, full_refresh)).fetchone()[0]
            except psycopg.errors.UniqueViolation:
                continue  # another run claimed it between our look and our insert


def this_runs_build(conn: psycopg.Connection, settings: Settings, lock: bool = False) -> tuple | None:
    return conn.execute(
        "SELECT id, status, base_build_id, full_refresh FROM meta.mart_build WHERE run_id = %s "
        "ORDER BY id DESC LIMIT 1" + (" FOR UPDATE" if lock else ""), (settings.run_id,)).fetchone()


def mark(settings: Settings, build_id: int, status: str, error: str | None = None) -> None:
    stamp = {"BUILT": "built_at", "TESTED": "tested_at", "PUBLISHED": "published_at"}.get(status)
    with connect(settings, autocommit=True) as conn:
        conn.execute(
            "UPDATE meta.mart_build SET status = %s, error = %s"
            + (f", {stamp} = clock_timestamp()" if stamp else "") + " WHERE id = %s",
            (status, error[:2000] if error else None, build_id))
        if status == "BUILT":
            conn.execute(
                f"""UPDATE meta.mart_build SET
                       delta_rows = (SELECT count(*) FROM {BUILD_SCHEMA}.fct_contributions_delta),
                       dim_rows = (SELECT count(*) FROM {BUILD_SCHEMA}.dim_taxpayer)
                     WHERE id = %s""", (build_id,))


def abandon_open(settings: Settings) -> int:
    """Close the build this run left open (the exit handler calls it); returns how many."""
    with connect(settings, autocommit=True) as conn:
        return conn.execute(
            """UPDATE meta.mart_build SET status = 'ABANDONED', error = coalesce(error, 'its run ended first')
                WHERE run_id = %s AND status IN ('BUILDING', 'BUILT', 'TESTED')""", (settings.run_id,)).rowcount


def _relations(conn: psycopg.Connection, schema: str) -> list[tuple[str, str]]:
    """(name, kind) of the tables and views in ``schema``, views first."""
    return conn.execute(
        """SELECT c.relname, CASE c.relkind WHEN 'v' THEN 'VIEW' ELSE 'TABLE' END FROM pg_class c
            WHERE c.relnamespace = %s::regnamespace AND c.relkind IN ('r', 'v')
            ORDER BY c.relkind DESC, c.relname""", (schema,)).fetchall()


def _clear(conn: psycopg.Connection, schema: str) -> None:
    for name, kind in _relations(conn, schema):
        conn.execute(f"DROP {kind} IF EXISTS {schema}.{name} CASCADE")


def keep_failed_build(settings: Settings, build_id: int) -> str | None:
    """Before build ``build_id`` overwrites marts_build: if what is there is a failed build (its
    test or a model failed), move it to marts_failed (replacing an older failed one), where it stays
    for inspection until the next publication. Returns what was kept, for the step's details."""
    with connect(settings) as conn:
        previous = conn.execute(
            """SELECT id, run_id, status FROM meta.mart_build WHERE id < %s AND status <> 'ABANDONED'
                ORDER BY id DESC LIMIT 1""", (build_id,)).fetchone()
        if previous is None or previous[2] not in ("TEST_FAILED", "BUILD_FAILED"):
            return None
        kept = f"build {previous[0]} of run {previous[1]} ({previous[2]})"
        already = conn.execute("SELECT obj_description(%s::regnamespace, 'pg_namespace')",
                               (FAILED_SCHEMA,)).fetchone()[0]
        if already == kept or not _relations(conn, BUILD_SCHEMA):
            return None  # moved by an earlier attempt of this build (a retry), or nothing to keep
        _clear(conn, FAILED_SCHEMA)
        for name, kind in _relations(conn, BUILD_SCHEMA):
            conn.execute(f"ALTER {kind} {BUILD_SCHEMA}.{name} SET SCHEMA {FAILED_SCHEMA}")
        conn.execute(f"COMMENT ON SCHEMA {FAILED_SCHEMA} IS {psycopg.sql.quote(kept)}")
        conn.commit()
    return f"{kept} kept in {FAILED_SCHEMA}"


def _exists(conn: psycopg.Connection, schema: str, name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.{name}",)).fetchone()[0]


def apply(conn: psycopg.Connection, full_refresh: bool) -> dict[str, int]:
    """The publication itself, inside the caller's transaction."""
    cols = ", ".join(FCT_COLUMNS)
    fct, delta = f"{PUBLISHED_SCHEMA}.fct_contributions", f"{BUILD_SCHEMA}.fct_contributions_delta"
    for name in ("fct_contributions_delta", "dim_taxpayer"):
        if not _exists(conn, BUILD_SCHEMA, name):
            raise StageError(f"the build has no {BUILD_SCHEMA}.{name}: run dbt-build and dbt-test first")
    if not _exists(conn, PUBLISHED_SCHEMA, "fct_contributions"):
        conn.execute(f"CREATE TABLE {fct} (LIKE {delta} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        conn.execute(f"CREATE UNIQUE INDEX fct_contributions_declaration_id ON {fct} (declaration_id)")
        conn.execute(f"CREATE INDEX fct_contributions_raw_loaded_at ON {fct} (raw_loaded_at)")
        conn.execute(f"GRANT SELECT ON {fct} TO {ANALYST_ROLE}")
    if full_refresh:
        deleted = conn.execute(f"DELETE FROM {fct}").rowcount
    else:
        # ANY(ARRAY(…)): one index lookup per delta row, whatever the planner thinks of a join.
        deleted = conn.execute(f"DELETE FROM {fct} WHERE declaration_id = ANY(ARRAY("
                               f"SELECT declaration_id FROM {delta}))").rowcount
    inserted = conn.execute(f"INSERT INTO {fct} ({cols}) SELECT {cols} FROM {delta}").rowcount
    conn.execute(f"DROP TABLE IF EXISTS {PUBLISHED_SCHEMA}.dim_taxpayer")
    conn.execute(f"ALTER TABLE {BUILD_SCHEMA}.dim_taxpayer SET SCHEMA {PUBLISHED_SCHEMA}")
    conn.execute(f"GRANT SELECT ON {PUBLISHED_SCHEMA}.dim_taxpayer TO {ANALYST_ROLE}")
    dim = conn.execute(f"SELECT count(*) FROM {PUBLISHED_SCHEMA}.dim_taxpayer").fetchone()[0]
    _clear(conn, FAILED_SCHEMA)  # a successful run: the last failed build has served its purpose
    conn.execute(f"COMMENT ON SCHEMA {FAILED_SCHEMA} IS NULL")
    return {"fct_rows_replaced": deleted, "fct_rows_inserted": inserted, "dim_rows": dim}


def run(settings: Settings, day: dt.date) -> StepRun:
    """Publish this run's tested build; refuse anything else (untested, failed, stale)."""
    with StepRun(settings, "publish", day) as step:
        started = time.monotonic()
        with connect(settings) as conn:
            # No dbt build or test runs while marts change (the session lock dbt-build/-test hold).
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (DBT_LOCK,))
            build = this_runs_build(conn, settings, lock=True)
            if build is None:
                raise StageError(f"run {settings.run_id} has no build to publish: dbt-build did not run")
            build_id, status, base, full_refresh = build
            step.details = {"build_id": build_id}
            if status == "PUBLISHED":
                step.details["already_published"] = 1
                log.warning(f"publish: build {build_id} was already published")
                return step
            if status != "TESTED":
                raise StageError(f"build {build_id} of run {settings.run_id} is {status}, not TESTED: "
                                 "only a build whose every test passed is published")
            latest = conn.execute(_LAST_PUBLISHED).fetchone()[0]
            if latest != base:
                raise StageError(f"build {build_id} was made against publication {base}, but {latest} "
                                 "was published since: re-run the day to build against it")
            step.details.update(apply(conn, full_refresh))
            conn.execute("UPDATE meta.mart_build SET status = 'PUBLISHED', published_at = clock_timestamp() "
                         "WHERE id = %s", (build_id,))
            conn.commit()
        step.rows_loaded = step.details["fct_rows_inserted"]
        step.details["publish_s"] = f"{time.monotonic() - started:.3f}"
    return step

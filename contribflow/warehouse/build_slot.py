"""The build slot in ``meta.mart_build``: one open build at a time (a unique index), claimed by
dbt-build before it writes ``marts_build``, marked BUILT, TESTED or failed by the dbt steps, and
released when its test fails or its build is published (contribflow/warehouse/publish.py). A run
that ends without either (killed, retries exhausted) has its open build closed as ABANDONED by its
exit handler, or by the next run once it is stale. A failed build stays in ``marts_build`` and is
moved to ``marts_failed`` when the next build starts, for inspection until the next publication."""

from __future__ import annotations

import datetime as dt
import time

import psycopg
import psycopg.sql

from contribflow import logs
from contribflow.db import connect
from contribflow.settings import Settings

log = logs.get("publish")

DBT_LOCK = "contribflow:dbt"
"""The advisory lock dbt-build and dbt-test hold while dbt runs, and publish while marts change."""
BUILD_SCHEMA = "marts_build"
FAILED_SCHEMA = "marts_failed"

_OPEN_BUILD = """SELECT id, run_id, status, greatest(started_at, built_at, tested_at) AS touched,
                        clock_timestamp() - greatest(started_at, built_at, tested_at) > make_interval(secs => %s),
                        EXISTS (SELECT FROM meta.etl_run e WHERE e.run_id = b.run_id AND e.step = 'finish'
                                AND e.status <> 'RUNNING')
                   FROM meta.mart_build b WHERE status IN ('BUILDING', 'BUILT', 'TESTED')"""
LAST_PUBLISHED = "SELECT max(id) FROM meta.mart_build WHERE status = 'PUBLISHED'"


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
                                           base_build_id = (""" + LAST_PUBLISHED + """)
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
                       VALUES (%s, %s, 'BUILDING', (""" + LAST_PUBLISHED + """), %s) RETURNING id""",
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


def clear(conn: psycopg.Connection, schema: str) -> None:
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
        clear(conn, FAILED_SCHEMA)
        for name, kind in _relations(conn, BUILD_SCHEMA):
            conn.execute(f"ALTER {kind} {BUILD_SCHEMA}.{name} SET SCHEMA {FAILED_SCHEMA}")
        conn.execute(f"COMMENT ON SCHEMA {FAILED_SCHEMA} IS {psycopg.sql.quote(kept)}")
        conn.commit()
    return f"{kept} kept in {FAILED_SCHEMA}"

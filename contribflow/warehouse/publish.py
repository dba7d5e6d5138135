"""Write-audit-publish: the ``publish`` stage (the build slot it publishes from: build_slot.py).

dbt-build writes a day's marts into ``marts_build`` (analysts have no access to it), dbt-test
tests them there, and ``publish`` applies them to ``marts`` in one transaction, with DML only:

- the fct delta (``marts_build.fct_contributions_delta``: the declarations that arrived since the
  last publication, and those a withdrawal restates) replaces the published rows with the same
  declaration_id, and the declarations a withdrawal left without any state
  (``marts_build.fct_contributions_removed``) are deleted, so publishing costs the day's rows,
  never a copy of the history;
- ``marts.dim_taxpayer`` takes the rows of ``marts_build.dim_taxpayer`` that differ from it (the
  taxpayers whose row changed or is gone are deleted, the changed and new ones inserted);
- the withdrawals the build applied (``marts_build.file_withdrawals_applied``) record the build;
- the build is recorded PUBLISHED: the newest such row of ``meta.mart_build`` is what analysts see;
- the publication is recorded (``meta.publication``: inputs, code, each table's row count and
  content hash) and the marts' as-of history kept (``marts.*_history``): publication.py.

No relation analysts read is dropped, renamed or created by a publication (the first one creates
``marts.fct_contributions`` and ``marts.dim_taxpayer``, once): every reader, whatever its isolation
level, sees the old publication or the new one, whole, for both marts. (Dropping the old
dim_taxpayer and moving the new one in, as publish did before, showed a REPEATABLE READ reader, or
``pg_dump``, an empty dim_taxpayer: a dropped table's replacement is invisible to older snapshots.)
A ``marts.dim_taxpayer`` whose column types are older than the build's (numeric(16,2) sums) is
widened in place by the first publication after the upgrade: raising a numeric's precision at the
same scale changes only the catalog, not the rows (_align_types).

A failed build or test leaves ``marts`` as it was; the failed build stays in ``marts_build``, and is
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
from contribflow.db import connect
from contribflow.errors import StageError
from contribflow.settings import Settings
from contribflow.step import Dataset, StepRun
from contribflow.warehouse import publication
from contribflow.warehouse.build_slot import (
    BUILD_SCHEMA,
    DBT_LOCK,
    FAILED_SCHEMA,
    LAST_PUBLISHED,
    clear,
    this_runs_build,
)
from contribflow.warehouse.marts import DIM_COLUMNS, FCT_COLUMNS

log = logs.get("publish")

ANALYST_ROLE = "contribflow_analyst"
PUBLISHED_SCHEMA = "marts"
PUBLISHED = {"fct_contributions_delta": "fct_contributions", "dim_taxpayer": "dim_taxpayer"}
"""What publish applies: marts_build.<key> into marts.<value> (the datasets the publish step declares)."""

def _exists(conn: psycopg.Connection, schema: str, name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.{name}",)).fetchone()[0]


BUILD_TABLES = ("fct_contributions_delta", "fct_contributions_removed", "dim_taxpayer", "file_withdrawals_applied")


def _column_types(conn: psycopg.Connection, relation: str) -> dict[str, str]:
    return dict(conn.execute(
        """SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
            WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum""",
        (relation,)).fetchall())


def _align_types(conn: psycopg.Connection, published: str, build: str) -> list[str]:
    """Give ``published`` the column types of ``build`` where they differ (a warehouse published
    before a type was widened, e.g. dim_taxpayer's sums from numeric(16,2) to numeric(38,2)): once,
    in place, in the publication's transaction. A numeric's precision raised at the same scale is a
    catalog change (PostgreSQL rewrites no row, so older snapshots still read the table); another
    change would rewrite it, and is refused rather than made behind readers' backs."""
    have, want = _column_types(conn, published), _column_types(conn, build)
    if set(have) != set(want):
        raise StageError(f"{published} has columns {sorted(have)}, the build {sorted(want)}: a changed set "
                         "of columns is a migration, not a publication")
    changed = []
    for column, wanted in want.items():
        if have[column] == wanted:
            continue
        if not (have[column].startswith("numeric(") and wanted.startswith("numeric(")
                and _widens(have[column], wanted)):
            raise StageError(f"{published}.{column} is {have[column]}, the build's is {wanted}: only a wider "
                             "numeric is applied in place")
        conn.execute(f"ALTER TABLE {published} ALTER COLUMN {column} TYPE {wanted}")
        changed.append(f"{column} {have[column]} -> {wanted}")
    return changed


def _widens(old: str, new: str) -> bool:
    """Whether numeric(p2,s2) ``new`` holds every numeric(p1,s1) ``old`` with the same scale."""
    (p1, s1), (p2, s2) = ([int(x) for x in t[len("numeric("):-1].split(",")] for t in (old, new))
    return s1 == s2 and p2 >= p1


def _create_like(conn: psycopg.Connection, published: str, build: str, unique_key: str) -> None:
    """A published mart, created once (by the first publication), readable by the analyst role."""
    name = published.split(".")[1]
    conn.execute(f"CREATE TABLE {published} (LIKE {build} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    conn.execute(f"CREATE UNIQUE INDEX {name}_{unique_key} ON {published} ({unique_key})")
    conn.execute(f"GRANT SELECT ON {published} TO {ANALYST_ROLE}")


def apply(conn: psycopg.Connection, full_refresh: bool, build_id: int | None = None) -> dict[str, int | str]:
    """The publication itself, inside the caller's transaction: DML on the published marts."""
    cols = ", ".join(FCT_COLUMNS)
    fct, delta = f"{PUBLISHED_SCHEMA}.fct_contributions", f"{BUILD_SCHEMA}.fct_contributions_delta"
    removed = f"{BUILD_SCHEMA}.fct_contributions_removed"
    dim, new_dim = f"{PUBLISHED_SCHEMA}.dim_taxpayer", f"{BUILD_SCHEMA}.dim_taxpayer"
    for name in BUILD_TABLES:
        if not _exists(conn, BUILD_SCHEMA, name):
            raise StageError(f"the build has no {BUILD_SCHEMA}.{name}: run dbt-build and dbt-test first")
    done: dict[str, int | str] = {}
    if not _exists(conn, PUBLISHED_SCHEMA, "fct_contributions"):
        _create_like(conn, fct, delta, "declaration_id")
        conn.execute(f"CREATE INDEX fct_contributions_raw_loaded_at ON {fct} (raw_loaded_at)")
    if not _exists(conn, PUBLISHED_SCHEMA, "dim_taxpayer"):
        conn.execute(f"CREATE TABLE {dim} (LIKE {new_dim} INCLUDING DEFAULTS INCLUDING CONSTRAINTS, "
                     "PRIMARY KEY (taxpayer_key))")
        conn.execute(f"GRANT SELECT ON {dim} TO {ANALYST_ROLE}")
    widened = _align_types(conn, fct, delta) + _align_types(conn, dim, new_dim)
    if widened:
        done["columns_widened"] = "; ".join(widened)
        log.warning(f"publish: widened in place: {done['columns_widened']}")
    # The taxpayers whose dim_taxpayer row can change: those of the delta's rows and of the published
    # rows it replaces or removes (read before the fct changes). Only their rows are compared.
    touched = False
    if not full_refresh:
        conn.execute(f"""CREATE TEMP TABLE publish_touched_taxpayers ON COMMIT DROP AS
            SELECT taxpayer_key FROM {delta}
            UNION SELECT taxpayer_key FROM {fct} WHERE declaration_id = ANY(ARRAY(
                SELECT declaration_id FROM {delta} UNION ALL SELECT declaration_id FROM {removed}))""")
        touched = True

    def among_touched(alias: str) -> str:
        return (f"{alias}.taxpayer_key = ANY(ARRAY(SELECT taxpayer_key FROM publish_touched_taxpayers)) AND "
                if touched else "")

    if full_refresh:
        deleted = conn.execute(f"DELETE FROM {fct}").rowcount
        gone = 0
    else:
        # ANY(ARRAY(…)): one index lookup per delta row, whatever the planner thinks of a join.
        deleted = conn.execute(f"DELETE FROM {fct} WHERE declaration_id = ANY(ARRAY("
                               f"SELECT declaration_id FROM {delta}))").rowcount
        gone = conn.execute(f"DELETE FROM {fct} WHERE declaration_id = ANY(ARRAY("
                            f"SELECT declaration_id FROM {removed}))").rowcount
    inserted = conn.execute(f"INSERT INTO {fct} ({cols}) SELECT {cols} FROM {delta}").rowcount
    # dim_taxpayer: only what differs is written, and only the touched taxpayers are compared (all of
    # them on a full refresh), each through both tables' primary keys: the rows of the others are
    # neither read nor written, so a publication costs its day's taxpayers, not all of them.
    dims = ", ".join(DIM_COLUMNS)
    same = " AND ".join(f"b.{c} = d.{c}" for c in DIM_COLUMNS)
    dim_deleted = conn.execute(
        f"DELETE FROM {dim} d WHERE {among_touched('d')}"
        f"NOT EXISTS (SELECT FROM {new_dim} b WHERE {same})").rowcount
    dim_inserted = conn.execute(
        f"INSERT INTO {dim} ({dims}) SELECT {dims} FROM {new_dim} b "
        f"WHERE {among_touched('b')}"
        f"NOT EXISTS (SELECT FROM {dim} d WHERE d.taxpayer_key = b.taxpayer_key)").rowcount
    dim_rows = conn.execute(f"SELECT count(*) FROM {dim}").fetchone()[0]
    withdrawals = conn.execute(
        f"""UPDATE meta.file_withdrawal SET applied_build_id = %s
             WHERE applied_build_id IS NULL AND id IN (SELECT id FROM {BUILD_SCHEMA}.file_withdrawals_applied)""",
        (build_id,)).rowcount if build_id is not None else 0
    clear(conn, FAILED_SCHEMA)  # a successful run: the last failed build has served its purpose
    conn.execute(f"COMMENT ON SCHEMA {FAILED_SCHEMA} IS NULL")
    done.update({"fct_rows_replaced": deleted, "fct_rows_inserted": inserted, "dim_rows": dim_rows,
                 "dim_rows_deleted": dim_deleted, "dim_rows_inserted": dim_inserted})
    if withdrawals or gone:
        done.update({"withdrawals_applied": withdrawals, "fct_rows_removed": gone})
    return done


def run(settings: Settings, day: dt.date) -> StepRun:
    """Publish this run's tested build; refuse anything else (untested, failed, stale)."""
    with StepRun(settings, "publish", day,
                 reads=[Dataset(f"{BUILD_SCHEMA}.{built}") for built in PUBLISHED],
                 writes=[Dataset(f"marts.{published}") for published in PUBLISHED.values()]) as step:
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
            latest = conn.execute(LAST_PUBLISHED).fetchone()[0]
            if latest != base:
                raise StageError(f"build {build_id} was made against publication {base}, but {latest} "
                                 "was published since: re-run the day to build against it")
            step.details.update(apply(conn, full_refresh, build_id))
            # The record and the as-of history, in the same transaction (contribflow/warehouse/publication.py).
            step.details.update(publication.record(
                conn, settings, build_id, full_refresh,
                f"SELECT declaration_id FROM {BUILD_SCHEMA}.fct_contributions_delta "
                f"UNION ALL SELECT declaration_id FROM {BUILD_SCHEMA}.fct_contributions_removed",
                None if full_refresh else "SELECT taxpayer_key FROM publish_touched_taxpayers"))
            conn.execute("UPDATE meta.mart_build SET status = 'PUBLISHED', published_at = clock_timestamp() "
                         "WHERE id = %s", (build_id,))
            conn.commit()
        step.rows_loaded = step.details["fct_rows_inserted"]
        step.details["publish_s"] = f"{time.monotonic() - started:.3f}"
    return step

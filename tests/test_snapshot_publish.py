"""Publish is snapshot-consistent (issue 25, item 2): a reader in any isolation level, and pg_dump,
sees the old publication or the new one, whole, for both marts.

Before, publish dropped marts.dim_taxpayer and moved the new one in: a REPEATABLE READ transaction
that had read fct_contributions before the publication read 0 rows of dim_taxpayer after it (a
dropped table's replacement is invisible to an older snapshot). Now a publication is DML only.
"""

from __future__ import annotations

import datetime as dt
import decimal
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from contribflow.local import embedded

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
D1, D2, D3 = dt.date(2026, 11, 10), dt.date(2026, 11, 11), dt.date(2026, 11, 12)
# Each mart's content in figures: rows, and the sums of its amounts.
FIGURES = """select (select count(*) from marts.fct_contributions),
                    (select sum(amount) from marts.fct_contributions),
                    (select count(*) from marts.dim_taxpayer),
                    (select sum(amount_paid) from marts.dim_taxpayer),
                    (select sum(amount_due) from marts.dim_taxpayer),
                    (select sum(declarations) from marts.dim_taxpayer)"""
# What the tested build will publish, read from marts_build before publish runs.
BUILD_FIGURES = """select (select count(*) from marts_build.fct_contributions),
                          (select sum(amount) from marts_build.fct_contributions),
                          (select count(*) from marts_build.dim_taxpayer),
                          (select sum(amount_paid) from marts_build.dim_taxpayer),
                          (select sum(amount_due) from marts_build.dim_taxpayer),
                          (select sum(declarations) from marts_build.dim_taxpayer)"""


def cli(*args: str, run_id: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CONTRIBFLOW_RUN_ID=run_id)
    done = subprocess.run([sys.executable, "-m", "contribflow", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def build_day(day: dt.date, run_id: str, rows: int = 1500) -> None:
    """Everything of a day up to publish: the build is TESTED, analysts still read the previous one."""
    cli("init-db", run_id=run_id)
    cli("generate", "--date", day.isoformat(), "--rows", str(rows), "--seed", str(day.toordinal()), run_id=run_id)
    path = Path(os.environ["CONTRIBFLOW_LANDING_DIR"]) / f"contributions_{day:%Y%m%d}.csv"
    cli("ingest", "--date", day.isoformat(), "--file", str(path), run_id=run_id)
    cli("dbt-build", "--date", day.isoformat(), run_id=run_id)
    cli("dbt-test", "--date", day.isoformat(), run_id=run_id)


def connect(database: dict[str, str], **kwargs) -> psycopg.Connection:
    return psycopg.connect(host=database["PGHOST"], user=database["PGUSER"], dbname=database["PGDATABASE"], **kwargs)


def test_a_repeatable_read_reader_spanning_a_publish_sees_the_old_publication_whole(database, sql):
    build_day(D1, "snap-1")
    cli("publish", "--date", D1.isoformat(), run_id="snap-1")
    build_day(D2, "snap-2")
    old, new = sql(FIGURES)[0], sql(BUILD_FIGURES)[0]
    assert old != new and old[0] > 1000 and new[0] > old[0]

    with connect(database) as reader:
        reader.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        reader.execute("SET ROLE contribflow_analyst")
        before = reader.execute(FIGURES).fetchone()  # the snapshot is taken here
        cli("publish", "--date", D2.isoformat(), run_id="snap-2")  # another session, committed
        assert sql("select status from meta.mart_build where run_id = 'snap-2'") == [("PUBLISHED",)]
        after = reader.execute(FIGURES).fetchone()
        reader.rollback()
    assert before == after == old
    # A READ COMMITTED reader after the publication sees the new one: what the build held.
    with connect(database, autocommit=True) as reader:
        reader.execute("SET ROLE contribflow_analyst")
        assert reader.execute(FIGURES).fetchone() == new
    # No analyst-visible relation was dropped or created: the same tables as after day 1.


def _dump(database: dict[str, str]) -> dict[str, list[list[str]]]:
    """The marts' rows as pg_dump writes them (plain format, data only): {table: rows of fields}."""
    pg_dump = str(embedded.bin_dir() / "pg_dump")
    done = subprocess.run([pg_dump, "--data-only", "--schema=marts", "-h", database["PGHOST"], "-U",
                           database["PGUSER"], database["PGDATABASE"]], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    tables: dict[str, list[list[str]]] = {}
    current = None
    for line in done.stdout.splitlines():
        if line.startswith("COPY marts."):
            current = line.split()[1].split(".")[1]
            columns = line[line.index("(") + 1:line.index(")")].split(", ")
            tables[current] = [columns]
        elif line == "\\.":
            current = None
        elif current is not None:
            tables[current].append(line.split("\t"))
    return tables


def _figures(tables: dict[str, list[list[str]]]) -> tuple:
    def column(table: str, name: str) -> list[str]:
        header, *rows = tables[table]
        return [r[header.index(name)] for r in rows]

    total = lambda values: sum((decimal.Decimal(v) for v in values), decimal.Decimal("0.00"))  # noqa: E731
    return (len(tables["fct_contributions"]) - 1, total(column("fct_contributions", "amount")),
            len(tables["dim_taxpayer"]) - 1, total(column("dim_taxpayer", "amount_paid")),
            total(column("dim_taxpayer", "amount_due")), sum(int(v) for v in column("dim_taxpayer", "declarations")))


def test_pg_dump_during_an_open_publish_holds_the_old_publication_and_after_it_the_new_one(database, sql):
    build_day(D1, "dump-1")
    cli("publish", "--date", D1.isoformat(), run_id="dump-1")
    build_day(D2, "dump-2")
    old, new = sql(FIGURES)[0], sql(BUILD_FIGURES)[0]
    assert old != new
    # Hold publish inside its transaction: lock a taxpayer row it must replace. It applies the fct
    # delta first, then waits here with the day's fact rows written and not committed.
    [(changed,)] = sql("select taxpayer_key from (select * from marts.dim_taxpayer except "
                       "select * from marts_build.dim_taxpayer) c order by 1 limit 1")
    with connect(database) as blocker:
        blocker.execute("select from marts.dim_taxpayer where taxpayer_key = %s for update", (changed,))
        env = dict(os.environ, CONTRIBFLOW_RUN_ID="dump-2")
        publishing = subprocess.Popen([sys.executable, "-m", "contribflow", "publish", "--date", D2.isoformat()],
                                      env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while not sql("select 1 from pg_stat_activity where wait_event_type = 'Lock' "
                          "and query like 'DELETE FROM marts.dim_taxpayer%%'"):
                assert publishing.poll() is None and time.monotonic() < deadline, publishing.communicate()
                time.sleep(0.1)
            # The fact rows are already replaced inside the open transaction.
            assert sql("select count(*) from pg_locks l join pg_class c on c.oid = l.relation "
                       "where c.relname = 'fct_contributions' and l.mode = 'RowExclusiveLock' and l.granted")[0][0] >= 1
            during = _figures(_dump(database))
            blocker.rollback()
            out, err = publishing.communicate(timeout=120)
        finally:
            if publishing.poll() is None:
                publishing.kill()
    assert publishing.returncode == 0, out + err
    after = _figures(_dump(database))
    assert during == old, (during, old)
    assert after == new, (after, new)


def test_a_warehouse_published_with_the_old_narrow_sums_is_widened_in_place_once(database, sql):
    """Before issue 25, marts.dim_taxpayer's sums were numeric(16,2). The first publication after
    the upgrade widens them in place: the same relation (no drop, no rewrite: its file node is
    unchanged, so older snapshots still read it), its rows kept, and later publications find nothing
    to widen."""
    build_day(D1, "widen-1")
    cli("publish", "--date", D1.isoformat(), run_id="widen-1")
    # As the old code left it: the sums numeric(16,2) (a catalog change here too: 38 -> 16 digits
    # would rewrite, so the old relation is made as it was, then filled with the same rows).
    sql("create table marts.dim_old (like marts.dim_taxpayer including all)")
    sql("alter table marts.dim_old alter amount_paid type numeric(16,2), alter amount_due type numeric(16,2)")
    sql("insert into marts.dim_old select * from marts.dim_taxpayer")
    sql("drop table marts.dim_taxpayer")
    sql("alter table marts.dim_old rename to dim_taxpayer")
    sql("grant select on marts.dim_taxpayer to contribflow_analyst")
    [(node, oid)] = sql("select relfilenode, oid from pg_class where oid = 'marts.dim_taxpayer'::regclass")
    before = sql("select * from marts.dim_taxpayer order by 1")

    build_day(D2, "widen-2")
    expected = sql(BUILD_FIGURES)[0]
    done = cli("publish", "--date", D2.isoformat(), run_id="widen-2")
    assert "columns_widened=amount_paid numeric(16,2) -> numeric(38,2); amount_due numeric(16,2) -> numeric(38,2)" \
        in done.stdout, done.stdout
    assert sql("select format_type(atttypid, atttypmod) from pg_attribute where attrelid = 'marts.dim_taxpayer'::regclass "
               "and attname in ('amount_paid', 'amount_due')") == [("numeric(38,2)",), ("numeric(38,2)",)]
    assert sql("select relfilenode, oid from pg_class where oid = 'marts.dim_taxpayer'::regclass") == [(node, oid)]
    assert sql(FIGURES)[0] == expected
    unchanged = {r for r in before} & {r for r in sql("select * from marts.dim_taxpayer order by 1")}
    assert len(unchanged) > 0  # taxpayers without a change on day 2 kept their rows as they were

    build_day(D3, "widen-3")
    assert "columns_widened" not in cli("publish", "--date", D3.isoformat(), run_id="widen-3").stdout


def _as_of_figures(publication: int) -> str:
    """FIGURES, of the marts as the history says publication ``publication`` showed them."""
    return (FIGURES.replace("marts.fct_contributions", f"marts.fct_contributions_as_of({publication})")
            .replace("marts.dim_taxpayer", f"marts.dim_taxpayer_as_of({publication})"))


def test_the_as_of_history_is_written_in_the_publication_and_seen_with_it(database, sql):
    """Issue 27: publish writes the history and the record in its transaction. While it is open
    (held on a history row it must close), other sessions read the old marts and the old history;
    a REPEATABLE READ reader that started before keeps them after the commit; afterwards, the
    history holds both publications exactly."""
    build_day(D1, "asof-1")
    cli("publish", "--date", D1.isoformat(), run_id="asof-1")
    build_day(D2, "asof-2")
    old, new = sql(FIGURES)[0], sql(BUILD_FIGURES)[0]
    assert old != new and sql(_as_of_figures(1))[0] == old
    [(changed,)] = sql("select taxpayer_key from (select * from marts.dim_taxpayer except "
                       "select * from marts_build.dim_taxpayer) c order by 1 limit 1")
    with connect(database) as blocker, connect(database) as reader:
        reader.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        reader.execute("SET ROLE contribflow_analyst")
        assert reader.execute(_as_of_figures(1)).fetchone() == old  # the snapshot is taken here
        blocker.execute("select from marts.dim_taxpayer_history where taxpayer_key = %s "
                        "and valid_to_publication is null for update", (changed,))
        env = dict(os.environ, CONTRIBFLOW_RUN_ID="asof-2")
        publishing = subprocess.Popen([sys.executable, "-m", "contribflow", "publish", "--date", D2.isoformat()],
                                      env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while not sql("select 1 from pg_stat_activity where wait_event_type = 'Lock' "
                          "and query like '%%UPDATE marts.dim_taxpayer_history%%'"):
                assert publishing.poll() is None and time.monotonic() < deadline, publishing.communicate()
                time.sleep(0.1)
            # Inside the open publication: the marts changed, the fct history too; nobody sees either
            # (as of a publication not made yet: the latest one before it, here 1).
            assert sql(FIGURES)[0] == old
            assert sql(_as_of_figures(1))[0] == sql(_as_of_figures(2))[0] == old
            blocker.rollback()
            out, err = publishing.communicate(timeout=120)
        finally:
            if publishing.poll() is None:
                publishing.kill()
        assert publishing.returncode == 0, out + err
        # The reader's snapshot predates the commit: the old marts, the old history, no publication 2.
        assert reader.execute(FIGURES).fetchone() == old
        assert reader.execute(_as_of_figures(1)).fetchone() == old
        assert reader.execute(_as_of_figures(2)).fetchone() == old
        reader.rollback()
    assert sql(FIGURES)[0] == new
    assert sql(_as_of_figures(2))[0] == new
    assert sql(_as_of_figures(1))[0] == old

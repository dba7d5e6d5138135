"""Measures for issue 25, on an embedded PostgreSQL of its own (in a temporary folder):

1. migration 0010 on a warehouse that already holds ROWS rows of raw (loaded at 0009): seconds;
2. publish at ROWS declarations of history (90,000 taxpayers, as the generator makes them), after a
   day that changes DAY rows (half new declarations, half new states): the publication as it was
   (fct delete+insert, then dim_taxpayer dropped and the build's moved in) and as it is now
   (contribflow.warehouse.publish.apply: DML only, dim_taxpayer's changed rows).

    .venv/bin/python scripts/measure_issue25.py [ROWS] [DAY]

Not a test and not part of ``make bench``: figures for the migration's comment, docs/performance.md
and the issue's note.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from contribflow.local import embedded
from contribflow.warehouse import migrate, publish

RAW_ROWS = """
INSERT INTO raw.contributions (declaration_id, taxpayer_id, taxpayer_key, event_date, amount, currency,
                               contribution_type, status, country, file_date, source_file, source_line,
                               run_id, record_hash)
SELECT d, t, md5(t), e, a, 'EUR', 'INCOME_TAX', s, 'LU', f, 'contributions_' || to_char(f, 'YYYYMMDD') || '.csv',
       n %% 10000 + 2, 'measure', raw.record_hash(d, t, e, a, 'EUR', 'INCOME_TAX', s, 'LU')
  FROM (SELECT n, 'DEC_' || to_char(date '2026-01-01' + n / 10000, 'YYYYMMDD') || '_'
                  || lpad((n %% 10000)::text, 6, '0') AS d,
               'TAXP_' || (10000 + (n::bigint * 7919) %% 90000) AS t, date '2026-01-01' + n / 10000 AS e,
               ((n * 37) %% 100000) / 100.0 AS a, (ARRAY['PAID', 'DUE', 'CANCELLED'])[1 + n %% 3] AS s,
               date '2026-01-01' + n / 10000 AS f
          FROM generate_series(0, %s - 1) n) g
 ORDER BY d
"""


def measure_migration(conn: psycopg.Connection, env: dict[str, str], rows: int) -> float:
    shipped = migrate.migration_files()
    real = migrate.migration_files
    migrate.migration_files = lambda: [m for m in shipped if m[0] < "0010"]
    try:
        from contribflow.settings import Settings
        migrate.apply_migrations(Settings.from_env(env))
        conn.execute(RAW_ROWS, (rows,))
        conn.execute("VACUUM ANALYZE raw.contributions")
        conn.execute("CHECKPOINT")
        migrate.migration_files = lambda: shipped
        started = time.perf_counter()
        applied = migrate.apply_migrations(Settings.from_env(env))
        took = time.perf_counter() - started
        assert applied == [v for v, _ in shipped if v >= "0010"], applied
        return took
    finally:
        migrate.migration_files = real


PUBLISHED = """
CREATE TABLE marts.fct_contributions AS
SELECT declaration_id, taxpayer_key, event_date, amount, currency, contribution_type, status, country,
       file_date, source_file, source_line, ingestion_ts AS raw_loaded_at FROM raw.contributions;
CREATE UNIQUE INDEX fct_contributions_declaration_id ON marts.fct_contributions (declaration_id);
CREATE INDEX fct_contributions_raw_loaded_at ON marts.fct_contributions (raw_loaded_at);
"""
DIM = """
SELECT taxpayer_key, mode() WITHIN GROUP (ORDER BY country) AS main_country, min(event_date) AS first_event_date,
       max(event_date) AS last_event_date, count(*) AS declarations,
       coalesce(sum(amount) FILTER (WHERE status = 'PAID' AND contribution_type <> 'REFUND'), 0)::numeric(38,2)
           AS amount_paid,
       coalesce(sum(amount) FILTER (WHERE status = 'DUE'), 0)::numeric(38,2) AS amount_due
  FROM {source} GROUP BY taxpayer_key
"""


def build(conn: psycopg.Connection, day: int) -> None:
    """A tested build as dbt leaves it: a delta of ``day`` rows, nothing removed, a new dimension."""
    conn.execute("DROP SCHEMA IF EXISTS marts_build CASCADE; CREATE SCHEMA marts_build")
    conn.execute(f"""CREATE TABLE marts_build.fct_contributions_delta AS
        SELECT declaration_id, taxpayer_key, event_date, amount, currency, contribution_type,
               CASE status WHEN 'DUE' THEN 'PAID' ELSE 'DUE' END AS status, country, file_date + 1 AS file_date,
               source_file, source_line, clock_timestamp() AS raw_loaded_at
          FROM marts.fct_contributions ORDER BY random() LIMIT {day // 2}""")
    conn.execute(f"""INSERT INTO marts_build.fct_contributions_delta
        SELECT 'NEW_' || n, 'k' || (n % 90000), date '2026-12-01', 10.00, 'EUR', 'INCOME_TAX', 'DUE', 'LU',
               date '2026-12-01', 'new.csv', n, clock_timestamp() FROM generate_series(1, {day - day // 2}) n""")
    conn.execute("CREATE TABLE marts_build.fct_contributions_removed (declaration_id text NOT NULL)")
    conn.execute("CREATE TABLE marts_build.file_withdrawals_applied (id bigint NOT NULL)")
    conn.execute("""CREATE VIEW marts_build.fct_contributions AS
        SELECT * FROM marts.fct_contributions k WHERE NOT EXISTS (
            SELECT FROM marts_build.fct_contributions_delta d WHERE d.declaration_id = k.declaration_id)
        UNION ALL SELECT * FROM marts_build.fct_contributions_delta""")
    conn.execute("CREATE TABLE marts_build.dim_taxpayer AS " + DIM.format(source="marts_build.fct_contributions"))
    conn.execute("ALTER TABLE marts_build.dim_taxpayer ADD PRIMARY KEY (taxpayer_key)")
    conn.execute("ANALYZE marts_build.fct_contributions_delta")
    conn.execute("ANALYZE marts_build.dim_taxpayer")


def old_apply(conn: psycopg.Connection) -> None:
    """The publication as it was before issue 25 (contribflow/warehouse/publish.py at 9d5aa6c)."""
    cols = ", ".join(publish.FCT_COLUMNS)
    conn.execute("DELETE FROM marts.fct_contributions WHERE declaration_id = ANY(ARRAY("
                 "SELECT declaration_id FROM marts_build.fct_contributions_delta))")
    conn.execute(f"INSERT INTO marts.fct_contributions ({cols}) SELECT {cols} FROM marts_build.fct_contributions_delta")
    conn.execute("DROP TABLE IF EXISTS marts.dim_taxpayer")
    conn.execute("ALTER TABLE marts_build.dim_taxpayer SET SCHEMA marts")
    conn.execute("GRANT SELECT ON marts.dim_taxpayer TO contribflow_analyst")
    conn.execute("SELECT count(*) FROM marts.dim_taxpayer")


def measure_publish(conn: psycopg.Connection, day: int, repeats: int = 3) -> dict[str, list[float]]:
    conn.execute(PUBLISHED)
    conn.execute("CREATE TABLE marts.dim_taxpayer AS " + DIM.format(source="marts.fct_contributions"))
    conn.execute("ALTER TABLE marts.dim_taxpayer ADD PRIMARY KEY (taxpayer_key)")
    conn.execute("CREATE SCHEMA IF NOT EXISTS marts_failed")
    conn.execute("VACUUM ANALYZE marts.fct_contributions")
    conn.execute("VACUUM ANALYZE marts.dim_taxpayer")
    times: dict[str, list[float]] = {"before (drop and move dim_taxpayer)": [], "now (DML only)": []}
    for _ in range(repeats):
        for label, apply in (("before (drop and move dim_taxpayer)", old_apply),
                             ("now (DML only)", lambda c: publish.apply(c, False))):
            conn.execute("BEGIN")
            build(conn, day)
            conn.execute("CHECKPOINT")
            started = time.perf_counter()
            apply(conn)
            times[label].append(time.perf_counter() - started)
            conn.execute("ROLLBACK")  # the same published state for the next sample
    return times


def main(argv: list[str]) -> int:
    rows = int(argv[0]) if argv else 1_000_000
    day = int(argv[1]) if len(argv) > 1 else 10_000
    folder = Path(tempfile.mkdtemp(prefix="cf-measure-"))
    try:
        env = dict(embedded.start(folder / "pgdata"), CONTRIBFLOW_STATE_DIR=str(folder / "state"))
        os.environ.update(env)
        with psycopg.connect(host=env["PGHOST"], user=env["PGUSER"], dbname=env["PGDATABASE"],
                             autocommit=True) as conn:
            took = measure_migration(conn, env, rows)
            print(f"migration 0010 on {rows:,} rows of raw: {took:.2f} s")
            for label, samples in measure_publish(conn, day).items():
                print(f"publish at {rows:,} declarations, a day of {day:,} changes, {label}: median "
                      f"{statistics.median(samples):.3f} s ({', '.join(f'{s:.3f}' for s in samples)})")
    finally:
        embedded.stop(folder / "pgdata")
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

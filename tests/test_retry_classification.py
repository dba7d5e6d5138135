"""Retry classification by SQLSTATE (issue 25, observation 11), against a real PostgreSQL: only what a
retry may pass exits 75 (Argo retries it); every deterministic failure exits 1.

Observation 11: a statement timeout exited 75 (psycopg's QueryCanceled is an OperationalError, which
the CLI took for a lost connection). The server raises each SQLSTATE here for real, from a trigger on
the ledger, during a real ingest; the statement timeout is provoked with PGOPTIONS. A lost connection
(pg_terminate_backend) and a stopped server are proved in test_reliability.py (75 both)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from contribflow import cli, generate
from contribflow.contract import file_name

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 11, 22)
ROOT = Path(__file__).resolve().parents[1]

EXPECTED = {
    # SQLSTATE: exit code. What can pass on a retry: 75; what fails the same way again: 1.
    "08000": 75, "08006": 75, "08003": 75,          # connection exception (class 08)
    "57P01": 75, "57P02": 75, "57P03": 75,          # admin shutdown, crash shutdown, cannot connect now
    "53300": 75,                                    # too many connections
    "40001": 75, "40P01": 75,                       # serialization failure, deadlock (a stage is one transaction)
    "57014": 1,                                     # query_canceled: statement_timeout
    "55P03": 1,                                     # lock_not_available: lock_timeout
    "53100": 1, "53200": 1,                         # disk full, out of memory
    "22003": 1, "23505": 1, "42501": 1, "42P01": 1, "XX000": 1, "P0001": 1,
}


def test_each_sqlstate_the_server_raises_exits_as_the_table_says(database, sql, capsys):
    assert cli.main(["init-db"]) == 0
    path = Path(database["CONTRIBFLOW_LANDING_DIR"]) / file_name(DAY)
    path.parent.mkdir(parents=True)
    generate.write_file(path, generate.rows_for(DAY, 200))
    sql("create function meta.provoke() returns trigger language plpgsql as $$ begin "
        "raise exception 'provoked by the test' using errcode = current_setting('cf25.sqlstate'); end $$")
    sql("create trigger provoke before insert on meta.source_file for each row execute function meta.provoke()")
    got = {}
    for state in EXPECTED:
        sql(f"alter database {database['PGDATABASE']} set cf25.sqlstate = '{state}'")
        capsys.readouterr()
        got[state] = cli.main(["ingest", "--date", DAY.isoformat(), "--file", str(path)])
        [line] = capsys.readouterr().err.strip().splitlines()
        assert "provoked by the test" in line and "Traceback" not in line
        if EXPECTED[state] == 1:
            assert f"(SQLSTATE {state}, not retried)" in line
        assert sql("select count(*) from raw.contributions") == [(0,)], "the file's transaction rolled back"
    assert got == EXPECTED
    classes = sql("select error_class from meta.etl_run where step = 'ingest' order by id")
    assert [c for (c,) in classes] == ["transient" if code == 75 else None for code in EXPECTED.values()]


def test_observation_11_a_statement_timeout_exits_1_not_75(database, sql):
    """A real statement_timeout (PGOPTIONS, as libpq reads it), hit by ingest's COPY: deterministic."""
    env = dict(os.environ, CONTRIBFLOW_RUN_ID="run-timeout")
    assert subprocess.run([sys.executable, "-m", "contribflow", "init-db"], env=env, cwd=ROOT).returncode == 0
    path = Path(database["CONTRIBFLOW_LANDING_DIR"]) / file_name(DAY)
    path.parent.mkdir(parents=True)
    generate.write_file(path, generate.rows_for(DAY, 200_000))
    env.update(PGOPTIONS="-c statement_timeout=20", CONTRIBFLOW_CHUNK_ROWS="100000")
    done = subprocess.run([sys.executable, "-m", "contribflow", "ingest", "--date", DAY.isoformat(), "--file",
                           str(path)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line == ("contribflow ingest: database error (SQLSTATE 57014, not retried): "
                    "canceling statement due to statement timeout")
    assert sql("select status, error_class from meta.etl_run where step = 'ingest'") == [("FAILED", None)]
    assert sql("select count(*) from raw.contributions") == [(0,)]
    assert sql("select count(*) from meta.source_file") == [(0,)]

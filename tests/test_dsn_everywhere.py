"""CONTRIBFLOW_DSN is used by every stage, dbt included (issue 25, observation 9), against a real
PostgreSQL: with the DSN naming the server, the database and a password login, and every PG*
variable pointing elsewhere, the whole graph builds and publishes on the DSN's database, and the
password reaches no log, no dbt artifact and no meta table.

Observation 9: with CONTRIBFLOW_DSN alone, ingest used it and dbt connected to localhost:5432."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from contribflow import generate
from contribflow.contract import file_name
from contribflow.db import libpq_env
from contribflow.local import embedded

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 11, 21)
ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "dsn-password-not-a-secret-4f1c"


@pytest.fixture
def password_login(pg_server, database):
    """A superuser login that must give a password over the socket (a pg_hba.conf line on the test
    server), as a DSN carries it."""
    name = f"cf25_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(host=pg_server["PGHOST"], user=pg_server["PGUSER"], dbname=pg_server["PGDATABASE"],
                         autocommit=True) as admin:
        hba = Path(admin.execute("show hba_file").fetchone()[0])
        original = hba.read_text()
        hba.write_text("local all /^cf25_ scram-sha-256\n" + original)
        admin.execute("select pg_reload_conf()")
        admin.execute(f"CREATE ROLE {name} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
        time.sleep(0.3)
        try:
            yield name
        finally:
            hba.write_text(original)
            admin.execute("select pg_reload_conf()")
            admin.execute(f"DROP DATABASE IF EXISTS \"{database['PGDATABASE']}\" WITH (FORCE)")
            admin.execute(f"DROP OWNED BY {name} CASCADE")
            admin.execute(f"DROP ROLE IF EXISTS {name}")


def test_with_the_dsn_alone_every_stage_and_dbt_use_its_database(database, sql, password_login, tmp_path):
    socket_dir = database["PGHOST"]
    dsn = (f"host={socket_dir} port=5432 dbname={database['PGDATABASE']} user={password_login} "
           f"password={PASSWORD} sslmode=disable")
    nowhere = tmp_path / "no-server-here"
    nowhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(CONTRIBFLOW_DSN=dsn, PGHOST=str(nowhere), PGPORT="1", PGUSER="nobody_here",
               PGDATABASE="no_such_database", PGPASSWORD="not-the-password", PGSSLMODE="verify-full",
               CONTRIBFLOW_RUN_ID="run-dsn")
    assert embedded.configured(env) and embedded.configured({"CONTRIBFLOW_DSN": dsn})
    landing = Path(database["CONTRIBFLOW_LANDING_DIR"])
    landing.mkdir(parents=True)
    generate.write_file(landing / file_name(DAY), generate.rows_for(DAY, 500))

    done = subprocess.run([sys.executable, "-m", "contribflow", "run", "--date", DAY.isoformat(), "--no-generate"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    state = Path(database["CONTRIBFLOW_STATE_DIR"])
    assert not (state / "pgdata").exists(), "the DSN selects the server: no embedded one is started"
    steps = sql("select step, status from meta.etl_run where run_id = 'run-dsn' order by id")
    assert steps == [(s, "SUCCESS") for s in ("init-db", "pick", "ingest", "dbt-build", "dbt-test", "publish",
                                               "finish")]
    assert sql("select count(*) from raw.contributions") == [(500,)]
    assert sql("select count(*) from marts.fct_contributions") == [(500,)], "dbt built and published it here"
    owners = sql("select distinct tableowner from pg_tables where schemaname in ('marts', 'marts_build') "
                 "and tablename not like '%%\\_history'")  # the as-of history: migration 0014's, not dbt's
    assert owners == [(password_login,)], "dbt logged in as the DSN's user"
    assert sql("select count(*) from meta.dbt_node_result where status in ('success', 'pass')")[0][0] > 10

    assert PASSWORD not in done.stdout + done.stderr
    for path in state.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), f"the password is in {path}"
    text = sql("select coalesce(string_agg(coalesce(error, '') || details::text, ''), '') from meta.etl_run")[0][0]
    text += sql("select coalesce(string_agg(message, ''), '') from meta.dbt_node_result")[0][0]
    assert PASSWORD not in text


def test_the_dsns_parts_as_pg_variables_reach_what_the_dsn_reaches(database, monkeypatch):
    """db.libpq_env, which dbt and psql get: a connection from those variables alone, through libpq,
    lands on the same server, database and user, with the DSN's options (PGOPTIONS) and sslmode."""
    dsn = (f"postgresql://{database['PGUSER']}@/{database['PGDATABASE']}?host={database['PGHOST']}&port=5432"
           "&sslmode=disable&options=-c%20statement_timeout%3D4321&application_name=cf25")
    env = libpq_env(dsn)
    assert env == {"PGUSER": database["PGUSER"], "PGDATABASE": database["PGDATABASE"], "PGHOST": database["PGHOST"],
                   "PGPORT": "5432", "PGSSLMODE": "disable", "PGOPTIONS": "-c statement_timeout=4321",
                   "PGAPPNAME": "cf25"}
    with psycopg.connect(dsn) as direct:
        expected = direct.execute("select current_database(), current_user, current_setting('statement_timeout'), "
                                  "current_setting('application_name')").fetchone()
    for name in [k for k in os.environ if k.startswith("PG")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with psycopg.connect("") as through_variables:
        got = through_variables.execute("select current_database(), current_user, current_setting('statement_timeout'), "
                                        "current_setting('application_name')").fetchone()
        assert through_variables.info.host == database["PGHOST"]
    assert got == expected == (database["PGDATABASE"], database["PGUSER"], "4321ms", "cf25")
    assert libpq_env("") == {}

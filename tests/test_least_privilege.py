"""Least privilege and secrets against a real PostgreSQL (issue 7, points 6 and 7).

The pipeline runs with one password-authenticated LOGIN per stage kind (members of the group roles
of migration 0002); an analyst login reads marts and nothing else; no password and no
pseudonymisation key appears in any output, artifact, log or audit row of the run.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql as pgsql

from contribflow import roles
from contribflow.warehouse.migrate import migration_files

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 11, 19)
ROOT = Path(__file__).resolve().parents[1]
STAGE_ROLES = ("migrator", "loader", "transformer")
LOGIN_PREFIX = "cf7_"
HBA_LINES = (f"local all /^{LOGIN_PREFIX} scram-sha-256\n"
             f"host all /^{LOGIN_PREFIX} 127.0.0.1/32 scram-sha-256\n")


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "contribflow", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def admin(pg_server: dict[str, str], dbname: str | None = None) -> psycopg.Connection:
    return psycopg.connect(host=pg_server["PGHOST"], user=pg_server["PGUSER"],
                           dbname=dbname or pg_server["PGDATABASE"], autocommit=True)


@pytest.fixture
def password_auth(pg_server):
    """Logins named cf7_* must give a password (scram-sha-256), the rest of the server stays as it is."""
    with admin(pg_server) as conn:
        hba = Path(conn.execute("show hba_file").fetchone()[0])
        original = hba.read_text()
        hba.write_text(HBA_LINES + original)
        conn.execute("select pg_reload_conf()")
        time.sleep(0.3)
        try:
            yield
        finally:
            hba.write_text(original)
            conn.execute("select pg_reload_conf()")


@pytest.fixture
def logins(pg_server, database, password_auth):
    """Group roles (init-db as the administrator), then one login per role, each with a password."""
    assert cli(["init-db"], dict(os.environ)).returncode == 0
    made: dict[str, tuple[str, str]] = {}
    with admin(pg_server) as conn:
        for role in (*STAGE_ROLES, "analyst"):
            name, password = f"{LOGIN_PREFIX}{role}_{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(24)
            conn.execute(pgsql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                pgsql.Identifier(name), pgsql.Literal(password), pgsql.Identifier(roles.group_role(role))))
            made[role] = (name, password)
        try:
            yield made
        finally:
            for name, _ in made.values():
                conn.execute(pgsql.SQL("DROP ROLE IF EXISTS {}").format(pgsql.Identifier(name)))


def login(database: dict[str, str], user: str, password: str) -> psycopg.Connection:
    return psycopg.connect(host=database["PGHOST"], dbname=database["PGDATABASE"], user=user,
                           password=password, autocommit=True)


def run_as_stage_logins(logins, tmp_path: Path, key: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CONTRIBFLOW_PSEUDONYM_KEY=key)
    for role in STAGE_ROLES:
        user_var, password_var = roles.login_vars(role)
        env[user_var], env[password_var] = logins[role]
    return cli(["run", "--date", DAY.isoformat(), "--rows", "2000", "--defect-rate", "0.02"], env)


def test_each_stage_connects_as_its_own_login_and_the_analyst_reads_marts_only(database, sql, logins, tmp_path):
    done = run_as_stage_logins(logins, tmp_path, secrets.token_hex(32))
    assert done.returncode == 0, done.stdout + done.stderr

    who = sql("select step, db_login, db_role, status from meta.etl_run order by id")
    expected_role = {"init-db": "migrator", "dbt-build": "transformer", "dbt-test": "transformer",
                     "publish": "transformer"}
    init_by_admin, *steps = who
    assert init_by_admin[1:3] == ("postgres", "postgres")
    assert [s[0] for s in steps] == ["init-db", "generate", "pick", "ingest", "dbt-build", "dbt-test", "publish", "finish"]
    for step, db_login, db_role, status in steps:
        role = expected_role.get(step, "loader")
        assert (db_login, db_role, status) == (logins[role][0], roles.group_role(role), "SUCCESS"), step
    owners = sql("select n.nspname, c.relname, pg_get_userbyid(c.relowner) from pg_class c "
                 "join pg_namespace n on n.oid = c.relnamespace "
                 "where n.nspname in ('staging', 'marts', 'marts_build') and c.relkind in ('r', 'v')")
    # marts.dim_taxpayer is a table of its own since issue 25 (publish writes its changed rows; the
    # build's stays in marts_build), and the build has the withdrawals' two tables.
    assert {o[:2] for o in owners} == {("staging", "stg_contributions"), ("marts", "fct_contributions"),
                                       ("marts", "dim_taxpayer"), ("marts_build", "fct_contributions_delta"),
                                       ("marts_build", "fct_contributions"), ("marts_build", "dim_taxpayer"),
                                       ("marts_build", "fct_contributions_removed"),
                                       ("marts_build", "file_withdrawals_applied"),
                                       # Issue 27: the as-of history (migration 0014, as the transformer),
                                       # and the high-water marks the build read, for its publication.
                                       ("marts", "fct_contributions_history"), ("marts", "dim_taxpayer_history"),
                                       ("marts_build", "build_high_water")}
    assert {o[2] for o in owners} == {"contribflow_transformer"}

    with login(database, *logins["analyst"]) as analyst:
        assert analyst.execute("select count(*) from marts.fct_contributions").fetchone()[0] > 1000
        assert analyst.execute("select count(*) from marts.dim_taxpayer").fetchone()[0] > 0
        assert analyst.execute("select count(*) from marts.fct_contributions_as_of(1)").fetchone() == \
            analyst.execute("select count(*) from marts.fct_contributions").fetchone()
        assert analyst.execute("select count(*) from marts.dim_taxpayer_history").fetchone()[0] > 0
        for forbidden in ("raw.contributions", "raw.contributions_quarantine", "meta.etl_run",
                          "meta.source_file", "meta.data_quality_issue", "staging.stg_contributions",
                          "marts_build.fct_contributions", "marts_build.fct_contributions_delta",
                          "meta.mart_build", "meta.file_withdrawal", "marts_build.fct_contributions_removed",
                          "raw.contributions_restated", "meta.publication", "meta.publication_output",
                          "marts_build.build_high_water"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                analyst.execute(f"select 1 from {forbidden} limit 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            analyst.execute("create table marts.mine (x int)")

    with login(database, *logins["loader"]) as loader:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            loader.execute("update raw.contributions set amount = 0")
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            loader.execute("delete from raw.contributions")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            loader.execute("truncate raw.contributions")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            loader.execute("update meta.etl_run set step = 'forged'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            loader.execute("select 1 from marts.fct_contributions")
    with login(database, *logins["transformer"]) as transformer:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            transformer.execute("insert into raw.contributions_quarantine select * from raw.contributions_quarantine")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            transformer.execute("select raw_line from raw.contributions_quarantine")
        # Publications (issue 27): the transformer records them, and never changes a record.
        assert transformer.execute("select count(*) from meta.publication").fetchone() == (1,)
        for forbidden in ("update meta.publication set git_revision = 'x'", "delete from meta.publication_output",
                          "update meta.publication_input set withdrawn = true", "truncate meta.publication_output",
                          "select detail from meta.source_file"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                transformer.execute(forbidden)
            transformer.rollback()
        # Withdrawals: the transformer reads them and records the build that applied one, nothing else.
        assert transformer.execute("select count(*) from meta.file_withdrawal").fetchone() == (0,)
        for forbidden in ("insert into meta.file_withdrawal (source_file_id, file_name, sha256, file_date, run_id, "
                          "raw_rows, reason) select id, file_name, sha256, file_date, run_id, 0, 'x' from meta.source_file",
                          "update meta.file_withdrawal set reason = 'x'", "delete from meta.file_withdrawal"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                transformer.execute(forbidden)
            transformer.rollback()
    with login(database, *logins["loader"]) as loader:
        assert loader.execute("select count(*) from meta.file_withdrawal").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            loader.execute("update meta.file_withdrawal set applied_build_id = null")
        # A later file's repeats (migration 0012): the loader appends them, and may not rewrite them.
        loader.execute("insert into raw.contributions_restated (declaration_id, file_date, record_hash, revision, "
                       "source_file, source_line, run_id) select declaration_id, file_date, record_hash, revision, "
                       "'later.csv', 2, 'later-run' from raw.contributions limit 1")
        loader.commit()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            loader.execute("update raw.contributions_restated set source_line = 3")
        loader.rollback()
        with pytest.raises(psycopg.errors.RaiseException, match="raw.contributions_restated is append-only"):
            loader.execute("delete from raw.contributions_restated")
        loader.rollback()
    with login(database, *logins["transformer"]) as transformer:
        assert transformer.execute("select count(*) from raw.contributions_restated").fetchone() == (1,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            transformer.execute("insert into raw.contributions_restated select * from raw.contributions_restated")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        login(database, logins["loader"][0], "not-the-password")
    assert sql("select count(*) from raw.contributions")[0][0] > 1000


def test_no_password_and_no_pseudonym_key_in_any_output_artifact_log_or_audit_row(database, sql, logins, tmp_path):
    key = "pseudonym-" + secrets.token_hex(24)
    started = time.time()
    done = run_as_stage_logins(logins, tmp_path, key)
    assert done.returncode == 0, done.stdout + done.stderr
    secret_values = {"pseudonymisation key": key,
                     **{f"{role} password": logins[role][1] for role in STAGE_ROLES}}

    state = Path(database["CONTRIBFLOW_STATE_DIR"])
    written = [p for p in state.rglob("*") if p.is_file()]
    written += [p for p in (ROOT / "dbt").rglob("*") if p.is_file() and p.stat().st_mtime >= started]
    assert any(p.name == "run_results.json" for p in written) and any(p.suffix == ".log" for p in written)
    assert any(p.name == "manifest.json" for p in written)
    places = {"stdout": done.stdout.encode(), "stderr": done.stderr.encode()}
    places |= {str(p): p.read_bytes() for p in written}
    audit_rows = sql("select string_agg(t::text, ' ') from meta.etl_run t")[0][0]
    audit_rows += sql("select coalesce(string_agg(t::text, ' '), '') from meta.dbt_node_result t")[0][0]
    places["meta rows"] = audit_rows.encode()
    leaks = [(what, where) for what, value in secret_values.items() for where, content in places.items()
             if value.encode() in content]
    assert leaks == []
    assert len(places) > 10
    assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def roleless_server():
    """A server of its own, where no contribflow role exists yet (roles are server-wide)."""
    from contribflow.local import embedded

    data_dir = Path(tempfile.gettempdir()) / f"cf-roles-pg-{os.getpid()}"
    env = embedded.start(data_dir)
    yield env
    embedded.stop(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)


def test_init_db_without_createrole_stops_with_a_clear_message_until_an_admin_creates_the_roles(
        roleless_server, tmp_path):
    group_roles = [roles.group_role(r) for r in ("migrator", "loader", "transformer", "analyst")]
    ident = pgsql.Identifier

    def init_db(user: str, dbname: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "CONTRIBFLOW_"))}
        env.update(PGHOST=roleless_server["PGHOST"], PGUSER=user, PGDATABASE=dbname,
                   CONTRIBFLOW_STATE_DIR=str(tmp_path / "state"), CONTRIBFLOW_DB_CONNECT_ATTEMPTS="1")
        return cli(["init-db"], env)

    with admin(roleless_server) as conn:
        def q(query: str, dbname: str) -> list[tuple]:
            with admin(roleless_server, dbname) as db:
                return db.execute(query).fetchall()

        assert conn.execute("select count(*) from pg_roles where rolname like 'contribflow%'").fetchone() == (0,)
        for user, options in (("plain_login", "LOGIN"), ("createrole_login", "LOGIN CREATEROLE")):
            conn.execute(pgsql.SQL("CREATE ROLE {} " + options).format(ident(user)))
            conn.execute(pgsql.SQL("CREATE DATABASE {} OWNER {}").format(ident(f"db_{user}"), ident(user)))

        done = init_db("plain_login", "db_plain_login")
        assert done.returncode == 1
        [line] = done.stderr.strip().splitlines()
        assert "the group role contribflow_migrator does not exist" in line
        assert "plain_login may not create roles (no CREATEROLE)" in line
        assert q("select version from meta.schema_migration", "db_plain_login") == [("0001_raw_and_meta",)]
        assert conn.execute("select count(*) from pg_roles where rolname like 'contribflow%'").fetchone() == (0,)

        done = init_db("createrole_login", "db_createrole_login")  # creates the roles itself
        assert done.returncode == 0, done.stderr
        assert q("select count(*) from meta.schema_migration", "db_createrole_login") == [(len(migration_files()),)]
        assert q("select pg_get_userbyid(nspowner) from pg_namespace where nspname = 'marts'",
                 "db_createrole_login") == [("contribflow_transformer",)]

        done = init_db("plain_login", "db_plain_login")  # the roles exist now, but are not its own
        assert done.returncode == 1
        assert "plain_login must be a member of the group role contribflow_migrator" in done.stderr

        for role in group_roles:  # what the README asks an administrator to do
            conn.execute(pgsql.SQL("GRANT {} TO plain_login WITH INHERIT TRUE, SET TRUE").format(ident(role)))
        done = init_db("plain_login", "db_plain_login")
        assert done.returncode == 0, done.stderr
        assert q("select count(*) from meta.schema_migration", "db_plain_login") == [(len(migration_files()),)]
        assert q("select pg_get_userbyid(relowner) from pg_class where oid = 'raw.contributions'::regclass",
                 "db_plain_login") == [("contribflow_migrator",)]

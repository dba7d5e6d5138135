"""Fixtures. Integration tests get a real PostgreSQL that the tests start themselves (pgserver,
bundling PostgreSQL 16), and a fresh database per test."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from contribflow.local import embedded

ROOT = Path(__file__).resolve().parents[1]
TEST_KEY = "test-pseudonym-key-not-a-secret"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[dict[str, str]]:
    """One server for the session, in a short /tmp path (Unix socket paths are limited to 107 bytes)."""
    data_dir = Path(tempfile.gettempdir()) / f"contribflow-test-pg-{os.getpid()}"
    env = embedded.start(data_dir)
    yield env
    embedded.stop(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)


DATABASE = f"cf_test_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
"""The name of each test's fresh database: one name for the session (one per xdist worker), so that the
dbt parse saved once for it (dbt_saved_parse) stays valid in every test, as the dbt image's does in
every pod; dbt keeps a saved parse only for the database it was made with."""


@pytest.fixture(scope="session")
def dbt_saved_parse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dbt's saved parse of the project for DATABASE, made once per session as the dbt image makes it
    (transform.save_parse); each test's empty target folder starts from it (CONTRIBFLOW_DBT_SAVED_PARSE),
    so no test parses the whole project again unless it changed the project."""
    from contribflow.settings import Settings
    from contribflow.warehouse import transform

    target = tmp_path_factory.mktemp("dbt-saved-parse") / "target"
    before = os.environ.get("PGDATABASE")
    os.environ["PGDATABASE"] = DATABASE
    try:
        return transform.save_parse(Settings(dbt_project_dir=ROOT / "dbt", dbt_target_dir=target,
                                             state_dir=target.parent / "state"))
    finally:
        if before is None:
            os.environ.pop("PGDATABASE", None)
        else:
            os.environ["PGDATABASE"] = before


@pytest.fixture
def database(pg_server: dict[str, str], dbt_saved_parse: Path, monkeypatch: pytest.MonkeyPatch,
             tmp_path: Path) -> Iterator[dict[str, str]]:
    """A fresh database, and an environment (also applied to os.environ) that selects it."""
    name = DATABASE
    admin = psycopg.connect(host=pg_server["PGHOST"], user=pg_server["PGUSER"],
                            dbname=pg_server["PGDATABASE"], autocommit=True)
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.execute(f'CREATE DATABASE "{name}"')
    for var in ("CONTRIBFLOW_DSN", "PGSERVICE", "PGHOSTADDR", "PGPORT", "PGPASSWORD"):
        monkeypatch.delenv(var, raising=False)
    env = {
        **pg_server,
        "PGDATABASE": name,
        "CONTRIBFLOW_LANDING_DIR": str(tmp_path / "landing"),
        "CONTRIBFLOW_STATE_DIR": str(tmp_path / "state"),
        "CONTRIBFLOW_DBT_PROJECT_DIR": str(ROOT / "dbt"),
        "CONTRIBFLOW_DBT_SAVED_PARSE": str(dbt_saved_parse),
        "CONTRIBFLOW_PSEUDONYM_KEY": TEST_KEY,
        "CONTRIBFLOW_DB_CONNECT_ATTEMPTS": "2",
        "CONTRIBFLOW_DB_CONNECT_BACKOFF_S": "0.1",
        # Tests write each day's file whole before its run, most without a manifest: pick need not
        # watch it for the 30 s stability window (tests/test_completion.py sets its own windows).
        "CONTRIBFLOW_STABLE_S": "0",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("CONTRIBFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("CONTRIBFLOW_OUTPUTS_DIR", raising=False)
    yield env
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def sql(database: dict[str, str]):
    """Run a query against the test database and return all rows."""
    conn = psycopg.connect(host=database["PGHOST"], user=database["PGUSER"],
                           dbname=database["PGDATABASE"], autocommit=True)

    def query(text: str, params: tuple = ()) -> list[tuple]:
        cur = conn.execute(text, params)
        return cur.fetchall() if cur.description else []

    yield query
    conn.close()


class People:
    """Personal logins (issue 28) for one test: ``add(role)`` creates one through ``contribflow db
    add-person`` (as the server's administrator), ``cli(name, argv)`` runs the CLI as that person (a
    session as that login: PGUSER, as a person's own shell would have it)."""

    def __init__(self, database: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
        self.database, self.monkeypatch = database, monkeypatch
        self.made: list[str] = []

    def add(self, role: str, name: str | None = None) -> str:
        import uuid

        from contribflow import cli

        name = name or f"cf28_{role}_{uuid.uuid4().hex[:6]}"
        assert cli.main(["db", "add-person", name, "--role", role]) == 0
        self.made.append(name)
        return name

    def cli(self, name: str | None, argv: list[str]) -> int:
        """``contribflow ARGV`` as ``name`` (None: the administrator, who runs init-db and apply)."""
        from contribflow import cli

        self.monkeypatch.setenv("PGUSER", name or self.database["PGUSER"])
        try:
            return cli.main(argv)
        finally:
            self.monkeypatch.setenv("PGUSER", self.database["PGUSER"])

    def approved(self, argv: list[str]) -> int:
        """A request (``contribflow request ARGV``) made by one test person and approved by another:
        for the tests of what a correction does, once four eyes allowed it. Its id."""
        import contextlib
        import io

        if not hasattr(self, "operator"):
            self.operator, self.approver = self.add("operator"), self.add("approver")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert self.cli(self.operator, ["request", *argv]) == 0
            request_id = int(out.getvalue().splitlines()[0])
            assert self.cli(self.approver, ["approve", str(request_id)]) == 0
        return request_id

    def request(self, name: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> int:
        """Make a request as ``name``; its id (the first line the command prints)."""
        capsys.readouterr()
        assert self.cli(name, ["request", *argv]) == 0
        return int(capsys.readouterr().out.splitlines()[0])


@pytest.fixture
def people(database: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[People]:
    made = People(database, monkeypatch)
    yield made
    admin = psycopg.connect(host=database["PGHOST"], user=database["PGUSER"], dbname="postgres", autocommit=True)
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database["PGDATABASE"]}" WITH (FORCE)')  # its grants go with it
        for name in made.made:
            admin.execute(f'DROP ROLE IF EXISTS "{name}"')

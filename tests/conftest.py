"""Fixtures. Integration tests get a real PostgreSQL that the tests start themselves (pgserver,
bundling PostgreSQL 16), and a fresh database per test."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from contribflow import embedded

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CONTRIBFLOW_SHARED_DIR", ROOT.parent / "shared"))
TEST_KEY = "test-pseudonym-key-not-a-secret"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[dict[str, str]]:
    """One server for the session, in a short /tmp path (Unix socket paths are limited to 107 bytes)."""
    data_dir = Path(tempfile.gettempdir()) / f"contribflow-test-pg-{os.getpid()}"
    env = embedded.start(data_dir)
    yield env
    embedded.stop(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def database(pg_server: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A fresh database, and an environment (also applied to os.environ) that selects it."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = psycopg.connect(host=pg_server["PGHOST"], user=pg_server["PGUSER"],
                            dbname=pg_server["PGDATABASE"], autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    for var in ("CONTRIBFLOW_DSN", "PGSERVICE", "PGHOSTADDR", "PGPORT", "PGPASSWORD"):
        monkeypatch.delenv(var, raising=False)
    env = {
        **pg_server,
        "PGDATABASE": name,
        "CONTRIBFLOW_LANDING_DIR": str(tmp_path / "landing"),
        "CONTRIBFLOW_STATE_DIR": str(tmp_path / "state"),
        "CONTRIBFLOW_DBT_PROJECT_DIR": str(ROOT / "dbt"),
        "CONTRIBFLOW_PSEUDONYM_KEY": TEST_KEY,
        "CONTRIBFLOW_DB_CONNECT_ATTEMPTS": "2",
        "CONTRIBFLOW_DB_CONNECT_BACKOFF_S": "0.1",
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

"""`contribflow --help`, a file the ledger already knows and a refused file are answered without
importing the data libraries or dbt (issue 21: a re-ingest is a ledger look-up, not ~1 s of imports).
Checked on sys.modules of a real `contribflow` process, not by timing."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from contribflow.contract import file_name
from contribflow.generate import rows_for, write_file

HEAVY = ("pandas", "pandera", "numpy", "dbt")
DAY = dt.date(2026, 3, 2)

# Runs the CLI in this process, then reports the exit code and which heavy packages it imported.
PROBE = """
import json, sys
from contribflow import cli
try:
    code = cli.main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "heavy": sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))}))
""".replace("HEAVY", repr(HEAVY))


def probe(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=dict(os.environ))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_help_imports_no_data_library_nor_dbt():
    assert probe("--help") == {"code": 0, "heavy": []}
    assert probe("ingest", "--help") == {"code": 0, "heavy": []}


@pytest.mark.integration
def test_a_known_file_and_a_refused_one_are_answered_before_pandas(database, sql):
    landing = Path(database["CONTRIBFLOW_LANDING_DIR"])
    landing.mkdir(parents=True, exist_ok=True)
    assert probe("init-db")["code"] == 0
    path = landing / file_name(DAY)
    write_file(path, rows_for(DAY, 300, 42, 0.0))

    first = probe("ingest", "--date", DAY.isoformat(), "--file", str(path))
    assert first["code"] == 0 and "pandas" in first["heavy"]  # a new file: loaded, with pandas

    again = probe("ingest", "--date", DAY.isoformat(), "--file", str(path))
    assert again == {"code": 0, "heavy": []}
    assert sql("select count(*) from raw.contributions") == [(300,)]
    details = sql("select rows_in, rows_loaded, details from meta.etl_run where step = 'ingest' order by id")
    assert details[-1][:2] == (300, 0) and details[-1][2]["rows_already_loaded"] == 300
    assert "already_ingested_by" in details[-1][2]

    # The same content re-sent for the next day: recorded as DUPLICATE, still without pandas.
    resent = landing / file_name(DAY + dt.timedelta(days=1))
    resent.write_bytes(path.read_bytes())
    assert probe("ingest", "--date", (DAY + dt.timedelta(days=1)).isoformat(), "--file", str(resent)) == {
        "code": 0, "heavy": []}
    assert sql("select outcome, rows_in, rows_already_in_raw from meta.source_file order by id") == [
        ("LOADED", 300, 0), ("DUPLICATE", 300, 300)]

    misnamed = probe("ingest", "--date", (DAY + dt.timedelta(days=1)).isoformat(), "--file", str(path))
    assert misnamed == {"code": 1, "heavy": []}

    empty = landing / file_name(DAY + dt.timedelta(days=2))
    empty.write_bytes(b"")
    refused = probe("ingest", "--date", (DAY + dt.timedelta(days=2)).isoformat(), "--file", str(empty))
    assert refused == {"code": 1, "heavy": []}
    assert sql("select outcome from meta.source_file where file_name = %s", (empty.name,)) == [("REFUSED",)]

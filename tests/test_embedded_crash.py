"""The embedded PostgreSQL of `make run` after a crash, and two runs at once on one data folder (issue
25): a real `kill -9` of its postmaster in a temporary data folder, then the CLI again.

After a crash the folder keeps a stale postmaster.pid (and here the dead postmaster lingers as a
zombie, which pgserver took for a running server): the next command must bring the server back,
with its data, or say in one line what to do."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from contribflow.local import embedded

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
DAY = dt.date(2026, 11, 19)


@pytest.fixture
def state() -> Iterator[Path]:
    """A state folder in a short /tmp path (the server's socket lives in it), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="cf25e-", dir="/tmp"))
    try:
        yield folder
    finally:
        embedded.stop(folder / "pgdata")
        shutil.rmtree(folder, ignore_errors=True)
        (folder.parent / f".{folder.name}.lock").unlink(missing_ok=True)


def local_env(state: Path) -> dict[str, str]:
    """No server configured: the commands use the embedded one in ``state``/pgdata."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "CONTRIBFLOW_DSN"}
    env.update(CONTRIBFLOW_STATE_DIR=str(state), CONTRIBFLOW_LANDING_DIR=str(state / "landing"),
               CONTRIBFLOW_DBT_PROJECT_DIR=str(ROOT / "dbt"), CONTRIBFLOW_PSEUDONYM_KEY="test-key-embedded-crash")
    for name in ("CONTRIBFLOW_RUN_ID", "CONTRIBFLOW_OUTPUTS_DIR"):
        env.pop(name, None)
    return env


def cli(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "contribflow", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def postmaster(data: Path) -> int:
    return int((data / "postmaster.pid").read_text().split()[0])


def kill_postmaster(data: Path) -> int:
    pid = postmaster(data)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    assert (data / "postmaster.pid").exists(), "the crash leaves its pid file behind"
    return pid


def marker(data: Path, write: bool = False) -> list[tuple]:
    with psycopg.connect(host=str(data), user="postgres", dbname="postgres", autocommit=True) as conn:
        if write:
            conn.execute("create table crash_marker (note text); insert into crash_marker values ('before the crash')")
        return conn.execute("select note from crash_marker").fetchall()


def test_after_a_kill_9_of_its_postmaster_the_next_run_brings_the_server_back_with_its_data(state):
    env = local_env(state)
    data = state / "pgdata"
    assert cli(["db", "start"], env).returncode == 0
    marker(data, write=True)
    dead = kill_postmaster(data)

    done = cli(["run", "--date", DAY.isoformat(), "--rows", "300"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert postmaster(data) != dead and psutil.Process(postmaster(data)).status() != psutil.STATUS_ZOMBIE
    assert marker(data) == [("before the crash",)], "the warehouse recovered, nothing lost"
    with psycopg.connect(host=str(data), user="postgres", dbname="postgres") as conn:
        assert conn.execute("select count(*) from raw.contributions").fetchone()[0] + \
            conn.execute("select count(*) from raw.contributions_quarantine").fetchone()[0] == 300


def test_a_crashed_servers_process_still_running_is_named_in_one_line_with_what_to_do(state):
    env = local_env(state)
    data = state / "pgdata"
    assert cli(["db", "start"], env).returncode == 0
    dead = kill_postmaster(data)
    leftover = subprocess.Popen(["sleep", "120"], cwd=data)  # a process still working in the data folder
    try:
        done = cli(["init-db"], env, timeout=120)
        assert done.returncode == 1
        assert done.stderr.strip() == (
            f"contribflow init-db: error: the embedded PostgreSQL in {data} crashed (postmaster {dead} is gone) "
            f"but its process(es) {leftover.pid} still run: stop them (kill {leftover.pid}), then run again")
        assert (data / "postmaster.pid").exists(), "nothing is removed while a process may still use the folder"
    finally:
        leftover.kill()
        leftover.wait()
    again = cli(["init-db"], env)
    assert again.returncode == 0, again.stderr


def test_two_runs_at_once_on_one_fresh_data_folder_start_one_server_and_load_the_day_once(state):
    env = local_env(state)
    runs = [subprocess.Popen([sys.executable, "-m", "contribflow", "run", "--date", DAY.isoformat(), "--rows", "300"],
                             env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [r.communicate(timeout=900) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outputs
    data = (state / "pgdata").resolve()
    servers = [p for p in psutil.process_iter(["name", "cmdline"])
               if p.info["name"] == "postgres" and p.info["cmdline"] and "-D" in p.info["cmdline"]
               and str(data) in p.info["cmdline"]]
    assert [s.pid for s in servers] == [postmaster(data)], "one postmaster for the folder"
    with psycopg.connect(host=str(data), user="postgres", dbname="postgres") as conn:
        loaded = conn.execute("select outcome, count(*) from meta.source_file group by outcome").fetchall()
        rows = conn.execute("select count(*) from raw.contributions").fetchone()[0] + \
            conn.execute("select count(*) from raw.contributions_quarantine").fetchone()[0]
    assert loaded == [("LOADED", 1)] and rows == 300


def test_stop_stops_the_server_even_in_the_process_that_started_it_and_start_then_starts_it_again(state):
    """pgserver's handle in the starting process is made not to stop the server (cleanup_mode None),
    so stopping through it did nothing: the test session's server outlived its data folder."""
    data = state / "pgdata"
    embedded.start(data)
    first = postmaster(data)
    assert embedded.stop(data) is True
    assert not embedded._alive(first) and not (data / "postmaster.pid").exists()
    assert embedded.stop(data) is False, "nothing runs any more"
    embedded.start(data)
    assert postmaster(data) != first and embedded._alive(postmaster(data))
    assert marker_free(data) == 1


def marker_free(data: Path) -> int:
    with psycopg.connect(host=str(data), user="postgres", dbname="postgres") as conn:
        return conn.execute("select 1").fetchone()[0]

"""A file is loaded only once it is complete (issue 25, observation 3), against a real PostgreSQL and
a real writer process that writes the source file in place while pick and ingest run.

Observation 3: with the source writing in place, a run started at a third of the file published a
third of it, exit 0. Now pick waits for the file's completion signal (manifest, control file) or a
stability window, ingest re-checks and never commits a file that changed while it read it, and a
manifest that disagrees with the file refuses it (contribflow/ingest/completion.py)."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contribflow import generate
from contribflow.contract import COLUMNS, file_name
from contribflow.local import runner
from contribflow.settings import Settings

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 11, 23)
ROOT = Path(__file__).resolve().parents[1]
ROWS = 30_000

WRITER = r"""
import datetime as dt, sys, time
from pathlib import Path
from contribflow import generate
from contribflow.contract import COLUMNS
path, rows, per_burst, pause, control = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
lines = [",".join(COLUMNS)] + [",".join(r) for r in generate.rows_for(dt.date.fromisoformat(sys.argv[6]), rows)]
with open(path, "w", encoding="utf-8", newline="") as fh:   # in place, as the source writes
    for start in range(0, len(lines), per_burst):
        fh.write("".join(line + "\n" for line in lines[start:start + per_burst]))
        fh.flush()
        time.sleep(pause)
if control:
    Path(str(path) + control).write_bytes(b"")
"""


def writer(path: Path, rows: int = ROWS, per_burst: int = 300, pause: float = 0.03,
           control: str = "") -> subprocess.Popen:
    """The source system writing ``path`` in place: ``per_burst`` rows every ``pause`` seconds, then
    (``control``) an empty control file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(rows), str(per_burst), str(pause),
                             control, DAY.isoformat()], cwd=ROOT)


def wait_for_share(path: Path, share: float, rows: int = ROWS) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= share * rows:
            return
        time.sleep(0.01)
    raise AssertionError(f"the writer did not reach {share:.0%} of {path}")


def records(path: Path) -> int:
    """Data records in the file as it is now, counted independently of ContribFlow's reader."""
    with open(path, newline="", encoding="utf-8") as fh:
        return sum(1 for _ in csv.reader(fh)) - 1


def cli(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "contribflow", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def env_with(**settings: str) -> dict[str, str]:
    return dict(os.environ, **{f"CONTRIBFLOW_{k.upper()}": v for k, v in settings.items()})


def outputs(env: dict[str, str]) -> dict[str, str]:
    folder = Path(env["CONTRIBFLOW_OUTPUTS_DIR"])
    return json.loads((folder / "outputs.json").read_text()) if (folder / "outputs.json").exists() else {}


# --- a real writer, appending while the run goes ---------------------------------------------------

def test_a_run_started_at_a_third_of_a_file_being_written_waits_and_loads_it_whole(database, sql):
    """Observation 3 re-run: the whole graph (pick --wait, ingest, dbt, publish) starts while the
    source is a third of the way through; pick waits out the stability window, and every row of the
    finished file is loaded and published."""
    path = Path(database["CONTRIBFLOW_LANDING_DIR"]) / file_name(DAY)
    env = env_with(stable_s="1.5", late_deadline_s="120", late_poll_s="0.5", run_id="run-third")
    source = writer(path)
    try:
        wait_for_share(path, 1 / 3)
        assert source.poll() is None, "the writer is still writing when the run starts"
        params = {"run-date": DAY.isoformat(), "generate": "false"}
        results = {r.stage: r.state for r in runner.run_graph(Settings.from_env(env), params, env)}
    finally:
        assert source.wait(timeout=120) == 0
    assert set(results.values()) == {"ok", "skipped"}, results
    written = records(path)
    assert written == ROWS
    [(status, details)] = sql("select status, details from meta.etl_run where step = 'pick'")
    assert status == "SUCCESS" and details["completion"] == "stable" and details["waited_s"] >= 1
    assert sql("select count(*) from raw.contributions") == [(written,)]
    assert sql("select outcome, rows_in from meta.source_file") == [("LOADED", written)]
    assert sql("select count(*) from raw.contributions_quarantine") == [(0,)], "no cut line quarantined"
    with open(path, newline="", encoding="utf-8") as fh:
        declarations = {r["declaration_id"] for r in csv.DictReader(fh)}
    assert sql("select count(*) from marts.fct_contributions where file_date = %s", (DAY,)) == [(len(declarations),)]


def test_ingest_never_commits_a_file_that_changes_while_it_reads_it_and_its_retry_loads_it_whole(database, sql):
    """Ingest run straight at a file being written (no pick): transient (75), nothing committed; once the
    writer finished, the retry loads every row."""
    assert cli(["init-db"], dict(os.environ)).returncode == 0
    path = Path(database["CONTRIBFLOW_LANDING_DIR"]) / file_name(DAY)
    env = env_with(run_id="run-moving")
    source = writer(path, per_burst=100, pause=0.02)
    try:
        wait_for_share(path, 1 / 3)
        done = cli(["ingest", "--date", DAY.isoformat(), "--file", str(path)], env)
        still_writing = source.poll() is None
    finally:
        assert source.wait(timeout=120) == 0
    assert still_writing, "the writer outlived the ingest (else the test proves nothing)"
    assert done.returncode == 75, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"contribflow ingest: error: {path.name} changed while ingest ") and "retried" in line
    assert sql("select count(*) from raw.contributions") == [(0,)]
    assert sql("select count(*) from raw.contributions_quarantine") == [(0,)]
    assert sql("select count(*) from meta.source_file") == [(0,)]
    assert sql("select status, error_class from meta.etl_run where step = 'ingest'") == [("FAILED", "transient")]

    retry = cli(["ingest", "--date", DAY.isoformat(), "--file", str(path)], env)
    assert retry.returncode == 0, retry.stderr
    assert sql("select count(*) from raw.contributions") == [(records(path),)] == [(ROWS,)]


def test_under_the_control_policy_pick_waits_for_the_control_file_the_writer_writes_last(database, sql):
    assert cli(["init-db"], dict(os.environ)).returncode == 0
    path = Path(database["CONTRIBFLOW_LANDING_DIR"]) / file_name(DAY)
    env = env_with(completion="control", late_deadline_s="600", run_id="run-control",
                   outputs_dir=str(Path(database["CONTRIBFLOW_STATE_DIR"]) / "out"))
    source = writer(path, control=".done", pause=0.15)  # ~10 s left at a third: pick starts well within
    try:
        wait_for_share(path, 1 / 3)
        early = cli(["pick", "--date", DAY.isoformat()], env)
        writing = source.poll() is None
    finally:
        assert source.wait(timeout=120) == 0
    assert writing
    assert early.returncode == 76, early.stderr
    assert f"is not complete yet: {path.name}: no control file {path.name}.done or {path.name}.ok yet " \
           "(CONTRIBFLOW_COMPLETION=control)" in early.stderr
    done = cli(["pick", "--date", DAY.isoformat()], env)
    assert done.returncode == 0, done.stderr
    assert outputs(env)["completion"] == "control" and outputs(env)["file"] == str(path)
    assert cli(["ingest", "--date", DAY.isoformat(), "--file", str(path)], env).returncode == 0
    assert sql("select count(*) from raw.contributions") == [(ROWS,)]


def test_a_file_changed_after_pick_is_not_loaded_until_its_new_control_file_comes(database, sql):
    """Between pick's pod and ingest's, the source appends: ingest sees its control file older than the
    data, exits 75; the source's new control file lets the retry load the whole file."""
    assert cli(["init-db"], dict(os.environ)).returncode == 0
    landing = Path(database["CONTRIBFLOW_LANDING_DIR"])
    path = landing / file_name(DAY)
    env = env_with(completion="control", run_id="run-changed")
    lines = [",".join(COLUMNS)] + [",".join(r) for r in generate.rows_for(DAY, 1000)]
    landing.mkdir(parents=True)
    path.write_text("\n".join(lines[:501]) + "\n")
    control = landing / (path.name + ".done")
    control.touch()
    assert cli(["pick", "--date", DAY.isoformat()], env).returncode == 0
    time.sleep(0.05)
    with open(path, "a") as fh:  # the source goes on after its (early) control file
        fh.write("\n".join(lines[501:]) + "\n")
    done = cli(["ingest", "--date", DAY.isoformat(), "--file", str(path)], env)
    assert done.returncode == 75, done.stderr
    assert f"its control file {control.name} is older than the data file" in done.stderr
    assert sql("select count(*) from raw.contributions") == [(0,)]
    control.touch()
    assert cli(["ingest", "--date", DAY.isoformat(), "--file", str(path)], env).returncode == 0
    assert sql("select count(*) from raw.contributions") == [(1000,)]


# --- each policy -----------------------------------------------------------------------------------

def _manifest_for(path: Path) -> None:
    data = path.read_bytes()
    body = {"file": path.name, "rows": data.count(b"\n") - 1, "sha256": hashlib.sha256(data).hexdigest()}
    (path.parent / (path.name + ".manifest.json")).write_text(json.dumps(body))


def _control(suffix: str):
    def make(path: Path) -> None:
        (path.parent / (path.name + suffix)).write_bytes(b"")
    return make


def _stale_control(path: Path) -> None:
    control = path.parent / (path.name + ".done")
    control.write_bytes(b"")
    old = path.stat().st_mtime_ns - 5_000_000_000
    os.utime(control, ns=(old, old))


def _half_written_manifest(path: Path) -> None:
    (path.parent / (path.name + ".manifest.json")).write_text('{"file": "' + path.name + '", "rows": 1')


POLICIES = [
    # (name, policy, stable_s, signal, exit code, completion output or a part of the message, min seconds)
    ("auto_manifest_no_window", "auto", "600", _manifest_for, 0, "manifest", 0),
    ("auto_done", "auto", "600", _control(".done"), 0, "control", 0),
    ("auto_ok", "auto", "600", _control(".ok"), 0, "control", 0),
    ("auto_window", "auto", "1", None, 0, "stable", 1),
    ("auto_stale_control", "auto", "600", _stale_control, 76, "is older than the data file", 0),
    ("auto_manifest_being_written", "auto", "600", _half_written_manifest, 76, "is not readable JSON", 0),
    ("control_without_control", "control", "0", _manifest_for, 76, "no control file", 0),
    ("manifest_without_manifest", "manifest", "0", _control(".done"), 76, "no manifest", 0),
    ("manifest_with_manifest", "manifest", "600", _manifest_for, 0, "manifest", 0),
    ("stable_ignores_signals", "stable", "1", _control(".done"), 0, "stable", 1),
]


@pytest.mark.parametrize("case", POLICIES, ids=[c[0] for c in POLICIES])
def test_each_completion_policy(database, sql, case):
    name, policy, stable_s, signal, code, expected, min_s = case
    assert cli(["init-db"], dict(os.environ)).returncode == 0
    path = Path(database["CONTRIBFLOW_LANDING_DIR"]) / file_name(DAY)
    path.parent.mkdir(parents=True)
    generate.write_file(path, generate.rows_for(DAY, 200), manifest=False)
    if signal:
        signal(path)
    env = env_with(completion=policy, stable_s=stable_s, late_deadline_s="600", run_id=f"run-{name}".replace("_", "-"),
                   outputs_dir=str(Path(database["CONTRIBFLOW_STATE_DIR"]) / name))
    started = time.monotonic()
    done = cli(["pick", "--date", DAY.isoformat()], env)
    took = time.monotonic() - started
    assert done.returncode == code, done.stderr
    if code == 0:
        assert outputs(env)["completion"] == expected
    else:
        assert expected in done.stderr and f"file for {DAY} is not complete yet" in done.stderr
        assert outputs(env)["error_class"] == "waiting"
    assert took >= min_s
    if min_s == 0:
        assert took < 30, "a signal answers without waiting a window"


def test_past_the_deadline_an_incomplete_file_is_late_with_the_reason(database, sql):
    assert cli(["init-db"], dict(os.environ)).returncode == 0
    path = Path(database["CONTRIBFLOW_LANDING_DIR"]) / file_name(DAY)
    path.parent.mkdir(parents=True)
    generate.write_file(path, generate.rows_for(DAY, 50), manifest=False)
    done = cli(["pick", "--date", DAY.isoformat()], env_with(completion="manifest", late_deadline_s="0"))
    assert done.returncode == 1
    assert (f"file for {DAY} is late: {path} is there but not complete: no manifest {path.name}.manifest.json yet"
            in done.stderr)
    assert sql("select status, error_class from meta.etl_run where step = 'pick'") == [("FAILED", "late")]


def test_a_control_file_without_its_data_file_is_waited_for_then_late_naming_it(database, sql):
    assert cli(["init-db"], dict(os.environ)).returncode == 0
    landing = Path(database["CONTRIBFLOW_LANDING_DIR"])
    landing.mkdir(parents=True)
    (landing / (file_name(DAY) + ".done")).write_bytes(b"")
    env = env_with(late_deadline_s="2", run_id="run-orphan")
    first = cli(["pick", "--date", DAY.isoformat()], env)
    assert first.returncode == 76 and f"file for {DAY} has not arrived yet" in first.stderr
    time.sleep(2.2)
    last = cli(["pick", "--date", DAY.isoformat()], env)
    assert last.returncode == 1
    assert f"{file_name(DAY)}.done is there but not the file itself" in last.stderr
    assert cli(["ingest", "--date", DAY.isoformat(), "--file", str(landing / file_name(DAY))], env).returncode == 1
    assert sql("select count(*) from raw.contributions") == [(0,)]


def test_at_the_files_name_a_folder_fifo_or_link_is_refused_by_pick_not_waited_for(database, sql, tmp_path):
    assert cli(["init-db"], dict(os.environ)).returncode == 0
    landing = Path(database["CONTRIBFLOW_LANDING_DIR"])
    landing.mkdir(parents=True)
    path = landing / file_name(DAY)
    other = landing / file_name(DAY - dt.timedelta(days=1))
    generate.write_file(other, generate.rows_for(DAY, 10))
    for make, kind in ((path.mkdir, "a folder"), (lambda: os.mkfifo(path), "a FIFO"),
                       (lambda: path.symlink_to(other), "a symbolic link")):
        make()
        done = cli(["pick", "--date", DAY.isoformat()], env_with(late_deadline_s="600"))
        assert done.returncode == 1, done.stderr
        assert f"{path} is {kind}, not a regular file" in done.stderr
        path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()


def test_a_near_miss_of_the_name_is_named_when_the_file_is_late(database, sql):
    assert cli(["init-db"], dict(os.environ)).returncode == 0
    landing = Path(database["CONTRIBFLOW_LANDING_DIR"])
    landing.mkdir(parents=True)
    for name in (file_name(DAY).upper(), file_name(DAY) + " "):
        (landing / name).write_text(",".join(COLUMNS) + "\n")
    done = cli(["pick", "--date", DAY.isoformat()], env_with(late_deadline_s="0"))
    assert done.returncode == 1
    assert "'CONTRIBUTIONS_20261123.CSV'" in done.stderr and "'contributions_20261123.csv '" in done.stderr
    assert "not the contract's name (exact, lower case)" in done.stderr


# --- manifests that disagree -------------------------------------------------------------------------

def _ledger(sql) -> list[tuple]:
    return sql("select outcome, detail from meta.source_file order by id")


@pytest.mark.parametrize("change, part", [
    ("one byte", "sha256"),
    ("rows", "data rows read, the manifest says"),
    ("size", "bytes, the manifest says"),
    ("another file's name", "\"file\" must be"),
    ("rows not a number", "\"rows\" must be a whole number"),
    ("sha256 in capitals", "\"sha256\" must be 64 lowercase hex"),
])
def test_a_manifest_that_disagrees_with_the_file_refuses_it(database, sql, change, part):
    assert cli(["init-db"], dict(os.environ)).returncode == 0
    path = Path(database["CONTRIBFLOW_LANDING_DIR"]) / file_name(DAY)
    path.parent.mkdir(parents=True)
    generate.write_file(path, generate.rows_for(DAY, 300))
    manifest = path.parent / (path.name + ".manifest.json")
    body = json.loads(manifest.read_text())
    assert body == {"file": path.name, "rows": 300, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                    "size_bytes": path.stat().st_size}, "generate writes what a well-behaved source writes"
    if change == "one byte":  # same size, other content: a corrupted transfer
        data = bytearray(path.read_bytes())
        data[-3] = ord("X") if data[-3] != ord("X") else ord("Y")
        path.write_bytes(bytes(data))
        os.utime(manifest)  # the manifest came after the (corrupted) data
    elif change == "rows":
        body["rows"] = 301
    elif change == "size":
        body["size_bytes"] += 1
    elif change == "another file's name":
        body["file"] = file_name(DAY - dt.timedelta(days=1))
    elif change == "rows not a number":
        body["rows"] = "300"
    else:
        body["sha256"] = body["sha256"].upper()
    if change != "one byte":
        manifest.write_text(json.dumps(body))
    done = cli(["ingest", "--date", DAY.isoformat(), "--file", str(path)], dict(os.environ))
    assert done.returncode == 1, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert part in line and manifest.name in line
    [(outcome, detail)] = _ledger(sql)
    assert outcome == "REFUSED" and part in detail and manifest.name in detail
    assert sql("select count(*) from raw.contributions") == [(0,)]
    assert sql("select count(*) from raw.contributions_quarantine") == [(0,)]


def test_a_manifest_for_a_file_then_truncated_refuses_it_and_the_resent_file_then_loads(database, sql):
    """A sequence: the source's transfer is cut after the manifest (the file truncated), ingest refuses
    it; the source sends the file again whole, and it loads."""
    assert cli(["init-db"], dict(os.environ)).returncode == 0
    path = Path(database["CONTRIBFLOW_LANDING_DIR"]) / file_name(DAY)
    path.parent.mkdir(parents=True)
    generate.write_file(path, generate.rows_for(DAY, 2000))
    whole = path.read_bytes()
    with open(path, "r+b") as fh:
        fh.truncate(len(whole) // 2)
    env = env_with(run_id="run-cut-transfer")
    assert cli(["pick", "--date", DAY.isoformat()], env).returncode == 0, "a manifest is there: complete"
    done = cli(["ingest", "--date", DAY.isoformat(), "--file", str(path)], env)
    assert done.returncode == 1
    expected = (f"{path.name} does not match its manifest {path.name}.manifest.json: {len(whole) // 2} bytes, "
                f"the manifest says {len(whole)}")
    assert expected in done.stderr
    assert _ledger(sql) == [("REFUSED", sql("select detail from meta.source_file")[0][0])]
    assert expected in _ledger(sql)[0][1]
    assert sql("select count(*) from raw.contributions") == [(0,)]

    path.unlink()
    generate.write_file(path, generate.rows_for(DAY, 2000))  # re-sent whole, with its manifest
    assert path.read_bytes() == whole
    again = cli(["ingest", "--date", DAY.isoformat(), "--file", str(path)], env_with(run_id="run-resent"))
    assert again.returncode == 0, again.stderr
    assert [o for o, _ in _ledger(sql)] == ["REFUSED", "LOADED"]
    assert sql("select count(*) from raw.contributions") == [(2000,)]

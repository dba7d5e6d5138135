"""Settings and arguments are strict (issue 25, item 9; observations 10, 11, 12): every setting of
Settings and every argument of every subcommand, given its worst values, is refused with a message
naming the variable or argument and what is accepted, before any work is done: nothing is written to
the warehouse or the landing folder.

The tables are this test's own: a setting added to Settings, or an argument added to a subcommand,
without a row here fails test_every_setting_and_every_argument_is_in_the_tables."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from contribflow import cli
from contribflow.contract import COLUMNS, file_name
from contribflow.settings import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
DAY = dt.date(2026, 11, 20)
TODAY = dt.datetime.now(dt.UTC).date()
FAR = (TODAY + dt.timedelta(days=200)).isoformat()
NOT_A_FOLDER = "<a regular file>"
NOT_A_FILE = "<a folder>"

# env var: (Settings field or None, worst values, a part of the refusal that says what is accepted)
SETTINGS: dict[str, tuple[str | None, list[str], str]] = {
    "CONTRIBFLOW_ENV": ("environment", ["prod", "Production", "production ", "staging", "PRODUCTION"],
                        "is not one of dev, production"),
    "CONTRIBFLOW_LANDING_DIR": ("landing_dir", [NOT_A_FOLDER], "is not a folder"),
    "CONTRIBFLOW_STATE_DIR": ("state_dir", [NOT_A_FOLDER], "is not a folder"),
    "CONTRIBFLOW_DSN": ("dsn", ["host=localhost password=hunter2 port", "password='hunter2", "nosuchkey=1 password=hunter2"],
                        "is not a libpq connection string"),
    "CONTRIBFLOW_DSN ": ("dsn", ["postgresql://u:hunter2@h:99999999999/d", "host=h port=abc password=hunter2",
                                 "host=a,b port=5432,0"], "a port is a whole number from 1 to 65535"),
    "CONTRIBFLOW_DSN  ": ("dsn", ["postgresql://u:hunter2@h/d?sslmode=bogus"], "one of disable, allow, prefer"),
    "CONTRIBFLOW_PSEUDONYM_KEY": ("pseudonym_key", ["hunter2-key-from-a-file\n", " hunter2-key"],
                                  "starts or ends with whitespace"),
    "CONTRIBFLOW_REJECT_THRESHOLD": ("reject_threshold", ["nan", "inf", "-0.1", "1.5", "0x1", "1_0", "abc", " 0.5"],
                                     "a number from 0 to 1"),
    "CONTRIBFLOW_CHUNK_ROWS": ("chunk_rows", ["0", "-5", "1000001", "1000000000000", "1.5", "nan", "٥"],
                               "a whole number from 1 to 1000000"),
    "CONTRIBFLOW_RUN_ID": ("run_id", ["../../etc", "a b", "x" * 129, "run/1", ".hidden", "run\n1"], "is not a run id"),
    "CONTRIBFLOW_WORKFLOW_NAME": ("workflow_name", ["a\nb", "x" * 254], "no control character, at most 253"),
    "CONTRIBFLOW_TASK_NAME": ("task_name", ["a\x1bb"], "no control character, at most 253"),
    "CONTRIBFLOW_POD_NAME": ("pod_name", ["pod\tname"], "no control character, at most 253"),
    "CONTRIBFLOW_OUTPUTS_DIR": ("outputs_dir", [NOT_A_FOLDER], "is not a folder"),
    "CONTRIBFLOW_DBT_PROJECT_DIR": ("dbt_project_dir", [NOT_A_FOLDER], "is not a folder"),
    "CONTRIBFLOW_DBT_TARGET_DIR": ("dbt_target_dir", [NOT_A_FOLDER], "is not a folder"),
    "CONTRIBFLOW_DBT_SAVED_PARSE": ("dbt_saved_parse", [NOT_A_FILE], "is not a regular file"),
    "CONTRIBFLOW_DB_CONNECT_ATTEMPTS": ("db_connect_attempts", ["0", "-1", "101", "nan", "1e9"],
                                        "a whole number from 1 to 100"),
    "CONTRIBFLOW_DB_CONNECT_BACKOFF_S": ("db_connect_backoff_s", ["-1", "nan", "inf", "-inf", "61", "1e400"],
                                         "a number from 0 to 60 (seconds)"),
    "CONTRIBFLOW_STALE_AFTER_S": ("stale_after_s", ["-1", "604801", "nan", "1.5"], "a whole number from 0 to 604800"),
    "CONTRIBFLOW_CONTRACT_OVERRIDES": ("contract", ["{", '{"columns": {"nope": {}}}', "[1]"],
                                       "CONTRIBFLOW_CONTRACT_OVERRIDES"),
    "CONTRIBFLOW_SCHEMA_DRIFT": ("schema_drift", ["Keep", "drop"], "is not one of refuse, keep"),
    "CONTRIBFLOW_VOLUME_LOOKBACK_DAYS": ("volume_lookback_days", ["0", "367", "-1"], "a whole number from 1 to 366"),
    "CONTRIBFLOW_VOLUME_MIN_HISTORY": ("volume_min_history", ["0", "367"], "a whole number from 1 to 366"),
    "CONTRIBFLOW_VOLUME_LOW_RATIO": ("volume_low_ratio", ["-0.1", "1.1", "nan"], "a number from 0 to 1"),
    "CONTRIBFLOW_VOLUME_HIGH_RATIO": ("volume_high_ratio", ["0.9", "1001", "inf"], "a number from 1 to 1000"),
    "CONTRIBFLOW_VOLUME_ACTION": ("volume_action", ["WARN", "stop"], "is not one of warn, fail"),
    "CONTRIBFLOW_LATE_DEADLINE_S": ("late_deadline_s", ["-1", "86401", "1.5", "nan"], "a whole number from 0 to 86400"),
    "CONTRIBFLOW_LATE_POLL_S": ("late_poll_s", ["0", "-1", "3601", "nan"], "a number from 0.1 to 3600"),
    "CONTRIBFLOW_RESENT_FILE": ("resent_file", ["Warn", "ignore"], "is not one of warn, refuse"),
    "CONTRIBFLOW_COMPLETION": ("completion", ["Auto", "done", ""], "is not one of auto, control, manifest, stable"),
    "CONTRIBFLOW_STABLE_S": ("stable_s", ["-1", "3601", "nan", "inf"], "a number from 0 to 3600"),
    "CONTRIBFLOW_FUTURE_TOLERANCE_DAYS": ("future_tolerance_days", ["-1", "8", "1.5", "365"],
                                          "a whole number from 0 to 7"),
    "CONTRIBFLOW_SLA_FILE_DUE_S": ("sla_file_due_s", ["-1", "172801", "1.5", "nan", "08:00", "1e3"],
                                   "a whole number from 0 to 172800 (seconds after the run date's 00:00 UTC)"),
    "CONTRIBFLOW_SLA_PUBLISH_DEADLINE_S": ("sla_publish_deadline_s", ["-1", "172801", "inf", "10h"],
                                           "a whole number from 0 to 172800"),
    "CONTRIBFLOW_SLA_MAX_QUARANTINE_RATIO": ("sla_max_quarantine_ratio", ["-0.01", "1.01", "nan", "inf", "2%"],
                                             "a number from 0 to 1 (share of rows)"),
    "CONTRIBFLOW_WORKFLOW_NAMESPACE": ("workflow_namespace", ["a\nb", "x" * 254], "no control character, at most 253"),
    "CONTRIBFLOW_NOTIFY_WEBHOOK_URL": ("notify_webhook_url", ["ftp://hooks.example/hunter2", "hooks.slack.com/hunter2",
                                                              "https:///hunter2"],
                                       "is not an http:// or https:// URL"),
    "CONTRIBFLOW_NOTIFY_WEBHOOK_URL  ": ("notify_webhook_url", ["https://h/hunter2 x", "https://h/a\thunter2"],
                                         "holds whitespace or a control character"),
    "CONTRIBFLOW_NOTIFY_WEBHOOK_URL ": ("notify_webhook_url", ["https://h:99999/hunter2", "http://[hunter2/"],
                                        "is not a URL"),
    "CONTRIBFLOW_NOTIFY_WEBHOOK_URL_FILE": ("notify_webhook_url", [NOT_A_FILE], "cannot be read"),
    "CONTRIBFLOW_SIGNING_KEY_FILE": ("signing_key_file", [NOT_A_FILE], "is not a regular file"),
    "CONTRIBFLOW_NOTIFY_FORMAT": ("notify_format", ["Slack", "email", "json"], "is not one of generic, slack, teams"),
    "CONTRIBFLOW_NOTIFY_TIMEOUT_S": ("notify_timeout_s", ["0", "-1", "61", "nan", "inf"], "a number from 0.1 to 60"),
    "CONTRIBFLOW_ARGO_UI_URL": ("argo_ui_url", ["argo.example.com", "ftp://argo.example.com", "https://"],
                                "is not an http:// or https:// URL"),
    "CONTRIBFLOW_REQUEST_TTL_HOURS": ("request_ttl_hours", ["0", "721", "1.5", "nan", "72h", "-1"],
                                      "a whole number from 1 to 720 (hours)"),
    "CONTRIBFLOW_GIT_REVISION": ("git_revision", ["abc def", "-x", "a\nb", "x" * 129], "is not a git revision"),
    "CONTRIBFLOW_IMAGE_DIGESTS": ("image_digests", ["{", "[1]", '{"dbt": "latest"}', '{"": "sha256:' + "0" * 64 + '"}'],
                                  "is not a JSON object of image name -> digest"),
    "CONTRIBFLOW_LOG_FORMAT": (None, ["xml", "jsonl"], "must be one of text, json"),
    "CONTRIBFLOW_LOG_LEVEL": (None, ["LOUD", "5"], "must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
}
"""An empty value means "unset" (the default), except where listed (CONTRIBFLOW_COMPLETION's "" is
dropped below: "" is the default there too)."""
SETTINGS["CONTRIBFLOW_COMPLETION"][1].remove("")
RUN_ID_FROM_ENV = {"run_id"}  # read from CONTRIBFLOW_RUN_ID like the others


def _settings_cases() -> list[tuple[str, str, str]]:
    """(variable, worst value, a part of its refusal), for every variable of SETTINGS."""
    return [(name, value, accepted) for name, (_, values, accepted) in SETTINGS.items() for value in values]


# subcommand arguments: (argv, exit code, a part of the refusal: the argument and what is accepted)
D = DAY.isoformat()
BAD_DATES = ["20261101", "2026-W45-1", "2026-11-1", " 2026-11-01", "2026-11-01\n", "2026-02-30", "0206-11-01",
             "2026-11-01T00:00", "٢٠٢٦-١١-٠١"]


def _dates(command: list[str], flag: str, rest: list[str]) -> list[tuple[list[str], int, str]]:
    """A date argument's worst values: each wrong format (argparse, exit 2), and 200 days ahead (exit 1)."""
    cases = [([*command, flag, bad, *rest], 2, f"argument {flag}: ") for bad in BAD_DATES]
    return cases + [([*command, flag, FAR, *rest], 1, f"{flag} {FAR} is after ")]


ARGUMENTS: list[tuple[list[str], int, str]] = [
    *_dates(["init-db"], "--date", []),
    *_dates(["generate"], "--date", []),
    *[(["generate", "--date", D, "--rows", v], 2, "argument --rows: ")
      for v in ["-5", "0", "1000000000000", "1e3", "1_000", "٥", "nan", "100000001"]],
    *[(["generate", "--date", D, "--seed", v], 2, "argument --seed: ") for v in ["-1", "4294967296", "abc", "1.5"]],
    *[(["generate", "--date", D, "--defect-rate", v], 2, "is not a decimal from 0 to 1")
      for v in ["nan", "inf", "-0.1", "1.5", "1e-2", ".5", "0,5"]],
    *[(["generate", "--date", D, "--out", v], 2, "argument --out: ") for v in ["<folder>", "<fifo>", "", " x.csv"]],
    *_dates(["pick"], "--date", []),
    *_dates(["ingest"], "--date", ["--file", "<the file>"]),
    (["ingest", "--date", D, "--file", "<folder>"], 1, "is not a regular file"),
    (["ingest", "--date", D, "--file", "<fifo>"], 1, "is not a regular file"),
    (["ingest", "--date", D, "--file", "<link out of landing>"], 1, "is a symbolic link"),
    (["ingest", "--date", D, "--file", "<link into landing>"], 1, "outside the landing folder"),
    (["ingest", "--date", D, "--file", "<link to another day>"], 1, "is a symbolic link"),
    (["ingest", "--date", D, "--file", "<another day>"], 1, "is the file for 2026-11-19, not for the run date"),
    (["ingest", "--date", D, "--file", "<month 13>"], 1, "does not carry a valid date"),
    (["ingest", "--date", D, "--file", "<upper case>"], 1, "is not named contributions_YYYYMMDD.csv"),
    (["ingest", "--date", D, "--file", "<trailing space>"], 1, "is not named contributions_YYYYMMDD.csv"),
    (["ingest", "--date", D, "--file", "<missing>"], 1, "no such file in the landing folder"),
    *_dates(["dbt-build"], "--date", []),
    *_dates(["dbt-test"], "--date", []),
    *_dates(["publish"], "--date", []),
    *_dates(["finish"], "--date", ["--status", "Succeeded"]),
    *[(["finish", "--date", D, "--status", v], 2, "argument --status: invalid choice")
      for v in ["succeeded", "Succeded", "", "Running"]],
    *_dates(["run"], "--date", []),
    *[(["run", "--rows", v], 2, "argument --rows: ") for v in ["-5", "1000000000000"]],
    *[(["run", "--defect-rate", v], 2, "argument --defect-rate: ") for v in ["nan", "2"]],
    *_dates(["dates"], "--from", ["--to", D]),
    *_dates(["dates", "--from", D], "--to", []),
    *_dates(["audit"], "--date", []),
    *_dates(["audit"], "--from", ["--to", D, "--html", "<new html>"]),
    *_dates(["audit", "--from", D], "--to", ["--html", "<new html>"]),
    (["audit", "--from", D, "--to", D, "--html", "<folder>"], 2, "argument --html: "),
    *[(["verify-pack", v], 2, "argument file: ") for v in ["<folder>", "<fifo>", "/nonexistent/pack.html"]],
    *[(["verify-pack", "<the file>", "--public-key", v], 2, "argument --public-key: ")
      for v in ["<folder>", "<fifo>", "/nonexistent/key.pem"]],
    *_dates(["purge-quarantine"], "--before", []),
    *[(["run-stages", v], 2, "argument spec: ") for v in ["<folder>", "<fifo>", "<the file>", "/nonexistent/spec.json"]],
    *[(["withdraw-file", "--file", v, "--reason", "wrong export"], 2, "argument --file: ")
      for v in ["", "x.csv", "../contributions_20261120.csv", "contributions_20261320.csv", "contributions_20261120.CSV"]],
    *[(["withdraw-file", "--file", "contributions_20261120.csv", "--run", v, "--reason", "x"], 2, "argument --run: ")
      for v in ["", "../x", "a b", "r" * 129]],
    *[(["withdraw-file", "--file", "contributions_20261120.csv", "--reason", v], 2, "argument --reason: ")
      for v in ["", "   ", "a\x00b", "line\nbreak", "x" * 1001]],
    *_dates(["request", "withdraw-file", "--reason", "x"], "--date", []),
    *_dates(["request", "reprocess", "--reason", "x"], "--date", []),
    *_dates(["request", "purge-quarantine", "--reason", "x"], "--before", []),
    *[(["request", "reprocess", "--date", D, "--threshold", v, "--reason", "x"], 2, "argument --threshold: ")
      for v in ["nan", "1.5", "-0.1", ".5", "1e-2"]],
    *[(["request", "reload-corrected", "--date", D, "--file", v, "--reason", "x"], 2, "argument --file: ")
      for v in ["", "../contributions_20261120.csv", "contributions_20261320.csv"]],
    *[(["request", "withdraw-file", "--date", D, "--reason", v], 2, "argument --reason: ")
      for v in ["", "   ", "a\x00b", "x" * 1001]],
    *[(["request", "withdraw-file", "--date", D, "--run", v, "--reason", "x"], 2, "argument --run: ")
      for v in ["", "../x", "a b"]],
    (["request", "launder-money", "--reason", "x"], 2, "argument KIND: invalid choice"),
    *[([command, v], 2, "argument id: ") for command in ("approve", "apply") for v in ["0", "-1", "x", "1.5", ""]],
    (["reject", "1"], 2, "the following arguments are required: --reason"),
    *[(["reject", v, "--reason", "x"], 2, "argument id: ") for v in ["0", "x"]],
    *[([command, "1", "--reason", v], 2, "argument --reason: ") for command in ("approve", "reject")
      for v in ["", "  ", "a\nb"]],
    (["db", "add-person", "Bob", "--role", "operator"], 2, "argument name: "),
    (["db", "add-person", "bob", "--role", "admin"], 2, "argument --role: invalid choice"),
    *[(["trace", "--declaration", v], 2, "argument --declaration: a declaration id is 1 to 64 characters")
      for v in ["", "a\tb", "x" * 65, " DEC_1"]],
    (["trace", "--taxpayer-key", "TAXP_12345"], 2, "argument --taxpayer-key: a taxpayer key is the 64"),
    *[(["reproduce", "--publication", v], 2, "argument --publication: ") for v in ["0", "-1", "abc", "1.5", "1e3"]],
    (["contract", "--format", "yaml"], 2, "argument --format: invalid choice"),
    (["images", "--registry", "Ghcr.io/X"], 2, "argument --registry: "),
    (["images", "--tag", "bad tag"], 2, "argument --tag: "),
    (["db", "restart"], 2, "argument action: invalid choice"),
    *_dates(["submit"], "--date", []),
    (["submit", "--date", D, "--param", "rows=-5"], 1, "--param rows='-5': the value must be a whole number"),
    (["submit", "--date", D, "--param", "defect-rate=nan"], 1, "--param defect-rate='nan': the value must be"),
    (["submit", "--date", D, "--param", "generate=yes"], 1, "--param generate='yes': the value must be true or false"),
    (["submit", "--date", D, "--namespace", "Bad_NS"], 2, "argument --namespace/-n: "),
    (["submit", "--date", D, "--kubeconfig", "<folder>"], 2, "argument --kubeconfig: "),
    (["submit", "--date", D, "--poll", "nan"], 2, "argument --poll: 'nan' is not a number of seconds from 0.01"),
    (["submit", "--date", D, "--timeout", "-1"], 2, "argument --timeout: '-1' is not a number of seconds from 0"),
    *_dates(["backfill"], "--from", ["--to", D]),
    *_dates(["backfill", "--from", D], "--to", []),
    (["backfill", "--from", D, "--to", D, "--parallel", "0"], 2, "argument --parallel: '0' is not a whole number"),
    (["wait", "A run"], 2, "argument RUN: 'A run' is not a Workflow name"),
    (["images", "--format", "yaml"], 2, "argument --format: invalid choice"),
    (["submit", "--date", D, "--output", "yaml"], 2, "argument --output/-o: invalid choice"),
    (["backfill", "--from", D, "--to", D, "--param", "rows=1.5"], 1, "--param rows='1.5': the value must be"),
    *[([command, *rest, flag, bad], 2, f"argument {flag}")
      for command, rest in (("backfill", ["--from", D, "--to", D]), ("wait", ["contribflow-daily-x"]))
      for flag, bad in (("--namespace", "kube_system"), ("--kubeconfig", "<folder>"), ("--poll", "0"),
                        ("--timeout", "inf"))],
]
FREE = {("submit", "--context"), ("backfill", "--context"), ("wait", "--context")}
"""Arguments with no value to refuse here: a kubeconfig context is any name, and Cluster.connect names
one that is not in the kubeconfig. Flags (store_true) take no value."""


@pytest.fixture
def world(database, sql, tmp_path):
    """A warehouse with its schema, a landing folder with one file, and what to compare after a refusal."""
    assert cli.main(["init-db"]) == 0
    landing = Path(database["CONTRIBFLOW_LANDING_DIR"])
    landing.mkdir(parents=True, exist_ok=True)
    source = landing / file_name(DAY)
    source.write_text(",".join(COLUMNS) + "\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.mkfifo(tmp_path / "fifo")
    (landing / file_name(DAY - dt.timedelta(days=1))).write_text(",".join(COLUMNS) + "\n")
    (landing / "contributions_20261301.csv").write_text(",".join(COLUMNS) + "\n")
    (landing / file_name(DAY).upper()).write_text(",".join(COLUMNS) + "\n")
    (landing / (file_name(DAY) + " ")).write_text(",".join(COLUMNS) + "\n")
    (outside / file_name(DAY)).symlink_to(source)
    (outside / "regular.txt").write_text("x")

    def reset() -> None:
        """The run date's file back to a regular file (cases replace it with a folder, FIFO or link)."""
        if source.is_dir() and not source.is_symlink():
            source.rmdir()
        elif source.exists() or source.is_symlink():
            source.unlink()
        source.write_text(",".join(COLUMNS) + "\n")

    def snapshot() -> tuple:
        return (sql("select count(*) from meta.etl_run")[0][0], sql("select count(*) from meta.source_file")[0][0],
                sql("select count(*) from raw.contributions")[0][0],
                sorted(p.name for p in landing.iterdir()), sorted(p.name for p in outside.iterdir()))

    return {"landing": landing, "source": source, "outside": outside, "tmp": tmp_path, "snapshot": snapshot,
            "reset": reset}


def _placeholders(argv: list[str], world: dict) -> list[str]:
    landing, tmp = world["landing"], world["tmp"]
    fifo_in_landing = landing / file_name(DAY)
    values = {
        "<the file>": str(world["source"]),
        "<folder>": str(tmp),
        "<fifo>": str(tmp / "fifo"),
        "<new html>": str(tmp / "pack.html"),
        "<link into landing>": str(world["outside"] / file_name(DAY)),
        "<another day>": str(landing / file_name(DAY - dt.timedelta(days=1))),
        "<month 13>": str(landing / "contributions_20261301.csv"),
        "<upper case>": str(landing / file_name(DAY).upper()),
        "<trailing space>": str(landing / (file_name(DAY) + " ")),
    }
    out = []
    for arg in argv:
        if arg == "<link out of landing>" or arg == "<link to another day>":
            target = world["outside"] / "regular.txt" if arg == "<link out of landing>" \
                else landing / file_name(DAY - dt.timedelta(days=1))
            world["source"].unlink()
            world["source"].symlink_to(target)
            out.append(str(world["source"]))
        elif arg == "<folder>" and argv[:1] == ["ingest"]:
            world["source"].unlink()
            world["source"].mkdir()
            out.append(str(world["source"]))
        elif arg == "<fifo>" and argv[:1] == ["ingest"]:
            world["source"].unlink()
            os.mkfifo(fifo_in_landing)
            out.append(str(fifo_in_landing))
        elif arg == "<missing>":
            world["source"].unlink()
            out.append(str(world["source"]))
        else:
            out.append(values.get(arg, arg))
    return out


def _refused(world: dict, capsys, argv: list[str]) -> tuple[int, str]:
    """cli.main's exit code (argparse's SystemExit included) and stderr, checking nothing changed."""
    before = world["snapshot"]()
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse: the usage line, then the refusal
        code = exc.code
    err = capsys.readouterr().err
    assert world["snapshot"]() == before, f"{argv}: something was written"
    return code, err


def test_a_bad_setting_is_refused_at_start_naming_it_and_what_is_accepted(world, monkeypatch, capsys):
    """One warehouse for every case (each is refused before it is touched: checked after each)."""
    wrong = []
    for name, value, accepted in _settings_cases():
        if value == NOT_A_FOLDER:
            value = str(world["outside"] / "regular.txt")
        elif value == NOT_A_FILE:
            value = str(world["outside"])
        with monkeypatch.context() as patch:
            patch.setenv(name.strip(), value)
            code, err = _refused(world, capsys, ["generate", "--date", D, "--rows", "10", "--out",
                                                 str(world["tmp"] / "out.csv")])
        lines = err.strip().splitlines()
        if not (code == 1 and len(lines) == 1 and lines[0].startswith("contribflow generate: error: ")
                and name.strip() in lines[0] and accepted in lines[0] and "hunter2" not in err
                and not (world["tmp"] / "out.csv").exists()):
            wrong.append((name.strip(), value, code, err))
    assert wrong == [], "settings not refused as they should be (a DSN or key is never repeated)"


def test_a_bad_argument_is_refused_before_any_work_naming_it_and_what_is_accepted(world, capsys):
    wrong = []
    for argv, code, part in ARGUMENTS:
        world["reset"]()
        got, err = _refused(world, capsys, _placeholders(argv, world))
        last = (err.strip().splitlines() or [""])[-1]
        names_file = not (got == 1 and "--file" in argv and "<the file>" not in argv) \
            or last.startswith("contribflow ingest: error: --file ")
        if got != code or part not in last or "Traceback" in err or not names_file:
            wrong.append((argv, got, last))
    assert wrong == [], "arguments not refused as they should be"


def test_every_setting_and_every_argument_is_in_the_tables():
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert fields == {f for f, _, _ in SETTINGS.values() if f}, "a setting without worst values in SETTINGS"
    source = "".join((ROOT / "contribflow" / m).read_text() for m in ("settings.py", "logs.py"))
    assert set(re.findall(r"CONTRIBFLOW_[A-Z_]*[A-Z]", source)) <= {n.strip() for n in SETTINGS}, \
        "a variable read but without worst values in SETTINGS"

    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    tested = {(argv[0], arg) for argv, _, _ in ARGUMENTS for arg in argv[1:] if arg.startswith("--")}
    missing = []
    for command, parser in sub.choices.items():
        for action in parser._actions:
            if action.dest == "help" or action.nargs == 0:  # flags take no value
                continue
            if action.option_strings:
                key = (command, max(action.option_strings, key=len))
                covered = key in tested
            else:  # a positional: a case whose refusal names it
                key = (command, action.dest)
                name = f"argument {action.metavar or action.dest}: "
                covered = any(argv[0] == command and name in part for argv, _, part in ARGUMENTS)
            if not covered and key not in FREE:
                missing.append(key)
    assert missing == [], "arguments without worst values in ARGUMENTS"


# --- the observations, as reported ------------------------------------------------------------------

def cli_process(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "contribflow", *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def test_observation_10_a_run_date_200_days_ahead_is_refused_and_the_tolerance_is_a_setting(world, sql):
    env = dict(os.environ)
    far = cli_process(["run", "--date", FAR, "--rows", "50"], env)
    assert far.returncode == 1
    assert far.stderr.strip() == (f"contribflow run: error: --date {FAR} is after {TODAY + dt.timedelta(days=1)}: "
                                  "today (UTC) + CONTRIBFLOW_FUTURE_TOLERANCE_DAYS=1; accepted: YYYY-MM-DD from "
                                  f"1900-01-01 to {TODAY + dt.timedelta(days=1)}")
    tomorrow = (TODAY + dt.timedelta(days=1)).isoformat()
    assert cli_process(["dates", "--from", tomorrow, "--to", tomorrow], env).returncode == 0, \
        "a schedule's local date may be a day ahead of UTC's"
    strict = dict(env, CONTRIBFLOW_FUTURE_TOLERANCE_DAYS="0")
    refused = cli_process(["dates", "--from", TODAY.isoformat(), "--to", tomorrow], strict)
    assert refused.returncode == 1 and f"--to {tomorrow} is after {TODAY}" in refused.stderr
    assert world["snapshot"]()[:3] == (1, 0, 0), "only init-db's row"


def test_observation_11_a_negative_backoff_is_refused_at_start(world):
    done = cli_process(["init-db"], dict(os.environ, CONTRIBFLOW_DB_CONNECT_BACKOFF_S="-1"))
    assert done.returncode == 1
    assert done.stderr.strip() == ("contribflow init-db: error: CONTRIBFLOW_DB_CONNECT_BACKOFF_S='-1' is out of "
                                   "range: a number from 0 to 60 (seconds)")


def test_observation_12_an_unknown_environment_is_refused_before_generate_or_the_dev_key(world):
    landing = world["landing"]
    before = sorted(p.name for p in landing.iterdir())
    for command in (["generate", "--date", "2026-11-21", "--rows", "10"], ["init-db"]):
        done = cli_process(command, dict(os.environ, CONTRIBFLOW_ENV="prod"))
        assert done.returncode == 1
        assert done.stderr.strip().endswith("CONTRIBFLOW_ENV='prod' is not one of dev, production (exactly, in lower case)")
    assert sorted(p.name for p in landing.iterdir()) == before, "generate wrote nothing"
    assert world["snapshot"]()[0] == 1, "no step ran (only the fixture's init-db)"


# --- the SLA settings (issue 29) --------------------------------------------------------------------

def test_sla_settings_are_unset_by_default_parsed_when_given_and_checked_together():
    plain = Settings.from_env({})
    assert (plain.sla_file_due_s, plain.sla_publish_deadline_s, plain.sla_max_quarantine_ratio) == (None, None, None)
    given = Settings.from_env({"CONTRIBFLOW_SLA_FILE_DUE_S": "28800", "CONTRIBFLOW_SLA_PUBLISH_DEADLINE_S": "36000",
                               "CONTRIBFLOW_SLA_MAX_QUARANTINE_RATIO": "2e-02"})
    assert (given.sla_file_due_s, given.sla_publish_deadline_s, given.sla_max_quarantine_ratio) == (28800, 36000, 0.02)
    # the bounds themselves are accepted (two days: a file due the day after its run date)
    edge = Settings.from_env({"CONTRIBFLOW_SLA_FILE_DUE_S": "0", "CONTRIBFLOW_SLA_PUBLISH_DEADLINE_S": "172800",
                              "CONTRIBFLOW_SLA_MAX_QUARANTINE_RATIO": "1"})
    assert (edge.sla_file_due_s, edge.sla_publish_deadline_s, edge.sla_max_quarantine_ratio) == (0, 172800, 1.0)
    with pytest.raises(ValueError, match=r"CONTRIBFLOW_SLA_PUBLISH_DEADLINE_S=3600 is before "
                                         r"CONTRIBFLOW_SLA_FILE_DUE_S=7200"):
        Settings.from_env({"CONTRIBFLOW_SLA_FILE_DUE_S": "7200", "CONTRIBFLOW_SLA_PUBLISH_DEADLINE_S": "3600"})
    with pytest.raises(ValueError, match=r"CONTRIBFLOW_SLA_FILE_DUE_S='08:00' is not a whole number from 0 to 172800"):
        Settings.from_env({"CONTRIBFLOW_SLA_FILE_DUE_S": "08:00"})

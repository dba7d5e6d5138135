"""What each local stage is given: its own role's login only, and the key only where it is needed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from contribflow import roles
from contribflow.graph import STAGES, by_name
from contribflow.local import runner
from contribflow.settings import Settings

LOGINS = {
    "CONTRIBFLOW_DB_MIGRATOR_USER": "m", "CONTRIBFLOW_DB_MIGRATOR_PASSWORD": "m-secret",
    "CONTRIBFLOW_DB_LOADER_USER": "l", "CONTRIBFLOW_DB_LOADER_PASSWORD": "l-secret",
    "CONTRIBFLOW_DB_TRANSFORMER_USER": "t", "CONTRIBFLOW_DB_TRANSFORMER_PASSWORD": "t-secret",
}


def test_a_stage_gets_its_own_login_acting_as_its_group_role_and_no_other_roles_secret():
    env = {"PGUSER": "admin", "PGPASSWORD": "admin-secret", "PGOPTIONS": "-c statement_timeout=0", **LOGINS}
    out = roles.stage_env("loader", env)
    assert (out["PGUSER"], out["PGPASSWORD"]) == ("l", "l-secret")
    assert out["PGOPTIONS"] == "-c statement_timeout=0 -c role=contribflow_loader"
    assert not [k for k in out if k.startswith("CONTRIBFLOW_DB_")]
    assert "admin-secret" not in out.values() and "m-secret" not in out.values()


def test_a_login_without_password_does_not_inherit_the_operators_password():
    out = roles.stage_env("transformer", {"PGUSER": "admin", "PGPASSWORD": "admin-secret",
                                            "CONTRIBFLOW_DB_TRANSFORMER_USER": "t"})
    assert out["PGUSER"] == "t" and "PGPASSWORD" not in out
    assert out["PGOPTIONS"] == "-c role=contribflow_transformer"


def test_without_per_role_logins_the_environment_is_kept_but_other_secrets_are_dropped():
    env = {"PGUSER": "admin", "PGPASSWORD": "admin-secret", "CONTRIBFLOW_DB_LOADER_PASSWORD": "x"}
    assert roles.stage_env("migrator", env) == {"PGUSER": "admin", "PGPASSWORD": "admin-secret"}
    with pytest.raises(ValueError, match="unknown database role 'root'"):
        roles.group_role("root")


def test_the_runner_gives_the_pseudonym_key_to_ingest_only(monkeypatch, tmp_path):
    seen: dict[str, dict[str, str]] = {}
    monkeypatch.setattr(subprocess, "call", lambda cmd, env: seen.setdefault(cmd[3], env) and 0)
    settings = Settings(state_dir=tmp_path)
    env = {"CONTRIBFLOW_PSEUDONYM_KEY": "k", "PGUSER": "admin", **LOGINS}
    for stage in STAGES:
        runner._run_stage(settings, stage, [], env, runner.cli_command)
    assert {name for name, e in seen.items() if "CONTRIBFLOW_PSEUDONYM_KEY" in e} == {"ingest"}
    assert {name: e["PGUSER"] for name, e in seen.items()} == {
        s.name: {"migrator": "m", "loader": "l", "transformer": "t"}[by_name()[s.name].db_role] for s in STAGES}


def test_a_reader_that_closes_stdout_stops_the_cli_quietly_with_sigpipes_status():
    """`contribflow audit | head` must not end in a traceback: the pipe's reader is gone before the
    command prints, as when head has read all it wants."""
    proc = subprocess.Popen([sys.executable, "-m", "contribflow", "images"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 141, stderr
    assert stderr == ""

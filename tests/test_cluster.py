"""``contribflow submit | backfill | wait`` against a stand-in Kubernetes API server on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from contribflow import cli

from cluster_standin import StandIn, StandInServer, write_kubeconfig
from conftest import ROOT

TEMPLATE_PATH = "/apis/argoproj.io/v1alpha1/namespaces/contribflow/workflowtemplates/contribflow-daily"
WORKFLOWS_PATH = "/apis/argoproj.io/v1alpha1/namespaces/contribflow/workflows"


@dataclass
class Api:
    state: StandIn
    url: str
    kubeconfig: Path

    def run(self, *argv: str, timeout: str = "20") -> int:
        """The CLI in-process against the stand-in, polling fast and never waiting long."""
        return cli.main([*argv, "--kubeconfig", str(self.kubeconfig), "--poll", "0.01", "--timeout", timeout])


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    state = StandIn()
    with StandInServer(state) as server:
        yield Api(state, server.url, write_kubeconfig(tmp_path / "kubeconfig", server.url))


def params_of(workflow: dict) -> dict[str, str]:
    return {p["name"]: p["value"] for p in workflow["_body"]["spec"]["arguments"]["parameters"]}


def test_submit_creates_a_workflow_from_the_template_with_the_run_date(standin, capsys):
    state, run = standin.state, standin.run
    assert run("submit", "--date", "2026-11-24", "--param", "rows=500", "--output", "json") == 0
    assert state.requests == [("GET", TEMPLATE_PATH), ("POST", WORKFLOWS_PATH)]
    [workflow] = state.created
    body = workflow["_body"]
    assert body["apiVersion"] == "argoproj.io/v1alpha1" and body["kind"] == "Workflow"
    assert body["spec"]["workflowTemplateRef"] == {"name": "contribflow-daily"}
    assert params_of(workflow) == {"run-date": "2026-11-24", "rows": "500"}
    assert body["metadata"]["generateName"] == "contribflow-daily-2026-11-24-"
    assert body["metadata"]["labels"]["workflows.argoproj.io/workflow-template"] == "contribflow-daily"
    printed = json.loads(capsys.readouterr().out)
    assert printed["name"] == workflow["metadata"]["name"] and printed["uid"] == workflow["metadata"]["uid"]


def test_submit_wait_follows_the_run_and_shows_each_steps_outputs(standin, capsys):
    run = standin.run
    assert run("submit", "--date", "2026-11-24", "--wait", "--output", "json") == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["phase"] == "Succeeded"
    assert "ingest: Succeeded  rows_loaded=990 rows_rejected=10" in err
    assert "dbt-test: Succeeded  tests_failed=0" in err
    assert [line.split(": ")[-1] for line in err.splitlines() if "(2026-11-24): " in line] == \
        ["Pending", "Running", "Succeeded"]


def test_a_failed_run_makes_submit_wait_and_wait_exit_1_with_argos_message(standin, capsys):
    state, run = standin.state, standin.run
    state.fail_dates = {"2026-11-24"}
    assert run("submit", "--date", "2026-11-24", "--wait") == 1
    name = state.created[0]["metadata"]["name"]
    assert f"{name} Failed" in capsys.readouterr().out
    assert run("wait", name) == 1
    assert capsys.readouterr().out.strip() == f"{name} Failed: child 'ingest' failed"


def test_a_parameter_the_template_does_not_declare_is_refused_before_anything_is_created(standin, capsys):
    state, run = standin.state, standin.run
    state.templates["contribflow-daily"] = {"arguments": {"parameters": [{"name": "run-date"}, {"name": "rows"}]}}
    assert run("submit", "--date", "2026-11-24", "--param", "colour=blue") == 1
    assert "has no parameter(s) colour; it declares run-date, rows" in capsys.readouterr().err
    assert state.created == []
    assert run("submit", "--date", "2026-11-24", "--param", "run-date=2020-01-01") == 1
    assert "give the date with --date" in capsys.readouterr().err


@pytest.mark.parametrize("parallel", [1, 2, 3])
def test_backfill_creates_one_workflow_per_date_with_at_most_n_in_flight(standin, capsys, parallel):
    state, run = standin.state, standin.run
    assert run("backfill", "--from", "2026-11-01", "--to", "2026-11-05", "--parallel", str(parallel)) == 0
    dates = [params_of(wf)["run-date"] for wf in state.created]
    assert dates == [f"2026-11-0{d}" for d in range(1, 6)]
    assert all(wf["_body"]["spec"]["workflowTemplateRef"]["name"] == "contribflow-daily" for wf in state.created)
    assert state.max_in_flight == parallel
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out] == [[d, "Succeeded"] for d in dates]


def test_backfill_runs_every_date_and_names_the_ones_that_failed(standin, capsys):
    state, run = standin.state, standin.run
    state.fail_dates = {"2026-11-02", "2026-11-04"}
    assert run("backfill", "--from", "2026-11-01", "--to", "2026-11-05", "--parallel", "2") == 1
    assert len(state.created) == 5
    assert "2 of 5 run(s) did not succeed: 2026-11-02, 2026-11-04" in capsys.readouterr().err


def test_backfill_with_the_dates_the_wrong_way_round_or_no_parallelism_is_refused(standin, capsys):
    state, run = standin.state, standin.run
    assert run("backfill", "--from", "2026-11-05", "--to", "2026-11-01") == 1
    assert "--from 2026-11-05 is after --to 2026-11-01" in capsys.readouterr().err
    # the same range, and the same cap, as `contribflow dates` (one date_range)
    assert run("backfill", "--from", "2024-01-01", "--to", "2026-01-01") == 1
    assert "at most 366 per backfill" in capsys.readouterr().err
    assert not state.created
    with pytest.raises(SystemExit) as refused:  # an argument out of range: argparse's usage error
        run("backfill", "--from", "2026-11-01", "--to", "2026-11-02", "--parallel", "0")
    assert refused.value.code == 2
    assert "argument --parallel: '0' is not a whole number from 1 to 50" in capsys.readouterr().err
    assert run("submit", "--date", "2026-11-24", "--param", "rows=-5") == 1
    assert "--param rows='-5': the value must be a whole number from 1 to 100000000" in capsys.readouterr().err
    assert run("submit", "--date", "2026-11-24", "--param", "defect-rate=nan") == 1
    assert "--param defect-rate='nan': the value must be a decimal from 0 to 1" in capsys.readouterr().err
    assert state.requests == []


def test_missing_crds_are_named_not_a_traceback(standin, capsys):
    state, run = standin.state, standin.run
    state.crds_installed = False
    assert run("submit", "--date", "2026-11-24") == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"contribflow submit: error: the Argo Workflows CRDs are not installed on {standin.url} "
        "(no argoproj.io/v1alpha1 workflows, workflowtemplates): install Argo Workflows first (`make kind-up` does)"]
    assert ("GET", "/apis") in state.requests
    assert not any(method == "POST" for method, _ in state.requests)


def test_a_template_that_is_not_installed_is_named_with_its_namespace(standin, capsys):
    state, run = standin.state, standin.run
    state.templates = {}
    assert run("backfill", "--from", "2026-11-01", "--to", "2026-11-02") == 1
    err = capsys.readouterr().err
    assert 'error: workflowtemplate/contribflow-daily is not installed in namespace "contribflow"' in err
    assert "helm upgrade --install contribflow helm/contribflow -n contribflow" in err
    assert ("GET", "/apis/argoproj.io/v1alpha1") in state.requests  # discovery told CRDs from template apart
    assert state.created == []


@pytest.mark.parametrize(("verb", "plural"), [("create", "workflows"), ("get", "workflowtemplates")])
def test_access_denied_names_the_verb_the_resource_and_the_user(standin, capsys, verb, plural):
    state, run = standin.state, standin.run
    state.forbid = {(verb, plural): "system:serviceaccount:ci:viewer"}
    assert run("submit", "--date", "2026-11-24") == 1
    err = capsys.readouterr().err
    assert (f'error: access denied: user "system:serviceaccount:ci:viewer" cannot {verb} {plural}.argoproj.io '
            f'in namespace "contribflow"') in err
    assert 'kubeconfig user "standin-user", context "standin"' in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_waiting_past_the_timeout_is_a_clear_error(standin, capsys):
    state, run = standin.state, standin.run
    assert run("submit", "--date", "2026-11-24") == 0
    name = state.created[0]["metadata"]["name"]
    assert run("wait", name, timeout="0") == 1
    assert f"error: timed out after 0s waiting for {name} (Pending)" in capsys.readouterr().err


def test_waiting_for_a_workflow_that_does_not_exist(standin, capsys):
    run = standin.run
    assert run("wait", "contribflow-daily-nope") == 1
    assert ('error: workflows.argoproj.io/contribflow-daily-nope not found in namespace "contribflow"'
            in capsys.readouterr().err)


def test_no_kubeconfig_and_no_server_are_one_line_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert cli.main(["submit", "--date", "2026-11-24", "--kubeconfig", str(tmp_path / "absent")]) == 1
    err = capsys.readouterr().err
    assert f"error: no usable kubeconfig at {tmp_path / 'absent'}" in err and "make kind-up" in err
    with StandInServer(StandIn()) as server:
        url = server.url
    kubeconfig = write_kubeconfig(tmp_path / "kc", url)  # the server is gone: nothing listens there now
    assert cli.main(["submit", "--date", "2026-11-24", "--kubeconfig", str(kubeconfig)]) == 1
    err = capsys.readouterr().err
    assert f"error: cannot reach the Kubernetes API server at {url}" in err and "Traceback" not in err


def test_kubeconfig_from_the_environment_and_the_client_imported_only_when_needed(tmp_path):
    """A fresh process: KUBECONFIG is honoured, and the pipeline's CLI alone does not import kubernetes."""
    env = dict(os.environ)
    env.pop("KUBERNETES_SERVICE_HOST", None)
    probe = subprocess.run([sys.executable, "-c", "import sys, contribflow.cli; print('kubernetes' in sys.modules)"],
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert probe.stdout.strip() == "False", probe.stderr
    state = StandIn()
    with StandInServer(state) as server:
        env["KUBECONFIG"] = str(write_kubeconfig(tmp_path / "kc", server.url))
        done = subprocess.run([sys.executable, "-m", "contribflow", "submit", "--date", "2026-11-24", "-o", "name"],
                              capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == state.created[0]["metadata"]["name"]


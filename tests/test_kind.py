"""The cluster targets (make kind-up, kind-down, submit, backfill, ui, psql, e2e) run against stand-in
docker/kind/kubectl/helm/argo executables first on PATH. Each records its arguments and answers the
way the real tool does (versions, `kind get clusters`, `kubectl exec` output), so the order of the
calls, the cluster name, the pinned Argo version, the images, the chart values and the argo
parameters are asserted. backfill and e2e reach a stand-in Kubernetes API server on loopback."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from cluster_standin import StandIn, StandInServer, write_kubeconfig
from conftest import ROOT

TOOLS = ("docker", "kind", "kubectl", "helm", "argo")
VERSIONS = {"docker": "27.3.1", "kind": "0.29.0", "kubectl": "1.33.1", "helm": "3.17.3", "argo": "4.1.2"}
MINIMUMS = {"docker": "20.10.0", "kind": "0.29.0", "kubectl": "1.32.0", "helm": "3.14.0", "argo": "4.1.0"}
HINTS = {"docker": "https://docs.docker.com/engine/install/", "kind": "go install sigs.k8s.io/kind@v0.29.0",
         "kubectl": "https://kubernetes.io/docs/tasks/tools/", "helm": "https://helm.sh/docs/intro/install/",
         "argo": "https://github.com/argoproj/argo-workflows/releases/tag/v4.1.2"}
ARGO_MANIFEST = "https://github.com/argoproj/argo-workflows/releases/download/v4.1.2/install.yaml"

FAKE = '''#!{python}
"""Stand-in {tool}: logs its argv (and stdin for kubectl exec -i) as one JSON line, answers like the tool."""
import json, os, sys
tool, argv = {tool!r}, sys.argv[1:]
env = os.environ
version = env.get("FAKE_{upper}_VERSION", {version!r})
stdin = sys.stdin.read() if tool == "kubectl" and argv[:1] == ["exec"] and "-i" in argv else None
with open(env["FAKE_LOG"], "a") as log:
    log.write(json.dumps({{"tool": tool, "argv": argv, "stdin": stdin}}) + "\\n")
if tool == "docker" and argv == ["--version"]:
    print(f"Docker version {{version}}, build ce12230")
elif tool == "docker" and argv[:1] == ["info"]:
    sys.exit(int(env.get("FAKE_DOCKER_INFO_RC", "0")))
elif tool == "kind" and argv == ["version"]:
    print(f"kind v{{version}} go1.24.2 linux/amd64")
elif tool == "kind" and argv[:2] == ["get", "clusters"]:
    print(env.get("FAKE_KIND_CLUSTERS", ""), end="")
elif tool == "kubectl" and argv[:2] == ["version", "--client"]:
    print(f"Client Version: v{{version}}\\nKustomize Version: v5.6.0")
elif tool == "kubectl" and "get" in argv and "namespace" in argv:
    print('Error from server (NotFound): namespaces "argo" not found', file=sys.stderr)
    sys.exit(1)
elif tool == "kubectl" and argv[:1] == ["exec"]:
    print(env.get("FAKE_PSQL_OUTPUT", ""), end="")
elif tool == "helm" and argv == ["version", "--short"]:
    print(f"v{{version}}+ge4da497")
elif tool == "argo" and argv == ["version", "--short"]:
    print(f"argo: v{{version}}")
'''

VERSION_QUERIES = ({"tool": "docker", "argv": ["--version"]}, {"tool": "docker", "argv": ["info"]},
                   {"tool": "kind", "argv": ["version"]}, {"tool": "kubectl", "argv": ["version", "--client"]},
                   {"tool": "helm", "argv": ["version", "--short"]}, {"tool": "argo", "argv": ["version", "--short"]})
"""What the prerequisite checks may run: each tool's version, and whether docker's engine answers."""


def only_checks(calls: list[dict]) -> bool:
    return all({"tool": c["tool"], "argv": c["argv"]} in VERSION_QUERIES for c in calls)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> dict[str, Path]:
    """fakes/: the five stand-ins. system/: every other executable of PATH, so that a tool left out of
    fakes/ is really missing (the machine may have a real docker or kubectl). venv/: links to the
    project's venv with a fresh .installed marker, so `install` is up to date and never runs pip."""
    base = tmp_path_factory.mktemp("kind")
    fakes, system, venv = base / "fakes", base / "system", base / "venv"
    for d in (fakes, system, venv / "bin"):
        d.mkdir(parents=True)
    for tool in TOOLS:
        script = fakes / tool
        script.write_text(FAKE.format(python=sys.executable, tool=tool, upper=tool.upper(), version=VERSIONS[tool]))
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            target = system / entry.name
            if entry.name not in TOOLS and not target.exists() and os.access(entry.path, os.X_OK):
                target.symlink_to(entry.path)
    for name in ("python", "contribflow"):
        (venv / "bin" / name).symlink_to(ROOT / ".venv" / "bin" / name)
    (venv / ".installed").touch()
    return {"fakes": fakes, "system": system, "venv": venv}


@dataclass
class Make:
    returncode: int
    stdout: str
    stderr: str
    calls: list[dict]

    def of(self, tool: str) -> list[list[str]]:
        return [c["argv"] for c in self.calls if c["tool"] == tool]

    def index(self, tool: str, *prefix: str) -> int:
        return next(i for i, c in enumerate(self.calls) if c["tool"] == tool and c["argv"][:len(prefix)] == list(prefix))


@pytest.fixture
def make(sandbox, tmp_path):
    def run(*args: str, without: str | None = None, env: dict[str, str] | None = None) -> Make:
        fakes = sandbox["fakes"]
        if without:
            fakes = tmp_path / "fakes-without"
            fakes.mkdir(exist_ok=True)
            for tool in TOOLS:
                if tool != without and not (fakes / tool).exists():
                    (fakes / tool).symlink_to(sandbox["fakes"] / tool)
        log = tmp_path / "calls.jsonl"
        log.unlink(missing_ok=True)
        full_env = {"PATH": f"{fakes}{os.pathsep}{sandbox['system']}", "HOME": str(tmp_path), "FAKE_LOG": str(log),
                    "KUBECONFIG": str(tmp_path / "no-kubeconfig"), "LANG": "C.UTF-8", **(env or {})}
        done = subprocess.run(["make", "--no-print-directory", f"VENV={sandbox['venv']}", *args], cwd=ROOT,
                              env=full_env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
        calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return Make(done.returncode, done.stdout, done.stderr, calls)

    return run


def image_refs() -> list[str]:
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "contribflow"), "images", "--format", "json"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [image["image"] for image in json.loads(out).values()]


def test_kind_up_creates_the_cluster_installs_argo_loads_the_images_and_the_chart_in_order(make):
    result = make("kind-up")
    assert result.returncode == 0, result.stderr
    kubectl_ctx = ["--context", "kind-contribflow"]
    assert ["create", "cluster", "--config", "kind-config.yaml", "--name", "contribflow", "--wait", "120s"] \
        in result.of("kind")
    assert [*kubectl_ctx, "apply", "--server-side", "--force-conflicts", "-n", "argo", "-f", ARGO_MANIFEST] \
        in result.of("kubectl")
    patch = next(a for a in result.of("kubectl") if "deployment" in a and "patch" in a)
    assert '"value":["server","--auth-mode=server"]' in patch[-1]
    assert any("NodePort" in a[-1] and '"value":32746' in a[-1] for a in result.of("kubectl") if "service" in a)
    refs = image_refs()
    assert refs and all(ref.startswith("ghcr.io/contribflow/contribflow-") for ref in refs)
    built = [a[a.index("-t") + 1] for a in result.of("docker") if a[:1] == ["build"]]
    loaded = [a for a in result.of("kind") if a[:2] == ["load", "docker-image"]]
    assert sorted(built) == sorted(refs)
    assert sorted(a[2] for a in loaded) == sorted(refs)
    assert all(a[3:] == ["--name", "contribflow"] for a in loaded)
    assert ["--kube-context", "kind-contribflow", "upgrade", "--install", "contribflow", "helm/contribflow",
            "-n", "contribflow", "--create-namespace", "-f", "helm/contribflow/ci/kind-values.yaml",
            "--set", "events.enabled=false"] in result.of("helm")  # no Argo Events without EVENTS=1
    rollouts = [a[a.index("status") + 1] for a in result.of("kubectl") if "rollout" in a]
    assert rollouts == ["deployment/workflow-controller", "deployment/argo-server", "statefulset/contribflow-postgresql"]
    order = [result.index("kind", "create", "cluster"),
             result.index("kubectl", *kubectl_ctx, "apply"),
             result.index("kubectl", *kubectl_ctx, "wait"),
             result.index("docker", "build"),
             result.index("kind", "load"),
             result.index("helm", "--kube-context", "kind-contribflow", "upgrade"),
             result.index("kubectl", *kubectl_ctx, "-n", "contribflow", "rollout")]
    assert order == sorted(order)
    assert result.calls[:6] == [{**q, "stdin": None} for q in VERSION_QUERIES]
    assert "Argo UI  https://localhost:2746" in result.stdout and "make submit DATE=" in result.stdout
    assert "--auth-mode=server, LOCAL USE ONLY" in result.stdout
    assert "    $ kind create cluster --config kind-config.yaml --name contribflow" in result.stderr


def test_kind_up_reuses_an_existing_cluster_and_honours_its_name(make):
    result = make("kind-up", "KIND_CLUSTER=laptop", env={"FAKE_KIND_CLUSTERS": "other\nlaptop\n"})
    assert result.returncode == 0, result.stderr
    assert not any(a[:2] == ["create", "cluster"] for a in result.of("kind"))
    assert "kind cluster laptop already exists: reusing it" in result.stdout
    assert all(a[3:] == ["--name", "laptop"] for a in result.of("kind") if a[:1] == ["load"])
    assert any(a[:2] == ["--kube-context", "kind-laptop"] for a in result.of("helm"))


@pytest.mark.parametrize("tool", TOOLS)
def test_kind_up_without_a_tool_stops_before_doing_anything_and_says_what_to_install(make, tool):
    result = make("kind-up", without=tool)
    assert result.returncode != 0
    assert f"{tool} is not installed: make kind-up needs {tool} >= {MINIMUMS[tool]}" in result.stderr
    assert HINTS[tool] in result.stderr
    assert "nothing was done" in result.stderr
    assert only_checks(result.calls), result.calls


def test_a_tool_older_than_its_minimum_or_a_stopped_docker_engine_stops_kind_up(make):
    result = make("kind-up", env={"FAKE_KIND_VERSION": "0.20.0", "FAKE_HELM_VERSION": "3.9.4"})
    assert result.returncode != 0
    assert "kind 0.20.0 is too old: make kind-up needs kind >= 0.29.0" in result.stderr
    assert "helm 3.9.4 is too old: make kind-up needs helm >= 3.14.0" in result.stderr
    assert only_checks(result.calls), result.calls
    stopped = make("kind-up", env={"FAKE_DOCKER_INFO_RC": "1"})
    assert stopped.returncode != 0
    assert "docker 27.3.1 is installed but its engine is not running" in stopped.stderr
    assert only_checks(stopped.calls) and ["info"] in stopped.of("docker")


def test_kind_down_deletes_the_named_cluster(make):
    assert make("kind-down").of("kind")[-1] == ["delete", "cluster", "--name", "contribflow"]
    assert make("kind-down", "KIND_CLUSTER=laptop").of("kind")[-1] == ["delete", "cluster", "--name", "laptop"]


def test_submit_runs_argo_submit_from_the_template_with_the_date_and_params(make):
    result = make("submit", "DATE=2026-11-24", "PARAMS=rows=500 defect-rate=0.02")
    assert result.returncode == 0, result.stderr
    assert result.of("argo")[-1] == ["submit", "--from", "workflowtemplate/contribflow-daily", "-n", "contribflow",
                                     "-p", "run-date=2026-11-24", "-p", "rows=500", "-p", "defect-rate=0.02",
                                     "--watch"]
    other = make("submit", "DATE=2026-11-25", "NAMESPACE=etl", "KUBE_CONTEXT=eks-prod")
    assert other.of("argo")[-1][:6] == ["submit", "--context", "eks-prod", "--from",
                                        "workflowtemplate/contribflow-daily", "-n"]
    missing = make("submit", "DATE=2026-11-24", without="argo")
    assert missing.returncode != 0 and "argo is not installed: make submit needs argo >= 4.1.0" in missing.stderr
    assert missing.of("argo") == []


def test_apply_request_submits_the_apply_template_with_the_request_id(make):
    result = make("apply-request", "ID=42")
    assert result.returncode == 0, result.stderr
    assert result.of("argo")[-1] == ["submit", "--from", "workflowtemplate/contribflow-apply-request", "-n",
                                     "contribflow", "-p", "request-id=42", "--watch"]
    for bad in ("ID=", "ID=4x2", "ID=-1"):
        refused = make("apply-request", bad)
        assert refused.returncode != 0 and "make apply-request needs ID=N" in refused.stderr, bad
        assert refused.of("argo") == []


def test_ui_port_forwards_the_argo_server(make):
    result = make("ui")
    assert result.returncode == 0, result.stderr
    assert result.of("kubectl")[-1] == ["-n", "argo", "port-forward", "svc/argo-server", "2747:2746"]
    assert "https://localhost:2747" in result.stdout


def test_cluster_psql_execs_psql_in_the_postgresql_pod_without_a_password_on_the_command_line(make):
    result = make("cluster-psql")
    assert result.returncode == 0, result.stderr
    argv = result.of("kubectl")[-1]
    assert argv[:7] == ["exec", "-i", "-n", "contribflow", "statefulset/contribflow-postgresql", "-c", "postgresql"]
    assert argv[7:9] == ["--", "sh"] and 'exec psql -U "$POSTGRES_USER" -d "$POSTGRES_DB"' in argv[10]
    assert '$(cat "$POSTGRES_PASSWORD_FILE")' in argv[10]


@pytest.fixture
def api(tmp_path):
    state = StandIn()
    with StandInServer(state) as server:
        yield state, str(write_kubeconfig(tmp_path / "kubeconfig", server.url))


def test_backfill_submits_one_workflow_per_date_through_the_kubernetes_api(make, api):
    state, kubeconfig = api
    result = make("backfill", "FROM=2026-11-01", "TO=2026-11-04", "PARALLEL=2",
                  env={"KUBECONFIG": kubeconfig, "CLUSTER_POLL_S": "0.02"})
    assert result.returncode == 0, result.stderr
    dates = [next(p["value"] for p in wf["spec"]["arguments"]["parameters"] if p["name"] == "run-date")
             for wf in state.created]
    assert dates == ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]
    assert state.max_in_flight == 2
    assert "backfill 2026-11-01..2026-11-04: one Workflow per date" in result.stdout
    nothing = make("backfill", "FROM=2026-11-01", env={"KUBECONFIG": kubeconfig})
    assert nothing.returncode != 0 and "make backfill needs FROM=YYYY-MM-DD and TO=YYYY-MM-DD" in nothing.stderr


def test_e2e_runs_the_sql_assertions_for_the_run_it_submitted(make, api):
    state, kubeconfig = api
    env = {"KUBECONFIG": kubeconfig, "CLUSTER_POLL_S": "0.02"}
    result = make("e2e", "DATE=2026-11-24", env=env)
    assert result.returncode == 0, result.stderr
    [workflow] = state.created
    uid = workflow["metadata"]["uid"]
    [execed] = [c for c in result.calls if c["tool"] == "kubectl" and c["argv"][:1] == ["exec"]]
    assert execed["argv"][-10:] == ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-v", f"run_id={uid}",
                                    "-f", "-"]
    assert execed["stdin"] == (ROOT / "scripts" / "e2e_check.sql").read_text()
    assert f"e2e passed: run {uid} for 2026-11-24" in result.stdout

    failing = make("e2e", "DATE=2026-11-25", env={**env, "FAKE_PSQL_OUTPUT": "step ingest ended FAILED: too many\n"
                                                                             "marts.dim_taxpayer is empty\n"})
    assert failing.returncode != 0
    assert "  - step ingest ended FAILED: too many\n  - marts.dim_taxpayer is empty" in failing.stderr

    state.fail_dates = {"2026-11-26"}
    failed_run = make("e2e", "DATE=2026-11-26", env=env)
    assert failed_run.returncode != 0 and "the workflow did not succeed" in failed_run.stderr


def script_minimums() -> dict[str, str]:
    text = (ROOT / "scripts" / "cluster.sh").read_text()
    return dict(re.findall(r"^(docker|kind|kubectl|helm|argo)\|([0-9.]+)\|", text, flags=re.M))


def as_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.lstrip("v").split("."))


def test_the_script_checks_the_minimums_these_tests_assume():
    assert script_minimums() == MINIMUMS


def test_kind_config_pins_the_node_image_and_maps_the_argo_ui_to_loopback_only():
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["name"] == "contribflow"
    [node] = config["nodes"]
    assert re.fullmatch(r"kindest/node:v1\.33\.\d+@sha256:[0-9a-f]{64}", node["image"])
    [mapping] = node["extraPortMappings"]
    nodeport = re.search(r"^ARGO_UI_NODEPORT=(\d+)", (ROOT / "scripts" / "cluster.sh").read_text(), re.M).group(1)
    assert mapping == {"containerPort": int(nodeport), "hostPort": 2746, "listenAddress": "127.0.0.1", "protocol": "TCP"}


def test_github_ci_runs_make_test_and_the_kind_e2e_with_the_pinned_tools():
    ci = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yaml").read_text())
    runs = {job: [step.get("run", "") for step in spec["steps"]] for job, spec in ci["jobs"].items()}
    assert any(run.split()[-2:] == ["make", "test"] for run in runs["test"])
    reference = runs["test"].index("make reference-data")  # the pinned schemas, before the tests need them
    assert reference < next(i for i, run in enumerate(runs["test"]) if run.split()[-2:] == ["make", "test"])
    e2e = runs["kind-e2e"]
    assert any(".github/scripts/install-cluster-tools.sh" in run for run in e2e)
    for job, spec in ci["jobs"].items():
        for step in spec["steps"]:
            if "uses" in step:  # pinned by commit, never by a movable tag
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), (job, step["uses"])
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, job
    kind_up = next(i for i, run in enumerate(e2e) if run.startswith("make kind-up"))
    assert e2e.index("make e2e") > kind_up
    assert ci["jobs"]["kind-e2e"]["steps"][-1] == {"name": "make kind-down", "if": "always()", "run": "make kind-down"}
    pinned = ci["env"]
    makefile_argo = re.search(r"^ARGO_VERSION \?= (\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert pinned["ARGO_VERSION"] == makefile_argo == "v4.1.2"
    minimums = script_minimums()
    for tool in ("kind", "kubectl", "helm", "argo"):
        assert as_tuple(pinned[f"{tool.upper()}_VERSION"]) >= as_tuple(minimums[tool]), tool
    assert as_tuple(pinned["HELM_VERSION"])[0] == 3


def test_the_readme_quickstart_lists_exactly_the_cluster_targets():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Cluster quickstart (kind)"):]
    block = section[section.index("```bash"):section.index("```", section.index("```bash") + 3)]
    listed = re.findall(r"^make ([a-z0-9-]+)", block, flags=re.M)
    assert listed == ["kind-up", "submit", "backfill", "e2e", "ui", "cluster-psql", "kind-down"]
    makefile = (ROOT / "Makefile").read_text()
    cluster = makefile[makefile.index("# --- cluster ---"):]
    assert set(re.findall(r"^([a-z0-9-]+): .*## ", cluster, flags=re.M)) >= set(listed)


# --- EVENTS=1: Argo Events and the arrival trigger ----------------------------------------------------

def test_kind_up_without_events_installs_the_chart_with_the_arrival_trigger_off(make):
    result = make("kind-up")
    assert result.returncode == 0, result.stderr
    [upgrade] = [a for a in result.of("helm") if "upgrade" in a]
    assert upgrade[-2:] == ["--set", "events.enabled=false"]
    assert not [a for a in result.of("kubectl") if any("argo-events" in x for x in a)]
    assert "make kind-up EVENTS=1 installs it" in result.stdout


def test_kind_up_with_events_installs_argo_events_then_the_chart_with_its_trigger_and_the_eventbus(make):
    from argo_schema import events_schema

    result = make("kind-up", "EVENTS=1")
    assert result.returncode == 0, result.stderr
    ctx = ["--context", "kind-contribflow"]
    manifest = "https://github.com/argoproj/argo-events/releases/download/v1.9.11/install.yaml"
    assert [*ctx, "create", "namespace", "argo-events"] in result.of("kubectl")
    assert [*ctx, "apply", "--server-side", "--force-conflicts", "-n", "argo-events", "-f", manifest] \
        in result.of("kubectl")
    waits = [a for a in result.of("kubectl") if "wait" in a]
    assert any("crd/sensors.argoproj.io" in a and "crd/eventsources.argoproj.io" in a for a in waits)
    [upgrade] = [a for a in result.of("helm") if "upgrade" in a]
    assert upgrade[-2:] == ["-f", "helm/contribflow/ci/kind-values.yaml"]  # the kind values' events.enabled stays
    eventbus = [*ctx, "apply", "-n", "contribflow", "-f", "deploy/argo-events/eventbus.yaml"]
    assert eventbus in result.of("kubectl")
    order = [result.index("kubectl", *ctx, "apply", "--server-side", "--force-conflicts", "-n", "argo"),
             result.index("kubectl", *ctx, "apply", "--server-side", "--force-conflicts", "-n", "argo-events"),
             result.index("helm", "--kube-context", "kind-contribflow", "upgrade"),
             result.index("kubectl", *eventbus)]
    assert order == sorted(order)
    bus = yaml.safe_load((ROOT / "deploy" / "argo-events" / "eventbus.yaml").read_text())
    assert events_schema().errors(bus) == []
    kind_values = yaml.safe_load((ROOT / "helm" / "contribflow" / "ci" / "kind-values.yaml").read_text())
    assert kind_values["events"]["enabled"] is True and kind_values["events"]["source"] == "file"
    assert bus["metadata"]["name"] == "default"  # the chart's events.eventBusName

"""The Docker executor's mapping of container specs to `docker run` flags (tests/docker_executor.py),
without an engine: every key of the rendered templates and of the chart's PostgreSQL StatefulSet is
mapped, and a key nothing maps is refused. `make e2e-docker` runs the same specs in real containers
and checks in each one what the kernel enforces."""

from __future__ import annotations

import copy
import os
import stat
from pathlib import Path

import pytest
import yaml

from argo_replay import ReplayError
from chart_render import docs, one, template_text
from conftest import ROOT
from docker_executor import DockerExecutor, cpu_quantity, memory_bytes, secret_files

DAILY = yaml.safe_load((ROOT / "workflows" / "rendered" / "workflowtemplate-contribflow-daily.yaml").read_text())
KIND_VALUES = ROOT / "helm" / "contribflow" / "ci" / "kind-values.yaml"
EXECUTOR = DockerExecutor("docker", "net")


def task_volumes(container: dict, tmp_path: Path) -> dict:
    volumes = {v["name"]: v for v in DAILY["spec"]["volumes"]}
    return {m["mountPath"]: (volumes[m["name"]], tmp_path / m["name"]) for m in container.get("volumeMounts", [])}


def containers():
    return [t for t in DAILY["spec"]["templates"] if "container" in t]


@pytest.mark.parametrize("template", containers(), ids=lambda t: t["name"])
def test_every_task_container_maps_to_the_sandbox_its_manifest_asks_for(template, tmp_path: Path):
    container = template["container"]
    pod = {"securityContext": DAILY["spec"]["securityContext"]}
    flags = EXECUTOR.flags(template["name"], container, pod, task_volumes(container, tmp_path))
    sc = container["securityContext"]
    assert f"--user={sc['runAsUser']}:{sc['runAsGroup']}" in flags
    assert f"--group-add={pod['securityContext']['fsGroup']}" in flags
    assert {"--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges", "--pull=missing"} <= set(flags)
    limits = container["resources"]["limits"]
    assert f"--cpus={cpu_quantity(limits['cpu']):g}" in flags
    assert f"--memory={memory_bytes(limits['memory'])}" in flags
    for mount in container["volumeMounts"]:
        host = tmp_path / mount["name"]
        assert f"--mount=type=bind,source={host},target={mount['mountPath']}" in flags
        assert host.stat().st_gid == pod["securityContext"]["fsGroup"], "group-owned as fsGroup leaves it"
        assert stat.S_IMODE(host.stat().st_mode) == 0o2770


def test_quantities():
    assert cpu_quantity("500m") == 0.5 and cpu_quantity("2") == 2.0 and cpu_quantity(1) == 1.0
    assert memory_bytes("256Mi") == 256 * 2**20 and memory_bytes("2Gi") == 2 * 2**30 and memory_bytes("1G") == 10**9


def test_a_volume_field_nothing_maps_is_refused(tmp_path: Path):
    container = containers()[0]["container"]
    volumes = task_volumes(container, tmp_path)
    volume, host = volumes["/tmp"]
    volumes["/tmp"] = ({"name": "tmp", "emptyDir": {"medium": "Memory"}}, host)
    with pytest.raises(ReplayError, match=r"volume tmp keys \['medium'\]"):
        EXECUTOR.flags("t", container, {"securityContext": DAILY["spec"]["securityContext"]}, volumes)
    volumes["/tmp"] = ({"name": "tmp", "hostPath": {"path": "/"}}, host)
    with pytest.raises(ReplayError, match="hostPath"):
        EXECUTOR.flags("t", container, {"securityContext": DAILY["spec"]["securityContext"]}, volumes)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(lifecycle={"preStop": {}}), r"container keys \['lifecycle'\]"),
    (lambda c: c["securityContext"].update(procMount="Unmasked"), r"securityContext keys \['procMount'\]"),
    (lambda c: c["securityContext"].update(privileged=True), "privileged"),
    (lambda c: c["securityContext"].update(runAsUser=0), "runAsNonRoot with runAsUser 0"),
    (lambda c: c["resources"]["limits"].update({"ephemeral-storage": "1Gi"}), "resource limits"),
    (lambda c: c["volumeMounts"][0].update(subPath="x"), r"volumeMount tmp keys \['subPath'\]"),
    (lambda c: c["securityContext"].update(seccompProfile={"type": "Localhost", "localhostProfile": "p"}),
     "seccompProfile"),
    (lambda c: c.update(imagePullPolicy="Sometimes"), "imagePullPolicy"),
])
def test_a_key_nothing_maps_is_refused(change, message, tmp_path: Path):
    container = copy.deepcopy(containers()[0]["container"])
    change(container)
    with pytest.raises(ReplayError, match=message):
        EXECUTOR.flags("t", container, {"securityContext": DAILY["spec"]["securityContext"]},
                       task_volumes(container, tmp_path))


def test_the_chart_s_postgresql_container_maps_with_its_volumes(tmp_path: Path):
    objects = docs(template_text("--values", str(KIND_VALUES)))
    sts = one(objects, "StatefulSet", "contribflow-postgresql")
    pod = sts["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    volumes["data"] = {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}
    container = pod["containers"][0]
    mounts = {m["mountPath"]: (volumes[m["name"]], tmp_path / m["name"]) for m in container["volumeMounts"]}
    flags = EXECUTOR.flags("postgresql", container, {"securityContext": pod["securityContext"]}, mounts,
                           secret_files(objects))
    uid = pod["securityContext"]["runAsUser"]
    assert f"--user={uid}:{uid}" in flags and "--read-only" in flags and "--cap-drop=ALL" in flags
    assert "--expose=5432/tcp" in flags and any(f.startswith("--health-cmd=exec pg_isready") for f in flags)
    init = tmp_path / "initdb" / "10-contribflow-roles.sh"
    assert stat.S_IMODE(init.stat().st_mode) == 0o555, "the ConfigMap's defaultMode"
    password = tmp_path / "credentials" / "postgres-password"
    assert stat.S_IMODE(password.stat().st_mode) == 0o440 and password.stat().st_gid == uid
    assert len(password.read_text()) == 32, "the chart's generated password"
    assert ",readonly" in next(f for f in flags if f.endswith("target=/run/secrets/contribflow-db,readonly"))


def test_the_people_s_passwords_reach_the_postgresql_container_as_their_projected_files(tmp_path: Path):
    """Values `people` (issue 28): each person's password, from the Secret they name, is a file the
    init script reads, with the projected volume's mode; a Secret or key that does not exist is refused."""
    people = tmp_path / "people.yaml"
    people.write_text(yaml.safe_dump({"people": [
        {"name": "olga", "role": "operator", "existingSecret": "person-olga", "passwordKey": "password"},
        {"name": "arne", "role": "approver", "existingSecret": "person-arne", "passwordKey": "pw"}]}))
    objects = docs(template_text("--values", str(KIND_VALUES), "--values", str(people)))
    pod = one(objects, "StatefulSet", "contribflow-postgresql")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    volumes["data"] = {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}
    container = pod["containers"][0]
    mounts = {m["mountPath"]: (volumes[m["name"]], tmp_path / m["name"]) for m in container["volumeMounts"]}
    files = {**secret_files(objects), "person-olga": {"password": b"olga-pw", "other": b"x"},
             "person-arne": {"pw": b"arne-pw"}}
    flags = EXECUTOR.flags("postgresql", container, {"securityContext": pod["securityContext"]}, mounts, files)
    assert any(f.endswith("target=/run/secrets/contribflow-people,readonly") for f in flags)
    folder = tmp_path / "people"
    assert sorted(p.name for p in folder.iterdir()) == ["arne", "olga"], "only the items named"
    assert (folder / "olga").read_bytes() == b"olga-pw" and (folder / "arne").read_bytes() == b"arne-pw"
    uid = pod["securityContext"]["runAsUser"]
    assert stat.S_IMODE((folder / "olga").stat().st_mode) == 0o440 and (folder / "olga").stat().st_gid == uid
    with pytest.raises(ReplayError, match="secret 'person-arne' does not exist"):
        EXECUTOR.flags("postgresql", container, {"securityContext": pod["securityContext"]}, mounts,
                       {k: v for k, v in files.items() if k != "person-arne"})
    with pytest.raises(ReplayError, match="secret 'person-arne' has no key 'pw'"):
        EXECUTOR.flags("postgresql", container, {"securityContext": pod["securityContext"]}, mounts,
                       {**files, "person-arne": {"password": b"x"}})


def test_env_values_reach_docker_by_name_only():
    flags, env = EXECUTOR._docker_env({"PGPASSWORD": "s3cret"})
    assert flags == ["--env=PGPASSWORD"] and env["PGPASSWORD"] == "s3cret"
    assert "s3cret" not in " ".join(flags), "no secret on a command line"
    assert os.environ.get("PATH") == env.get("PATH")


FAKE_DOCKER = """#!/bin/sh
echo "$*" >> "$0.calls"
case "$1" in
  run) echo "the step's output"; sleep 0.3; exit 3 ;;
  inspect) echo "2026-11-27T10:00:00.100000000Z 2026-11-27T10:00:00.350123456Z" ;;
  rm) sleep 0.1 ;;
esac
"""


def test_an_attempt_s_wall_time_splits_into_the_engine_s_and_the_container_s(tmp_path: Path):
    """docker run without --rm, the engine's StartedAt/FinishedAt read, then docker rm: the wall
    time covers the run and the removal, and the container's own lifetime is within it."""
    from argo_replay import Pod

    docker = tmp_path / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    executor = DockerExecutor(str(docker), "net")
    container = {"name": "main", "image": "img:1", "command": ["contribflow"],
                 "securityContext": {"runAsUser": 10001, "runAsGroup": 10001}}
    attempt = executor.run(Pod("wf-step-1", container, ["contribflow", "pick"], {}, {}, {}), 30)
    calls = (tmp_path / "docker.calls").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["run", "inspect", "rm"]
    assert "--rm" not in calls[0].split() and calls[2].split()[-1] == "wf-step-1-0"
    assert attempt.exit_code == 3 and attempt.stdout == "the step's output\n"
    assert attempt.container_s == pytest.approx(0.250123, abs=1e-6)
    assert attempt.wall_s >= 0.4, "the run (0.3 s) and the removal (0.1 s)"
    assert executor.runs == [("wf-step-1", "img:1", attempt)]


def test_engine_time():
    from docker_executor import engine_time

    assert engine_time("2026-11-27T10:00:00.123456789Z").isoformat() == "2026-11-27T10:00:00.123456+00:00"
    assert engine_time("2026-11-27T10:00:00Z").isoformat() == "2026-11-27T10:00:00+00:00"
    assert engine_time("0001-01-01T00:00:00Z") is None, "the engine's never"
    assert engine_time("yesterday") is None

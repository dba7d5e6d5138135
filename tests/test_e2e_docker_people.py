"""Run 3 of `make e2e-docker` (tests/e2e_docker.py), without an engine: the two people it renders
the chart with, and the container each of them runs `contribflow` in."""

from __future__ import annotations

from pathlib import Path

import yaml

from contribflow.cluster import k8s

from argo_replay import Attempt, Pod
from chart_render import helm
from docker_executor import DockerExecutor, secret_files
from e2e_docker import DAILY, PEOPLE, Person, one, people_values, render_chart


def test_the_people_come_from_values_and_their_own_secrets_never_from_the_rendered_chart(tmp_path: Path):
    values, secrets = people_values(tmp_path)
    passwords = [s["stringData"]["password"] for s in secrets]
    assert len(set(passwords)) == 2 and all(len(p) >= 32 for p in passwords)
    rendered = render_chart(helm(), values)
    text = values.read_text() + yaml.safe_dump_all(rendered)
    assert not any(p in text for p in passwords), "a person's password in values or in the chart"
    init = secret_files(rendered)["contribflow-postgresql-initdb"]["10-contribflow-roles.sh"].decode()
    for role, name in PEOPLE.items():
        assert f'echo "contribflow: person {name} ({role}) is ready"' in init
    volume = next(v for v in one(rendered, "StatefulSet")["spec"]["template"]["spec"]["volumes"] if v["name"] == "people")
    assert [s["secret"]["name"] for s in volume["projected"]["sources"]] == [s["metadata"]["name"] for s in secrets]


class Recording(DockerExecutor):
    def __init__(self) -> None:
        super().__init__("docker", "net")
        self.pods: list[Pod] = []

    def run(self, pod: Pod, timeout_s: int) -> Attempt:
        self.flags(pod.name, pod.container, pod.pod_spec, pod.volumes)  # every key mapped, volumes prepared
        self.pods.append(pod)
        self.runs.append((pod.name, pod.container["image"], Attempt(0, "7\n", "", 1.0, 0.5)))
        return self.runs[-1][2]


def test_a_person_runs_contribflow_in_the_migrations_image_as_their_own_login(tmp_path: Path):
    values, secrets = people_values(tmp_path)
    settings = one(render_chart(helm(), values), "ConfigMap", k8s.CONFIGMAP)["data"]
    executor = Recording()
    daily = yaml.safe_load(DAILY.read_text(encoding="utf-8"))
    person = Person(executor, daily, settings, tmp_path / "people", "olga", "pw-olga")
    assert person.run("approve", "7").stdout == "7\n"
    pod = executor.pods[0]
    assert pod.argv == ["contribflow", "approve", "7"]
    assert "/contribflow-migrations:" in pod.container["image"]
    assert pod.container["securityContext"]["readOnlyRootFilesystem"] is True
    assert (pod.env["PGUSER"], pod.env["PGPASSWORD"]) == ("olga", "pw-olga")
    assert "PGOPTIONS" not in pod.env, "a person acts as their own session user"
    assert {k: pod.env[k] for k in settings} == {k: str(v) for k, v in settings.items()}
    assert executor.runs == [], "not a workflow step: kept out of the step table"

"""`make e2e-docker`: the rendered WorkflowTemplate contribflow-daily, run in real containers.

The images (`make images`) and the bases (`make base-image`) must be in the engine already; the
Makefile target builds them first. Then, on a fresh user-defined bridge network:

1. `helm template` of the chart with the kind values gives the Secrets (generated passwords), the
   settings ConfigMap, the PostgreSQL StatefulSet, its Service and its init script;
2. PostgreSQL runs from that StatefulSet's own container spec, volumes and init script (every key
   mapped to Docker by tests/docker_executor.py, or refused); the steps reach it over TCP under the
   Service's name, each role with its own password;
3. the daily template is replayed by tests/argo_replay.py with the Docker executor: every task in
   its own image, with its command, args, env, securityContext, resources and volumes;
4. scripts/e2e_check.sql must print nothing; the analyst login reads the marts and is refused raw;
   a wrong password is refused over TCP;
5. a second run, on a copy of the first day's landed file whose header line is broken, must fail the
   task that reads it, never run that task's dependants, and have the exit handler record it;
6. run 3, a correction with four eyes (issue 28): the chart, rendered with two `people` (an operator
   and an approver) whose passwords are in Secrets of their own, has the init script create their
   logins; as the operator (a container of the migrations image, logged in as that person), a
   withdrawal of the first day's file is requested; the operator's own approval is refused (exit 1,
   no decision recorded);
   the approver approves; the rendered contribflow-apply-request is replayed with the request id: it
   applies, rebuilds and publishes; day 1's file is gone from the marts, raw keeps its rows and
   meta.correction_application records the application; replayed again, it changes nothing;
7. a table: each step's wall time in its container split into the engine's part (create, start,
   stop, remove), the process's start-up (interpreter, imports, settings: the container's lifetime
   outside the step's own record) and the step's own time as meta.etl_run records it, of which the
   work (dbt's node execution, the publish transaction); the split must add up. The dbt steps must
   have used the saved parse shipped in their image (dbt's perf_info.json: no file parsed; no
   "Unable to do partial parsing" in their output). Each image's size.

Exits non-zero on any failure. Everything it starts (containers, network, folders) is removed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import secrets as secrets_module
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from contribflow.cluster import k8s  # noqa: E402
from contribflow.contract import file_name  # noqa: E402
from contribflow.ingest import completion  # noqa: E402

from argo_replay import Attempt, Pod, Replay, ReplayError, ReplayResult, TaskRun, depends_on  # noqa: E402
from docker_executor import DockerExecutor, cpu_quantity, memory_bytes, secret_files  # noqa: E402

DAILY = ROOT / "workflows" / "rendered" / "workflowtemplate-contribflow-daily.yaml"
APPLY_REQUEST = ROOT / "workflows" / "rendered" / "workflowtemplate-contribflow-apply-request.yaml"
CHART = ROOT / "helm" / "contribflow"
VALUES = CHART / "ci" / "kind-values.yaml"
RELEASE = NAMESPACE = "contribflow"
CHECK_SQL = ROOT / "scripts" / "e2e_check.sql"


class E2EFailure(AssertionError):
    pass


def sh(*argv: str, input: str | None = None, check: bool = True, env: dict[str, str] | None = None
       ) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, input=input, capture_output=True, text=True, env=env)
    if check and done.returncode != 0:
        raise E2EFailure(f"{' '.join(argv[:4])} … failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done


PEOPLE = {"operator": "olga", "approver": "arne"}
"""Run 3's two people (values `people`): role → login."""


def people_values(work: Path) -> tuple[Path, list[dict[str, Any]]]:
    """A values file listing PEOPLE, each password in a Secret of its own (`existingSecret`), and those
    Secrets, as an administrator creates them (`kubectl create secret generic …`) before installing:
    random passwords, never in values or in the rendered chart."""
    people, objects = [], []
    for role, name in PEOPLE.items():
        secret = f"contribflow-person-{name}"
        people.append({"name": name, "role": role, "existingSecret": secret, "passwordKey": "password"})
        objects.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                        "metadata": {"name": secret, "namespace": NAMESPACE},
                        "stringData": {"password": secrets_module.token_urlsafe(24)}})
    path = work / "people-values.yaml"
    path.write_text(yaml.safe_dump({"people": people}), encoding="utf-8")
    return path, objects


def render_chart(helm: str, *values: Path) -> list[dict[str, Any]]:
    extra = [arg for path in values for arg in ("--values", str(path))]
    text = sh(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--values", str(VALUES), *extra).stdout
    return [d for d in yaml.safe_load_all(text) if d]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    if len(found) != 1:
        raise E2EFailure(f"the chart renders {len(found)} {kind} named {name!r}, expected one")
    return found[0]


class Postgres:
    """The chart's PostgreSQL StatefulSet, run as one container."""

    def __init__(self, executor: DockerExecutor, objects: list[dict[str, Any]], work: Path, suffix: str) -> None:
        self.executor, self.docker = executor, executor.docker
        sts = one(objects, "StatefulSet")
        self.service = one(objects, "Service", sts["spec"]["serviceName"])["metadata"]["name"]
        pod = sts["spec"]["template"]["spec"]
        containers = pod["containers"]
        if len(containers) != 1 or pod.get("initContainers"):
            raise E2EFailure("the PostgreSQL pod is expected to have exactly one container")
        self.container = containers[0]
        self.pod_spec = {"securityContext": pod.get("securityContext", {})}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for claim in sts["spec"].get("volumeClaimTemplates", []):
            volumes[claim["metadata"]["name"]] = {"name": claim["metadata"]["name"],
                                                  "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}}
        self.volumes = {}
        for mount in self.container.get("volumeMounts", []):
            self.volumes[mount["mountPath"].rstrip("/")] = (volumes[mount["name"]], work / "postgresql" / mount["name"])
        self.files = secret_files(objects)
        self.name = f"{sts['metadata']['name']}-0-{suffix}"
        self.env = {e["name"]: e.get("value") for e in self.container.get("env", [])}

    def start(self, pghost: str) -> float:
        return self.executor.start_service(self.name, self.container, self.pod_spec, self.volumes, self.files,
                                           sorted({self.service, pghost}))

    def psql_super(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """psql in the container as the superuser the image was started with, as `make e2e` does in the cluster."""
        script = ('PGPASSWORD=$(cat "$POSTGRES_PASSWORD_FILE"); export PGPASSWORD; '
                  'exec psql -X -q -At -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" "$@"')
        return sh(self.docker, "exec", "-i", self.name, "sh", "-c", script, "psql", *args, input=input, check=check)

    def psql_tcp(self, user: str, password: str, sql: str) -> subprocess.CompletedProcess[str]:
        """psql over TCP through the Service's name (the bridge network), as a login user."""
        return sh(self.docker, "exec", "-e", "PGPASSWORD", self.name, "psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                  "-h", self.service, "-U", user, "-d", self.env["POSTGRES_DB"], "-c", sql, check=False,
                  env={"PATH": "/usr/bin:/bin:/usr/local/bin", "PGPASSWORD": password})

    def check_sandbox(self) -> list[str]:
        """The server process (PID 1 after the entrypoint's exec) as the StatefulSet asks: its uid,
        no capabilities, no_new_privs, and a read-only root filesystem."""
        status = dict(line.split(":", 1) for line in
                      sh(self.docker, "exec", self.name, "cat", "/proc/1/status").stdout.splitlines() if ":" in line)
        csc = self.container.get("securityContext", {})
        uid = csc.get("runAsUser", self.pod_spec["securityContext"].get("runAsUser"))
        seen = (int(status["Uid"].split()[0]), int(status["CapEff"], 16), int(status["NoNewPrivs"]), status["Name"].strip())
        root = sh(self.docker, "exec", self.name, "sh", "-c", "touch /probe", check=False)
        if seen != (uid, 0, 1, "postgres") or root.returncode == 0:
            return [f"the PostgreSQL container runs as (uid, CapEff, NoNewPrivs, PID 1) {seen}, root writable: "
                    f"{root.returncode == 0}; the StatefulSet asks for uid {uid}, no capabilities, read-only root"]
        print(f"==> PostgreSQL PID 1 is postgres as uid {seen[0]}, CapEff 0x0, no_new_privs 1, root read-only")
        return []

    def stop(self) -> None:
        sh(self.docker, "rm", "-f", "-v", self.name, check=False)


# Run in each task's image with its container spec, in place of its command: what the kernel
# actually enforces on the process (not what flags were passed).
PROBE = r"""
import json, os
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
def read(*paths):
    for path in paths:
        try:
            return open(path).read().strip()
        except OSError:
            pass
    return None
def writable(folder):
    try:
        with open(os.path.join(folder, ".probe"), "w") as f:
            f.write("x")
        os.remove(os.path.join(folder, ".probe"))
        return True
    except OSError:
        return False
cpu_max = read("/sys/fs/cgroup/cpu.max")
if cpu_max:
    quota, period = cpu_max.split()
else:
    quota, period = read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us"), \
        read("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us")
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
    "cap_eff": int(status["CapEff"].strip(), 16), "no_new_privs": int(status["NoNewPrivs"]),
    "seccomp": int(status["Seccomp"]),
    "root_writable": writable("/"),
    "mounts_writable": {m: writable(m) for m in json.loads(os.environ["PROBE_MOUNTS"])},
    "memory": read("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"),
    "cpu": None if quota in (None, "max", "-1") else int(quota) / int(period),
}))
"""


def probe_containers(executor: DockerExecutor, template: dict[str, Any], work: Path) -> list[str]:
    """Each container template's spec, run with the probe: returns the differences from the manifest."""
    problems = []
    volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
    psc = template["spec"].get("securityContext", {})
    for tmpl in template["spec"]["templates"]:
        if "container" not in tmpl:
            continue
        spec = dict(tmpl["container"], command=["python"], args=["-I", "-c", PROBE], env=[], envFrom=[])
        mounts = {m["mountPath"].rstrip("/"): (volumes[m["name"]], work / "probe" / tmpl["name"] / m["name"])
                  for m in spec.get("volumeMounts", [])}
        writable_mounts = [m["mountPath"] for m in spec.get("volumeMounts", []) if not m.get("readOnly")]
        pod = Pod(f"probe-{tmpl['name']}", spec, ["python", "-I", "-c", PROBE],
                  {"PROBE_MOUNTS": json.dumps(writable_mounts)}, mounts, {"securityContext": psc})
        attempt = executor.run(pod, 120)
        executor.runs.pop()
        if attempt.exit_code != 0:
            problems.append(f"probe of {tmpl['name']} failed: {attempt.stderr.strip()[-500:]}")
            continue
        seen = json.loads(attempt.stdout.strip().splitlines()[-1])
        csc = spec.get("securityContext", {})
        limits = spec.get("resources", {}).get("limits", {})
        expected = {
            "uid": csc.get("runAsUser", psc.get("runAsUser")), "gid": csc.get("runAsGroup", psc.get("runAsGroup")),
            "no_new_privs": 1 if csc.get("allowPrivilegeEscalation") is False else seen["no_new_privs"],
            "seccomp": 2, "root_writable": not csc.get("readOnlyRootFilesystem", False),
            "mounts_writable": {m: True for m in writable_mounts},
        }
        if "ALL" in (csc.get("capabilities") or {}).get("drop", []) and not csc["capabilities"].get("add"):
            expected["cap_eff"] = 0
        if "memory" in limits:
            expected["memory"] = str(memory_bytes(limits["memory"]))
        if "cpu" in limits:
            expected["cpu"] = cpu_quantity(limits["cpu"])
        wrong = {k: (seen.get(k), v) for k, v in expected.items() if seen.get(k) != v}
        if psc.get("fsGroup") is not None and psc["fsGroup"] not in seen["groups"]:
            wrong["groups"] = (seen["groups"], f"to include fsGroup {psc['fsGroup']}")
        if wrong:
            problems.append(f"in its container, {tmpl['name']} differs from its manifest (seen, expected): {wrong}")
        else:
            print(f"==> {tmpl['name']:<10} in {spec['image'].rsplit('/', 1)[-1]}: uid {seen['uid']}:{seen['gid']} "
                  f"groups {seen['groups']}, CapEff {seen['cap_eff']:#x}, no_new_privs {seen['no_new_privs']}, "
                  f"seccomp filter, root {'rw' if seen['root_writable'] else 'read-only'}, "
                  f"memory {int(seen['memory']) // 2**20}Mi, cpu {seen['cpu']:g}: as the manifest says")
    return problems


def replay(executor: DockerExecutor, work: Path, objects: list[dict[str, Any]], params: dict[str, str],
           landing: Path, name: str, rendered: Path = DAILY) -> tuple[ReplayResult, str]:
    """The rendered WorkflowTemplate ``rendered`` (the daily one unless told), replayed in containers
    with the chart's Secrets and ConfigMaps and the landing claim; its result and workflow uid."""
    template = yaml.safe_load(rendered.read_text(encoding="utf-8"))
    files = secret_files(objects)
    secrets = {o["metadata"]["name"]: {k: v.decode() for k, v in files[o["metadata"]["name"]].items()}
               for o in objects if o["kind"] == "Secret"}
    config_maps = {o["metadata"]["name"]: {k: v.decode() for k, v in files[o["metadata"]["name"]].items()}
                   for o in objects if o["kind"] == "ConfigMap"}
    uid = str(uuid.uuid4())
    result = Replay(template, parameters=params, secrets=secrets, config_maps=config_maps,
                    work_dir=work / name, workflow_uid=uid, workflow_name=name, base_env={},
                    claims={k8s.LANDING_PVC: landing}, executor=executor,
                    workflow_templates={template["metadata"]["name"]: template}).run()
    return result, uid


def all_runs(result: ReplayResult) -> list[TaskRun]:
    return [*result.tasks.values(), *([result.exit_handler] if result.exit_handler else [])]


def describe(result: ReplayResult) -> str:
    lines = []
    for run in all_runs(result):
        tail = run.attempts[-1].stderr.strip().splitlines()[-12:] if run.attempts else []
        lines.append(f"  {run.name}: {run.phase}" + ("".join(f"\n      {t}" for t in tail) if run.phase == "Failed" else ""))
    return "\n".join(lines)


def dependants(template: dict[str, Any], failed: set[str]) -> set[str]:
    tasks = next(t for t in template["spec"]["templates"] if t["name"] == template["spec"]["entrypoint"])["dag"]["tasks"]
    found: set[str] = set()
    changed = True
    while changed:
        changed = False
        for task in tasks:
            if task["name"] not in found and set(depends_on(task)) & (failed | found):
                found.add(task["name"])
                changed = True
    return found


def etl_rows(pg: Postgres, run_id: str) -> dict[str, tuple[str, str]]:
    out = pg.psql_super("-F", "\t", "-c",
                        f"SELECT DISTINCT ON (step) step, status, coalesce(error, '') FROM meta.etl_run "
                        f"WHERE run_id = '{run_id}' ORDER BY step, id DESC").stdout
    rows = {}
    for line in out.splitlines():
        step, status, error = (line.split("\t") + ["", ""])[:3]
        rows[step] = (status, error)
    return rows


class Person:
    """`contribflow ARGV` as one person: a container of the migrations image (the daily template's
    init-db container spec: its image, sandbox and volumes) on the e2e network, logged in as that
    person (PGUSER/PGPASSWORD; no PGOPTIONS: a person acts as their own session user, in their group),
    every other setting from the chart's ConfigMap, as the pods get them."""

    def __init__(self, executor: DockerExecutor, template: dict[str, Any], settings: dict[str, str],
                 work: Path, name: str, password: str) -> None:
        self.executor, self.settings, self.work, self.name, self.password = executor, settings, work, name, password
        found = [t for t in template["spec"]["templates"]
                 if "container" in t and "/contribflow-migrations:" in t["container"]["image"]]
        if not found:
            raise E2EFailure(f"no template of {template['metadata']['name']} runs the migrations image")
        self.container = found[0]["container"]
        self.volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
        self.pod_spec = {"securityContext": template["spec"].get("securityContext", {})}
        self.calls = 0

    def run(self, *argv: str) -> Attempt:
        self.calls += 1
        pod_name = f"person-{self.name}-{self.calls}"
        spec = dict(self.container, command=["contribflow"], args=list(argv), env=[], envFrom=[])
        mounts = {m["mountPath"].rstrip("/"): (self.volumes[m["name"]], self.work / pod_name / m["name"])
                  for m in spec.get("volumeMounts", [])}
        env = {**{k: str(v) for k, v in self.settings.items()}, "PGUSER": self.name, "PGPASSWORD": self.password}
        attempt = self.executor.run(Pod(pod_name, spec, ["contribflow", *argv], env, mounts, self.pod_spec), 300)
        self.executor.runs.pop()  # not a step of a workflow: kept out of the step table
        return attempt


def said(attempt: Attempt) -> str:
    return (attempt.stdout + attempt.stderr).strip()


def run_correction(executor: DockerExecutor, pg: Postgres, objects: list[dict[str, Any]], work: Path,
                   landing: Path, day: dt.date, suffix: str, timings: list[StepTiming]) -> list[str]:
    """Run 3: a withdrawal of ``day``'s file with four eyes, applied by the rendered
    contribflow-apply-request (see the module's docstring); its problems."""
    daily = yaml.safe_load(DAILY.read_text(encoding="utf-8"))
    settings = one(objects, "ConfigMap", k8s.CONFIGMAP)["data"]
    files = secret_files(objects)
    people = {role: Person(executor, daily, settings, work / "people", name,
                           files[f"contribflow-person-{name}"]["password"].decode())
              for role, name in PEOPLE.items()}
    operator, approver = people["operator"], people["approver"]
    made = pg.psql_super("-F", "\t", "-c",
                         "SELECT r.rolname, g.rolname FROM pg_roles r JOIN pg_auth_members m ON m.member = r.oid "
                         "JOIN pg_roles g ON g.oid = m.roleid WHERE r.rolname IN "
                         f"({', '.join(repr(n) for n in PEOPLE.values())}) "
                         "AND r.rolcanlogin AND NOT r.rolsuper ORDER BY 1").stdout.split()
    expected = sorted(f"{name}\tcontribflow_{role}".split("\t") for role, name in PEOPLE.items())
    if [made[i:i + 2] for i in range(0, len(made), 2)] != expected:
        return [f"run 3: the chart's init script did not make the people {expected} (login, group): {made}"]

    def count(table: str) -> int:
        return int(pg.psql_super("-c", f"SELECT count(*) FROM {table} WHERE file_date = '{day}'").stdout.strip())

    raw_before, marts_before = count("raw.contributions"), count("marts.fct_contributions")
    if not raw_before or not marts_before:
        return [f"run 3: before the correction, day {day} has {raw_before} rows in raw and {marts_before} in the marts"]
    asked = operator.run("request", "withdraw-file", "--date", day.isoformat(),
                         "--reason", "e2e-docker: the source re-sent this day (a test of four eyes)")
    first = asked.stdout.strip().splitlines()[:1]
    if asked.exit_code != 0 or not first or not first[0].isdigit():
        return [f"run 3: the operator's request failed (exit {asked.exit_code}): {said(asked)}"]
    request = first[0]
    # Refused by PostgreSQL (meta.decide_correction): an operator is no approver, and a requester never
    # decides their own request, whichever check comes first (the chart gives a person one role).
    own = operator.run("approve", request)
    refusals = (f"{PEOPLE['operator']} is not an approver", "cannot be decided by its requester")
    undecided = pg.psql_super("-c", f"SELECT count(*) FROM meta.correction_decision WHERE request_id = {int(request)}")
    if own.exit_code != 1 or not any(r in said(own) for r in refusals) or undecided.stdout.strip() != "0":
        return [f"run 3: the operator approving their own request {request} was not refused with exit 1 and "
                f"one of {refusals} (exit {own.exit_code}, {undecided.stdout.strip()} decisions): {said(own)}"]
    refusal = next(r for r in refusals if r in said(own))
    approved = approver.run("approve", request)
    if approved.exit_code != 0:
        return [f"run 3: the approver could not approve request {request} (exit {approved.exit_code}): {said(approved)}"]
    decided = pg.psql_super("-F", "\t", "-c", "SELECT r.requested_by, d.decided_by, d.approved FROM "
                            "meta.correction_request r JOIN meta.correction_decision d ON d.request_id = r.id "
                            f"WHERE r.id = {int(request)}").stdout.strip()
    if decided != f"{PEOPLE['operator']}\t{PEOPLE['approver']}\tt":
        return [f"run 3: request {request} is recorded as (requested_by, decided_by, approved) {decided!r}"]
    print(f"==> run 3: {PEOPLE['operator']} (operator) requested withdraw-file --date {day} (request {request}); "
          f"their own approval was refused (exit 1: {refusal!r}); {PEOPLE['approver']} (approver) approved it")

    apply = yaml.safe_load(APPLY_REQUEST.read_text(encoding="utf-8"))
    name3 = f"contribflow-apply-request-{suffix}c"
    result, uid = replay(executor, work, objects, {"request-id": request}, landing, name3, rendered=APPLY_REQUEST)
    rows = step_rows("run 3", result, apply, apply["spec"].get("onExit"), etl_timings(pg, uid))
    timings.extend(rows)
    problems = check_split(rows)
    phases = {n: r.phase for n, r in result.tasks.items()}
    if result.status != "Succeeded" or phases != dict.fromkeys(("apply", "dbt-build", "dbt-test", "publish"), "Succeeded"):
        return [*problems, f"run 3: contribflow-apply-request ended {result.status}, tasks {phases}:\n{describe(result)}"]
    raw_after, marts_after = count("raw.contributions"), count("marts.fct_contributions")
    if marts_after != 0 or raw_after != raw_before:
        problems.append(f"run 3: after the withdrawal, day {day} has {marts_after} rows in the marts (expected 0) and "
                        f"{raw_after} in raw (expected the {raw_before} it had)")
    migrator = files[k8s.DB_SECRET][k8s.db_secret_keys("migrator")[0]].decode()
    recorded = pg.psql_super("-F", "\t", "-c",
                             "SELECT a.applied_by, w.file_date, w.applied_build_id = (SELECT max(id) FROM meta.mart_build "
                             "WHERE status = 'PUBLISHED') FROM meta.correction_application a JOIN meta.file_withdrawal w "
                             f"ON w.request_id = a.request_id WHERE a.request_id = {int(request)}").stdout.strip()
    if recorded != f"{migrator}\t{day}\tt":
        problems.append(f"run 3: meta.correction_application/file_withdrawal record (applied_by, file_date, in the "
                        f"latest publication) {recorded!r}, expected ({migrator!r}, {day}, true)")
    # Applied once: the same request replayed again changes nothing and rebuilds nothing.
    again, _ = replay(executor, work, objects, {"request-id": request}, landing, f"{name3}-again",
                      rendered=APPLY_REQUEST)
    phases_again = {n: r.phase for n, r in again.tasks.items()}
    applications = pg.psql_super("-c", "SELECT count(*) FROM meta.correction_application").stdout.strip()
    if again.status != "Succeeded" or phases_again != {"apply": "Succeeded", "dbt-build": "Skipped",
                                                       "dbt-test": "Skipped", "publish": "Skipped"} or applications != "1":
        problems.append(f"run 3: replayed again, request {request} gave {again.status} {phases_again} and "
                        f"{applications} applications (expected Succeeded, only apply run, 1)")
    if not problems:
        print(f"==> run 3 (withdraw {day}, request {request}): contribflow-apply-request Succeeded (apply, dbt-build, "
              f"dbt-test, publish); the marts publish none of the file's {marts_before} rows, raw keeps its "
              f"{raw_before}; meta.correction_application records it (applied by {migrator}); a second apply "
              f"changed nothing")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docker", default="docker")
    parser.add_argument("--helm", default=str(ROOT / ".tools" / "bin" / "helm"))
    parser.add_argument("--date", default="2026-11-24", help="the first run's date; the broken run is the next day")
    parser.add_argument("--rows", default=None, help="rows the generate step writes (default: the template's)")
    parser.add_argument("--keep", action="store_true", help="leave the containers, network and folders")
    args = parser.parse_args()
    docker = args.docker

    info = sh(docker, "info", "--format", "{{json .SecurityOptions}}", check=False)
    if info.returncode != 0:
        print(f"e2e-docker: no Docker engine answers ({docker} info): {info.stderr.strip()}", file=sys.stderr)
        return 1
    if "seccomp" not in info.stdout:
        print("e2e-docker: the engine runs without seccomp; RuntimeDefault cannot be honoured", file=sys.stderr)
        return 1

    suffix = uuid.uuid4().hex[:6]
    network = f"contribflow-e2e-{suffix}"
    work = Path(tempfile.mkdtemp(prefix="contribflow-e2e-docker-"))
    executor = DockerExecutor(docker, network, labels={"org.contribflow.e2e": suffix})
    # The chart with run 3's two people, their passwords in Secrets of their own (added to the objects
    # as the administrator's `kubectl create secret` would): the init script makes their logins.
    people_file, people_secrets = people_values(work)
    objects = [*render_chart(args.helm, people_file), *people_secrets]
    settings = one(objects, "ConfigMap", k8s.CONFIGMAP)["data"]
    secrets = secret_files(objects)[k8s.DB_SECRET]
    pg = Postgres(executor, objects, work, suffix)
    landing = work / "pvc" / k8s.LANDING_PVC
    template = yaml.safe_load(DAILY.read_text(encoding="utf-8"))
    on_exit = template["spec"].get("onExit")
    day1 = dt.date.fromisoformat(args.date)
    day2 = day1 + dt.timedelta(days=1)
    timings: list[StepTiming] = []
    problems: list[str] = []
    started = time.monotonic()
    ready_s = float("nan")
    run1_ok = False
    # What an interrupted earlier run left (only what this script starts carries the label).
    stale = sh(docker, "ps", "-aq", "--filter", "label=org.contribflow.e2e", check=False).stdout.split()
    if stale:
        sh(docker, "rm", "-f", "-v", *stale, check=False)
    for old_network in sh(docker, "network", "ls", "-q", "--filter", "label=org.contribflow.e2e", check=False).stdout.split():
        sh(docker, "network", "rm", old_network, check=False)
    sh(docker, "network", "create", "--label", f"org.contribflow.e2e={suffix}", network)
    try:
        ready_s = pg.start(settings["PGHOST"])
        print(f"==> PostgreSQL from the chart's StatefulSet: ready in {ready_s:.1f}s "
              f"({pg.container['image']}, network alias {pg.service})")

        problems += pg.check_sandbox()

        # --- each template's container: what the kernel enforces is what the manifest says -------
        problems += probe_containers(executor, template, work)

        # --- run 1: the day, end to end ------------------------------------------------------------
        params = {"run-date": day1.isoformat(), "generate": "true", **({"rows": args.rows} if args.rows else {})}
        name1 = f"contribflow-daily-{suffix}a"
        result1, uid1 = replay(executor, work, objects, params, landing, name1)
        rows1 = step_rows("run 1", result1, template, on_exit, etl_timings(pg, uid1))
        timings += rows1
        problems += check_split(rows1)
        if result1.status != "Succeeded" or not result1.exit_handler or result1.exit_handler.phase != "Succeeded":
            problems.append(f"run 1 did not succeed:\n{describe(result1)}")
        else:
            print(f"==> run 1 ({day1}): every task Succeeded, and the exit handler")
            run1_ok = True
            check = pg.psql_super("-v", f"run_id={uid1}", "-f", "-", input=CHECK_SQL.read_text(), check=False)
            if check.returncode != 0 or check.stdout.strip():
                problems.append(f"scripts/e2e_check.sql for run 1:\n{check.stdout}{check.stderr}")
            else:
                print("==> scripts/e2e_check.sql: no problem reported")

            # --- the analyst's login over TCP: marts yes, raw no; a wrong password is refused -------
            user_key, password_key = k8s.db_secret_keys("analyst")
            analyst, password = secrets[user_key].decode(), secrets[password_key].decode()
            # Whatever relations the migrations and dbt made: every one of raw refused, every one of marts read.
            relations = pg.psql_super("-c", "SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables"
                                      " WHERE table_schema IN ('raw', 'marts') ORDER BY 1").stdout.split()
            raw_tables = [r for r in relations if r.startswith("raw.")]
            mart_tables = [r for r in relations if r.startswith("marts.")]
            if not raw_tables or not mart_tables:
                problems.append(f"run 1 left no relation in raw or marts: {relations}")
            for table in mart_tables:
                read = pg.psql_tcp(analyst, password, f"SELECT count(*) FROM {table}")
                if read.returncode != 0:
                    problems.append(f"the analyst cannot read {table} over TCP: {read.stderr.strip()}")
            for table in raw_tables:
                raw = pg.psql_tcp(analyst, password, f"SELECT count(*) FROM {table}")
                if raw.returncode == 0 or "permission denied" not in raw.stderr:
                    problems.append(f"the analyst was not refused {table}: rc={raw.returncode} {raw.stdout}{raw.stderr}")
            wrong = pg.psql_tcp(analyst, password + "x", "SELECT 1")
            if wrong.returncode == 0 or "password authentication failed" not in wrong.stderr:
                problems.append(f"a wrong analyst password was not refused: {wrong.stdout}{wrong.stderr}")
            if not problems:
                print(f"==> analyst over TCP: reads all {len(mart_tables)} relations of marts, refused all "
                      f"{len(raw_tables)} of raw (permission denied); a wrong password is refused")

        # --- run 2: a broken source file ---------------------------------------------------------------
        source = landing / file_name(day1)
        if not problems:
            if not source.is_file():
                problems.append(f"run 1 left no landed file {source.name} to break")
            else:
                lines = source.read_bytes().split(b"\n", 1)
                broken = landing / file_name(day2)
                content = b"not,the,contract,header\n" + (lines[1] if len(lines) > 1 else b"")
                broken.write_bytes(content)
                # Written whole, with its manifest, as a well-behaved source writes it: the defect
                # is the header, not completeness (else pick waits out its stability window, retried).
                done = completion.write_manifest(broken, sum(1 for line in content.splitlines()[1:] if line.strip()),
                                                 hashlib.sha256(content).hexdigest(), len(content))
                for path in (broken, done):
                    shutil.chown(path, user=10001, group=10001)
                name2 = f"contribflow-daily-{suffix}b"
                result2, uid2 = replay(executor, work, objects, {"run-date": day2.isoformat(), "generate": "false"},
                                       landing, name2)
                rows2 = step_rows("run 2", result2, template, on_exit, etl_timings(pg, uid2))
                timings += rows2
                problems += check_split(rows2)
                problems += check_broken_run(template, result2, etl_rows(pg, uid2), on_exit)
                if not problems:
                    failed = sorted(n for n, r in result2.tasks.items() if r.phase == "Failed")
                    print(f"==> run 2 ({day2}, broken header): {', '.join(failed)} FAILED, its dependants "
                          f"{sorted(dependants(template, set(failed))) or 'none'} not run, {on_exit} recorded FAILED")

        # --- run 3: a correction with four eyes, applied by the rendered contribflow-apply-request ----
        if run1_ok:
            problems += run_correction(executor, pg, objects, work, landing, day1, suffix, timings)
        else:
            problems.append("run 3 (a correction with four eyes) not run: run 1 did not succeed")

        # --- the dbt pods of run 1 started from the parse their image ships (read before cleanup) ------
        problems += check_saved_parse(executor, result1, DBT_STEPS)

        health = sh(docker, "inspect", "-f", "{{if .State.Health}}{{.State.Health.Status}}{{end}}", pg.name).stdout.strip()
        if "livenessProbe" in pg.container and health not in ("healthy", "starting"):
            problems.append(f"PostgreSQL's liveness probe (Docker health check) reports {health!r}")
    except (ReplayError, E2EFailure, subprocess.CalledProcessError) as e:
        problems.append(f"{type(e).__name__}: {e}")
    finally:
        total = time.monotonic() - started
        if not args.keep:
            pg.stop()
            sh(docker, "network", "rm", network, check=False)
            shutil.rmtree(work, ignore_errors=True)

    print_table(docker, timings, template, pg.container["image"], total, ready_s)
    if problems:
        print("\ne2e-docker FAILED:", file=sys.stderr)
        for problem in problems:
            print(f"- {problem}", file=sys.stderr)
        return 1
    print("\ne2e-docker: OK")
    return 0


DBT_STEPS = ("dbt-build", "dbt-test")
"""The tasks that run dbt: each must start from the saved parse its image ships."""
TOLERANCE_S = 0.005
"""meta.etl_run's durations are rounded to milliseconds."""


@dataclass
class StepTiming:
    """One attempt of a task: its wall time in the container, split."""
    step: str
    image: str
    result: str
    wall_s: float = math.nan
    """``docker run`` to the container's removal, as the executor timed it."""
    container_s: float | None = None
    """The container's process from start to exit, by the engine's clock."""
    in_step_s: float | None = None
    """What the stage measured itself: meta.etl_run's duration_s (init-db: its migrate_s, which also
    covers the migrations applied before the row can be written)."""
    work_s: float | None = None
    """The step's own work within that: dbt's node execution (``nodes_s``), the publish transaction
    (``publish_s``); the whole in-step time for the other steps."""
    ran: bool = True

    @property
    def engine_s(self) -> float | None:
        return None if self.container_s is None else self.wall_s - self.container_s

    @property
    def start_up_s(self) -> float | None:
        return None if self.container_s is None or self.in_step_s is None else self.container_s - self.in_step_s

    @property
    def fixed_s(self) -> float | None:
        return None if self.work_s is None else self.wall_s - self.work_s


def etl_timings(pg: Postgres, run_id: str) -> dict[str, list[tuple[float, float]]]:
    """pod name → (in-step s, work s) of each meta.etl_run row the pod wrote, in order."""
    out = pg.psql_super("-F", "\t", "-c",
                        "SELECT coalesce(pod_name, ''), step, coalesce(duration_s, 'NaN'), coalesce(details->>'migrate_s', ''),"
                        " coalesce(details->>'nodes_s', ''), coalesce(details->>'publish_s', '') FROM meta.etl_run"
                        f" WHERE run_id = '{run_id}' ORDER BY id").stdout
    found: dict[str, list[tuple[float, float]]] = {}
    for line in out.splitlines():
        pod, step, duration, migrate, nodes, publish_s = line.split("\t")
        in_step = max(float(duration), float(migrate)) if migrate else float(duration)
        work = float(nodes) if nodes else float(publish_s) if publish_s else in_step
        found.setdefault(pod, []).append((in_step, work))
    return found


def step_rows(label: str, result: ReplayResult, template: dict[str, Any], on_exit: str | None,
              recorded: dict[str, list[tuple[float, float]]]) -> list[StepTiming]:
    """One row per attempt of each task in DAG order (Skipped/Omitted tasks too), then the exit
    handler; each attempt matched with the meta.etl_run row its pod wrote (the same order)."""
    rows = []
    for run in all_runs(result):
        image = image_of(template, run.name, on_exit)
        if not run.attempts:
            rows.append(StepTiming(f"{label} {run.name}", image, run.phase.lower(), ran=False))
        records = recorded.get(run.pod_name, [])
        for number, attempt in enumerate(run.attempts):
            in_step, work = records[number] if number < len(records) else (None, None)
            rows.append(StepTiming(f"{label} {run.name}", image,
                                   "ok" if attempt.exit_code == 0 else f"exit {attempt.exit_code}",
                                   attempt.wall_s, attempt.container_s, in_step, work))
    return rows


def check_split(rows: list[StepTiming]) -> list[str]:
    """Every attempt's split present and adding up: work <= in-step <= the container's life <= wall."""
    problems = []
    for row in rows:
        if not row.ran:
            continue
        figures = {"wall": row.wall_s, "container": row.container_s, "in-step": row.in_step_s, "work": row.work_s}
        missing = [k for k, v in figures.items() if v is None or math.isnan(v)]
        if missing:
            problems.append(f"{row.step}: no {', '.join(missing)} time (the split needs each figure)")
            continue
        assert row.container_s is not None and row.in_step_s is not None and row.work_s is not None
        if not (0 <= row.work_s <= row.in_step_s + TOLERANCE_S <= row.container_s + 2 * TOLERANCE_S
                and row.container_s <= row.wall_s):
            problems.append(f"{row.step}: the split does not add up: work {row.work_s:.3f}s <= in-step "
                            f"{row.in_step_s:.3f}s <= container {row.container_s:.3f}s <= wall {row.wall_s:.3f}s fails")
    return problems


def check_saved_parse(executor: DockerExecutor, result: ReplayResult, steps: tuple[str, ...]) -> list[str]:
    """Each dbt task started from its image's saved parse: its first dbt command parsed no file
    (perf_info.json in its dbt target folder, an emptyDir) and dbt never said it could not partially parse."""
    problems = []
    for name in steps:
        run = result.tasks.get(name)
        if run is None or not run.attempts:
            problems.append(f"{name} did not run: its parse cannot be checked")
            continue
        said = "\n".join(a.stdout + a.stderr for a in run.attempts)
        if "Unable to do partial parsing" in said:
            line = next(x for x in said.splitlines() if "Unable to do partial parsing" in x)
            problems.append(f"{name} parsed the dbt project again: {line.strip()}")
        target = run.env.get("CONTRIBFLOW_DBT_TARGET_DIR", "")
        mount = max((m for m in executor.mounts.get(run.pod_name, {}) if target == m or target.startswith(m + "/")),
                    key=len, default=None)
        if mount is None:
            problems.append(f"{name}: its dbt target folder {target!r} is on no volume; its parse cannot be read")
            continue
        perf = executor.mounts[run.pod_name][mount] / target[len(mount):].lstrip("/") / "perf_info.json"
        info = json.loads(perf.read_text()) if perf.is_file() else {}
        if info.get("parsed_path_count") != 0 or not info.get("path_count"):
            problems.append(f"{name}: dbt parsed {info.get('parsed_path_count')} of {info.get('path_count')} files "
                            f"({perf.name}: {'present' if info else 'missing'}), not 0: the saved parse was not used")
        else:
            print(f"==> {name}: dbt started from the image's saved parse (0 of {info['path_count']} files parsed, "
                  f"parse {info.get('load_all_elapsed', 0):.2f}s)")
    return problems


def image_of(template: dict[str, Any], task: str, on_exit: str | None) -> str:
    """The image of a task's template (the exit handler's is its own template)."""
    tasks = next(t for t in template["spec"]["templates"] if t["name"] == template["spec"]["entrypoint"])["dag"]["tasks"]
    name = next((t["template"] for t in tasks if t["name"] == task), on_exit if task == on_exit else task)
    found = next((t for t in template["spec"]["templates"] if t["name"] == name), {})
    return found.get("container", {}).get("image", "")


def check_broken_run(template: dict[str, Any], result: ReplayResult, rows: dict[str, tuple[str, str]],
                     on_exit: str | None) -> list[str]:
    problems = []
    failed = {n for n, r in result.tasks.items() if r.phase == "Failed"}
    if not failed:
        return [f"run 2 on a broken file failed no task:\n{describe(result)}"]
    if result.status != "Failed":
        problems.append(f"run 2 ended {result.status}, not Failed")
    later = dependants(template, failed)
    ran = sorted(n for n in later if result.tasks[n].phase != "Omitted")
    if ran:
        problems.append(f"run 2: dependants of {sorted(failed)} ran anyway: {ran}")
    for name in failed:
        if rows.get(name, ("",))[0] != "FAILED":
            problems.append(f"run 2: meta.etl_run has {rows.get(name)} for the failed task {name}, not FAILED")
    recorded = sorted(set(rows) & later)
    if recorded:
        problems.append(f"run 2: meta.etl_run has rows for tasks that never ran: {recorded}")
    if on_exit:
        handler = result.exit_handler
        if handler is None or not handler.attempts:
            problems.append("run 2: the exit handler did not run")
        status, error = rows.get(on_exit, ("", ""))
        if status != "FAILED" or not any(name in error for name in failed):
            problems.append(f"run 2: {on_exit} recorded {status!r} {error!r}, not FAILED naming {sorted(failed)}")
    return problems


def _s(value: float | None) -> str:
    return "     -" if value is None or math.isnan(value) else f"{value:6.2f}"


def print_table(docker: str, timings: list[StepTiming], template: dict[str, Any],
                postgres_image: str, total: float, ready_s: float) -> None:
    print("\nEach step's wall time in its container (s): wall = engine (docker create, start, stop, remove)"
          "\n+ start-up (interpreter, imports: the process outside its step) + in-step (meta.etl_run);"
          "\nwork: dbt's node execution, the publish transaction, else the in-step time; fixed = wall - work.")
    print(f"\n{'step':<19} {'image':<32} {'result':<7} {'wall':>6} {'engine':>6} {'start':>6} {'in-step':>7}"
          f" {'work':>6} {'fixed':>6}")
    for row in timings:
        print(f"{row.step:<19} {row.image.rsplit('/', 1)[-1]:<32} {row.result:<7} {_s(row.wall_s)} {_s(row.engine_s)}"
              f" {_s(row.start_up_s)} {_s(row.in_step_s):>7} {_s(row.work_s)} {_s(row.fixed_s)}")
    print(f"PostgreSQL from the chart's StatefulSet ready in {ready_s:.1f}s ({postgres_image})")
    images = sorted({t["container"]["image"] for t in template["spec"]["templates"] if "container" in t})
    print("\nimage                                                   size MB   base")
    for image in [*images, postgres_image]:
        done = sh(docker, "image", "inspect", "-f",
                  '{{.Size}}|{{index .Config.Labels "org.opencontainers.image.base.name"}}'
                  '|{{index .Config.Labels "org.contribflow.standin"}}', image, check=False)
        if done.returncode != 0:
            print(f"{image:<55} (not built)")
            continue
        size, base, standin = [v.replace("<no value>", "") for v in done.stdout.strip().split("|")]
        note = f"FROM {base}" if base else ""
        if standin:
            note += " (a local stand-in, docs/images.md)" if not base else " (built on a local stand-in, docs/images.md)"
        print(f"{image:<55} {int(size) / 1e6:8.1f}   {note.strip()}")
    print(f"\ntotal (PostgreSQL start, the three runs, checks): {total:.1f}s")


if __name__ == "__main__":
    sys.exit(main())

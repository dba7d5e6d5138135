"""Replay a rendered Argo WorkflowTemplate's DAG on this machine, without a cluster.

What is executed is the manifest itself: the DAG's tasks in the order its ``depends`` give, each
task's ``when`` evaluated, each container's exact ``command``/``args`` with ``{{...}}`` substituted
the way Argo does (workflow parameters, the workflow's uid/name/status, ``pod.name``, the
template's inputs, upstream tasks' output parameters read from the paths the manifest declares),
its declared ``env``/``envFrom`` resolved from stand-in Secrets and ConfigMaps, and its volume
mounts mapped to folders (a PVC is one folder for the whole run, an emptyDir a new folder per
pod). The ``retryStrategy`` expression decides whether a failed attempt is retried, and the
``onExit`` template runs last with ``workflow.status``. A reference the replay cannot resolve is
an error, never silently left in place: the manifest must be complete.

By default each container runs as a local process (its mounts remapped to host folders); with a
``executor`` (tests/docker_executor.py) each runs in its own image, its container spec mapped to
the engine's flags, the volumes mounted at their mount paths.

Supported (and checked, so anything else fails loudly): ``depends`` of the form ``a && b``,
``when`` of the form ``X == Y`` / ``X != Y``, retry expressions ``asInt(lastRetry.exitCode) == N`` (or several joined by ``||``),
``withParam`` fan-out (items run one after the other), and resource templates that create a
Workflow from a ``workflowTemplateRef`` (replayed in turn, sharing the PVCs).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

VARIABLE = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
TASK_NAME = re.compile(r"^[A-Za-z0-9-]+$")
RETRY_ON_EXIT_CODE = re.compile(r"^asInt\(lastRetry\.exitCode\)\s*==\s*(\d+)$")


class ReplayError(RuntimeError):
    """The manifest asks for something the replay cannot resolve (a missing secret key, an
    unknown variable, an unsupported expression)."""


@dataclass
class Attempt:
    exit_code: int
    stdout: str
    stderr: str
    wall_s: float = 0.0
    """Wall time of the attempt, container start and removal included under an executor."""
    container_s: float | None = None
    """Under an executor that knows it: how long the container's process ran (the engine's
    StartedAt to FinishedAt), so that ``wall_s`` splits into the engine's part and the process's."""


@dataclass
class Pod:
    """What an executor runs: one attempt of a template's container, everything resolved."""
    name: str
    container: dict[str, Any]
    """The manifest's container spec, unchanged (the executor maps every key or refuses it)."""
    argv: list[str]
    """``command`` + ``args``, variables substituted (paths as the container sees them)."""
    env: dict[str, str]
    """``env`` and ``envFrom`` resolved, Secret and ConfigMap values included."""
    volumes: dict[str, tuple[dict[str, Any], Path]]
    """mountPath → (the pod's volume declaration, the host folder standing in for it)."""
    pod_spec: dict[str, Any]
    """The pod-level fields the workflow gives every pod (``securityContext``)."""


@dataclass
class TaskRun:
    name: str
    phase: str  # Succeeded, Failed, Skipped, Omitted
    pod_name: str = ""
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    items: list[TaskRun] = field(default_factory=list)
    """A ``withParam`` task: one run per item."""
    workflow: ReplayResult | None = None
    """A resource template that created a Workflow: that Workflow's replay."""


@dataclass
class ReplayResult:
    status: str
    tasks: dict[str, TaskRun]
    exit_handler: TaskRun | None


def substitute(text: str, scope: Mapping[str, str], where: str) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1)
        if name.startswith("="):
            raise ReplayError(f"{where}: expression template {{{{{name}}}}} is not supported by the replay")
        if name not in scope:
            raise ReplayError(f"{where}: unresolved variable {{{{{name}}}}}")
        return scope[name]

    return VARIABLE.sub(value, text)


def evaluate_when(condition: str, where: str) -> bool:
    for op in ("==", "!="):
        if op in condition:
            left, right = (part.strip() for part in condition.split(op, 1))
            return (left == right) == (op == "==")
    raise ReplayError(f"{where}: unsupported when expression {condition!r}")


def depends_on(task: dict[str, Any]) -> list[str]:
    expression = (task.get("depends") or "").strip()
    if not expression:
        return list(task.get("dependencies") or [])
    names = [part.strip() for part in expression.split("&&")]
    for name in names:
        if not TASK_NAME.match(name):
            raise ReplayError(f"task {task['name']}: unsupported depends expression {expression!r}")
    return names


def dag_order(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tasks in dependency order (Kahn), ties in manifest order; a cycle or unknown name is an error."""
    by_name = {t["name"]: t for t in tasks}
    for task in tasks:
        unknown = set(depends_on(task)) - by_name.keys()
        if unknown:
            raise ReplayError(f"task {task['name']} depends on unknown task(s) {sorted(unknown)}")
    done: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(done) < len(tasks):
        ready = [t for t in tasks if t["name"] not in seen and set(depends_on(t)) <= seen]
        if not ready:
            raise ReplayError(f"the DAG has a cycle among {sorted(by_name.keys() - seen)}")
        done.append(ready[0])
        seen.add(ready[0]["name"])
    return done


class Replay:
    """Runs one Workflow made from ``template`` (a WorkflowTemplate or Workflow manifest)."""

    def __init__(self, template: dict[str, Any], *, parameters: Mapping[str, str],
                 secrets: Mapping[str, Mapping[str, str]], config_maps: Mapping[str, Mapping[str, str]],
                 work_dir: Path, workflow_uid: str, workflow_name: str,
                 base_env: Mapping[str, str] | None = None, claims: Mapping[str, Path] | None = None,
                 workflow_templates: Mapping[str, dict[str, Any]] | None = None, timeout_s: int = 900,
                 executor: Any = None, namespace: str = "contribflow") -> None:
        self.spec = template["spec"]
        self.namespace = namespace
        """The namespace the Workflow runs in (``{{workflow.namespace}}``)."""
        self.templates = {t["name"]: t for t in self.spec["templates"]}
        self.secrets, self.config_maps = secrets, config_maps
        self.work_dir = work_dir
        self.uid, self.name = workflow_uid, workflow_name
        self.base_env = dict(base_env if base_env is not None else {"PATH": os.environ["PATH"]})
        self.timeout_s = timeout_s
        self.executor = executor
        """None: local processes. Else an object whose ``run(pod: Pod, timeout_s) -> Attempt`` runs
        the pod (tests/docker_executor.py: in a container)."""
        self.parameters = self._parameters(parameters)
        self.workflow_templates = dict(workflow_templates or {})
        """WorkflowTemplates by name, for Workflows a resource template creates (``workflowTemplateRef``)."""
        self.persistent: dict[str, Path] = dict(claims or {})
        """PersistentVolumeClaim name → the folder standing in for it (created on first mount)."""
        self._pods = 0

    def _parameters(self, given: Mapping[str, str]) -> dict[str, str]:
        declared = {p["name"]: p.get("value") for p in self.spec.get("arguments", {}).get("parameters", [])}
        unknown = set(given) - declared.keys()
        if unknown:
            raise ReplayError(f"parameters {sorted(unknown)} are not declared by the template")
        values = {**declared, **given}
        missing = sorted(name for name, value in values.items() if value is None)
        if missing:
            raise ReplayError(f"parameter(s) {missing} have no value and no default")
        return {name: str(value) for name, value in values.items()}

    def _global_scope(self, status: str | None) -> dict[str, str]:
        scope = {f"workflow.parameters.{k}": v for k, v in self.parameters.items()}
        scope.update({"workflow.uid": self.uid, "workflow.name": self.name, "workflow.namespace": self.namespace})
        if status is not None:
            scope["workflow.status"] = status
        return scope

    # --- the run ---------------------------------------------------------------------------------

    def run(self) -> ReplayResult:
        entry = self.templates[self.spec["entrypoint"]]
        if "dag" not in entry:
            raise ReplayError(f"entrypoint {entry['name']} is not a DAG")
        runs: dict[str, TaskRun] = {}
        for task in dag_order(entry["dag"]["tasks"]):
            runs[task["name"]] = self._task(task, runs)
        failed = any(r.phase == "Failed" for r in runs.values())
        status = "Failed" if failed else "Succeeded"
        exit_run = None
        if self.spec.get("onExit"):
            exit_run = self._pod(self.spec["onExit"], self.templates[self.spec["onExit"]], {},
                                 self._global_scope(status))
        return ReplayResult(status, runs, exit_run)

    def _task(self, task: dict[str, Any], runs: dict[str, TaskRun]) -> TaskRun:
        name = task["name"]
        upstream = depends_on(task)
        if any(runs[u].phase in ("Failed", "Omitted") for u in upstream):
            return TaskRun(name, "Omitted")
        scope = self._global_scope(None)
        for done in runs.values():
            scope.update({f"tasks.{done.name}.outputs.parameters.{k}": v for k, v in done.outputs.items()})
        if task.get("when") and not evaluate_when(substitute(task["when"], scope, f"task {name} when"),
                                                  f"task {name}"):
            return TaskRun(name, "Skipped")
        if task.get("withParam"):
            items = json.loads(substitute(task["withParam"], scope, f"task {name} withParam"))
            if not isinstance(items, list):
                raise ReplayError(f"task {name}: withParam is not a JSON list: {items!r}")
            fan_out = TaskRun(name, "Succeeded")
            for index, item in enumerate(items):
                item_scope = dict(scope, item=item if isinstance(item, str) else json.dumps(item))
                fan_out.items.append(self._run_template(f"{name}({index}:{item})", task, item_scope))
            if any(r.phase == "Failed" for r in fan_out.items):
                fan_out.phase = "Failed"
            return fan_out
        return self._run_template(name, task, scope)

    def _run_template(self, name: str, task: dict[str, Any], scope: dict[str, str]) -> TaskRun:
        arguments = {p["name"]: substitute(str(p["value"]), scope, f"task {name} argument {p['name']}")
                     for p in task.get("arguments", {}).get("parameters", [])}
        template = self.templates[task["template"]]
        if "resource" in template:
            return self._resource(name, template, arguments, scope)
        return self._pod(name, template, arguments, scope)

    def _inputs(self, name: str, template: dict[str, Any], arguments: dict[str, str],
                scope: dict[str, str]) -> dict[str, str]:
        scope = dict(scope)
        for declared in template.get("inputs", {}).get("parameters", []):
            if declared["name"] not in arguments:
                raise ReplayError(f"task {name}: input {declared['name']} not given by the DAG")
            scope[f"inputs.parameters.{declared['name']}"] = arguments[declared["name"]]
        return scope

    def _resource(self, name: str, template: dict[str, Any], arguments: dict[str, str],
                  scope: dict[str, str]) -> TaskRun:
        """``action: create`` of a Workflow from a WorkflowTemplate: replayed here, to its end."""
        resource = template["resource"]
        scope = self._inputs(name, template, arguments, scope)
        manifest = yaml.safe_load(substitute(resource["manifest"], scope, f"task {name} manifest"))
        ref = manifest.get("spec", {}).get("workflowTemplateRef", {}).get("name")
        if resource.get("action") != "create" or manifest.get("kind") != "Workflow" or not ref:
            raise ReplayError(f"task {name}: only creating a Workflow from a workflowTemplateRef is replayed")
        if ref not in self.workflow_templates:
            raise ReplayError(f"task {name}: WorkflowTemplate {ref!r} is not installed")
        if resource.get("successCondition") != "status.phase == Succeeded":
            raise ReplayError(f"task {name}: unsupported successCondition {resource.get('successCondition')!r}")
        self._pods += 1
        child_name = manifest["metadata"].get("name") or f"{manifest['metadata']['generateName']}{self._pods:05d}"
        params = {p["name"]: str(p["value"]) for p in manifest["spec"].get("arguments", {}).get("parameters", [])}
        child = Replay(self.workflow_templates[ref], parameters=params, secrets=self.secrets,
                       config_maps=self.config_maps, work_dir=self.work_dir / child_name,
                       workflow_uid=str(uuid.uuid4()), workflow_name=child_name, base_env=self.base_env,
                       claims=self.persistent, workflow_templates=self.workflow_templates,
                       timeout_s=self.timeout_s, executor=self.executor, namespace=self.namespace).run()
        run = TaskRun(name, "Succeeded" if child.status == "Succeeded" else "Failed", workflow=child)
        for out in template.get("outputs", {}).get("parameters", []):
            if out.get("valueFrom", {}).get("jsonPath") == "{.metadata.name}":
                run.outputs[out["name"]] = child_name
        return run

    def _pod(self, name: str, template: dict[str, Any], arguments: dict[str, str],
             scope: dict[str, str]) -> TaskRun:
        if "container" not in template:
            raise ReplayError(f"template {template['name']}: only container templates can be replayed")
        self._pods += 1
        pod_name = f"{self.name}-{template['name']}-{self._pods}"
        scope = self._inputs(name, template, arguments, dict(scope, **{"pod.name": pod_name}))
        container = template["container"]
        pod_dir = self.work_dir / pod_name
        mounts = self._mounts(container, pod_dir)
        where = f"task {name}"
        # Under an executor the container sees its volumes at their mount paths: nothing is remapped.
        remap = {} if self.executor is not None else mounts
        argv = [self._remap(substitute(a, scope, where), remap)
                for a in [*container.get("command", []), *container.get("args", [])]]
        env = self._env(container, scope, remap, where)
        run = TaskRun(name, "Failed", pod_name, argv, env)
        limit, retry_codes = self._retry(template, where)
        while True:
            if self.executor is not None:
                volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
                pod = Pod(pod_name, container, argv, env,
                          {m["mountPath"].rstrip("/"): (volumes[m["name"]], mounts[m["mountPath"].rstrip("/")])
                           for m in container.get("volumeMounts", [])},
                          {"securityContext": self.spec.get("securityContext", {})})
                attempt = self.executor.run(pod, self.timeout_s)
            else:
                started = time.monotonic()
                done = subprocess.run(argv, env=env, cwd=pod_dir, capture_output=True, text=True,
                                      timeout=self.timeout_s)
                attempt = Attempt(done.returncode, done.stdout, done.stderr, time.monotonic() - started)
            run.attempts.append(attempt)
            if attempt.exit_code == 0 or attempt.exit_code not in retry_codes or len(run.attempts) > limit:
                break
        run.phase = "Succeeded" if run.attempts[-1].exit_code == 0 else "Failed"
        for out in template.get("outputs", {}).get("parameters", []):
            source = out["valueFrom"]
            path = Path(self._remap(source["path"], mounts))
            if path.is_file():
                run.outputs[out["name"]] = self._unmap(path.read_text(encoding="utf-8"), mounts)
            elif "default" in source:
                run.outputs[out["name"]] = source["default"]
            elif run.phase == "Succeeded":
                raise ReplayError(f"{where}: output {out['name']} not written to {source['path']} and no default")
        return run

    def _retry(self, template: dict[str, Any], where: str) -> tuple[int, set[int]]:
        strategy = template.get("retryStrategy")
        if not strategy:
            return 0, set()
        codes = set()
        for part in strategy.get("expression", "").split("||"):
            match = RETRY_ON_EXIT_CODE.match(part.strip())
            if not match:
                raise ReplayError(f"{where}: unsupported retry expression {strategy.get('expression')!r}")
            codes.add(int(match.group(1)))
        return int(strategy["limit"]), codes

    def _mounts(self, container: dict[str, Any], pod_dir: Path) -> dict[str, Path]:
        """mountPath → folder: a PVC volume is shared by the whole run, anything else is per pod."""
        volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        mounts: dict[str, Path] = {}
        pod_dir.mkdir(parents=True)
        for mount in container.get("volumeMounts", []):
            volume = volumes.get(mount["name"])
            if volume is None:
                raise ReplayError(f"container mounts undeclared volume {mount['name']!r}")
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                host = self.persistent.setdefault(claim, self.work_dir / "pvc" / claim)
            else:
                host = pod_dir / "volumes" / mount["name"]
            host.mkdir(parents=True, exist_ok=True)
            mounts[mount["mountPath"].rstrip("/")] = host
        return dict(sorted(mounts.items(), key=lambda kv: -len(kv[0])))

    @staticmethod
    def _remap(value: str, mounts: dict[str, Path]) -> str:
        for mount_path, host in mounts.items():
            if value == mount_path or value.startswith(mount_path + "/"):
                return str(host) + value[len(mount_path):]
        return value

    @staticmethod
    def _unmap(value: str, mounts: dict[str, Path]) -> str:
        """A host path a pod wrote in an output, seen as the container saw it (``/data/landing/…``)."""
        for mount_path, host in sorted(mounts.items(), key=lambda kv: -len(str(kv[1]))):
            if value == str(host) or value.startswith(f"{host}/"):
                return mount_path + value[len(str(host)):]
        return value

    def _env(self, container: dict[str, Any], scope: dict[str, str], mounts: dict[str, Path],
             where: str) -> dict[str, str]:
        env = dict(self.base_env)
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef") or source.get("secretRef")
            store = self.config_maps if "configMapRef" in source else self.secrets
            if ref["name"] not in store:
                if ref.get("optional"):
                    continue
                raise ReplayError(f"{where}: envFrom {ref['name']!r} does not exist")
            env.update(store[ref["name"]])
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = self._remap(substitute(str(var["value"]), scope, where), mounts)
                continue
            source = var["valueFrom"]
            kind = "secretKeyRef" if "secretKeyRef" in source else "configMapKeyRef"
            if kind not in source:
                raise ReplayError(f"{where}: env {var['name']} uses an unsupported valueFrom {sorted(source)}")
            ref = source[kind]
            store = self.secrets if kind == "secretKeyRef" else self.config_maps
            try:
                env[var["name"]] = store[ref["name"]][ref["key"]]
            except KeyError:
                if ref.get("optional"):
                    continue
                raise ReplayError(f"{where}: env {var['name']}: {kind} {ref.get('name')}/{ref.get('key')} "
                                  "does not exist") from None
        return env

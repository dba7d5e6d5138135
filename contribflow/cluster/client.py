"""``contribflow submit | backfill | wait``: Workflows from the installed WorkflowTemplate, created and
followed through the Kubernetes API with the user's kubeconfig (no Argo Server, no Argo token).

The ``kubernetes`` client is the ``cluster`` extra and is imported only when one of these commands
runs. Every failure the user can fix (no kubeconfig, API server unreachable, Argo's CRDs missing, the
template not installed, access denied) becomes one ``ClusterError`` line naming what and where.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from contribflow.cluster import k8s
from contribflow.dates import date_range

GROUP = "argoproj.io"
VERSION = "v1alpha1"
WORKFLOWS = "workflows"
TEMPLATES = "workflowtemplates"
FINISHED = ("Succeeded", "Failed", "Error")
REQUEST_TIMEOUT = (5, 30)
"""(connect, read) seconds for each API call, so an unreachable server fails fast."""
RUN_DATE_LABEL = "contribflow.io/run-date"
TEMPLATE_LABEL = "workflows.argoproj.io/workflow-template"
"""The label Argo itself puts on Workflows submitted from a template (the UI groups runs by it)."""
SHOWN_OUTPUTS = ("rows_loaded", "rows_rejected", "tests_failed")


class ClusterError(RuntimeError):
    """A cluster problem the user can act on, said in one line."""


@dataclass
class Run:
    name: str
    namespace: str
    uid: str
    run_date: str
    phase: str = ""
    message: str = ""

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED

    @property
    def succeeded(self) -> bool:
        return self.phase == "Succeeded"

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "namespace": self.namespace, "uid": self.uid, "run_date": self.run_date,
                "phase": self.phase, "message": self.message}


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def parse_params(items: Iterable[str]) -> dict[str, str]:
    """``--param k=v`` pairs; ``run-date`` comes from ``--date`` only."""
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ClusterError(f"--param {item!r} is not of the form name=value")
        if key == "run-date":
            raise ClusterError("--param run-date is not allowed: give the date with --date (or --from/--to)")
        pattern, what = PARAM_VALUES.get(key, (None, ""))
        if pattern is not None and not pattern.fullmatch(value) or (key == "defect-rate" and float(value) > 1) \
                or (key == "rows" and not 1 <= int(value) <= 100_000_000):
            raise ClusterError(f"--param {key}={value[:80]!r}: the value must be {what}")
        params[key] = value
    return params


PARAM_VALUES = {
    "rows": (re.compile(r"[0-9]+", re.ASCII), "a whole number from 1 to 100000000"),
    "defect-rate": (re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII), "a decimal from 0 to 1"),
    "generate": (re.compile(r"true|false"), "true or false"),
}
"""The daily template's parameters besides run-date (contribflow.graph.PARAMETERS), and what the
stages accept for each: refused here rather than in a pod. Which names the installed template
declares is checked against the template itself (Cluster.submit)."""


def workflow_body(run_date: str, params: dict[str, str], template: str = k8s.WORKFLOW_TEMPLATE) -> dict[str, Any]:
    """The Workflow that ``argo submit --from workflowtemplate/<template>`` would create."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Workflow",
        "metadata": {
            "generateName": f"{template}-{run_date}-",
            "labels": {TEMPLATE_LABEL: template, RUN_DATE_LABEL: run_date},
        },
        "spec": {
            "workflowTemplateRef": {"name": template},
            "arguments": {"parameters": [{"name": "run-date", "value": run_date},
                                         *({"name": k, "value": v} for k, v in params.items())]},
        },
    }


def _status_message(exc: Any) -> str:
    """The ``message`` of a Kubernetes ``Status`` body, or the raw text when the body is not one."""
    body = getattr(exc, "body", None) or ""
    try:
        return str(json.loads(body).get("message") or "").strip()
    except (ValueError, AttributeError):
        return body.strip().splitlines()[0] if body.strip() else ""


@dataclass
class Cluster:
    custom: Any
    apis: Any
    namespace: str
    host: str
    identity: str
    """Who the kubeconfig says we are, for "access denied" messages: user and context."""
    api_exception: type[Exception] = field(repr=False, default=Exception)
    transport_error: type[Exception] = field(repr=False, default=OSError)
    _templates: dict[str, dict[str, Any]] = field(repr=False, default_factory=dict)

    @classmethod
    def connect(cls, namespace: str = k8s.NAMESPACE, kubeconfig: str | None = None,
                context: str | None = None) -> Cluster:
        try:
            import urllib3
            from kubernetes import client, config
        except ImportError:
            raise ClusterError("the kubernetes client is not installed: pip install 'contribflow[cluster]'") from None
        try:
            api_client = config.new_client_from_config(config_file=kubeconfig, context=context, persist_config=False)
            identity = _identity(config, kubeconfig, context)
        except config.ConfigException as exc:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                where = kubeconfig or "$KUBECONFIG or ~/.kube/config"
                reason = str(exc).rstrip(".")
                raise ClusterError(f"no usable kubeconfig at {where} ({reason}): create a cluster with "
                                   "`make kind-up` or point KUBECONFIG at one") from None
            api_client = client.ApiClient()
            identity = "the pod's service account"
        return cls(custom=client.CustomObjectsApi(api_client), apis=client.ApisApi(api_client),
                   namespace=namespace, host=api_client.configuration.host, identity=identity,
                   api_exception=client.exceptions.ApiException, transport_error=urllib3.exceptions.HTTPError)

    def _call(self, verb: str, plural: str, name: str | None, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args, _request_timeout=REQUEST_TIMEOUT)
        except self.transport_error as exc:
            reason = str(getattr(exc, "reason", "") or exc).splitlines()[0]
            raise ClusterError(f"cannot reach the Kubernetes API server at {self.host}: {reason}") from None
        except self.api_exception as exc:
            raise self._explain(exc, verb, plural, name) from None

    def _explain(self, exc: Any, verb: str, plural: str, name: str | None) -> ClusterError:
        status = getattr(exc, "status", None)
        message = _status_message(exc)
        what = f"{plural}.{GROUP}" + (f"/{name}" if name else "")
        if status == 403:
            user = re.search(r'User "([^"]+)"', message)
            who = f'user "{user.group(1)}"' if user else self.identity
            return ClusterError(f'access denied: {who} cannot {verb} {plural}.{GROUP} in namespace "{self.namespace}"'
                                f" on {self.host} ({self.identity}); it needs a Role allowing {verb} on {plural}")
        if status == 401:
            return ClusterError(f"not authenticated to {self.host} ({self.identity}): the kubeconfig's "
                                "credentials were refused; refresh them")
        if status == 404:
            missing = self.missing_argo_resources()
            if missing:
                return ClusterError(f"the Argo Workflows CRDs are not installed on {self.host} (no {GROUP}/{VERSION} "
                                    f"{', '.join(missing)}): install Argo Workflows first (`make kind-up` does)")
            if plural == TEMPLATES:
                return ClusterError(f'workflowtemplate/{name} is not installed in namespace "{self.namespace}" on '
                                    f"{self.host}: install the chart (helm upgrade --install contribflow "
                                    f"helm/contribflow -n {self.namespace}) or pass the right --namespace")
            return ClusterError(f'{what} not found in namespace "{self.namespace}" on {self.host}')
        return ClusterError(f"{verb} {what} in namespace \"{self.namespace}\" failed: HTTP {status} "
                            f"{getattr(exc, 'reason', '')}: {message}")

    def missing_argo_resources(self) -> list[str]:
        """Which of the Argo resources this client needs the API server does not serve (discovery)."""
        needed = [WORKFLOWS, TEMPLATES]
        try:
            groups = json.loads(self.apis.get_api_versions(_preload_content=False,
                                                           _request_timeout=REQUEST_TIMEOUT).data)
            versions = {v["groupVersion"] for g in groups.get("groups", []) if g["name"] == GROUP
                        for v in g.get("versions", [])}
            if f"{GROUP}/{VERSION}" not in versions:
                return needed
            resources = json.loads(self.custom.get_api_resources(GROUP, VERSION, _preload_content=False,
                                                                 _request_timeout=REQUEST_TIMEOUT).data)
        except self.api_exception as exc:
            if getattr(exc, "status", None) == 404:
                return needed
            raise
        served = {r["name"] for r in resources.get("resources", [])}
        return [r for r in needed if r not in served]

    def template(self, name: str = k8s.WORKFLOW_TEMPLATE) -> dict[str, Any]:
        if name not in self._templates:
            self._templates[name] = self._call("get", TEMPLATES, name, self.custom.get_namespaced_custom_object,
                                               GROUP, VERSION, self.namespace, TEMPLATES, name)
        return self._templates[name]

    def submit(self, run_date: dt.date, params: dict[str, str] | None = None,
               template: str = k8s.WORKFLOW_TEMPLATE) -> Run:
        params = dict(params or {})
        declared = [p["name"] for p in self.template(template).get("spec", {}).get("arguments", {})
                    .get("parameters", []) or []]
        unknown = sorted(set(params) - set(declared)) if declared else []
        if unknown:
            raise ClusterError(f"workflowtemplate/{template} has no parameter(s) {', '.join(unknown)}; "
                               f"it declares {', '.join(declared)}")
        created = self._call("create", WORKFLOWS, None, self.custom.create_namespaced_custom_object,
                             GROUP, VERSION, self.namespace, WORKFLOWS,
                             workflow_body(run_date.isoformat(), params, template))
        meta = created.get("metadata", {})
        return Run(meta.get("name", ""), self.namespace, meta.get("uid", ""), run_date.isoformat(),
                   created.get("status", {}).get("phase", ""))

    def get(self, name: str) -> dict[str, Any]:
        return self._call("get", WORKFLOWS, name, self.custom.get_namespaced_custom_object,
                          GROUP, VERSION, self.namespace, WORKFLOWS, name)

    def refresh(self, run: Run, report: Callable[[str], None], seen: dict[str, str]) -> Run:
        """Read the Workflow again; report its phase and each step's phase change once."""
        wf = self.get(run.name)
        status = wf.get("status") or {}
        run.uid = wf.get("metadata", {}).get("uid", run.uid)
        run.run_date = wf.get("metadata", {}).get("labels", {}).get(RUN_DATE_LABEL, run.run_date)
        for node in sorted((status.get("nodes") or {}).values(), key=lambda n: n.get("startedAt") or ""):
            if node.get("type") != "Pod":
                continue
            key, phase = f"{run.name}/{node.get('displayName')}", node.get("phase", "")
            if seen.get(key) != phase:
                seen[key] = phase
                outputs = {p["name"]: p.get("value") for p in (node.get("outputs") or {}).get("parameters") or []}
                shown = " ".join(f"{k}={outputs[k]}" for k in SHOWN_OUTPUTS if k in outputs)
                report(f"  {run.name}  {node.get('displayName')}: {phase}" + (f"  {shown}" if shown else ""))
        phase = status.get("phase") or "Pending"
        if phase != run.phase:
            run.phase, run.message = phase, status.get("message") or ""
            report(f"{run.name} ({run.run_date}): {phase}" + (f" — {run.message}" if run.message else ""))
        return run

    def wait(self, name: str, timeout_s: float, poll_s: float = 5.0,
             report: Callable[[str], None] = _stderr) -> Run:
        run = Run(name, self.namespace, "", "")
        return self._follow([run], deque(), 1, timeout_s, poll_s, report, {})[0]

    def backfill(self, dates: list[dt.date], parallel: int, params: dict[str, str] | None, timeout_s: float,
                 poll_s: float = 5.0, report: Callable[[str], None] = _stderr) -> list[Run]:
        """One Workflow per date, at most ``parallel`` unfinished at once: submit, watch, submit the next."""
        if parallel < 1:
            raise ClusterError(f"--parallel {parallel} must be at least 1")
        self.template()
        return self._follow([], deque(dates), parallel, timeout_s, poll_s, report, dict(params or {}))

    def _follow(self, running: list[Run], pending: deque, parallel: int, timeout_s: float, poll_s: float,
                report: Callable[[str], None], params: dict[str, str]) -> list[Run]:
        deadline = time.monotonic() + timeout_s
        done: list[Run] = []
        seen: dict[str, str] = {}
        while running or pending:
            while pending and len(running) < parallel:
                run = self.submit(pending.popleft(), params)
                report(f"submitted {run.name} for run-date {run.run_date} (uid {run.uid})")
                running.append(run)
            for run in list(running):
                if self.refresh(run, report, seen).finished:
                    running.remove(run)
                    done.append(run)
            if not running and not pending:
                break
            if time.monotonic() >= deadline:
                names = ", ".join(f"{r.name} ({r.phase or 'Pending'})" for r in running)
                left = f"; {len(pending)} date(s) not submitted" if pending else ""
                raise ClusterError(f"timed out after {timeout_s:g}s waiting for {names}{left}")
            if len(running) == parallel or not pending:
                time.sleep(poll_s)
        return sorted(done, key=lambda r: r.run_date)


def _identity(config: Any, kubeconfig: str | None, context: str | None) -> str:
    try:
        contexts, active = config.list_kube_config_contexts(kubeconfig)
    except Exception:  # the client already loaded it; this only names it for messages
        return "the kubeconfig's current user"
    chosen = next((c for c in contexts if c.get("name") == context), active) if context else active
    user = (chosen or {}).get("context", {}).get("user", "?")
    return f'kubeconfig user "{user}", context "{(chosen or {}).get("name", "?")}"'


# --- the CLI: `contribflow submit | backfill | wait` -------------------------------------------------


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", re.ASCII)
_DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", re.ASCII)
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII)


def _argument(check: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    """An argparse type: ``check(text)`` or a refusal naming what is accepted."""
    import argparse

    def parse(text: str) -> Any:
        try:
            return check(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:80]!r} is not {what}") from None

    parse.__name__ = what
    return parse


def _matched(pattern: re.Pattern[str]) -> Callable[[str], str]:
    def check(text: str) -> str:
        if not pattern.fullmatch(text):
            raise ValueError(text)
        return text
    return check


def _bounded(low: float, high: float, integer: bool = False) -> Callable[[str], Any]:
    def check(text: str) -> Any:
        if not _SECONDS.fullmatch(text) or (integer and "." in text) or not low <= float(text) <= high:
            raise ValueError(text)
        return int(text) if integer else float(text)
    return check


def _not_a_folder(text: str) -> str:
    """A path that is not a folder, FIFO or device (a missing kubeconfig is Cluster.connect's to name)."""
    import os.path

    if not text or (os.path.exists(text) and not os.path.isfile(text)):
        raise ValueError(text)
    return text


def add_commands(sub: Any, date_type: Callable[[str], dt.date]) -> None:
    """Register the cluster subcommands on the main parser's subparsers."""

    def common(p: Any) -> None:
        p.add_argument("--namespace", "-n", default=k8s.NAMESPACE, help=f"namespace (default {k8s.NAMESPACE})",
                       type=_argument(_matched(_DNS_LABEL), "a namespace (a DNS label: a-z, 0-9, '-', at most 63)"))
        p.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)",
                       type=_argument(_not_a_folder, "a kubeconfig file (a regular file, not a folder)"))
        p.add_argument("--context", default=None, help="kubeconfig context (default: the current one)")
        p.add_argument("--poll", type=_argument(_bounded(0.01, 600), "a number of seconds from 0.01 to 600"),
                       default=5.0, help="seconds between status reads, 0.01 to 600 (default 5)")

    def timeout(p: Any, default: float) -> None:
        p.add_argument("--timeout", type=_argument(_bounded(0, 7 * 86_400), "a number of seconds from 0 to 604800"),
                       default=default, help=f"seconds to wait, 0 to 604800 (default {default:g})")

    p = sub.add_parser("submit", help="create a Workflow from the WorkflowTemplate for a date (Kubernetes API)",
                       description=f"Create a Workflow from workflowtemplate/{k8s.WORKFLOW_TEMPLATE} with run-date "
                                   "set, through the Kubernetes API and your kubeconfig (no Argo token).")
    p.add_argument("--date", type=date_type, required=True, help="the run's logical date, YYYY-MM-DD")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="another template parameter, e.g. rows=5000 (repeatable)")
    p.add_argument("--wait", action="store_true", help="follow the run until it finishes; exit 1 unless it succeeded")
    p.add_argument("--output", "-o", choices=("text", "name", "json"), default="text",
                   help="what to print on stdout at the end: a sentence, the workflow name, or JSON")
    common(p)
    timeout(p, 3600)
    p.set_defaults(handler=cmd_submit)

    p = sub.add_parser("backfill", help="one Workflow per date of a range, at most --parallel at once",
                       description="Run the WorkflowTemplate for every date from --from to --to (inclusive): "
                                   "submit, watch, submit the next, never more than --parallel unfinished.")
    p.add_argument("--from", dest="date_from", metavar="DATE", type=date_type, required=True,
                   help="first date, YYYY-MM-DD")
    p.add_argument("--to", dest="date_to", metavar="DATE", type=date_type, required=True,
                   help="last date (included), YYYY-MM-DD")
    p.add_argument("--parallel", type=_argument(_bounded(1, 50, integer=True), "a whole number from 1 to 50"),
                   default=2, help="runs in flight at once, 1 to 50 (default 2)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="another template parameter")
    common(p)
    timeout(p, 6 * 3600)
    p.set_defaults(handler=cmd_backfill)

    p = sub.add_parser("wait", help="follow a Workflow until it finishes; exit 1 unless it succeeded")
    p.add_argument("run", metavar="RUN", help="the Workflow's name (as printed by submit)",
                   type=_argument(_matched(_DNS_NAME), "a Workflow name (a-z, 0-9, '-', '.', at most 253)"))
    common(p)
    timeout(p, 3600)
    p.set_defaults(handler=cmd_wait)


def _connect(args: Any) -> Cluster:
    return Cluster.connect(args.namespace, args.kubeconfig, args.context)


def cmd_submit(args: Any, settings: Any = None) -> int:
    params = parse_params(args.param)
    cluster = _connect(args)
    run = cluster.submit(args.date, params)
    _stderr(f"created workflow {run.name} (uid {run.uid}) from workflowtemplate/{k8s.WORKFLOW_TEMPLATE} "
            f"with run-date={run.run_date} in namespace {run.namespace}")
    if args.wait:
        run = cluster.wait(run.name, args.timeout, args.poll)
    if args.output == "json":
        print(json.dumps(run.as_dict(), sort_keys=True))
    elif args.output == "name":
        print(run.name)
    else:
        print(f"{run.name} {run.phase or 'submitted'}" + ("" if args.wait else
              f"; follow it with: contribflow wait {run.name} -n {run.namespace}"))
    return 0 if not args.wait or run.succeeded else 1


def cmd_backfill(args: Any, settings: Any = None) -> int:
    try:
        dates = date_range(args.date_from, args.date_to)  # the same range, and cap, as `contribflow dates`
    except ValueError as exc:
        raise ClusterError(str(exc)) from None
    params = parse_params(args.param)
    cluster = _connect(args)
    _stderr(f"backfill {dates[0]}..{dates[-1]}: {len(dates)} run(s), at most {args.parallel} at once, "
            f"namespace {cluster.namespace} on {cluster.host}")
    runs = cluster.backfill(dates, args.parallel, params, args.timeout, args.poll)
    for run in runs:
        print(f"{run.run_date}  {run.phase:<10} {run.name}")
    failed = [r.run_date for r in runs if not r.succeeded]
    if failed:
        _stderr(f"backfill: {len(failed)} of {len(runs)} run(s) did not succeed: {', '.join(failed)}")
        return 1
    return 0


def cmd_wait(args: Any, settings: Any = None) -> int:
    run = _connect(args).wait(args.run, args.timeout, args.poll)
    print(f"{run.name} {run.phase}" + (f": {run.message}" if run.message else ""))
    return 0 if run.succeeded else 1

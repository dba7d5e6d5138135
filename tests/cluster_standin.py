"""A stand-in Kubernetes API server on loopback for the cluster tests.

It serves what ``contribflow submit/backfill/wait`` use: discovery (``/api``, ``/apis``,
``/apis/argoproj.io/v1alpha1``), ``workflowtemplates`` GET and ``workflows`` POST/GET, and records
every request body. A created Workflow advances one phase per GET (Pending → Running → Succeeded, or
Failed for the dates listed in ``fail_dates``), filling ``status.nodes`` with the stages' output
parameters the way the Argo controller does, so the client is followed through a real HTTP exchange.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path

from helpers import JsonHandler

GROUP_VERSION = "argoproj.io/v1alpha1"
ARGO_RESOURCES = ("workflows", "workflowtemplates", "cronworkflows")
PHASES = ("Pending", "Running")
"""What a Workflow reports on its first GETs, before it finishes."""


@dataclass
class StandIn:
    namespace: str = "contribflow"
    templates: dict[str, dict] = field(default_factory=lambda: {"contribflow-daily": {}})
    crds_installed: bool = True
    forbid: dict[tuple[str, str], str] = field(default_factory=dict)
    """(verb, plural) → the user the API server names when it refuses."""
    fail_dates: set[str] = field(default_factory=set)
    requests: list[tuple[str, str]] = field(default_factory=list)
    created: list[dict] = field(default_factory=list)
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def in_flight(self) -> int:
        return sum(1 for wf in self.created if wf["status"].get("phase") not in ("Succeeded", "Failed"))

    def advance(self, wf: dict) -> None:
        gets = wf["_gets"] = wf["_gets"] + 1
        if gets <= len(PHASES):
            wf["status"] = {"phase": PHASES[gets - 1]}
            return
        run_date = next(p["value"] for p in wf["spec"]["arguments"]["parameters"] if p["name"] == "run-date")
        failed = run_date in self.fail_dates
        nodes = {}
        for i, (step, outputs) in enumerate((("init-db", {}), ("pick", {"file": "f.csv"}),
                                             ("ingest", {"rows_loaded": "990", "rows_rejected": "10"}),
                                             ("dbt-test", {"tests_failed": "0"}))):
            phase = "Failed" if failed and step == "ingest" else "Succeeded"
            nodes[f"{wf['metadata']['name']}-{i}"] = {
                "displayName": step, "type": "Pod", "phase": phase,
                "outputs": {"parameters": [{"name": k, "value": v} for k, v in outputs.items()]},
            }
        wf["status"] = {"phase": "Failed" if failed else "Succeeded", "nodes": nodes,
                        "message": "child 'ingest' failed" if failed else ""}


def _status(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code, **({"details": details} if details else {})}


def _handler(state: StandIn):
    ns_path = re.compile(r"^/apis/argoproj\.io/v1alpha1/namespaces/([^/]+)/([a-z]+)(?:/([^/?]+))?$")

    class Handler(JsonHandler):
        def _forbidden(self, verb: str, plural: str, ns: str) -> bool:
            user = state.forbid.get((verb, plural))
            if user is None:
                return False
            self._send(403, _status(403, "Forbidden",
                                    f'{plural}.argoproj.io is forbidden: User "{user}" cannot {verb} resource '
                                    f'"{plural}" in API group "argoproj.io" in the namespace "{ns}"',
                                    {"group": "argoproj.io", "kind": plural}))
            return True

        def _not_found_resource(self) -> None:
            self._send(404, _status(404, "NotFound", "the server could not find the requested resource"))

        def do_GET(self) -> None:
            path = self.path.split("?")[0].rstrip("/")
            with state.lock:
                state.requests.append(("GET", path))
                if path == "/api":
                    return self._send(200, {"kind": "APIVersions", "versions": ["v1"],
                                            "serverAddressByClientCIDRs": []})
                if path == "/apis":
                    groups = [{"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
                               "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}]
                    if state.crds_installed:
                        gv = {"groupVersion": GROUP_VERSION, "version": "v1alpha1"}
                        groups.append({"name": "argoproj.io", "versions": [gv], "preferredVersion": gv})
                    return self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
                if path == f"/apis/{GROUP_VERSION}":
                    if not state.crds_installed:
                        return self._not_found_resource()
                    return self._send(200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GROUP_VERSION,
                                            "resources": [{"name": r, "singularName": r[:-1], "namespaced": True,
                                                           "kind": r[:-1].capitalize(), "verbs": ["create", "get", "list"]}
                                                          for r in ARGO_RESOURCES]})
                m = ns_path.match(path)
                if not m or not state.crds_installed:
                    return self._not_found_resource()
                ns, plural, name = m.groups()
                if self._forbidden("get", plural, ns):
                    return None
                if plural == "workflowtemplates" and name:
                    if ns != state.namespace or name not in state.templates:
                        return self._send(404, _status(404, "NotFound", f'workflowtemplates.argoproj.io "{name}" not found',
                                                       {"name": name, "group": "argoproj.io", "kind": "workflowtemplates"}))
                    spec = state.templates[name]
                    return self._send(200, {"apiVersion": GROUP_VERSION, "kind": "WorkflowTemplate",
                                            "metadata": {"name": name, "namespace": ns}, "spec": spec})
                if plural == "workflows" and name:
                    wf = next((w for w in state.created if w["metadata"]["name"] == name), None)
                    if wf is None:
                        return self._send(404, _status(404, "NotFound", f'workflows.argoproj.io "{name}" not found',
                                                       {"name": name, "group": "argoproj.io", "kind": "workflows"}))
                    state.advance(wf)
                    return self._send(200, {k: v for k, v in wf.items() if not k.startswith("_")})
                return self._not_found_resource()

        def do_POST(self) -> None:
            path = self.path.split("?")[0].rstrip("/")
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            with state.lock:
                state.requests.append(("POST", path))
                m = ns_path.match(path)
                if not m or not state.crds_installed or m.group(2) != "workflows" or m.group(3):
                    return self._not_found_resource()
                ns = m.group(1)
                if self._forbidden("create", "workflows", ns):
                    return None
                wf = json.loads(json.dumps(body))
                wf["metadata"]["name"] = wf["metadata"]["generateName"] + uuid.uuid4().hex[:5]
                wf["metadata"]["namespace"] = ns
                wf["metadata"]["uid"] = str(uuid.uuid4())
                wf["status"] = {}
                wf["_gets"] = 0
                wf["_body"] = body
                state.created.append(wf)
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
                return self._send(201, {k: v for k, v in wf.items() if not k.startswith("_")})

    return Handler


class StandInServer:
    """``with StandInServer(state) as server:`` serves on 127.0.0.1 on a free port, in a thread."""

    def __init__(self, state: StandIn):
        self.state = state
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> StandInServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def write_kubeconfig(path: Path, server_url: str, user: str = "standin-user", context: str = "standin") -> Path:
    """A kubeconfig whose current context points at the stand-in (plain http, a dummy token)."""
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": "standin", "cluster": {"server": server_url}}],
        "users": [{"name": user, "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": context, "context": {"cluster": "standin", "user": user}}],
    }))
    return path

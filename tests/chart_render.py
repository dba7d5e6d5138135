"""Render the Helm chart for the tests: Helm 3 from .tools/bin (installed by `make tools`, or here
when missing), and a Pod Security "restricted" checker for the pods the chart renders.

The checker implements the fields of the Kubernetes Pod Security Standards, restricted profile
(baseline included): host namespaces and ports, privileged, capabilities, hostPath and the allowed
volume types, /proc mount, sysctls, AppArmor/SELinux, privilege escalation, non-root, seccomp.
"""

from __future__ import annotations

import base64
import functools
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from helpers import JsonHandler

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "contribflow"
HELM = ROOT / ".tools" / "bin" / "helm"
RELEASE = "contribflow"
NAMESPACE = "contribflow"
SCENARIOS = ["defaults", *sorted(p.stem for p in (CHART / "ci").glob("*.yaml"))]

RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                           "persistentVolumeClaim", "projected", "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}


@functools.lru_cache(maxsize=1)
def helm() -> str:
    """The Helm 3 binary, installed into .tools/bin the way `make tools` does when it is missing."""
    sys.path.insert(0, str(ROOT / "helm" / "tools"))
    import install_helm

    if install_helm.helm_major(str(HELM)) != "v3":
        install_helm.install(HELM.parent)
    return str(HELM)


def run_helm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([helm(), *args], capture_output=True, text=True, env=env)


def template_text(*args: str, release: str = RELEASE, env: dict[str, str] | None = None) -> str:
    result = run_helm("template", release, str(CHART), "--namespace", NAMESPACE, *args, env=env)
    if result.returncode != 0:
        raise AssertionError(f"helm template {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def scenario_args(scenario: str) -> list[str]:
    return [] if scenario == "defaults" else ["--values", str(CHART / "ci" / f"{scenario}.yaml")]


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


@functools.cache
def scenario_text(scenario: str) -> str:
    return template_text(*scenario_args(scenario))


def scenario_docs(scenario: str) -> list[dict[str, Any]]:
    return docs(scenario_text(scenario))


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


# --- pods ---------------------------------------------------------------------------------------


def pods(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    """(where, pod-level spec, containers) for every pod the objects make, Argo's included: an Argo
    template's pod takes the workflow's securityContext and volumes, and its own container; an Argo
    Events EventSource's or Sensor's pod is its spec.template (Argo Events merges the container in)."""
    for obj in objects:
        label = f"{obj['kind']}/{obj['metadata']['name']}"
        kind = obj["kind"]
        if kind == "Pod":
            spec = obj["spec"]
            yield label, spec, [*spec.get("initContainers", []), *spec["containers"]]
        elif kind in ("StatefulSet", "Deployment", "DaemonSet", "Job"):
            spec = obj["spec"]["template"]["spec"]
            yield label, spec, [*spec.get("initContainers", []), *spec["containers"]]
        elif kind in ("WorkflowTemplate", "CronWorkflow"):
            wf = obj["spec"] if kind == "WorkflowTemplate" else obj["spec"]["workflowSpec"]
            for template in wf.get("templates", []):
                for key in ("container", "script"):
                    if key in template:
                        pod = {"securityContext": wf.get("securityContext", {}), "volumes": wf.get("volumes", []),
                               "hostNetwork": wf.get("hostNetwork", False)}
                        yield f"{label} template {template['name']}", pod, [template[key]]
        elif kind in ("EventSource", "Sensor"):  # Argo Events: spec.template is the pod, its container merged in
            template = obj["spec"].get("template") or {}
            pod = {"securityContext": template.get("securityContext", {}), "volumes": template.get("volumes", [])}
            yield label, pod, [{"name": kind.lower(), **(template.get("container") or {})}]


def restricted_violations(where: str, pod: dict[str, Any], containers: list[dict[str, Any]]) -> list[str]:
    """Every way the pod breaks the Pod Security "restricted" profile; [] when it meets it."""
    found: list[str] = []
    psc = pod.get("securityContext") or {}
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(host):
            found.append(f"{where}: {host}")
    for volume in pod.get("volumes") or []:
        types = set(volume) - {"name"}
        if not types <= RESTRICTED_VOLUME_TYPES:
            found.append(f"{where}: volume {volume['name']} of type {sorted(types - RESTRICTED_VOLUME_TYPES)}")
    for sysctl in psc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            found.append(f"{where}: unsafe sysctl {sysctl.get('name')}")
    if (psc.get("seLinuxOptions") or {}).get("type") not in (None, "", "container_t", "container_init_t",
                                                               "container_kvm_t", "container_engine_t"):
        found.append(f"{where}: SELinux type")
    if psc.get("runAsUser") == 0:
        found.append(f"{where}: pod runAsUser 0")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    for c in containers:
        name = f"{where} container {c.get('name', '?')}"
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            found.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation not false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            found.append(f"{name}: capabilities do not drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds capabilities {caps.get('add')}")
        if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            found.append(f"{name}: runAsNonRoot not true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            found.append(f"{name}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile {seccomp!r}")
        if sc.get("procMount") not in (None, "Default"):
            found.append(f"{name}: procMount {sc.get('procMount')}")
        if (sc.get("appArmorProfile") or {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
            found.append(f"{name}: AppArmor profile")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                found.append(f"{name}: hostPort {port['hostPort']}")
    return found


# --- a stand-in Kubernetes API server (loopback) for `helm template --dry-run=server` -----------


@contextmanager
def api_server_with_secrets(secrets: dict[str, dict[str, str]], namespace: str, tmp: Path) -> Iterator[Path]:
    """Serve discovery and GET of the given Secrets (name → plain data), 404 for anything else; yield
    a kubeconfig that points at it. Enough for Helm's `lookup` of a Secret."""
    requests: list[str] = []

    class Handler(JsonHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            requests.append(path)
            prefix = f"/api/v1/namespaces/{namespace}/secrets/"
            if path == "/version":
                return self._send(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0"})
            if path == "/api":
                return self._send(200, {"kind": "APIVersions", "versions": ["v1"]})
            if path == "/apis":
                return self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
            if path == "/api/v1":
                return self._send(200, {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                    {"name": "secrets", "singularName": "secret", "namespaced": True, "kind": "Secret",
                     "verbs": ["get", "list"]}]})
            if path.startswith(prefix) and path[len(prefix):] in secrets:
                name = path[len(prefix):]
                return self._send(200, {"apiVersion": "v1", "kind": "Secret",
                                        "metadata": {"name": name, "namespace": namespace},
                                        "data": {k: base64.b64encode(v.encode()).decode()
                                                 for k, v in secrets[name].items()}})
            self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                             "code": 404})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "standin",
        "clusters": [{"name": "standin", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
        "users": [{"name": "standin", "user": {"token": "standin"}}],
        "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "standin",
                                                      "namespace": namespace}}],
    }))
    try:
        yield kubeconfig
    finally:
        server.shutdown()
        server.server_close()

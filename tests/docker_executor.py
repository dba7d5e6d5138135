"""Run Kubernetes container specs with a Docker engine: the executor of tests/argo_replay.py for the
rendered workflows, and the runner of the chart's own StatefulSet container (PostgreSQL).

Every key of a container spec, of its ``securityContext``, of its ``resources`` and of the pod's
``securityContext`` is either mapped to a Docker flag or refused (``ReplayError``), so a manifest
cannot grow a field that nothing here proves:

- ``image`` / ``imagePullPolicy`` → the image, ``--pull missing|always|never``;
- ``command`` / ``args`` → ``--entrypoint`` (first word) and the arguments;
- ``env`` → ``-e NAME`` with the value in the docker CLI's environment (never on a command line);
- ``runAsUser``/``runAsGroup`` → ``--user``; ``runAsNonRoot`` → uid 0 refused; ``fsGroup`` and
  ``supplementalGroups`` → ``--group-add`` and the volumes' group ownership;
  ``readOnlyRootFilesystem`` → ``--read-only``; ``allowPrivilegeEscalation: false`` →
  ``no-new-privileges``; ``capabilities`` → ``--cap-drop``/``--cap-add``; ``privileged: true`` is
  refused; ``seccompProfile: RuntimeDefault`` → Docker's default profile (checked to be active);
- ``resources.limits`` → ``--cpus``/``--memory``; ``resources.requests`` → ``--cpu-shares``/
  ``--memory-reservation``;
- ``volumeMounts`` → bind mounts of host folders (``readOnly`` → read-only), owned ``root:fsGroup``
  with the group's rights, as the kubelet leaves an emptyDir, a PersistentVolumeClaim, a ConfigMap or
  a Secret volume, or a projected volume of Secrets' items (``defaultMode`` applied to their files);
- ``ports`` → ``--expose``; an exec ``livenessProbe`` → Docker's health check; exec
  ``startupProbe``/``readinessProbe`` → polled with ``docker exec`` before the service is used.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

from argo_replay import Attempt, Pod, ReplayError

CONTAINER_KEYS = {"name", "image", "imagePullPolicy", "command", "args", "env", "envFrom", "volumeMounts",
                  "resources", "securityContext", "ports", "startupProbe", "readinessProbe", "livenessProbe",
                  "workingDir"}
CONTAINER_SECURITY_KEYS = {"runAsUser", "runAsGroup", "runAsNonRoot", "privileged", "allowPrivilegeEscalation",
                           "readOnlyRootFilesystem", "capabilities", "seccompProfile"}
POD_SECURITY_KEYS = {"runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "fsGroupChangePolicy",
                     "supplementalGroups", "seccompProfile"}
RESOURCE_KEYS = {"cpu", "memory"}
MOUNT_KEYS = {"name", "mountPath", "readOnly"}
PULL_POLICY = {"IfNotPresent": "missing", "Always": "always", "Never": "never"}
MEMORY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def cpu_quantity(value: Any) -> float:
    text = str(value)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def memory_bytes(value: Any) -> int:
    text = str(value)
    for unit, factor in sorted(MEMORY_UNITS.items(), key=lambda kv: -len(kv[0])):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def _unknown(where: str, what: str, keys: set[str], known: set[str]) -> None:
    extra = sorted(keys - known)
    if extra:
        raise ReplayError(f"{where}: {what} {extra} not mapped to Docker by tests/docker_executor.py")


class DockerExecutor:
    """Runs pods as containers on one user-defined bridge network."""

    def __init__(self, docker: str, network: str, *, labels: dict[str, str] | None = None) -> None:
        self.docker = docker
        self.network = network
        self.labels = dict(labels or {})
        self.runs: list[tuple[str, str, Attempt]] = []
        """(pod name, image, attempt) of every container run, in order."""
        self.mounts: dict[str, dict[str, Path]] = {}
        """pod name → mountPath → the host folder standing in for that volume (read after the run)."""

    # --- the mapping -------------------------------------------------------------------------------

    def flags(self, where: str, container: dict[str, Any], pod_spec: dict[str, Any],
              volumes: dict[str, tuple[dict[str, Any], Path]], secret_files: dict[str, dict[str, bytes]] | None = None,
              ) -> list[str]:
        """The ``docker run`` flags of a container spec (image and arguments excluded); prepares the
        volumes' host folders with the ownership the kubelet would give them."""
        _unknown(where, "container keys", set(container), CONTAINER_KEYS)
        psc = pod_spec.get("securityContext") or {}
        csc = container.get("securityContext") or {}
        _unknown(where, "pod securityContext keys", set(psc), POD_SECURITY_KEYS)
        _unknown(where, "container securityContext keys", set(csc), CONTAINER_SECURITY_KEYS)
        flags: list[str] = []

        if "imagePullPolicy" in container:
            if container["imagePullPolicy"] not in PULL_POLICY:
                raise ReplayError(f"{where}: imagePullPolicy {container['imagePullPolicy']!r}")
            flags.append(f"--pull={PULL_POLICY[container['imagePullPolicy']]}")

        uid = csc.get("runAsUser", psc.get("runAsUser"))
        gid = csc.get("runAsGroup", psc.get("runAsGroup"))
        if uid is None:
            raise ReplayError(f"{where}: no runAsUser: the image's own user would be used unchecked")
        if csc.get("runAsNonRoot", psc.get("runAsNonRoot")) and int(uid) == 0:
            raise ReplayError(f"{where}: runAsNonRoot with runAsUser 0: the kubelet refuses to start it")
        flags.append(f"--user={int(uid)}" + (f":{int(gid)}" if gid is not None else ""))
        fs_group = psc.get("fsGroup")
        groups = ([fs_group] if fs_group is not None else []) + list(psc.get("supplementalGroups") or [])
        flags += [f"--group-add={int(g)}" for g in groups]
        if psc.get("fsGroupChangePolicy") not in (None, "OnRootMismatch", "Always"):
            raise ReplayError(f"{where}: fsGroupChangePolicy {psc['fsGroupChangePolicy']!r}")

        if csc.get("privileged"):
            raise ReplayError(f"{where}: privileged containers are not run")
        if csc.get("allowPrivilegeEscalation") is False:
            flags.append("--security-opt=no-new-privileges")
        if csc.get("readOnlyRootFilesystem"):
            flags.append("--read-only")
        caps = csc.get("capabilities") or {}
        _unknown(where, "capabilities keys", set(caps), {"drop", "add"})
        flags += [f"--cap-drop={c}" for c in caps.get("drop") or []]
        flags += [f"--cap-add={c}" for c in caps.get("add") or []]
        seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {"type": "RuntimeDefault"})
        if seccomp.get("type") == "Unconfined":
            flags.append("--security-opt=seccomp=unconfined")
        elif seccomp.get("type") != "RuntimeDefault" or set(seccomp) != {"type"}:
            raise ReplayError(f"{where}: seccompProfile {seccomp!r}")

        resources = container.get("resources") or {}
        _unknown(where, "resources keys", set(resources), {"limits", "requests"})
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        _unknown(where, "resource limits", set(limits), RESOURCE_KEYS)
        _unknown(where, "resource requests", set(requests), RESOURCE_KEYS)
        if "cpu" in limits:
            flags.append(f"--cpus={cpu_quantity(limits['cpu']):g}")
        if "memory" in limits:
            flags += [f"--memory={memory_bytes(limits['memory'])}", f"--memory-swap={memory_bytes(limits['memory'])}"]
        if "cpu" in requests:
            flags.append(f"--cpu-shares={max(2, round(cpu_quantity(requests['cpu']) * 1024))}")
        if "memory" in requests:
            flags.append(f"--memory-reservation={memory_bytes(requests['memory'])}")

        if container.get("workingDir"):
            flags.append(f"--workdir={container['workingDir']}")
        for port in container.get("ports") or []:
            _unknown(where, "port keys", set(port), {"name", "containerPort", "protocol"})
            flags.append(f"--expose={int(port['containerPort'])}/{port.get('protocol', 'TCP').lower()}")
        if "livenessProbe" in container:
            probe = container["livenessProbe"]
            flags += [f"--health-cmd={self._probe_shell(where, probe)}",
                      f"--health-interval={int(probe.get('periodSeconds', 10))}s",
                      f"--health-timeout={int(probe.get('timeoutSeconds', 1))}s",
                      f"--health-retries={int(probe.get('failureThreshold', 3))}"]

        for mount in container.get("volumeMounts") or []:
            _unknown(where, f"volumeMount {mount.get('name')} keys", set(mount), MOUNT_KEYS)
            path = mount["mountPath"].rstrip("/")
            volume, host = volumes[path]
            self._prepare_volume(where, volume, host, fs_group, secret_files or {})
            flags.append(f"--mount=type=bind,source={host},target={path}" + (",readonly" if mount.get("readOnly") else ""))
        return flags

    @staticmethod
    def _probe_shell(where: str, probe: dict[str, Any]) -> str:
        _unknown(where, "probe keys", set(probe),
                 {"exec", "periodSeconds", "timeoutSeconds", "failureThreshold", "initialDelaySeconds",
                  "successThreshold"})
        command = probe["exec"]["command"]
        if command[:2] == ["sh", "-c"] and len(command) == 3:
            return command[2]
        return shlex.join(command)

    @staticmethod
    def _prepare_volume(where: str, volume: dict[str, Any], host: Path, fs_group: int | None,
                        secret_files: dict[str, dict[str, bytes]]) -> None:
        """The host folder as the kubelet leaves the volume: group fsGroup with its rights (setgid
        folders), the files of a ConfigMap/Secret volume written with ``defaultMode``."""
        kinds = set(volume) - {"name"}
        gid = int(fs_group) if fs_group is not None else 0
        host.mkdir(parents=True, exist_ok=True)
        if kinds <= {"emptyDir", "persistentVolumeClaim"} and len(kinds) == 1:
            # A disk-backed emptyDir's sizeLimit is enforced by the kubelet's eviction, which nothing
            # here imitates (README: still offline); any other field is refused.
            _unknown(where, f"volume {volume['name']} keys", set(volume.get("emptyDir") or {}), {"sizeLimit"})
            _unknown(where, f"volume {volume['name']} keys", set(volume.get("persistentVolumeClaim") or {}),
                     {"claimName"})
            os.chown(host, 0, gid)
            os.chmod(host, 0o2770 if fs_group is not None else 0o777)
            return
        if kinds in ({"configMap"}, {"secret"}):
            source = volume.get("configMap") or volume["secret"]
            _unknown(where, f"volume {volume['name']} keys", set(source), {"name", "secretName", "defaultMode", "optional"})
            name = source.get("name") or source["secretName"]
            if name not in secret_files:
                raise ReplayError(f"{where}: volume {volume['name']}: {sorted(kinds)[0]} {name!r} does not exist")
            mode = int(source.get("defaultMode", 0o644))
            for key, data in secret_files[name].items():
                file = host / key
                file.write_bytes(data)
                os.chown(file, 0, gid)
                os.chmod(file, mode)
            os.chown(host, 0, gid)
            os.chmod(host, 0o2755 if fs_group is not None else 0o755)
            return
        if kinds == {"projected"}:
            # The chart's `people` passwords: one file per item of each Secret source, at its path.
            projected = volume["projected"]
            _unknown(where, f"volume {volume['name']} keys", set(projected), {"sources", "defaultMode"})
            mode = int(projected.get("defaultMode", 0o644))
            for source in projected.get("sources") or []:
                _unknown(where, f"volume {volume['name']} source", set(source), {"secret"})
                secret = source["secret"]
                _unknown(where, f"volume {volume['name']} secret keys", set(secret), {"name", "items"})
                if secret["name"] not in secret_files:
                    raise ReplayError(f"{where}: volume {volume['name']}: secret {secret['name']!r} does not exist")
                for item in secret.get("items") or [{"key": k, "path": k} for k in secret_files[secret["name"]]]:
                    _unknown(where, f"volume {volume['name']} item keys", set(item), {"key", "path"})
                    if item["key"] not in secret_files[secret["name"]]:
                        raise ReplayError(f"{where}: volume {volume['name']}: secret {secret['name']!r} "
                                          f"has no key {item['key']!r}")
                    file = host / item["path"]
                    if file.resolve().parent != host.resolve():
                        raise ReplayError(f"{where}: volume {volume['name']}: item path {item['path']!r} is not a file name")
                    file.write_bytes(secret_files[secret["name"]][item["key"]])
                    os.chown(file, 0, gid)
                    os.chmod(file, mode)
            os.chown(host, 0, gid)
            os.chmod(host, 0o2755 if fs_group is not None else 0o755)
            return
        raise ReplayError(f"{where}: volume {volume['name']} of type {sorted(kinds)} is not mapped")

    # --- running --------------------------------------------------------------------------------------

    def _docker_env(self, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        """``-e NAME`` flags, and the docker CLI's environment carrying the values."""
        cli_env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG")}
        cli_env.update(env)
        return [f"--env={name}" for name in env], cli_env

    def command(self, container: dict[str, Any], argv: list[str]) -> list[str]:
        """``--entrypoint`` and the arguments: Kubernetes' command replaces the entrypoint, args CMD."""
        if container.get("command"):
            return [f"--entrypoint={argv[0]}", container["image"], *argv[1:]]
        return [container["image"], *argv]

    def run(self, pod: Pod, timeout_s: int) -> Attempt:
        """One attempt of ``pod``: ``docker run`` (not ``--rm``: the engine's record of when the
        process started and ended is read before the container is removed), then ``docker rm``.
        ``wall_s`` is the run and the removal (as ``--rm`` would have it), ``container_s`` the
        process's own lifetime by the engine's clock."""
        flags = self.flags(f"pod {pod.name}", pod.container, pod.pod_spec, pod.volumes)
        env_flags, cli_env = self._docker_env(pod.env)
        name = f"{pod.name}-{len(self.runs)}"
        argv = [self.docker, "run", f"--name={name}", f"--hostname={pod.name[:63]}",
                f"--network={self.network}", *[f"--label={k}={v}" for k, v in self.labels.items()],
                *flags, *env_flags, *self.command(pod.container, pod.argv)]
        self.mounts[pod.name] = {path: host for path, (_volume, host) in pod.volumes.items()}
        started = time.monotonic()
        try:
            done = subprocess.run(argv, env=cli_env, capture_output=True, text=True, timeout=timeout_s)
            ran_s = time.monotonic() - started
            attempt = Attempt(done.returncode, done.stdout, done.stderr, ran_s, self._lifetime(name))
        except subprocess.TimeoutExpired as e:
            ran_s = time.monotonic() - started
            attempt = Attempt(124, str(e.stdout or ""), f"timed out after {timeout_s}s", ran_s)
        removing = time.monotonic()
        subprocess.run([self.docker, "rm", "-f", "-v", name], capture_output=True)
        attempt.wall_s += time.monotonic() - removing
        if attempt.exit_code == 125:  # the engine refused to create or start it: the manifest's fault
            raise ReplayError(f"pod {pod.name}: docker run refused the container: {attempt.stderr.strip()}")
        self.runs.append((pod.name, pod.container["image"], attempt))
        return attempt

    def _lifetime(self, name: str) -> float | None:
        """Seconds from the container's start to its exit, as the engine recorded them; None when the
        engine has no such record (never started)."""
        done = subprocess.run([self.docker, "inspect", "-f", "{{.State.StartedAt}} {{.State.FinishedAt}}", name],
                              capture_output=True, text=True)
        if done.returncode != 0 or len(done.stdout.split()) != 2:
            return None
        started, finished = (engine_time(t) for t in done.stdout.split())
        if started is None or finished is None or finished < started:
            return None
        return (finished - started).total_seconds()

    def start_service(self, name: str, container: dict[str, Any], pod_spec: dict[str, Any],
                      volumes: dict[str, tuple[dict[str, Any], Path]], files: dict[str, dict[str, bytes]],
                      aliases: list[str]) -> float:
        """Start a long-running container (a StatefulSet's), wait for its startup then readiness
        probes; returns the seconds until ready."""
        where = f"container {name}"
        flags = self.flags(where, container, pod_spec, volumes, files)
        env = {}
        for var in container.get("env") or []:
            if set(var) != {"name", "value"}:
                raise ReplayError(f"{where}: env {var.get('name')} is not a plain value")
            env[var["name"]] = str(var["value"])
        if container.get("envFrom"):
            raise ReplayError(f"{where}: envFrom is not mapped for a service container")
        env_flags, cli_env = self._docker_env(env)
        argv = [self.docker, "run", "--detach", f"--name={name}", f"--hostname={name}", f"--network={self.network}",
                *[f"--network-alias={a}" for a in aliases], *[f"--label={k}={v}" for k, v in self.labels.items()],
                *flags, *env_flags, *self.command(container, [*container.get("command", []), *container.get("args", [])])]
        started = time.monotonic()
        subprocess.run(argv, env=cli_env, check=True, capture_output=True, text=True)
        for kind in ("startupProbe", "readinessProbe"):
            if kind in container:
                self._wait_probe(name, where, kind, container[kind])
        return time.monotonic() - started

    def _wait_probe(self, name: str, where: str, kind: str, probe: dict[str, Any]) -> None:
        shell = self._probe_shell(where, probe)
        deadline = time.monotonic() + int(probe.get("periodSeconds", 10)) * int(probe.get("failureThreshold", 3))
        while True:
            done = subprocess.run([self.docker, "exec", name, "sh", "-c", shell], capture_output=True, text=True,
                                  timeout=int(probe.get("timeoutSeconds", 1)) + 30)
            if done.returncode == 0:
                return
            state = subprocess.run([self.docker, "inspect", "-f", "{{.State.Running}}", name],
                                   capture_output=True, text=True).stdout.strip()
            if state != "true" or time.monotonic() > deadline:
                logs = subprocess.run([self.docker, "logs", "--tail", "40", name], capture_output=True, text=True)
                raise ReplayError(f"{where}: {kind} never passed (running={state}):\n{logs.stdout}{logs.stderr}")
            time.sleep(0.5)


def engine_time(text: str) -> dt.datetime | None:
    """A Docker engine timestamp (RFC 3339, nanoseconds, ``Z``) as an aware datetime (microseconds);
    None for the engine's "never" (year 1)."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text.strip())
    if not match or match.group(1).startswith("0001-"):
        return None
    when = dt.datetime.fromisoformat(match.group(1) + ("+00:00" if match.group(3) == "Z" else match.group(3)))
    return when + dt.timedelta(microseconds=int((match.group(2) or "0")[:6].ljust(6, "0")))


def secret_files(objects: list[dict[str, Any]]) -> dict[str, dict[str, bytes]]:
    """name → key → bytes of every Secret and ConfigMap among rendered objects (the files of their volumes)."""
    files: dict[str, dict[str, bytes]] = {}
    for obj in objects:
        if obj["kind"] == "Secret":
            files[obj["metadata"]["name"]] = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
            files[obj["metadata"]["name"]].update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
        elif obj["kind"] == "ConfigMap":
            files[obj["metadata"]["name"]] = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
    return files

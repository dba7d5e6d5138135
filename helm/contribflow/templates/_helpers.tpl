{{/*
Helpers shared by every template. Names follow `helm create`: with the release name `contribflow`
every name below equals the one in contribflow/cluster/k8s.py (contribflow-db, contribflow-settings, …).
*/}}

{{/*
contribflow.name: the chart name (or nameOverride), for the app.kubernetes.io/name label.
*/}}
{{- define "contribflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
contribflow.fullname: the prefix of every object name, `<release>-<chart>`, or the release name
alone when it already contains the chart name (release `contribflow` → `contribflow`). Truncated
to 52 characters so that the longest suffix added below (`-postgresql`) still fits in 63.
*/}}
{{- define "contribflow.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
contribflow.chart: chart name and version, for the helm.sh/chart label.
*/}}
{{- define "contribflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
contribflow.labels: the labels of every object (app.kubernetes.io/* plus commonLabels).
*/}}
{{- define "contribflow.labels" -}}
helm.sh/chart: {{ include "contribflow.chart" . }}
{{ include "contribflow.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: contribflow
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
contribflow.selectorLabels: the labels that identify the release's objects (immutable selectors).
*/}}
{{- define "contribflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "contribflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
contribflow.componentLabels: labels plus app.kubernetes.io/component.
Call with (dict "context" $ "component" "postgresql").
*/}}
{{- define "contribflow.componentLabels" -}}
{{ include "contribflow.labels" .context }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
contribflow.postgresql.selectorLabels: selects the PostgreSQL pods (StatefulSet, Service,
NetworkPolicy).
*/}}
{{- define "contribflow.postgresql.selectorLabels" -}}
{{ include "contribflow.selectorLabels" . }}
app.kubernetes.io/component: postgresql
{{- end }}

{{/*
contribflow.postgresql.fullname: name of the StatefulSet and of its Service.
*/}}
{{- define "contribflow.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "contribflow.fullname" .) }}
{{- end }}

{{/*
contribflow.db.host / port / database / sslmode: where the steps connect, the bundled PostgreSQL
or externalDatabase. An external database without a host is refused with a clear message.
*/}}
{{- define "contribflow.db.host" -}}
{{- if .Values.postgresql.enabled }}
{{- printf "%s.%s.svc" (include "contribflow.postgresql.fullname" .) .Release.Namespace }}
{{- else }}
{{- required "externalDatabase.host is required when postgresql.enabled=false" .Values.externalDatabase.host }}
{{- end }}
{{- end }}

{{- define "contribflow.db.port" -}}
{{- if .Values.postgresql.enabled }}{{ .Values.postgresql.port }}{{ else }}{{ .Values.externalDatabase.port }}{{ end }}
{{- end }}

{{- define "contribflow.db.database" -}}
{{- if .Values.postgresql.enabled }}{{ .Values.postgresql.database }}{{ else }}{{ .Values.externalDatabase.database }}{{ end }}
{{- end }}

{{- define "contribflow.db.sslmode" -}}
{{- if .Values.postgresql.enabled }}disable{{ else }}{{ .Values.externalDatabase.sslmode }}{{ end }}
{{- end }}

{{/*
contribflow.dbSecretName: the Secret with the database credentials: auth.existingSecret, or the
generated `<fullname>-db`. An external database needs an existing Secret: its users must already
exist with those passwords, which a generated Secret could not know.
*/}}
{{- define "contribflow.dbSecretName" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.existingSecret }}
{{- else if not .Values.postgresql.enabled }}
{{- fail "auth.existingSecret is required when postgresql.enabled=false: the external database's users and passwords must exist before the pipeline runs" }}
{{- else }}
{{- printf "%s-db" (include "contribflow.fullname" .) }}
{{- end }}
{{- end }}

{{/*
contribflow.pseudonymSecretName: pseudonym.existingSecret or the generated `<fullname>-pseudonym`.
*/}}
{{- define "contribflow.pseudonymSecretName" -}}
{{- default (printf "%s-pseudonym" (include "contribflow.fullname" .)) .Values.pseudonym.existingSecret }}
{{- end }}

{{/*
contribflow.settingsName: the ConfigMap of non-secret settings.
*/}}
{{- define "contribflow.settingsName" -}}
{{- printf "%s-settings" (include "contribflow.fullname" .) }}
{{- end }}

{{/*
contribflow.landingClaimName: landing.existingClaim or the chart's `<fullname>-landing`.
*/}}
{{- define "contribflow.landingClaimName" -}}
{{- default (printf "%s-landing" (include "contribflow.fullname" .)) .Values.landing.existingClaim }}
{{- end }}

{{/*
contribflow.serviceAccountName: the ServiceAccount of the workflow pods.
*/}}
{{- define "contribflow.serviceAccountName" -}}
{{- default (printf "%s-workflow" (include "contribflow.fullname" .)) .Values.serviceAccount.name }}
{{- end }}

{{/*
contribflow.stageImage: `<registry>/<repository>:<tag>` of a stage image from the image map.
Call with (dict "context" $ "image" "ingest"); an image missing from image.repositories fails.
*/}}
{{- define "contribflow.stageImage" -}}
{{- $values := .context.Values.image }}
{{- $repository := required (printf "image.repositories.%s is required (see contribflow/cluster/imagemap.py)" .image) (get $values.repositories .image) }}
{{- printf "%s/%s:%s" $values.registry $repository (default .context.Chart.AppVersion $values.tag) }}
{{- end }}

{{/*
contribflow.postgresql.image: the pinned official PostgreSQL image (also used by `helm test`).
*/}}
{{- define "contribflow.postgresql.image" -}}
{{- printf "%s:%s" .Values.postgresql.image.repository .Values.postgresql.image.tag }}
{{- end }}

{{/*
contribflow.secretValue: the base64 value of a key of a Secret the chart generates. On upgrade the
value already in the cluster is kept (`lookup` of the live Secret); on install a random one is made.
`helm template` and `--dry-run` (client) cannot reach a cluster, so there `lookup` returns nothing
and every render generates fresh values: only `helm install/upgrade` (or `--dry-run=server`) keeps
them. Call with (dict "live" $liveSecretOrEmptyDict "key" "loader-password" "value" $fresh), where
$fresh is the plain value to use when the key is not live yet.
*/}}
{{- define "contribflow.secretValue" -}}
{{- $data := dict }}
{{- if and .live .live.data }}{{ $data = .live.data }}{{ end }}
{{- if hasKey $data .key }}
{{- index $data .key }}
{{- else }}
{{- .value | b64enc }}
{{- end }}
{{- end }}

{{/*
contribflow.podSecurityContext / contribflow.containerSecurityContext: the Pod Security "restricted"
profile for a uid/gid: non-root, RuntimeDefault seccomp, no privilege escalation, every capability
dropped, read-only root filesystem. Call with the uid (an int).
*/}}
{{- define "contribflow.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "contribflow.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
contribflow.launcherServiceAccountName: the ServiceAccount of workflows that create Workflows (the
backfill): the executor's rights plus creating and following Workflows in the namespace.
*/}}
{{- define "contribflow.launcherServiceAccountName" -}}
{{- printf "%s-launcher" (include "contribflow.fullname" .) }}
{{- end }}

{{/*
The artifact-repositories ConfigMap the chart writes when workflows.logs.archive.s3.bucket is set.
*/}}
{{- define "contribflow.artifactRepositoriesName" -}}
{{ include "contribflow.fullname" . }}-artifact-repositories
{{- end }}

{{/*
How step logs outlive their pods (workflows.logs): the workflow spec's podGC, and with `archive`,
archiveLogs and the artifact repository. Rendered into every WorkflowTemplate by to_chart.py.
*/}}
{{- define "contribflow.logRetention" -}}
{{- $logs := .Values.workflows.logs -}}
{{- if eq $logs.retention "archive" -}}
archiveLogs: true
{{- if $logs.archive.artifactRepositoryRef }}
artifactRepositoryRef:
  {{- toYaml $logs.archive.artifactRepositoryRef | nindent 2 }}
{{- else if $logs.archive.s3.bucket }}
artifactRepositoryRef:
  configMap: {{ include "contribflow.artifactRepositoriesName" . }}
  key: logs
{{- end }}
podGC:
  strategy: OnPodSuccess
{{- else -}}
podGC:
  strategy: {{ $logs.keepPods.strategy }}
  deleteDelayDuration: {{ $logs.keepPods.deleteDelay | quote }}
{{- end }}
{{- end }}

{{/*
contribflow.eventsName: the EventSource of the landing zone (its event is `landed`) and the Sensor
that submits the daily run when a file's completion marker arrives (events.enabled).
*/}}
{{- define "contribflow.eventsName" -}}
{{- printf "%s-landing" (include "contribflow.fullname" .) }}
{{- end }}

{{/*
contribflow.sensorServiceAccountName: the Sensor's ServiceAccount (may create Workflows, nothing else).
*/}}
{{- define "contribflow.sensorServiceAccountName" -}}
{{- printf "%s-sensor" (include "contribflow.fullname" .) }}
{{- end }}

{{/*
contribflow.events.markerRegex: a completion marker of the contract's file name
(contributions_YYYYMMDD.csv, contribflow/contract.toml) as pick knows them
(contribflow/ingest/completion.py: `.done`, `.ok`, `.manifest.json`), at the end of a path or
object key. Never the data file itself, which may still be being written when it appears.
tests/test_events.py checks it against completion.py's suffixes and the contract's name.
*/}}
{{- define "contribflow.events.markerRegex" -}}
(^|/)contributions_[0-9]{8}\.csv\.(done|ok|manifest\.json)$
{{- end }}

{{/*
contribflow.events.dateTemplate: the Sensor's dataTemplate turning the marker's path or object key
into the run date YYYY-MM-DD (the `run-date` parameter). Call with (dict "input" ".Input.name").
*/}}
{{- define "contribflow.events.dateTemplate" -}}
{{ "{{" }} regexReplaceAll "^(?:.*/)?contributions_([0-9]{4})([0-9]{2})([0-9]{2})\\.csv\\..*$" {{ .input }} "${1}-${2}-${3}" {{ "}}" }}
{{- end }}

{{/*
contribflow.events.keyPath: where the event's data holds the marker's path or key, per source:
`path` the data filter's (gjson), `input` the dataTemplate's (Go template) expression.
*/}}
{{- define "contribflow.events.keyPath" -}}
{{- $source := .Values.events.source }}
{{- if eq $source "file" }}path: name
input: .Input.name
{{- else if eq $source "minio" }}path: notification.0.s3.object.key
input: (index .Input.notification 0).s3.object.key
{{- else if eq $source "sqs" }}path: body.Records.0.s3.object.key
input: (index .Input.body.Records 0).s3.object.key
{{- else }}
{{- fail (printf "events.source=%q is not one of file, minio, sqs" $source) }}
{{- end }}
{{- end }}

{{/*
contribflow.events.podSecurity: the restricted pod securityContext of the EventSource and Sensor
pods (the stage images' uid/gid 10001, so the landing volume reads as the steps write it).
*/}}
{{- define "contribflow.events.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
contribflow.events.containerSecurity: the restricted container securityContext of the same pods.
*/}}
{{- define "contribflow.events.containerSecurity" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
contribflow.notifySecretName: the Secret holding the notification webhook's URL (finish reads it,
optional: without it nothing is posted). The chart never creates it: the URL is a credential.
*/}}
{{- define "contribflow.notifySecretName" -}}
{{- default (printf "%s-notify" (include "contribflow.fullname" .)) .Values.notifications.webhook.existingSecret }}
{{- end }}

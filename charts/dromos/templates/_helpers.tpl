{{/* Names, labels and the addresses the components reach each other at. */}}

{{- define "dromos.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name: DNS labels end at 63 characters. */}}
{{- define "dromos.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "dromos.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "dromos.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "master"). */}}
{{- define "dromos.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dromos.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one component's objects: call as dromos.selectorLabels. */}}
{{- define "dromos.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "dromos.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: dromos
{{- end }}

{{- define "dromos.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "dromos.haproxyImage" -}}
{{- if .Values.haproxy.image.repository }}
{{- printf "%s:%s" .Values.haproxy.image.repository (default .Chart.AppVersion .Values.haproxy.image.tag) }}
{{- else }}
{{- include "dromos.image" . }}
{{- end }}
{{- end }}

{{/* The headless Service that gives each master a stable DNS name. */}}
{{- define "dromos.masterHeadless" -}}
{{- printf "%s-master" (include "dromos.fullname" .) }}
{{- end }}

{{/* Every master's URL, comma-separated: what agents and HAProxy try in turn. */}}
{{- define "dromos.masterURLs" -}}
{{- $urls := list }}
{{- range $i := until (int .Values.master.replicas) }}
{{- $urls = append $urls (printf "http://%s-%d.%s.%s.svc.%s:%d" (include "dromos.masterHeadless" $) $i (include "dromos.masterHeadless" $) $.Release.Namespace $.Values.clusterDomain (int $.Values.master.port)) }}
{{- end }}
{{- join "," $urls }}
{{- end }}

{{- define "dromos.election" -}}
{{- default (printf "/dromos/%s/%s/leader" .Release.Namespace (include "dromos.fullname" .)) .Values.etcd.election }}
{{- end }}

{{/* The Secret, and its key, that hold the API token. */}}
{{- define "dromos.tokenSecret" -}}
{{- default (include "dromos.fullname" .) .Values.auth.existingSecret }}
{{- end }}
{{- define "dromos.tokenKey" -}}
{{- if .Values.auth.existingSecret }}{{ .Values.auth.existingSecretKey }}{{ else }}token{{ end }}
{{- end }}

{{/* The Secret, and its key, that hold the PostgreSQL URL. */}}
{{- define "dromos.storeSecret" -}}
{{- default (include "dromos.fullname" .) .Values.postgres.existingSecret }}
{{- end }}
{{- define "dromos.storeKey" -}}
{{- if .Values.postgres.existingSecret }}{{ .Values.postgres.existingSecretKey }}{{ else }}store-url{{ end }}
{{- end }}

{{/* The token for the chart's own Secret: the value, else the one an earlier release
     stored, else a new random one. */}}
{{- define "dromos.token" -}}
{{- if .Values.auth.token }}
{{- .Values.auth.token }}
{{- else }}
{{- $old := lookup "v1" "Secret" .Release.Namespace (include "dromos.fullname" .) }}
{{- if and $old (hasKey $old "data") (hasKey $old.data "token") }}
{{- index $old.data "token" | b64dec }}
{{- else }}
{{- randAlphaNum 40 }}
{{- end }}
{{- end }}
{{- end }}

{{/* The token Secret mounted as a file (flags and env show up in `ps` and `describe`). */}}
{{- define "dromos.tokenVolume" -}}
- name: auth
  secret:
    secretName: {{ include "dromos.tokenSecret" . }}
    defaultMode: 0440
    items:
      - key: {{ include "dromos.tokenKey" . }}
        path: token
{{- end }}

{{/* Restarts the pods when the token or store settings change (not the generated
     token, which stays the same across upgrades). */}}
{{- define "dromos.secretChecksum" -}}
{{- toJson (list .Values.auth .Values.postgres) | sha256sum }}
{{- end }}

{{/* Checks that fail the render with a message instead of a broken cluster. */}}
{{- define "dromos.validate" -}}
{{- if and (gt (int .Values.master.replicas) 1) (empty .Values.etcd.endpoints) }}
{{- fail "master.replicas > 1 needs etcd.endpoints: the masters elect their leader through etcd" }}
{{- end }}
{{- if and (not .Values.postgres.existingSecret) (not .Values.postgres.url) }}
{{- fail "set postgres.url or postgres.existingSecret: the masters share their state in PostgreSQL" }}
{{- end }}
{{- if and .Values.postgres.url (not .Values.postgres.existingSecret) (not (regexMatch "^postgres(ql)?://" .Values.postgres.url)) }}
{{- fail "postgres.url must start with postgres:// or postgresql://" }}
{{- end }}
{{- if not (has .Values.agent.hostname (list "nodeIP" "nodeName")) }}
{{- fail "agent.hostname must be nodeIP or nodeName" }}
{{- end }}
{{- end }}

{{/* Chart name, or nameOverride. */}}
{{- define "esnode.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<name>, or the release name alone when it already contains the name; at most 40
characters so that "<fullname>-operator-metrics" stays a valid DNS label. */}}
{{- define "esnode.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := include "esnode.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "esnode.operatorName" -}}
{{- printf "%s-operator" (include "esnode.fullname" .) }}
{{- end }}

{{/* rbac/agents.yaml's objects are named esnode-agent-<x>; in a release, <fullname>-agent-<x>
(the release named esnode keeps the file's names). */}}
{{- define "esnode.agentPrefix" -}}
{{- printf "%s-agent-" (include "esnode.fullname" .) }}
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "esnode.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "esnode.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: esnode
{{- end }}

{{/* What the operator's Deployment and Service select on (immutable once installed). */}}
{{- define "esnode.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "esnode.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "esnode.operatorServiceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "esnode.operatorName" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "esnode.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) }}
{{- end }}

{{- define "esnode.fleetNamespace" -}}
{{- default .Release.Namespace .Values.fleet.namespace }}
{{- end }}

{{/* The operator's command line: which namespaces, how replicas coordinate, where it reports. */}}
{{- define "esnode.operatorArgs" -}}
- run
{{- if .Values.operator.watchNamespaces }}
{{- range .Values.operator.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
{{- else }}
- --all-namespaces
{{- end }}
{{- if .Values.operator.peering.enabled }}
- --peering={{ .Values.operator.peering.name }}
{{- else }}
- --standalone
{{- end }}
- --metrics-port={{ .Values.operator.metricsPort }}
{{- if .Values.rbac.create }}
- --agent-node-status-binding={{ include "esnode.agentPrefix" . }}node-status
- --agent-auth-delegator-binding={{ include "esnode.agentPrefix" . }}auth-delegator
{{- end }}
- --liveness=http://0.0.0.0:{{ .Values.operator.healthPort }}/healthz
{{- if .Values.operator.verbose }}
- --verbose
{{- end }}
{{- end }}

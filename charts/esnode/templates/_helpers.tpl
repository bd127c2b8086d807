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

{{/* Names of the release's cluster-scoped objects start with <fullname>-<namespace>, so that two
releases (in two namespaces, whatever their names) never share one; a hash of the two keeps it
within 40 characters. */}}
{{- define "esnode.clusterPrefix" -}}
{{- $base := printf "%s-%s" (include "esnode.fullname" .) .Release.Namespace }}
{{- if le (len $base) 40 }}
{{- $base }}
{{- else }}
{{- printf "%s-%s" (trunc 33 $base | trimSuffix "-") (sha256sum $base | trunc 6) }}
{{- end }}
{{- end }}

{{/* The operator's ClusterRoles and bindings: rbac/operator.yaml's esnode-operator<x>, renamed. */}}
{{- define "esnode.clusterOperatorName" -}}
{{- printf "%s-operator" (include "esnode.clusterPrefix" .) }}
{{- end }}

{{/* rbac/agents.yaml's objects are named esnode-agent-<x>; in a release, <cluster prefix>-agent-<x>. */}}
{{- define "esnode.agentPrefix" -}}
{{- printf "%s-agent-" (include "esnode.clusterPrefix" .) }}
{{- end }}

{{/* The namespaces the operator serves, as a JSON list; [] when it serves all of them
(operator.clusterWide). By default the release's namespace and the fleet's. */}}
{{- define "esnode.watchedNamespaces" -}}
{{- if .Values.operator.clusterWide }}
{{- list | toJson }}
{{- else if .Values.operator.watchNamespaces }}
{{- .Values.operator.watchNamespaces | toJson }}
{{- else if .Values.fleet.enabled }}
{{- list .Release.Namespace (include "esnode.fleetNamespace" .) | uniq | toJson }}
{{- else }}
{{- list .Release.Namespace | toJson }}
{{- end }}
{{- end }}

{{/* kopf's peering object: operator.peering.name, or named after the release (a ClusterKopfPeering
is cluster-scoped, so it takes the cluster prefix). */}}
{{- define "esnode.peeringName" -}}
{{- if .Values.operator.peering.name }}
{{- .Values.operator.peering.name }}
{{- else if .Values.operator.clusterWide }}
{{- include "esnode.clusterOperatorName" . }}
{{- else }}
{{- include "esnode.operatorName" . }}
{{- end }}
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
{{- if .Values.operator.clusterWide }}
- --all-namespaces
{{- else }}
{{- range include "esnode.watchedNamespaces" . | fromJsonArray }}
- --namespace={{ . }}
{{- end }}
{{- end }}
{{- if .Values.operator.peering.enabled }}
- --peering={{ include "esnode.peeringName" . }}
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

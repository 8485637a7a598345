{{/*
Names and labels, after the conventions of `helm create`: name, fullname,
chart, labels, selectorLabels, serviceAccountName. Selector labels never
include anything that changes between releases (version, chart): a
Deployment's selector is immutable.
*/}}

{{/* The chart's name, or nameOverride. */}}
{{- define "webrtc-broker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
"<release>-<name>", or the release name alone when it already contains the
name, or fullnameOverride; at most 63 characters (a DNS label).
*/}}
{{- define "webrtc-broker.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "webrtc-broker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object of the release. */}}
{{- define "webrtc-broker.labels" -}}
helm.sh/chart: {{ include "webrtc-broker.chart" . }}
{{ include "webrtc-broker.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: webrtc-broker
{{- end }}

{{/* Labels that select the release's pods; stable for the release's lifetime. */}}
{{- define "webrtc-broker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "webrtc-broker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of the operator's objects. */}}
{{- define "webrtc-broker.operator.labels" -}}
{{ include "webrtc-broker.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Selector labels of the operator's pod. */}}
{{- define "webrtc-broker.operator.selectorLabels" -}}
{{ include "webrtc-broker.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Name of the operator's Deployment, Service, ServiceMonitor and RBAC objects. */}}
{{- define "webrtc-broker.operator.fullname" -}}
{{- printf "%s-operator" (include "webrtc-broker.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{/* The operator's ServiceAccount: the one created, or the one named. */}}
{{- define "webrtc-broker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "webrtc-broker.operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "<repository>:<tag>", the tag defaulting to the chart's appVersion. */}}
{{- define "webrtc-broker.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The BrokerCluster's name: brokerCluster.name, else the fullname cut to 40
characters (the operator derives "<name>-coordinator" and others from it).
*/}}
{{- define "webrtc-broker.brokerClusterName" -}}
{{- $name := default (include "webrtc-broker.fullname" . | trunc 40 | trimSuffix "-") .Values.brokerCluster.name }}
{{- if gt (len $name) 40 }}
{{- fail (printf "brokerCluster.name %q is %d characters long; at most 40 are allowed" $name (len $name)) }}
{{- end }}
{{- $name }}
{{- end }}

{{/* The coordinator's WebSocket URL inside the cluster (as the BrokerCluster's status shows it). */}}
{{- define "webrtc-broker.coordinatorUrl" -}}
{{- printf "ws://%s-coordinator.%s.svc:9090" (include "webrtc-broker.brokerClusterName" .) .Release.Namespace }}
{{- end }}

{{/* The operator's ClusterRole/Role rules: exactly those of deploy/rbac.yaml. */}}
{{- define "webrtc-broker.operator.rules" -}}
# kopf watches the resource and keeps its bookkeeping in annotations.
- apiGroups: [webrtc-broker.io]
  resources: [brokerclusters]
  verbs: [get, list, watch, patch]
- apiGroups: [webrtc-broker.io]
  resources: [brokerclusters/status, brokerclusters/scale]
  verbs: [patch]
# Owner references with blockOwnerDeletion need this where the
# OwnerReferencesPermissionEnforcement admission plugin is on.
- apiGroups: [webrtc-broker.io]
  resources: [brokerclusters/finalizers]
  verbs: [update]
# The coordinator Deployment always exists; a hub StatefulSet goes when
# the topology leaves Hub, a managed TURN Deployment when turn leaves Managed.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, create, patch, delete]
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [get, create, patch, delete]
# Per-pod Services (NodePort, LoadBalancer) are listed by label and deleted
# with scaling.
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, create, patch, delete]
# Pods of comm servers: listed for the addresses they advertise (status), and
# annotated with their load balancer's address (LoadBalancer mode).
- apiGroups: [""]
  resources: [pods]
  verbs: [list, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, create, patch, delete]
- apiGroups: [monitoring.coreos.com]
  resources: [servicemonitors]
  verbs: [get, create, patch, delete]
# Events: posted about BrokerClusters; listed (Warning only) once a rollout
# passes its deadline, to say why (FailedCreate, FailedScheduling).
- apiGroups: [""]
  resources: [events]
  verbs: [create, list]
# The generated server secret: created once, never read back.
- apiGroups: [""]
  resources: [secrets]
  verbs: [create]
{{- end }}

{{/*
Rules only a ClusterRole carries (serving every namespace): kopf watches the
CRDs, so a BrokerCluster CRD installed after the operator is served at once.
*/}}
{{- define "webrtc-broker.operator.clusterRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  resourceNames: [brokerclusters.webrtc-broker.io]
  verbs: [patch]
{{- end }}

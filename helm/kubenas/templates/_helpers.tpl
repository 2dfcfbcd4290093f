{{/* Names ------------------------------------------------------------------------------ */}}

{{- define "kubenas.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubenas.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kubenas.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubenas.operatorName" -}}{{ include "kubenas.fullname" . }}-operator{{- end -}}
{{- define "kubenas.controllerName" -}}{{ include "kubenas.fullname" . }}-controller{{- end -}}
{{- define "kubenas.trialName" -}}{{ include "kubenas.fullname" . }}-trial{{- end -}}

{{/* Labels ----------------------------------------------------------------------------- */}}

{{- define "kubenas.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubenas.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kubenas.labels" -}}
{{ include "kubenas.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: kubenas
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "kubenas.chart" . }}
{{- end -}}

{{/* The labels the operator puts on every controller pod; the controller metrics Service
     selects on them (passed to the operator as KUBENAS_CONTROLLER_LABELS). */}}
{{- define "kubenas.controllerPodLabels" -}}
{{- dict "app.kubernetes.io/name" (include "kubenas.name" .) "app.kubernetes.io/instance" .Release.Name "app.kubernetes.io/component" "controller" | toJson -}}
{{- end -}}

{{/* Values --------------------------------------------------------------------------- */}}

{{- define "kubenas.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The namespaces Experiments may live in, as a JSON list (release namespace by default). */}}
{{- define "kubenas.watchNamespaces" -}}
{{- if .Values.watchNamespaces -}}
{{- .Values.watchNamespaces | uniq | toJson -}}
{{- else -}}
{{- list .Release.Namespace | toJson -}}
{{- end -}}
{{- end -}}

{{/* Every namespace the release touches: the watched ones and the operator's (where the S3 Secret must exist). */}}
{{- define "kubenas.allNamespaces" -}}
{{- append (include "kubenas.watchNamespaces" . | fromJsonArray) .Release.Namespace | uniq | toJson -}}
{{- end -}}

{{- define "kubenas.storageSecretName" -}}
{{- if .Values.storage.existingSecret -}}
{{- .Values.storage.existingSecret -}}
{{- else -}}
{{- include "kubenas.fullname" . }}-s3
{{- end -}}
{{- end -}}

{{- define "kubenas.storageUrl" -}}
{{- if .Values.storage.prefix -}}
{{- printf "s3://%s/%s" .Values.storage.bucket .Values.storage.prefix -}}
{{- else -}}
{{- printf "s3://%s" .Values.storage.bucket -}}
{{- end -}}
{{- end -}}

{{/* Cross-field checks the schema cannot express; each message names the values. */}}
{{- define "kubenas.validate" -}}
{{- $s := .Values.storage -}}
{{- if and $s.existingSecret (or $s.accessKeyId $s.secretAccessKey) -}}
{{- fail "storage: set either storage.existingSecret or storage.accessKeyId + storage.secretAccessKey, not both" -}}
{{- end -}}
{{- if and (not $s.existingSecret) (not (and $s.accessKeyId $s.secretAccessKey)) -}}
{{- fail "storage: storage.existingSecret is empty, so storage.accessKeyId and storage.secretAccessKey are both required" -}}
{{- end -}}
{{- $seen := dict -}}
{{- range $i, $p := .Values.workerPools -}}
{{- if hasKey $seen $p.name -}}
{{- fail (printf "workerPools[%d].name: duplicate pool name %q" $i $p.name) -}}
{{- end -}}
{{- $_ := set $seen $p.name true -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) -}}
{{- fail "metrics.serviceMonitor.enabled: needs metrics.enabled=true" -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor")) -}}
{{- fail "metrics.serviceMonitor.enabled: the cluster has no ServiceMonitor CRD (monitoring.coreos.com/v1); install the Prometheus Operator or set it to false" -}}
{{- end -}}
{{- end -}}

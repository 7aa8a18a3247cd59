{{/* Base of object names: <release>-<chart>, or the release name when it contains the chart name. */}}
{{- define "previewd.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Cluster-scoped names carry the release's namespace too, so two releases never clash. */}}
{{- define "previewd.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "previewd.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "previewd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "previewd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "previewd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* app.kubernetes.io/managed-by is Helm here: the value previewd puts on what it creates
     (previewd) must not appear on previewd's own objects. */}}
{{- define "previewd.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "previewd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "previewd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "previewd.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The username the API server sees for previewd's requests; the admission policies match it. */}}
{{- define "previewd.username" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "previewd.serviceAccountName" . }}
{{- end -}}

{{/* The ClusterRole of previewd's reads, which previewd binds to itself in each namespace it
     creates (PREVIEWD_READ_CLUSTER_ROLE). */}}
{{- define "previewd.readClusterRole" -}}
{{- default (printf "%s-read" (include "previewd.clusterName" .)) .Values.rbac.readClusterRole -}}
{{- end -}}

{{- define "previewd.instance" -}}
{{- default .Release.Name .Values.instance -}}
{{- end -}}

{{- define "previewd.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The policy previewd reads, with secrets.source_namespace forced to the namespace the RBAC covers. */}}
{{- define "previewd.policy" -}}
{{- $policy := deepCopy .Values.policy -}}
{{- $secrets := default (dict) (get $policy "secrets") -}}
{{- $_ := set $secrets "source_namespace" .Values.secretsSourceNamespace -}}
{{- $_ := set $policy "secrets" $secrets -}}
{{- toYaml $policy -}}
{{- end -}}

{{/* Name of the Secret holding webhook secrets, database URL and GitHub App key when the chart creates it. */}}
{{- define "previewd.secretName" -}}
{{- include "previewd.fullname" . -}}
{{- end -}}

{{- define "previewd.webhookSecretName" -}}
{{- if .Values.webhook.existingSecret.name -}}{{ .Values.webhook.existingSecret.name }}
{{- else if .Values.secrets.create -}}{{ include "previewd.secretName" . }}
{{- else -}}{{ fail "webhook.existingSecret.name is required: previewd refuses to start without webhook secrets (or opt in to secrets.create with secrets.webhookSecrets)" }}
{{- end -}}
{{- end -}}

{{- define "previewd.databaseSecretName" -}}
{{- if .Values.database.existingSecret.name -}}{{ .Values.database.existingSecret.name }}
{{- else if .Values.secrets.create -}}{{ include "previewd.secretName" . }}
{{- else -}}{{ fail "database.existingSecret.name is required with database.type postgres (or opt in to secrets.create with secrets.databaseUrl)" }}
{{- end -}}
{{- end -}}

{{- define "previewd.githubAppSecretName" -}}
{{- if .Values.githubApp.existingSecret.name -}}{{ .Values.githubApp.existingSecret.name }}
{{- else if and .Values.secrets.create .Values.secrets.githubAppPrivateKey -}}{{ include "previewd.secretName" . }}
{{- end -}}
{{- end -}}

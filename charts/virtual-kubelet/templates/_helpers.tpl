{{/* The release's full name, as the original chart named its objects. */}}
{{- define "vk.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "vk.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "vk.labels" -}}
{{ include "vk.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
virtual-kubelet.io/node: {{ .Values.nodeName | quote }}
{{- end -}}

{{- define "vk.serviceAccountName" -}}
{{- default (include "vk.fullname" .) .Values.rbac.serviceAccountName -}}
{{- end -}}

{{/* The ClusterRole bound: cluster-admin (compatibility), one the user names, or ours. */}}
{{- define "vk.roleRef" -}}
{{- if .Values.rbac.clusterAdmin -}}
cluster-admin
{{- else if .Values.rbac.roleRef -}}
{{ .Values.rbac.roleRef }}
{{- else -}}
{{ include "vk.fullname" . }}
{{- end -}}
{{- end -}}

{{/* "true" when agents elect a leader: asked for, or needed because several replicas run. */}}
{{- define "vk.leaderElect" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) -}}true{{- end -}}
{{- end -}}

{{/* The provider's configuration comes from: "configmap" or "secret" (ours or the user's). */}}
{{- define "vk.providerConfigKind" -}}
{{- if .Values.providerConfig.existingSecret -}}secret
{{- else if .Values.providerConfig.existingConfigMap -}}configmap
{{- else if .Values.providerConfig.secret -}}secret
{{- else -}}configmap
{{- end -}}
{{- end -}}

{{- define "vk.providerConfigName" -}}
{{- coalesce .Values.providerConfig.existingSecret .Values.providerConfig.existingConfigMap (printf "%s-provider" (include "vk.fullname" .)) -}}
{{- end -}}

{{/* Providers that need root in their container (cri: the runtime's socket is root's). */}}
{{- define "vk.runsAsRoot" -}}
{{- if has .Values.provider (list "cri") -}}true{{- end -}}
{{- end -}}

{{- define "vk.podSecurityContext" -}}
{{- if .Values.podSecurityContext -}}
{{ toYaml .Values.podSecurityContext }}
{{- else if include "vk.runsAsRoot" . -}}
seccompProfile:
  type: RuntimeDefault
{{- else -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}
{{- end -}}

{{- define "vk.securityContext" -}}
{{- if .Values.securityContext -}}
{{ toYaml .Values.securityContext }}
{{- else -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
{{- if not (include "vk.runsAsRoot" .) }}
capabilities:
  drop: [ALL]
{{- end }}
{{- end -}}
{{- end -}}

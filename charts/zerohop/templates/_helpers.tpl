{{- define "zerohop.name" -}}zerohop{{- end -}}

{{- define "zerohop.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{- define "zerohop.labels" -}}
app.kubernetes.io/name: zerohop
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "zerohop.selector" -}}
app.kubernetes.io/name: zerohop
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "zerohop.fullname" -}}
{{- if eq .Release.Name "zerohop" -}}zerohop{{- else -}}{{ printf "%s-zerohop" .Release.Name | trunc 50 | trimSuffix "-" }}{{- end -}}
{{- end -}}

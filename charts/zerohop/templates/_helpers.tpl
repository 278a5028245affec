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


{{- /* The metrics flags of both components (docs/controller.md, "Metrics"). */ -}}
{{- define "zerohop.metricsArgs" -}}
{{- if not .Values.metrics.secure }}
- --metrics-plain-http
{{- else if .Values.metrics.certSecret }}
- --metrics-cert-dir=/etc/zerohop/metrics-tls
{{- end }}
{{- end -}}

{{- define "zerohop.metricsVolumeMount" -}}
{{- if and .Values.metrics.secure .Values.metrics.certSecret }}
- name: metrics-tls
  mountPath: /etc/zerohop/metrics-tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "zerohop.metricsVolume" -}}
{{- if and .Values.metrics.secure .Values.metrics.certSecret }}
- name: metrics-tls
  secret:
    secretName: {{ .Values.metrics.certSecret }}
{{- end }}
{{- end -}}

{{- /* What a component needs to check its scrapers' tokens. */ -}}
{{- define "zerohop.reviewRules" -}}
{{- if .Values.metrics.secure }}
  - apiGroups: [authentication.k8s.io]
    resources: [tokenreviews]
    verbs: [create]
  - apiGroups: [authorization.k8s.io]
    resources: [subjectaccessreviews]
    verbs: [create]
{{- end }}
{{- end -}}

{{/* Names shared by the injection webhook's templates and the operator's flags. */}}
{{- define "modelengine.webhookName" -}}
{{ include "modelengine.fullname" . | trunc 55 | trimSuffix "-" }}-webhook
{{- end }}

{{- define "modelengine.webhookSecret" -}}
{{ include "modelengine.webhookName" . }}-tls
{{- end }}

{{/* The operator's webhook flags: off (port 0) unless webhook.enabled. */}}
{{- define "modelengine.webhookArgs" -}}
{{- if .Values.webhook.enabled }}
- --webhook-port={{ int .Values.webhook.port }}
- --webhook-service={{ include "modelengine.webhookName" . }}
- --webhook-secret={{ include "modelengine.webhookSecret" . }}
- --webhook-configuration={{ include "modelengine.fullname" . }}
{{- if .Values.webhook.certManager.enabled }}
- --webhook-cert-manager
{{- end }}
{{- else }}
- --webhook-port=0
{{- end }}
{{- end }}

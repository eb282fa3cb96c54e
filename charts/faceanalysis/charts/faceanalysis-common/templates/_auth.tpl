{{/*
API keys at image-input (image-input.auth). The key file holds one line per key,
`<sha256 hex of the key> <tenant> [<scopes>]`, never the keys themselves; it comes from the
Secret key `api-keys`, either auth.existingSecret or the Secret the image-input chart generates
("<release>-image-input-api-keys", which also keeps the one plain key under `api-key` for the
admin to hand out). It is mounted as a file (FACEANALYSIS_API_KEYS_FILE), not an environment
variable; image-input reads it at start, so a changed Secret takes effect with a rollout restart.
*/}}

{{- define "faceanalysis.apiKeys.dir" -}}/etc/faceanalysis/api-keys{{- end -}}

{{/* "true" when this chart checks API keys (image-input with auth.enabled). */}}
{{- define "faceanalysis.apiKeys.enabled" -}}
{{- $spec := include "faceanalysis.spec" (list . .Chart.Name) | fromYaml -}}
{{- if and $spec.apiKeys (.Values.auth | default dict).enabled }}true{{ end -}}
{{- end -}}

{{/* Secret holding `api-keys`: include "faceanalysis.apiKeys.secretName" (list $root $authValues)
($root may be the umbrella chart's context, as in the `helm test` Pod). */}}
{{- define "faceanalysis.apiKeys.secretName" -}}
{{- $auth := index . 1 | default dict -}}
{{- $auth.existingSecret | default (printf "%s-api-keys" (include "faceanalysis.name" (list (index . 0) "image-input"))) -}}
{{- end -}}

{{- define "faceanalysis.apiKeys.env" -}}
{{- if include "faceanalysis.apiKeys.enabled" . }}
- name: FACEANALYSIS_API_KEYS_FILE
  value: {{ printf "%s/api-keys" (include "faceanalysis.apiKeys.dir" .) | quote }}
{{- end -}}
{{- end -}}

{{- define "faceanalysis.apiKeys.volume" -}}
{{- if include "faceanalysis.apiKeys.enabled" . }}
- name: api-keys
  secret:
    secretName: {{ include "faceanalysis.apiKeys.secretName" (list . .Values.auth) }}
    # Only the hashed file; the plain key of a generated Secret never reaches the pod.
    items:
      - {key: api-keys, path: api-keys}
    defaultMode: 288  # 0440
{{- end -}}
{{- end -}}

{{- define "faceanalysis.apiKeys.volumeMount" -}}
{{- if include "faceanalysis.apiKeys.enabled" . }}
- {name: api-keys, mountPath: {{ include "faceanalysis.apiKeys.dir" . }}, readOnly: true}
{{- end -}}
{{- end -}}

{{/*
Environment of a service container. Settings come from faceanalysis.runtime.config.Settings:
a key `foo_bar` under global.config or <service>.config becomes FACEANALYSIS_FOO_BAR, so
values.yaml uses the same names as the Python code (tests check every name exists there).
Ports, peers, Redis and directories are derived from the release and not meant to be overridden.
*/}}
{{- define "faceanalysis.env" -}}
{{- $spec := include "faceanalysis.spec" (list . .Chart.Name) | fromYaml -}}
{{- $specs := include "faceanalysis.specs" . | fromYaml -}}
- name: FACEANALYSIS_GRPC_PORT
  value: {{ $spec.port | quote }}
- name: FACEANALYSIS_METRICS_PORT
  value: {{ $spec.metricsPort | quote }}
{{- if $spec.httpPort }}
{{- /* The HTTP/JSON API and web page beside gRPC (image-input.http); 0 turns it off. */}}
- name: FACEANALYSIS_HTTP_PORT
  value: {{ ternary $spec.httpPort 0 (eq (include "faceanalysis.http.enabled" .) "true") | quote }}
{{- end }}
{{- /* Peers: dns:/// + round_robin over headless Services reaches every pod, new HPA pods too.
A peer renamed by its own overrides is pointed at through config.<target> (then used as is). */}}
{{- range $peer := $spec.calls | default list }}
{{- with (index $specs $peer).target }}
{{- if not (include "faceanalysis.configSets" (list $ .)) }}
- name: FACEANALYSIS_{{ . | upper }}
  value: {{ printf "dns:///%s:%v" (include "faceanalysis.headlessHost" (list $ $peer)) (index $specs $peer).port | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- if has "redis" ($spec.calls | default list) }}
- name: FACEANALYSIS_REDIS_URL
  value: {{ printf "redis://%s:%v/0" (include "faceanalysis.redisHost" .) (((.Values.global | default dict).redis | default dict).port | default 6379) | quote }}
- name: FACEANALYSIS_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "faceanalysis.redisSecretName" . }}
      key: {{ include "faceanalysis.redisSecretKey" . }}
{{- end }}
{{- if $spec.models }}
- name: FACEANALYSIS_MODELS_DIR
  value: {{ .Values.models.dir | quote }}
{{- end }}
{{- if $spec.archive }}
- name: FACEANALYSIS_ARCHIVE_DIR
  value: {{ .Values.archive.dir | quote }}
{{- end }}
{{- $config := merge (deepCopy (.Values.config | default dict)) (deepCopy ((.Values.global | default dict).config | default dict)) }}
{{- range $key, $value := $config }}
{{- if not (kindIs "invalid" $value) }}
- name: FACEANALYSIS_{{ $key | upper }}
  value: {{ include "faceanalysis.envValue" $value }}
{{- end }}
{{- end }}
{{- /* Admission limit, work threads and CPU limit from the container's resources (_admission.tpl). */}}
{{- include "faceanalysis.derivedEnv" . }}
{{- /* Certificates and the plaintext health port (_tls.tpl), the API key file (_auth.tpl). */}}
{{- include "faceanalysis.tls.env" . }}
{{- include "faceanalysis.apiKeys.env" . }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* A value as an env string; whole numbers stay whole (YAML numbers arrive as float64). */}}
{{- define "faceanalysis.envValue" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) -}}
{{- . | int64 | toString | quote -}}
{{- else -}}
{{- . | toString | quote -}}
{{- end -}}
{{- end -}}

{{/* "true" when this chart serves the HTTP/JSON API (image-input with http.enabled, the default). */}}
{{- define "faceanalysis.http.enabled" -}}
{{- $spec := include "faceanalysis.spec" (list . .Chart.Name) | fromYaml -}}
{{- if and $spec.httpPort (ne (toString ((.Values.http | default dict).enabled)) "false") -}}true{{- end -}}
{{- end -}}

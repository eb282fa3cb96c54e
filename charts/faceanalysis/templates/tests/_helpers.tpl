{{/* The `helm test` Pod's TLS settings of the faceanalysis CLI: TLS, verified against the release CA. */}}
{{- define "faceanalysis.apiTestTlsEnv" -}}
- name: FACEANALYSIS_CA_FILE
  value: {{ printf "%s/ca.crt" (include "faceanalysis.tls.dir" .) | quote }}
{{- end -}}

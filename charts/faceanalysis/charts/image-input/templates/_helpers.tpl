{{/* parentRefs of image-input's routes (GRPCRoute, HTTPRoute): gateway.parentRef, else the
listener of the Gateway this chart creates. Usage: include "faceanalysis.gateway.parentRefs" (dict "gw" $gw "fullname" $fullname) */}}
{{- define "faceanalysis.gateway.parentRefs" -}}
{{- $gw := .gw -}}
{{- $parent := $gw.parentRef | default dict -}}
{{- $create := $gw.create | default dict -}}
- group: gateway.networking.k8s.io
  kind: Gateway
  {{- if $parent.name }}
  name: {{ $parent.name }}
  {{- with $parent.namespace }}
  namespace: {{ . }}
  {{- end }}
  {{- with $parent.sectionName }}
  sectionName: {{ . }}
  {{- end }}
  {{- else }}
  name: {{ .fullname }}
  sectionName: {{ $create.listenerName | default "https" }}
  {{- end }}
{{- end -}}

{{/* Annotations of image-input's Ingresses: the chart's (each with why) over ingress.annotations.
Usage: include "faceanalysis.ingress.annotations" (dict "protocol" "GRPC" "timeout" "3600" "extra" $annotations) | fromYaml */}}
{{- define "faceanalysis.ingress.annotations" -}}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
# nginx speaks HTTP/2 (grpc_pass) to the pods only with GRPC; GRPCS when global.tls makes the
# pods serve TLS only. The HTTP API's Ingress is plain HTTP/1.1 (HTTPS under global.tls).
nginx.ingress.kubernetes.io/backend-protocol: {{ .protocol }}
# client_max_body_size counts the whole HTTP/2 stream, not one message: the default 1m answers
# 413 to any photo over 1 MiB and kills an AnalyzeImages stream once its images add up to 1 MiB.
# "0" turns the check off; image-input caps each image itself (max_image_bytes) with a
# RESOURCE_EXHAUSTED (gRPC) or a 413 with a JSON body (HTTP) the client can read.
nginx.ingress.kubernetes.io/proxy-body-size: "0"
# grpc_read_timeout (proxy_read_timeout over HTTP): how long nginx waits between two messages
# from the pod. The default 60 s ends a stream that is quiet for a minute (a slow analysis, a
# client pausing).
nginx.ingress.kubernetes.io/proxy-read-timeout: {{ .timeout | quote }}
# grpc_send_timeout (proxy_send_timeout): how long nginx waits to pass data on to the pod; the
# same 60 s default cuts a stream whose client pauses between images.
nginx.ingress.kubernetes.io/proxy-send-timeout: {{ .timeout | quote }}
{{- end -}}

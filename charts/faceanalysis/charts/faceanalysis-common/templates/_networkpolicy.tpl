{{/*
NetworkPolicy of one pod group. Deny by default (both policy types), then allow only:
- ingress on the main port from the services whose `calls` (faceanalysis.specs) name this one
  (selected by their component label, which no name override changes), plus
  networkPolicy.ingressFrom, and for image-input the edge: the Gateway's proxies
  (networkPolicy.gatewayFrom) when gateway.enabled, the ingress controller
  (networkPolicy.ingressControllerFrom) when ingress.enabled; these peers (not the services)
  also reach image-input's HTTP port (image-input.http);
- ingress on the metrics port from global.networkPolicy.metricsFrom (Prometheus);
- egress to DNS and to the services this one `calls`;
- egress for the model download init container, when models are pulled at start.
*/}}
{{- define "faceanalysis.networkPolicy" -}}
{{- $global := .Values.global | default dict -}}
{{- $np := $global.networkPolicy | default dict -}}
{{- if $np.enabled -}}
{{- $name := .Chart.Name -}}
{{- $specs := include "faceanalysis.specs" . | fromYaml -}}
{{- $spec := index $specs $name -}}
{{- $callers := list -}}
{{- range $caller, $s := $specs -}}
{{- if has $name ($s.calls | default list) }}{{ $callers = append $callers $caller }}{{ end -}}
{{- end -}}
{{- $models := $global.models | default dict -}}
{{- $pullModels := and $spec.models (eq ($models.source | default "initContainer") "initContainer") -}}
{{- $peers := (.Values.networkPolicy | default dict).ingressFrom | default list -}}
{{- if (.Values.gateway | default dict).enabled -}}
{{- $peers = concat $peers (.Values.networkPolicy.gatewayFrom | default list) -}}
{{- end -}}
{{- if (.Values.ingress | default dict).enabled -}}
{{- $peers = concat $peers (.Values.networkPolicy.ingressControllerFrom | default list) -}}
{{- end -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "faceanalysis.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "faceanalysis.labels" . | nindent 4 }}
  {{- include "faceanalysis.annotations" (list . dict 2) }}
spec:
  podSelector:
    matchLabels:
      {{- include "faceanalysis.selectorLabels" . | nindent 6 }}
  policyTypes: [Ingress, Egress]
  ingress:
    {{- with $callers }}
    - ports:
        - {port: {{ $spec.port }}, protocol: TCP}
      from:
        {{- range . }}
        - podSelector:
            matchLabels:
              {{- include "faceanalysis.componentLabels" (list $ .) | nindent 14 }}
        {{- end }}
    {{- end }}
    {{- with $peers }}
    - ports:
        - {port: {{ $spec.port }}, protocol: TCP}
        {{- if include "faceanalysis.http.enabled" $ }}
        - {port: {{ $spec.httpPort }}, protocol: TCP}
        {{- end }}
      from:
        {{- toYaml . | nindent 8 }}
    {{- end }}
    {{- with $np.metricsFrom }}
    - ports:
        - {port: {{ $spec.metricsPort }}, protocol: TCP}
      from:
        {{- toYaml . | nindent 8 }}
    {{- end }}
  egress:
    {{- with $np.dnsTo }}
    - ports:
        - {port: 53, protocol: UDP}
        - {port: 53, protocol: TCP}
      to:
        {{- toYaml . | nindent 8 }}
    {{- end }}
    {{- range $callee := $spec.calls | default list }}
    - ports:
        - {port: {{ (index $specs $callee).port }}, protocol: TCP}
      to:
        - podSelector:
            matchLabels:
              {{- include "faceanalysis.componentLabels" (list $ $callee) | nindent 14 }}
    {{- end }}
    {{- if and $pullModels $models.downloadEgress }}
    - ports:
        - {port: 443, protocol: TCP}
        - {port: 80, protocol: TCP}
      to:
        {{- toYaml $models.downloadEgress | nindent 8 }}
    {{- end }}
    {{- with (.Values.networkPolicy | default dict).extraEgress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}
{{- end -}}

{{/* Everything a faceanalysis service chart renders; a service chart's template is one include. */}}
{{- define "faceanalysis.service" -}}
{{- $ctx := dict -}}
{{- $_ := include "faceanalysis.context" (list . $ctx) -}}
{{- $parts := list "faceanalysis.serviceAccount" "faceanalysis.deployment" "faceanalysis.services" "faceanalysis.hpa" "faceanalysis.pdb" "faceanalysis.networkPolicy" "faceanalysis.archiveClaim" "faceanalysis.tls.serviceCertificate" -}}
{{- range $parts }}
{{- $doc := include . $ctx | trim }}
{{- if $doc }}
---
{{ $doc }}
{{- end }}
{{- end }}
{{- end -}}

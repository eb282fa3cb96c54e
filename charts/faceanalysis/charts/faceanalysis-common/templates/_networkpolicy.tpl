{{/*
NetworkPolicy of one pod group. Deny by default (both policy types), then allow only:
- ingress on the main port from the services whose `calls` (faceanalysis.specs) name this one,
  plus networkPolicy.ingressFrom, and for image-input the edge: the Gateway's proxies
  (networkPolicy.gatewayFrom) when gateway.enabled, the ingress controller
  (networkPolicy.ingressControllerFrom) when ingress.enabled;
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
{{- $peers := .Values.networkPolicy.ingressFrom | default list -}}
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
spec:
  podSelector:
    matchLabels:
      {{- include "faceanalysis.selectorLabels" . | nindent 6 }}
  policyTypes: [Ingress, Egress]
  ingress:
    {{- if or $callers $peers }}
    - ports:
        - {port: {{ $spec.port }}, protocol: TCP}
      from:
        {{- range $callers }}
        - podSelector:
            matchLabels:
              {{- include "faceanalysis.selectorLabelsFor" (list $ .) | nindent 14 }}
        {{- end }}
        {{- with $peers }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
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
              {{- include "faceanalysis.selectorLabelsFor" (list $ $callee) | nindent 14 }}
    {{- end }}
    {{- if and $pullModels $models.downloadEgress }}
    - ports:
        - {port: 443, protocol: TCP}
        - {port: 80, protocol: TCP}
      to:
        {{- toYaml $models.downloadEgress | nindent 8 }}
    {{- end }}
    {{- with .Values.networkPolicy.extraEgress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}
{{- end -}}

{{/* Everything a faceanalysis service chart renders; a service chart's template is one include. */}}
{{- define "faceanalysis.service" -}}
{{- $parts := list "faceanalysis.serviceAccount" "faceanalysis.deployment" "faceanalysis.services" "faceanalysis.hpa" "faceanalysis.pdb" "faceanalysis.networkPolicy" "faceanalysis.archiveClaim" "faceanalysis.tls.serviceCertificate" -}}
{{- range $parts }}
{{- $doc := include . $ | trim }}
{{- if $doc }}
---
{{ $doc }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
Optional TLS on every gRPC port (global.tls), with certificates from cert-manager.

- Each service gets a Certificate "<release>-<service>-tls" (Secret of the same name) for its
  Service DNS names, both the ClusterIP Service and the headless one that peers dial, short and
  fully qualified. Usages: server auth (its own port) and client auth (the certificate it
  presents to its peers).
- The Secret is mounted at /etc/faceanalysis/tls: FACEANALYSIS_TLS_CERT_FILE / _KEY_FILE on every
  service; FACEANALYSIS_PEER_CA_FILE where the service dials peers (image-input);
  FACEANALYSIS_TLS_CLIENT_CA_FILE (mTLS: callers must show a certificate of the same CA) on
  every service that only pods of this release call, when global.tls.mtls is on. image-input is
  reached from the edge and by `helm test`, so it never asks for client certificates.
- The kubelet's gRPC probe cannot speak TLS: with TLS on, each service also serves
  grpc.health.v1 in plaintext on its healthPort (FACEANALYSIS_HEALTH_PORT, faceanalysis.specs)
  and the probes ask that port. It answers SERVING/NOT_SERVING and nothing else.
- The CA is global.tls.issuerRef, or (name empty) one the umbrella chart creates:
  a self-signed Issuer that signs the CA Certificate "<release>-ca", and the CA Issuer
  "<release>-ca" that signs the service certificates (charts/faceanalysis/templates/tls.yaml).
Redis is not part of this: data-storage reaches it with its password, inside the namespace.
*/}}

{{- define "faceanalysis.tls.values" -}}
{{- ((.Values.global | default dict).tls | default dict) | toYaml -}}
{{- end -}}

{{/* "true" when global.tls.enabled, else empty. */}}
{{- define "faceanalysis.tls.enabled" -}}
{{- if (include "faceanalysis.tls.values" . | fromYaml).enabled }}true{{ end -}}
{{- end -}}

{{/* Where the certificate Secret is mounted, and its Secret name: include "faceanalysis.tls.secretName" (list . "face-landmark") */}}
{{- define "faceanalysis.tls.dir" -}}/etc/faceanalysis/tls{{- end -}}

{{- define "faceanalysis.tls.secretName" -}}
{{- printf "%s-tls" (include "faceanalysis.name" .) -}}
{{- end -}}

{{/* Names of the self-signed bootstrap Issuer and of the release CA (Certificate, Secret, Issuer). */}}
{{/* Every chart's certificates name the release CA: "<release>-ca", whatever the overrides. */}}
{{- define "faceanalysis.tls.selfSignedIssuer" -}}
{{- include "faceanalysis.releaseName" (list . "selfsigned") -}}
{{- end -}}

{{- define "faceanalysis.tls.caName" -}}
{{- include "faceanalysis.releaseName" (list . "ca") -}}
{{- end -}}

{{/* issuerRef of the service certificates: global.tls.issuerRef, else the release CA. */}}
{{- define "faceanalysis.tls.issuerRef" -}}
{{- $ref := (include "faceanalysis.tls.values" . | fromYaml).issuerRef | default dict -}}
{{- if $ref.name -}}
name: {{ $ref.name }}
kind: {{ $ref.kind | default "Issuer" }}
group: {{ $ref.group | default "cert-manager.io" }}
{{- else -}}
name: {{ include "faceanalysis.tls.caName" . }}
kind: Issuer
group: cert-manager.io
{{- end -}}
{{- end -}}

{{/* DNS names of a service's certificate: both Services, short to fully qualified.
Usage: include "faceanalysis.tls.dnsNames" (list . "face-landmark") */}}
{{- define "faceanalysis.tls.dnsNames" -}}
{{- $root := index . 0 -}}
{{- $name := include "faceanalysis.name" . -}}
{{- $domain := ($root.Values.global | default dict).clusterDomain | default "cluster.local" -}}
{{- range $host := list $name (printf "%s-headless" $name) }}
- {{ $host }}
- {{ $host }}.{{ $root.Release.Namespace }}
- {{ $host }}.{{ $root.Release.Namespace }}.svc
- {{ $host }}.{{ $root.Release.Namespace }}.svc.{{ $domain }}
{{- end }}
{{- end -}}

{{/*
A cert-manager Certificate whose Secret is "<release>-<component>-tls".
Usage: include "faceanalysis.tls.certificate" (dict "root" . "component" "face-landmark" "dnsNames" true)
dnsNames: true gives the component's Service names (faceanalysis.tls.dnsNames) and both usages;
a client-only certificate (the `helm test` Pod) sets false: a common name and client auth only.
*/}}
{{- define "faceanalysis.tls.certificate" -}}
{{- $root := .root -}}
{{- $tls := include "faceanalysis.tls.values" $root | fromYaml -}}
{{- $name := include "faceanalysis.tls.secretName" (list $root .component) -}}
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "faceanalysis.labels" $root | nindent 4 }}
  {{- include "faceanalysis.annotations" (list $root dict 2) }}
spec:
  secretName: {{ $name }}
  {{- if .dnsNames }}
  dnsNames:
    {{- include "faceanalysis.tls.dnsNames" (list $root .component) | nindent 4 }}
  {{- else }}
  commonName: {{ printf "%s.%s" (include "faceanalysis.name" (list $root .component)) $root.Release.Namespace }}
  {{- end }}
  {{- if .dnsNames }}
  # One key pair serves the port and is the client certificate shown to peers (mTLS).
  usages: ["digital signature", "server auth", "client auth"]
  {{- else }}
  usages: ["digital signature", "client auth"]
  {{- end }}
  # The services read their certificate at start: a pod must restart within renewBefore of a
  # renewal (every rollout does; otherwise a reloader, see docs/deploy.md).
  duration: {{ $tls.duration | default "2160h" }}
  renewBefore: {{ $tls.renewBefore | default "720h" }}
  privateKey:
    algorithm: ECDSA
    size: 256
    rotationPolicy: Always
  issuerRef:
    {{- include "faceanalysis.tls.issuerRef" $root | nindent 4 }}
{{- end -}}

{{/* The calling chart's own Certificate (part of faceanalysis.service). */}}
{{- define "faceanalysis.tls.serviceCertificate" -}}
{{- if include "faceanalysis.tls.enabled" . -}}
{{- include "faceanalysis.tls.certificate" (dict "root" . "component" .Chart.Name "dnsNames" true) -}}
{{- end -}}
{{- end -}}

{{/* TLS environment of a service container (part of faceanalysis.env). */}}
{{- define "faceanalysis.tls.env" -}}
{{- if include "faceanalysis.tls.enabled" . -}}
{{- $tls := include "faceanalysis.tls.values" . | fromYaml -}}
{{- $specs := include "faceanalysis.specs" . | fromYaml -}}
{{- $spec := index $specs .Chart.Name -}}
{{- $dir := include "faceanalysis.tls.dir" . -}}
{{- $dialsPeers := false -}}
{{- range $peer := $spec.calls | default list -}}
{{- if (index $specs $peer).target }}{{ $dialsPeers = true }}{{ end -}}
{{- end }}
- name: FACEANALYSIS_TLS_CERT_FILE
  value: {{ printf "%s/tls.crt" $dir | quote }}
- name: FACEANALYSIS_TLS_KEY_FILE
  value: {{ printf "%s/tls.key" $dir | quote }}
{{- if and (not $spec.public) (ne (toString $tls.mtls) "false") }}
- name: FACEANALYSIS_TLS_CLIENT_CA_FILE
  value: {{ printf "%s/ca.crt" $dir | quote }}
{{- end }}
{{- if $dialsPeers }}
- name: FACEANALYSIS_PEER_CA_FILE
  value: {{ printf "%s/ca.crt" $dir | quote }}
{{- end }}
- name: FACEANALYSIS_HEALTH_PORT
  value: {{ $spec.healthPort | quote }}
{{- end -}}
{{- end -}}

{{/* Volume and mount of the certificate Secret. */}}
{{- define "faceanalysis.tls.volume" -}}
{{- if include "faceanalysis.tls.enabled" . }}
- name: tls
  secret:
    secretName: {{ include "faceanalysis.tls.secretName" (list . .Chart.Name) }}
    defaultMode: 288  # 0440: the pod's group (fsGroup 10001) reads, nobody writes
{{- end -}}
{{- end -}}

{{- define "faceanalysis.tls.volumeMount" -}}
{{- if include "faceanalysis.tls.enabled" . }}
- {name: tls, mountPath: {{ include "faceanalysis.tls.dir" . }}, readOnly: true}
{{- end -}}
{{- end -}}

{{/* Port the probes ask: the plaintext health port when TLS is on, else the gRPC port. */}}
{{- define "faceanalysis.probePort" -}}
{{- $spec := include "faceanalysis.spec" (list . .Chart.Name) | fromYaml -}}
{{- if include "faceanalysis.tls.enabled" . }}{{ $spec.healthPort }}{{ else }}{{ $spec.port }}{{ end -}}
{{- end -}}

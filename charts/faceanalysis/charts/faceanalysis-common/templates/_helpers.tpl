{{/*
Names, labels and the port table shared by every faceanalysis chart.
Every template here takes the calling chart's root context; the service name is the
chart name (image-input, face-landmark, face-attributes, data-storage, redis).
*/}}

{{/*
The contract with the Python services (faceanalysis.runtime.services): ports and gRPC
service names. Kept in one place so peers, Services, probes and NetworkPolicies agree;
tests/deploy checks it against the Python registry.
*/}}
{{- define "faceanalysis.specs" -}}
# port: the main (gRPC) port; calls: the only edges NetworkPolicies allow;
# target: the Settings field through which image-input dials this service;
# admits: the Settings field that caps the work a pod holds at once (derived from the memory
#   limit, see _admission.tpl; faceanalysis_work_in_flight counts that work);
# cpuLimit: FACEANALYSIS_CPU_LIMIT from the container's CPU limit (ONNX Runtime/OpenCV threads);
# workersFollowAdmission: max_workers = the admission limit (every admitted item is blocking work);
# healthPort: plaintext grpc.health.v1 only (FACEANALYSIS_HEALTH_PORT), opened when global.tls is on,
#   because the kubelet's gRPC probe cannot speak TLS (_tls.tpl);
# public: reached from outside the release (the edge, `helm test`), so it never asks for client
#   certificates; apiKeys: checks API keys (image-input.auth, _auth.tpl).
image-input:     {port: 50050, metricsPort: 9150, healthPort: 50150, grpcService: faceanalysis.v1.FaceAnalysis, calls: [face-landmark, face-attributes, data-storage], admits: max_concurrent_images, public: true, apiKeys: true}
face-landmark:   {port: 50051, metricsPort: 9151, healthPort: 50151, grpcService: faceanalysis.v1.FaceLandmark, models: true, target: landmark_target, admits: max_concurrent_images, cpuLimit: true, workersFollowAdmission: true}
face-attributes: {port: 50052, metricsPort: 9152, healthPort: 50152, grpcService: faceanalysis.v1.FaceAttributes, models: true, target: attributes_target, admits: batch_queue_max_faces, cpuLimit: true}
data-storage:    {port: 50053, metricsPort: 9153, healthPort: 50153, grpcService: faceanalysis.v1.DataStorage, target: storage_target, calls: [redis], archive: true}
redis:           {port: 6379, metricsPort: 9121}
# The `helm test` Pod of the umbrella chart calls the public API like a client would.
api-test:        {calls: [image-input]}
{{- end -}}

{{/* The spec of one service: (include "faceanalysis.spec" (list . "face-landmark")) | fromYaml */}}
{{- define "faceanalysis.spec" -}}
{{- $name := index . 1 -}}
{{- $specs := include "faceanalysis.specs" (index . 0) | fromYaml -}}
{{- if not (hasKey $specs $name) -}}{{- fail (printf "unknown faceanalysis service %q" $name) -}}{{- end -}}
{{- index $specs $name | toYaml -}}
{{- end -}}

{{/*
Resource name of a service in this release: <release>-<service>.
Truncated to 54 characters so "<name>-headless" still fits the 63-character DNS label limit.
Usage: include "faceanalysis.name" (list . "face-landmark")
*/}}
{{- define "faceanalysis.name" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" $root.Release.Name (index . 1) | trunc 54 | trimSuffix "-" -}}
{{- end -}}

{{/* This chart's own resource name. */}}
{{- define "faceanalysis.fullname" -}}
{{- include "faceanalysis.name" (list . .Chart.Name) -}}
{{- end -}}

{{/* Labels that select the pods of one service: include "faceanalysis.selectorLabelsFor" (list . "redis") */}}
{{- define "faceanalysis.selectorLabelsFor" -}}
app.kubernetes.io/name: {{ index . 1 }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
{{- end -}}

{{- define "faceanalysis.selectorLabels" -}}
{{- include "faceanalysis.selectorLabelsFor" (list . .Chart.Name) -}}
{{- end -}}

{{- define "faceanalysis.labels" -}}
{{ include "faceanalysis.selectorLabels" . }}
app.kubernetes.io/part-of: faceanalysis
app.kubernetes.io/version: {{ .Chart.AppVersion | default .Chart.Version | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/*
Image reference: [registry/]repository[:tag][@digest]. The registry and tag fall back to
global.image; an empty registry everywhere gives a bare name (kind/minikube side-loaded images).
*/}}
{{- define "faceanalysis.image" -}}
{{- $global := (.Values.global | default dict).image | default dict -}}
{{- $img := .Values.image -}}
{{- $registry := $img.registry | default $global.registry -}}
{{- $repository := $img.repository | default (printf "faceanalysis-%s" .Chart.Name) -}}
{{- $tag := $img.tag | default $global.tag | default .Chart.AppVersion -}}
{{- if $registry }}{{ $registry }}/{{ end }}{{ $repository }}{{ if $tag }}:{{ $tag }}{{ end }}{{ with $img.digest }}@{{ . }}{{ end }}
{{- end -}}

{{- define "faceanalysis.imagePullPolicy" -}}
{{- .Values.image.pullPolicy | default ((.Values.global | default dict).image | default dict).pullPolicy | default "IfNotPresent" -}}
{{- end -}}

{{- define "faceanalysis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "faceanalysis.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* Cluster DNS name of a service's headless Service: include "faceanalysis.headlessHost" (list . "face-landmark") */}}
{{- define "faceanalysis.headlessHost" -}}
{{- $root := index . 0 -}}
{{- $domain := ($root.Values.global | default dict).clusterDomain | default "cluster.local" -}}
{{- printf "%s-headless.%s.svc.%s" (include "faceanalysis.name" .) $root.Release.Namespace $domain -}}
{{- end -}}

{{/* Name and key of the Secret holding the Redis password (shared by the redis and data-storage charts). */}}
{{- define "faceanalysis.redisSecretName" -}}
{{- $redis := (.Values.global | default dict).redis | default dict -}}
{{- $redis.existingSecret | default (printf "%s-auth" (include "faceanalysis.name" (list . "redis"))) -}}
{{- end -}}

{{- define "faceanalysis.redisSecretKey" -}}
{{- ((.Values.global | default dict).redis | default dict).existingSecretPasswordKey | default "redis-password" -}}
{{- end -}}

{{/* Host of Redis: global.redis.host, else this release's Redis Service. */}}
{{- define "faceanalysis.redisHost" -}}
{{- $redis := (.Values.global | default dict).redis | default dict -}}
{{- $redis.host | default (printf "%s.%s.svc.%s" (include "faceanalysis.name" (list . "redis")) .Release.Namespace ((.Values.global | default dict).clusterDomain | default "cluster.local")) -}}
{{- end -}}

{{/* The restricted Pod Security Standard, shared by every pod of the release. */}}
{{- define "faceanalysis.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "faceanalysis.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

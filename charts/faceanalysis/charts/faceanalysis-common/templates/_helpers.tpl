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
#   certificates; apiKeys: checks API keys (image-input.auth, _auth.tpl);
# httpPort: the HTTP/JSON API and web page (FACEANALYSIS_HTTP_PORT, image-input.http), HTTPS when
#   global.tls is on, routed by the edge beside gRPC.
image-input:     {port: 50050, metricsPort: 9150, healthPort: 50150, httpPort: 8080, grpcService: faceanalysis.v1.FaceAnalysis, calls: [face-landmark, face-attributes, data-storage], admits: max_concurrent_images, public: true, apiKeys: true}
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
The values a faceanalysis chart renders with: its own values merged over the defaults of this
library (values.yaml here; Helm hands them to every chart that depends on this one under
`faceanalysis-common`). mergeOverwrite keeps explicit false, 0, "" and null of the chart, so a
null still removes a default (e.g. podSecurityContext.runAsUser: null).
Usage, at the top of a template (the dict is filled in place; templates then pass $ctx on):
  {{- $ctx := dict }}{{- $_ := include "faceanalysis.context" (list . $ctx) }}
Idempotent: a context made by it has no `faceanalysis-common` key left to merge.
*/}}
{{- define "faceanalysis.context" -}}
{{- $root := index . 0 -}}
{{- $ctx := index . 1 -}}
{{- $values := dict -}}
{{- $_ := include "faceanalysis.mergeDefaults" (list $root.Values $values) -}}
{{- $_ := set $ctx "Values" $values -}}
{{- range $key := list "Chart" "Release" "Capabilities" "Template" "Files" -}}
{{- $_ := set $ctx $key (index $root $key) -}}
{{- end -}}
{{- end -}}

{{/* Fills `out` with `values` merged over its library defaults: include "faceanalysis.mergeDefaults" (list $values $out)
(the umbrella chart uses it for a service's section, e.g. image-input's in the `helm test` Pod). */}}
{{- define "faceanalysis.mergeDefaults" -}}
{{- $values := index . 0 | default dict -}}
{{- $out := index . 1 -}}
{{- $defaults := omit (index $values "faceanalysis-common" | default dict) "global" -}}
{{- $merged := mergeOverwrite (deepCopy $defaults) (deepCopy (omit $values "faceanalysis-common")) -}}
{{- range $key, $value := $merged -}}
{{- $_ := set $out $key $value -}}
{{- end -}}
{{- end -}}

{{/*
Names. Every object is "<release>-<component>", cut to 54 characters so "<name>-headless" still
fits the 63-character DNS label limit:
- a chart's own objects follow its nameOverride (replaces <component>) and fullnameOverride
  (replaces the whole name); the umbrella chart sees each service's section, so it names them
  the same way (the `helm test` target, NOTES);
- the umbrella chart's own objects (helm test, dashboards, rules, ServiceMonitor) are
  "<fullnameOverride or release>-<component>";
- a chart cannot see a sibling's values (Helm shows a subchart only its own section and
  `global`), so a peer is named "<release>-<peer>"; the umbrella chart refuses a renamed peer
  without its pointer (faceanalysis.checks);
- objects other charts refer to by name keep "<release>-..." whatever the overrides: the Redis
  password Secret and the release CA (faceanalysis.releaseName).
Usage: include "faceanalysis.name" (list . "face-landmark")
*/}}
{{- define "faceanalysis.name" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $services := list "image-input" "face-landmark" "face-attributes" "data-storage" "redis" -}}
{{- $values := dict -}}
{{- $prefix := $root.Release.Name -}}
{{- if eq $component $root.Chart.Name -}}
{{- $values = $root.Values -}}
{{- else if and (has $component $services) (kindIs "map" (index $root.Values $component)) -}}
{{- $values = index $root.Values $component -}}
{{- else if eq $root.Chart.Name "faceanalysis" -}}
{{- $prefix = $root.Values.fullnameOverride | default $root.Release.Name -}}
{{- end -}}
{{- if $values.fullnameOverride -}}
{{- $values.fullnameOverride | trunc 54 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" $prefix ($values.nameOverride | default $component) | trunc 54 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* This chart's own object name. */}}
{{- define "faceanalysis.fullname" -}}
{{- include "faceanalysis.name" (list . .Chart.Name) -}}
{{- end -}}

{{/* "<release>-<component>", whatever the overrides: for objects other charts name. */}}
{{- define "faceanalysis.releaseName" -}}
{{- printf "%s-%s" (index . 0).Release.Name (index . 1) | trunc 54 | trimSuffix "-" -}}
{{- end -}}

{{/* app.kubernetes.io/name of this chart's objects: nameOverride, else the chart name. */}}
{{- define "faceanalysis.appName" -}}
{{- .Values.nameOverride | default .Chart.Name -}}
{{- end -}}

{{/* Labels that select this chart's pods (Deployment, Services, PDB, its own NetworkPolicy). */}}
{{- define "faceanalysis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "faceanalysis.appName" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
Labels that select the pods of any component of the release, from any chart: the component
label is the service's own name, which no override changes (NetworkPolicy peers).
Usage: include "faceanalysis.componentLabels" (list . "redis")
*/}}
{{- define "faceanalysis.componentLabels" -}}
app.kubernetes.io/component: {{ index . 1 }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
{{- end -}}

{{/* commonLabels of the release (global) and of this chart, values templated. */}}
{{- define "faceanalysis.commonLabels" -}}
{{- $labels := merge (deepCopy (.Values.commonLabels | default dict)) (deepCopy ((.Values.global | default dict).commonLabels | default dict)) -}}
{{- with $labels -}}{{- tpl (toYaml .) $ -}}{{- end -}}
{{- end -}}

{{/* Labels of every object; the chart's own win over commonLabels (selectors must hold). */}}
{{- define "faceanalysis.labels" -}}
{{- $own := include "faceanalysis.selectorLabels" . | fromYaml -}}
{{- $specs := include "faceanalysis.specs" . | fromYaml -}}
{{- if hasKey $specs .Chart.Name -}}
{{- $_ := set $own "app.kubernetes.io/component" .Chart.Name -}}
{{- end -}}
{{- $_ := set $own "app.kubernetes.io/part-of" "faceanalysis" -}}
{{- $_ := set $own "app.kubernetes.io/version" (.Chart.AppVersion | default .Chart.Version | toString) -}}
{{- $_ := set $own "app.kubernetes.io/managed-by" .Release.Service -}}
{{- $_ := set $own "helm.sh/chart" (printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_") -}}
{{- merge $own (include "faceanalysis.commonLabels" . | fromYaml) | toYaml -}}
{{- end -}}

{{/* Labels of this chart's pods: the object labels plus podLabels (which cannot replace them). */}}
{{- define "faceanalysis.podLabels" -}}
{{- merge (include "faceanalysis.labels" . | fromYaml) (deepCopy (.Values.podLabels | default dict)) | toYaml -}}
{{- end -}}

{{/*
The `annotations:` block of an object's metadata: its own annotations over commonAnnotations
(global, then the chart's; values templated), indented by `indent`; nothing when there are none.
Usage, right after the labels: {{- include "faceanalysis.annotations" (list . (dict "key" "value") 2) }}
*/}}
{{- define "faceanalysis.annotations" -}}
{{- $root := index . 0 -}}
{{- $common := merge (deepCopy ($root.Values.commonAnnotations | default dict)) (deepCopy (($root.Values.global | default dict).commonAnnotations | default dict)) -}}
{{- $all := merge (deepCopy (index . 1 | default dict)) (tpl (toYaml $common) $root | fromYaml) -}}
{{- with $all -}}
{{- printf "annotations:\n%s" (toYaml . | indent 2) | nindent (index $ 2) -}}
{{- end -}}
{{- end -}}

{{/*
Image reference: [registry/]repository[:tag][@digest]. The registry and tag fall back to
global.image, the tag then to the chart's appVersion, so a release runs the images built for its
own version; an empty registry everywhere gives a bare name (kind/minikube side-loaded images).
So appVersion is "X.Y.Z", the images' tag, never the git tag "vX.Y.Z": a release sets it in the
umbrella and every service chart (.github/scripts/set_chart_release.py).
*/}}
{{- define "faceanalysis.image" -}}
{{- $global := (.Values.global | default dict).image | default dict -}}
{{- $img := .Values.image | default dict -}}
{{- $registry := $img.registry | default $global.registry -}}
{{- $repository := $img.repository | default (printf "faceanalysis-%s" .Chart.Name) -}}
{{- $tag := $img.tag | default $global.tag | default .Chart.AppVersion | toString -}}
{{- if $registry }}{{ $registry }}/{{ end }}{{ $repository }}{{ if $tag }}:{{ $tag }}{{ end }}{{ with $img.digest }}@{{ . }}{{ end }}
{{- end -}}

{{- define "faceanalysis.imagePullPolicy" -}}
{{- (.Values.image | default dict).pullPolicy | default ((.Values.global | default dict).image | default dict).pullPolicy | default "IfNotPresent" -}}
{{- end -}}

{{- define "faceanalysis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "faceanalysis.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* The pod's priorityClassName: the chart's, else global.priorityClassName; empty for none. */}}
{{- define "faceanalysis.priorityClassName" -}}
{{- .Values.priorityClassName | default (.Values.global | default dict).priorityClassName | default "" -}}
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
{{- $redis.existingSecret | default (printf "%s-auth" (include "faceanalysis.releaseName" (list . "redis"))) -}}
{{- end -}}

{{- define "faceanalysis.redisSecretKey" -}}
{{- ((.Values.global | default dict).redis | default dict).existingSecretPasswordKey | default "redis-password" -}}
{{- end -}}

{{/* Host of Redis: global.redis.host, else this release's Redis Service. */}}
{{- define "faceanalysis.redisHost" -}}
{{- $redis := (.Values.global | default dict).redis | default dict -}}
{{- $redis.host | default (printf "%s.%s.svc.%s" (include "faceanalysis.name" (list . "redis")) .Release.Namespace ((.Values.global | default dict).clusterDomain | default "cluster.local")) -}}
{{- end -}}

{{/*
"true" when the pods must leave runAsUser, runAsGroup and fsGroup to the platform:
global.compatibility.openshift.adaptSecurityContext is force, or auto on a cluster that serves
OpenShift's security.openshift.io/v1 API (restricted-v2 assigns UIDs from the namespace's range).
*/}}
{{- define "faceanalysis.openshift" -}}
{{- $mode := ((((.Values.global | default dict).compatibility | default dict).openshift | default dict).adaptSecurityContext | default "auto") -}}
{{- if or (eq $mode "force") (and (eq $mode "auto") (.Capabilities.APIVersions.Has "security.openshift.io/v1")) -}}true{{- end -}}
{{- end -}}

{{/*
A pod or container securityContext from values: keys set to null are left out, and on OpenShift
(faceanalysis.openshift) the fixed UID, GID and fsGroup too.
Usage: include "faceanalysis.securityContext" (list . .Values.podSecurityContext)
*/}}
{{- define "faceanalysis.securityContext" -}}
{{- $root := index . 0 -}}
{{- $context := dict -}}
{{- range $key, $value := index . 1 | default dict -}}
{{- if not (kindIs "invalid" $value) }}{{ $_ := set $context $key $value }}{{ end -}}
{{- end -}}
{{- if include "faceanalysis.openshift" $root -}}
{{- $context = omit $context "runAsUser" "runAsGroup" "fsGroup" -}}
{{- end -}}
{{- toYaml $context -}}
{{- end -}}

{{/* A probe's timing from values (enabled is the caller's business): include "faceanalysis.probeTiming" .Values.probes.readiness */}}
{{- define "faceanalysis.probeTiming" -}}
{{- $lines := list -}}
{{- range $key := list "initialDelaySeconds" "periodSeconds" "timeoutSeconds" "failureThreshold" "successThreshold" -}}
{{- with index $ $key }}{{ $lines = append $lines (printf "%s: %d" $key (int .)) }}{{ end -}}
{{- end -}}
{{- join "\n" $lines -}}
{{- end -}}
